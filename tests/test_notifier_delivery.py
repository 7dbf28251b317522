"""Notifier delivery against a real loopback webhook receiver and a real SQLite store."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from schemas import DeliveryEvent, DeliveryStep, PlateletAlert, TreatmentCategory
from services.classifier.engine import History, apply
from services.classifier.rules import load_rules
from services.notifier.channels.webhook import WebhookChannel, signature
from services.notifier.channels.webhook_receiver import WebhookReceiver
from services.notifier.delivery import AlertDelivery, PublishDelivery, Recipient, RetryPolicy
from services.notifier.message import render_page
from services.notifier.store import CLAIM_LEASE, NotifierStore
from tests.test_engine import feed, result, treatment

Published = list[tuple[str, DeliveryEvent]]


class _Pager:
    """Pages one webhook recipient, as the escalator does for each level."""

    def __init__(self, delivery: AlertDelivery, url: str) -> None:
        self.delivery = delivery
        self.recipient = Recipient("hematology-on-call", "webhook", url)

    async def handle(self, alert: PlateletAlert) -> bool:
        return await self.delivery.page(alert, render_page(alert), self.recipient)


def _delivery(
    store: NotifierStore,
    receiver: WebhookReceiver,
    published: Published,
    publish: PublishDelivery | None = None,
) -> _Pager:
    async def record(key: str, event: DeliveryEvent) -> None:
        published.append((key, event))

    delivery = AlertDelivery(
        store,
        {"webhook": WebhookChannel(timeout_seconds=5)},
        RetryPolicy(attempts=3, base_seconds=0.01),
        publish or record,
    )
    return _Pager(delivery, receiver.url)


def _alert():
    return apply(History(), result(9), load_rules(), datetime.now(UTC))[0]


async def test_a_page_says_what_the_clinician_needs(store, webhook_receiver) -> None:
    alert = _alert()
    published: Published = []
    await _delivery(store, webhook_receiver, published).handle(alert)
    (page,) = webhook_receiver.pages
    assert page.headers["Idempotency-Key"] == alert.alert_id
    assert page.body["alert"]["alert_id"] == alert.alert_id
    summary = page.body["summary"]
    assert "CRITICAL LOW" in summary
    assert "9 x10^9/L" in summary
    assert "HOSP|42" in summary
    assert [e.step for _, e in published] == [DeliveryStep.SENT, DeliveryStep.DELIVERED]
    assert {key for key, _ in published} == {"HOSP|42"}
    trail = await store.audit_trail(alert.alert_id)
    assert [(row.step, row.recipient) for row in trail] == [
        ("sent", "hematology-on-call"),
        ("delivered", "hematology-on-call"),
    ]


async def test_the_same_alert_twice_pages_once(store, webhook_receiver) -> None:
    alert = _alert()
    published: Published = []
    delivery = _delivery(store, webhook_receiver, published)
    await delivery.handle(alert)
    await delivery.handle(alert)
    await _delivery(store, webhook_receiver, published).handle(alert)  # a second replica
    assert len(webhook_receiver.pages) == 1


async def test_transient_failures_are_retried_then_delivered(store, webhook_receiver) -> None:
    webhook_receiver.refuse_next(2, status=503)
    alert = _alert()
    published: Published = []
    await _delivery(store, webhook_receiver, published).handle(alert)
    assert len(webhook_receiver.pages) == 1
    steps = [(e.step, e.attempt) for _, e in published]
    assert steps == [
        (DeliveryStep.SENT, 1),
        (DeliveryStep.FAILED, 1),
        (DeliveryStep.SENT, 2),
        (DeliveryStep.FAILED, 2),
        (DeliveryStep.SENT, 3),
        (DeliveryStep.DELIVERED, 3),
    ]


async def test_a_refusal_is_not_retried_and_the_page_can_be_retaken(
    store, webhook_receiver
) -> None:
    webhook_receiver.refuse_next(1, status=400)
    alert = _alert()
    published: Published = []
    delivery = _delivery(store, webhook_receiver, published)
    await delivery.handle(alert)
    assert webhook_receiver.pages == []
    assert [e.step for _, e in published] == [DeliveryStep.SENT, DeliveryStep.FAILED]
    assert "HTTP 400" in (published[-1][1].detail or "")
    await delivery.handle(alert)  # redelivered after the sender fixed its side
    assert len(webhook_receiver.pages) == 1


async def test_a_claim_abandoned_by_a_crash_is_retaken_after_its_lease(store) -> None:
    now = datetime.now(UTC)
    assert await store.claim_page("a1", "webhook", "http://x", now)
    assert not await store.claim_page("a1", "webhook", "http://x", now)
    later = now + CLAIM_LEASE + timedelta(seconds=1)
    assert await store.claim_page("a1", "webhook", "http://x", later)
    await store.finish_page("a1", "webhook", "http://x", delivered=True, now=later)
    await store.finish_page("a1", "webhook", "http://x", delivered=False, now=later)
    assert not await store.claim_page("a1", "webhook", "http://x", later + CLAIM_LEASE * 2)


@pytest.mark.parametrize("failing_step", [DeliveryStep.SENT, DeliveryStep.DELIVERED])
async def test_a_step_that_cannot_be_recorded_neither_loses_nor_repeats_the_page(
    store, webhook_receiver, failing_step: DeliveryStep
) -> None:
    """Kafka refuses the delivery event once; the alert is redelivered and paged exactly once."""
    alert = _alert()
    published: Published = []
    refused: list[DeliveryStep] = []

    async def publish(key: str, event: DeliveryEvent) -> None:
        if event.step is failing_step and not refused:
            refused.append(event.step)
            raise ConnectionError("broker unavailable")
        published.append((key, event))

    delivery = _delivery(store, webhook_receiver, published, publish)
    with pytest.raises(ConnectionError):
        await delivery.handle(alert)
    await delivery.handle(alert)  # the consumer redelivers the uncommitted alert
    assert len(webhook_receiver.pages) == 1
    assert refused == [failing_step]
    steps = [row.step for row in await store.audit_trail(alert.alert_id)]
    assert steps.count("delivered") == 1


def test_a_withdrawal_page_says_so() -> None:
    alert = _alert()
    withdrawal = PlateletAlert.model_validate(
        {
            **alert.model_dump(),
            "kind": "withdrawn",
            "value_10e9_per_l": None,
            "withdraws_alert_id": alert.alert_id,
            "withdrawal_reason": "result corrected to 140",
        }
    )
    page = render_page(withdrawal)
    assert page.summary.startswith("WITHDRAWN platelet alert")
    assert "result corrected to 140" in page.summary


async def test_an_evidence_update_of_the_same_alert_does_not_page_again(
    store, webhook_receiver
) -> None:
    """The classifier re-emits an alert whose evidence changed under the same alert_id."""
    alert = _alert()
    updated = PlateletAlert.model_validate(
        {**alert.model_dump(), "event_id": "another-event", "value_10e9_per_l": 7}
    )
    delivery = _delivery(store, webhook_receiver, [])
    await delivery.handle(alert)
    await delivery.handle(updated)
    assert len(webhook_receiver.pages) == 1


async def test_a_signed_webhook_can_be_checked_by_its_receiver(store, webhook_receiver) -> None:
    secret = b"shared-with-the-receiver"
    delivery = AlertDelivery(
        store,
        {"webhook": WebhookChannel(timeout_seconds=5, secret=secret)},
        RetryPolicy(attempts=1, base_seconds=0.01),
        _ignore,
    )
    alert = _alert()
    before = int(time.time())
    await _Pager(delivery, webhook_receiver.url).handle(alert)
    (page,) = webhook_receiver.pages
    header = page.headers["X-PlateletWatch-Signature"]
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert before <= timestamp <= time.time()
    assert header == signature(secret, timestamp, page.raw)
    assert header != signature(b"another-secret", timestamp, page.raw)


async def _ignore(key: str, event: DeliveryEvent) -> None:
    pass


def test_a_refractory_page_shows_the_trend_and_what_was_tried() -> None:
    _, alerts = feed(
        result(25, days=-1),  # the baseline
        treatment(TreatmentCategory.CORTICOSTEROID, 0, "prednisolone"),
        treatment(TreatmentCategory.IVIG, 1, "IVIG"),
        result(18, days=7),
        result(21, days=8),
    )
    (refractory,) = [a for batch in alerts for a in batch if a.kind.value == "refractory"]
    line = render_page(refractory).line
    assert line.startswith("Refractory thrombocytopenia: 21 x10^9/L")
    assert "; trend 25 -> 18 -> 21" in line  # the baseline, then the values in evidence
    assert "; after prednisolone, IVIG" in line


def test_a_critical_page_shows_the_fall_into_it() -> None:
    _, alerts = feed(
        result(210, days=-40),  # more than 30 days before: not part of the trend
        result(150, days=-20),
        result(60, days=-2),
        result(35, days=-1),
        result(12),
    )
    (critical,) = alerts[-1]
    assert [r.count.value_10e9_per_l for r in critical.evidence.preceding if r.count] == [
        150,
        60,
        35,
    ]
    assert [r.result_id for r in critical.evidence.results] == ["R@0"]  # evidence unchanged
    assert "; trend 150 -> 60 -> 35 -> 12" in render_page(critical).line
