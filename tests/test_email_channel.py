"""The e-mail channel against a real SMTP server on loopback."""

from datetime import UTC, datetime

import pytest

from schemas import AckAction
from services.classifier.engine import History, apply
from services.classifier.rules import load_rules
from services.kafka.broker import free_loopback_port
from services.notifier.delivery.channels.base import DeliveryError
from services.notifier.delivery.channels.email import EmailChannel, SmtpSettings
from services.notifier.domain.message import Message, render_message
from tests.conftest import SmtpReceiver
from tests.test_engine import result

LINKS = {action: f"https://notifier.example/v1/links/{action.value}" for action in AckAction}


def page() -> Message:
    alert = apply(History(), result(9), load_rules(), datetime.now(UTC))[0]
    return render_message(alert, LINKS, zone=UTC)


def channel(port: int) -> EmailChannel:
    return EmailChannel(
        SmtpSettings("127.0.0.1", port, "plateletwatch@hospital.example", timeout_seconds=5)
    )


async def test_an_email_says_what_happened_and_how_to_act(smtp_receiver: SmtpReceiver) -> None:
    sent = page()
    receipt = await channel(smtp_receiver.port).deliver(sent, "dr.okafor@hospital.example")
    assert receipt.startswith("SMTP")
    (message,) = smtp_receiver.messages
    assert message["To"] == "dr.okafor@hospital.example"
    assert message["Subject"] == sent.line
    assert message["X-PlateletWatch-Alert"] == sent.alert_id
    text = message.get_content()
    assert "CRITICAL LOW platelets: 9 x10^9/L" in text
    assert "Acknowledge: https://notifier.example/v1/links/acknowledge" in text
    assert "Not my patient: https://notifier.example/v1/links/not_my_patient" in text
    assert "evidence" not in text  # the summary only, not the chart...
    assert "1970" not in text  # ...nor the patient's date of birth


async def test_a_refused_recipient_is_final(smtp_receiver: SmtpReceiver) -> None:
    with pytest.raises(DeliveryError, match="refused the recipient") as refused:
        await channel(smtp_receiver.port).deliver(page(), "nobody@hospital.example")
    assert not refused.value.retryable


async def test_an_unreachable_mail_server_is_worth_retrying() -> None:
    with pytest.raises(DeliveryError, match="unreachable") as failed:
        await channel(free_loopback_port()).deliver(page(), "dr.okafor@hospital.example")
    assert failed.value.retryable
