"""The notifier's wiring: one registry builds its channels from the settings, and delivery and the
web routes read their times from the clock the app is given."""

from datetime import UTC, datetime
from pathlib import Path

import httpx

from schemas import DeliveryEvent
from services.classifier.engine import History, apply
from services.classifier.rules import load_rules
from services.config import Settings
from services.notifier.app import create_app
from services.notifier.delivery.attempts import AlertDelivery, Recipient, RetryPolicy
from services.notifier.delivery.channels.registry import CHANNELS, channels_from
from services.notifier.delivery.channels.webhook import WebhookChannel
from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.notifier.domain.message import render_message
from services.notifier.store.repository import NotifierStore
from services.notifier.web.routes import Now
from tests.test_engine import result

FROZEN = datetime(2026, 11, 28, 3, 10, tzinfo=UTC)


def test_email_and_sms_are_built_only_when_their_servers_are_configured() -> None:
    assert set(channels_from(Settings())) == {"webhook", "pagerduty", "slack"}
    configured = Settings(
        notifier_smtp_host="smtp.example.org", notifier_sms_gateway_url="https://sms.example.org"
    )
    assert (
        set(channels_from(configured))
        == set(CHANNELS)
        == {
            "webhook",
            "pagerduty",
            "slack",
            "sms",
            "email",
        }
    )
    assert all(channels_from(configured)[name].name == name for name in CHANNELS)


async def test_delivery_records_each_step_at_the_time_its_clock_says(
    store: NotifierStore, webhook_receiver: WebhookReceiver
) -> None:
    alert = apply(History(), result(9), load_rules(), datetime.now(UTC))[0]
    published: list[DeliveryEvent] = []

    async def publish(_: str, event: DeliveryEvent) -> None:
        published.append(event)

    delivery = AlertDelivery(
        store,
        {"webhook": WebhookChannel(timeout_seconds=5)},
        RetryPolicy(attempts=1, base_seconds=0.01),
        publish,
        lambda: FROZEN,
    )
    recipient = Recipient("hematology-on-call", "webhook", webhook_receiver.url)
    assert await delivery.page(alert, render_message(alert, zone=UTC), recipient)
    assert {event.occurred_at for event in published} == {FROZEN}
    assert {row.occurred_at for row in await store.audit_trail(alert.alert_id)} == {FROZEN}


async def test_the_app_gives_its_one_clock_to_the_web_routes(tmp_path: Path) -> None:
    settings = Settings(
        notifier_database_url=f"sqlite+aiosqlite:///{tmp_path / 'notifier.sqlite3'}",
        notifier_link_secret="link-key-for-this-test",
        notifier_session_secret="session-key-for-this-test",
        notifier_webhook_url="http://127.0.0.1:9/pages",
    )
    app = create_app(settings, "127.0.0.1:9", clock=lambda: FROZEN)

    @app.get("/test-now")
    def now(at: Now) -> str:
        return at.isoformat()

    # ASGITransport runs no lifespan: the store and the Kafka consumer stay unstarted.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://n") as client:
        assert (await client.get("/test-now")).json() == FROZEN.isoformat()
