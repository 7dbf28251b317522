"""The notifier's own HTTP routes as `plateletwatch notifier` serves them (its app, started with
its lifespan against the real broker): action links, the bearer-token API, and what a refused or
malformed request is told."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from schemas import AckAction
from services.config import Settings
from services.notifier.channels.webhook_receiver import WebhookReceiver
from services.notifier.links import sign_link
from services.notifier.service import create_app
from tests.conftest import AUTH, with_paging
from tests.test_escalator import SECRET

pytestmark = pytest.mark.integration
HOUR = timedelta(hours=1)


@pytest.fixture
def notifier_settings(
    topics: Settings, tmp_path: Path, webhook_receiver: WebhookReceiver
) -> Settings:
    paging = with_paging(topics, tmp_path, 600, webhook_receiver.url)
    return paging.model_copy(update={"notifier_link_secret": SecretStr(SECRET.decode())})


@pytest.fixture
async def notifier(notifier_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(notifier_settings, notifier_settings.kafka_bootstrap_servers or "")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notifier.test") as c:
            yield c


def genuine_link(alert_id: str, action: AckAction = AckAction.ACKNOWLEDGE) -> str:
    return "/v1/links/" + sign_link(
        SECRET, alert_id, action, "adult/primary", datetime.now(UTC), HOUR
    )


async def test_a_genuine_link_for_an_alert_the_notifier_does_not_have_is_404(
    notifier: httpx.AsyncClient,
) -> None:
    html = {"Accept": "text/html"}
    opened = await notifier.get(genuine_link("never-paged"), headers=html)
    pressed = await notifier.post(genuine_link("never-paged"), headers=html)
    posted = await notifier.post(genuine_link("never-paged", AckAction.RESOLVE))
    assert (opened.status_code, pressed.status_code, posted.status_code) == (404, 404, 404)
    for page in (opened.text, pressed.text):
        assert "This link cannot be used: no such alert was paged." in page
    assert posted.json() == {"error": "no such alert was paged"}
    api = await notifier.post(
        "/v1/alerts/never-paged/actions", json={"action": "acknowledge", "by": "r"}, headers=AUTH
    )
    assert api.status_code == 404
