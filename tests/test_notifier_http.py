"""The notifier's own HTTP routes as `plateletwatch notifier` serves them (its app, started with
its lifespan against the real broker): action links, the bearer-token API, and what a refused or
malformed request is told."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from schemas import AckAction
from services.config import Settings
from services.kafka.admin import ensure_topics
from services.kafka.broker import EmbeddedTansu
from services.notifier.app import create_app
from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.notifier.domain.links import LINK_SALT, SESSION_SALT, sign, sign_link
from services.notifier.web.auth import hash_password
from tests.conftest import AUTH, ServiceProcess, with_paging
from tests.test_console_http import PASSWORD, SESSION_SECRET, sign_in
from tests.test_console_http import csrf as csrf_token
from tests.test_escalator import SECRET

pytestmark = pytest.mark.integration
HOUR = timedelta(hours=1)
HASH = hash_password(PASSWORD, 1000)
LINK_NOT_GENUINE = "the link is not genuine"


@pytest.fixture
def notifier_settings(
    topics: Settings, tmp_path: Path, webhook_receiver: WebhookReceiver
) -> Settings:
    paging = with_paging(topics, tmp_path, 600, webhook_receiver.url)
    return paging.model_copy(update={"notifier_link_secret": SecretStr(SECRET.decode())})


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The notifier's app, started as `plateletwatch notifier` starts it, and a client of it."""
    app = create_app(settings, settings.kafka_bootstrap_servers or "")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notifier.test") as c:
            yield c


@pytest.fixture
async def notifier(notifier_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(notifier_settings) as client:
        yield client


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


@pytest.fixture
def with_console(notifier_settings: Settings, tmp_path: Path) -> Settings:
    """The notifier with a console user, dr.ada, and a session secret."""
    users = tmp_path / "users.yaml"
    users.write_text(f"users:\n  - {{name: dr.ada, services: [adult], password_hash: '{HASH}'}}\n")
    return notifier_settings.model_copy(
        update={
            "notifier_console_users_file": users,
            "notifier_session_secret": SecretStr(SESSION_SECRET.decode()),
        }
    )


async def test_a_link_key_never_signs_a_session_nor_a_session_key_a_link(
    with_console: Settings,
) -> None:
    settings = with_console
    expires = int((datetime.now(UTC) + HOUR).timestamp())
    as_session = sign(SECRET, SESSION_SALT, {"u": "dr.ada", "e": expires, "n": "by-the-link-key"})
    link_payload = {"a": "never-paged", "x": "acknowledge", "r": "r", "e": expires, "n": "n1"}
    as_link = sign(SESSION_SECRET, LINK_SALT, link_payload)
    async with running(settings) as notifier:
        await sign_in(notifier, "dr.ada", PASSWORD)
        session = notifier.cookies["plateletwatch_session"]
        assert (await notifier.get("/v1/console")).status_code == 200
        for token in (session, as_link):
            refused = await notifier.post(f"/v1/links/{token}")
            assert (refused.status_code, refused.json()) == (403, {"error": LINK_NOT_GENUINE})
        notifier.cookies.clear()
        notifier.cookies.set("plateletwatch_session", as_session)
        assert (await notifier.get("/v1/console")).headers["location"] == "/v1/console/login"


def test_the_link_and_session_secrets_may_not_be_the_same(notifier_settings: Settings) -> None:
    same = notifier_settings.model_copy(
        update={"notifier_session_secret": notifier_settings.notifier_link_secret}
    )
    with pytest.raises(ValueError, match="SESSION_SECRET must differ"):
        create_app(same, same.kafka_bootstrap_servers or "")


PLANTED = ("HOSP|PLANTED-MRN-4242", "Jane Planted-Surname")


async def test_what_was_sent_is_never_logged_nor_quoted_back(
    with_console: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Bodies that fail validation may carry a patient's identifiers: the answer says which
    field and why, never the value; the logs, even at DEBUG, neither."""
    mrn, name = PLANTED
    caplog.set_level(logging.DEBUG)
    answers = []
    async with running(with_console) as notifier:
        api = "/v1/alerts/some-alert/actions"
        for body in (
            {"action": mrn, "by": name},
            {"action": "acknowledge", "by": name * 10, "patient": mrn},
            {"action": ["acknowledge"], "by": {"name": name}},
        ):
            answers.append(await notifier.post(api, json=body, headers=AUTH))
        broken = f'{{"action": "acknowledge", "by": "{name}", "mrn": "{mrn}"'.encode()
        answers.append(await notifier.post(api, content=broken, headers=AUTH))
        link = genuine_link("some-alert", AckAction.NOT_MY_PATIENT)
        answers.append(await notifier.post(link, data={"reassign_to": mrn}))
        answers.append(await sign_in(notifier, name, mrn))
        await sign_in(notifier, "dr.ada", PASSWORD)
        page = await notifier.get("/v1/console")
        action = {"action": mrn, "csrf_token": csrf_token(page.text), "reassign_to": name}
        answers.append(await notifier.post("/v1/console/alerts/some-alert/actions", data=action))
    assert [a.status_code for a in answers] == [422, 422, 422, 422, 400, 401, 400]
    assert answers[0].json()["detail"][0] == {
        "type": "enum",
        "loc": ["body", "action"],
        "msg": "Input should be 'acknowledge', 'not_my_patient' or 'resolve'",
    }
    assert "invalid request to /v1/alerts/{alert_id}/actions: body.action enum" in caplog.text
    said = "\n".join([caplog.text, *(a.text for a in answers)])
    assert mrn not in said
    assert "PLANTED-MRN" not in said
    assert "Planted-Surname" not in said


@pytest.mark.parametrize("enabled", [False, True])
async def test_the_api_docs_are_served_only_when_enabled(
    notifier_settings: Settings, enabled: bool
) -> None:
    settings = notifier_settings.model_copy(update={"api_docs": enabled})
    async with running(settings) as notifier:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await notifier.get(path)).status_code == (200 if enabled else 404), path


@pytest.mark.one_broker(reason="loses a Tansu broker of its own; the session broker plays no part")
async def test_readiness_fails_within_seconds_once_the_broker_is_lost(
    settings: Settings,
    tmp_path: Path,
    webhook_receiver: WebhookReceiver,
    start_service: Callable[[str, Settings], ServiceProcess],
) -> None:
    """A notifier that cannot read alerts must not be counted ready (the orchestrator then
    routes around it and says so), yet stays up to resume when the broker is back."""
    broker = EmbeddedTansu()  # its own broker, to lose without harming the other tests
    broker.start()
    try:
        own = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
        own = with_paging(own, tmp_path, 600, webhook_receiver.url)
        await ensure_topics(own, broker.bootstrap_servers, create=True)
        notifier = start_service("notifier", own)
        ready = f"http://{own.bind_host}:{own.notifier_port}/readyz"
        notifier.wait_ready(ready)
        broker.stop()
        lost = time.monotonic()
        async with httpx.AsyncClient(timeout=5) as client:
            while (answer := await client.get(ready)).status_code == 200:
                assert time.monotonic() - lost < 10, "still ready 10 s after the broker went"
                await asyncio.sleep(0.2)
        assert answer.status_code == 503
        assert answer.json() == {"status": "not ready", "service": "notifier"}
        assert notifier.process.poll() is None
    finally:
        broker.stop()
