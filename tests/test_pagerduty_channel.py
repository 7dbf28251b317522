"""The PagerDuty channel's answers from a local server speaking the Events API v2."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from schemas import AckAction
from services.classifier.engine import History, apply
from services.classifier.rules import load_rules
from services.notifier.delivery.channels.base import DeliveryError
from services.notifier.delivery.channels.pagerduty import PagerDutyChannel
from services.notifier.domain.message import Message, render_message
from tests.pagerduty_server import PagerDutyEvents
from tests.test_engine import result

KEY = "R0UT1NGKEY0F32CHARACTERSXXXXXXXX"


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyEvents]:
    events = PagerDutyEvents()
    events.start()
    yield events
    events.stop()


def page() -> Message:
    return render_message(apply(History(), result(9), load_rules(), datetime.now(UTC))[0], zone=UTC)


async def test_a_resent_page_is_the_same_incident(pagerduty: PagerDutyEvents) -> None:
    channel = PagerDutyChannel(5, pagerduty.url)
    sent = page()
    assert await channel.deliver(sent, KEY) == "PagerDuty trigger: Event processed"
    await channel.deliver(sent, KEY)
    assert list(pagerduty.incidents) == [sent.alert_id]
    await channel.follow_up(sent.alert_id, KEY, AckAction.RESOLVE)
    assert pagerduty.incidents == {sent.alert_id: "resolved"}


async def test_an_invalid_event_is_final(pagerduty: PagerDutyEvents) -> None:
    with pytest.raises(DeliveryError, match="HTTP 400") as refused:
        await PagerDutyChannel(5, pagerduty.url).deliver(page(), "not-an-integration-key")
    assert not refused.value.retryable


async def test_throttling_is_worth_retrying(pagerduty: PagerDutyEvents) -> None:
    pagerduty.busy_next = 1
    channel = PagerDutyChannel(5, pagerduty.url)
    with pytest.raises(DeliveryError, match="HTTP 429") as throttled:
        await channel.deliver(page(), KEY)
    assert throttled.value.retryable
    await channel.deliver(page(), KEY)
    assert len(pagerduty.incidents) == 1
