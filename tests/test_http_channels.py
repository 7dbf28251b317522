"""Slack-compatible, SMS-gateway and summary-only webhook channels against a real HTTP receiver
on loopback."""

from datetime import UTC, datetime

import pytest

from schemas import AckAction
from services.classifier.engine import History, apply
from services.classifier.rules import load_rules
from services.notifier.delivery.channels.base import DeliveryError
from services.notifier.delivery.channels.slack import SlackChannel
from services.notifier.delivery.channels.sms import SmsChannel
from services.notifier.delivery.channels.webhook import WebhookChannel
from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.notifier.domain.message import Message, render_message
from tests.test_engine import result

LINKS = {action: f"https://notifier.example/v1/links/{action.value}" for action in AckAction}


def page() -> Message:
    return render_message(
        apply(History(), result(9), load_rules(), datetime.now(UTC))[0], LINKS, zone=UTC
    )


async def test_a_slack_message_has_the_line_and_clickable_actions(
    webhook_receiver: WebhookReceiver,
) -> None:
    sent = page()
    await SlackChannel(5).deliver(sent, webhook_receiver.url + "/services/T0/B0/x")
    (received,) = webhook_receiver.pages
    assert received.path.endswith("/services/T0/B0/x")
    first, links = received.body["text"].split("\n")
    assert first == sent.line
    assert "<https://notifier.example/v1/links/acknowledge|Acknowledge>" in links
    assert "<https://notifier.example/v1/links/not_my_patient|Not my patient>" in links
    assert set(received.body) == {"text"}  # no evidence in a chat channel


async def test_an_sms_carries_the_summary_to_the_number(webhook_receiver: WebhookReceiver) -> None:
    sent = page()
    gateway = SmsChannel(webhook_receiver.url + "/send", 5, token="gateway-token")
    await gateway.deliver(sent, "+441234567890")
    (received,) = webhook_receiver.pages
    assert received.headers["Authorization"] == "Bearer gateway-token"
    assert received.body == {"to": "+441234567890", "message": sent.summary}
    assert "Acknowledge: https://notifier.example/v1/links/acknowledge" in sent.summary


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (404, False), (429, True), (503, True)]
)
async def test_gateway_answers_decide_whether_to_retry(
    webhook_receiver: WebhookReceiver, status: int, retryable: bool
) -> None:
    webhook_receiver.refuse_next(1, status=status)
    with pytest.raises(DeliveryError, match=f"HTTP {status}") as failed:
        await SmsChannel(webhook_receiver.url, 5).deliver(page(), "+441234567890")
    assert failed.value.retryable is retryable


async def test_a_webhook_can_be_kept_to_the_summary(webhook_receiver: WebhookReceiver) -> None:
    sent = page()
    await WebhookChannel(5, full_alert=False).deliver(sent, webhook_receiver.url)
    (received,) = webhook_receiver.pages
    assert received.body == {
        "summary": sent.summary,
        "actions": sent.actions,
        "alert_id": sent.alert_id,
        "kind": "critical_low",
        "withdraws_alert_id": None,
    }
    assert "birth" not in received.raw.decode()
