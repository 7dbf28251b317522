"""Notifier delivery against a real loopback webhook receiver and a real store (SQLite and
PostgreSQL)."""

import asyncio
import contextlib
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.exc import IntegrityError

from schemas import (
    AlertKind,
    Coding,
    Correction,
    DeliveryEvent,
    DeliveryStep,
    Dose,
    PlateletAlert,
    PlateletCount,
    ResultStatus,
    TreatmentCategory,
)
from services.classifier.engine import History, apply
from services.classifier.rules import load_rules
from services.notifier.delivery.attempts import (
    AlertDelivery,
    PublishDelivery,
    Recipient,
    RetryPolicy,
)
from services.notifier.delivery.channels.webhook import WebhookChannel, signature
from services.notifier.delivery.channels.webhook_receiver import WebhookReceiver
from services.notifier.domain.message import render_message
from services.notifier.store.repository import CLAIM_LEASE, NotifierStore
from tests.alert_factory import (
    DAY,
    NIGHT,
    alert,
    count,
    persistent_severe,
    refractory,
    treatment,
    withdrawal_of,
)
from tests.test_engine import result

Published = list[tuple[str, DeliveryEvent]]


class _Pager:
    """Pages one webhook recipient, as the escalator does for each level."""

    def __init__(self, delivery: AlertDelivery, url: str) -> None:
        self.delivery = delivery
        self.recipient = Recipient("hematology-on-call", "webhook", url)

    async def handle(self, alert: PlateletAlert) -> bool:
        page = render_message(alert, zone=UTC)
        return await self.delivery.page(alert, page, self.recipient)


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


HOUR, MINUTE = timedelta(hours=1), timedelta(minutes=1)


def _alert() -> PlateletAlert:
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


async def test_replicas_starting_together_on_an_empty_database_all_start(
    notifier_database_url: str,
) -> None:
    """The first deployment starts every notifier replica at once on an empty database."""
    replicas = [NotifierStore(notifier_database_url) for _ in range(4)]
    try:
        # A TaskGroup, not gather: one failing start cancels and awaits the others, so none
        # is left migrating into the next test (Alembic's proxies are process-wide).
        async with asyncio.TaskGroup() as starting:
            for replica in replicas:
                starting.create_task(replica.start())
        assert await replicas[0].claim_page("a1", "webhook", "http://x", datetime.now(UTC))
    finally:
        for replica in replicas:
            await replica.stop()


async def test_a_replica_starting_while_another_migrates_sqlite_waits_for_it(
    tmp_path: Path,
) -> None:
    """SQLite answers a switch to write-ahead logging with "database is locked", without
    waiting, while another connection holds the write lock: a replica starting beside one that
    is migrating (BEGIN IMMEDIATE, as store/migrations does) still starts, once it may."""
    path = tmp_path / "notifier.sqlite3"
    migrating = sqlite3.connect(path, isolation_level=None)
    migrating.execute("CREATE TABLE another_replica_was_here (id INTEGER)")
    migrating.execute("BEGIN IMMEDIATE")
    replica = NotifierStore(f"sqlite+aiosqlite:///{path}")
    try:
        starting = asyncio.create_task(replica.start())
        await asyncio.sleep(0.3)  # the other replica's migration takes a while
        migrating.execute("COMMIT")
        await starting
        assert await replica.claim_page("a1", "webhook", "http://x", datetime.now(UTC))
    finally:
        migrating.close()
        await replica.stop()
    with contextlib.closing(sqlite3.connect(path)) as reopened:
        assert reopened.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # kept in the file


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


PARIS = ZoneInfo("Europe/Paris")
SPAN = "28 Nov 03:10 +01:00"  # NIGHT, as the on-call doctor in Paris reads it


def test_every_time_on_a_page_is_local_with_its_offset() -> None:
    critical = alert(
        AlertKind.CRITICAL_LOW, [count(45, NIGHT - 18 * HOUR - 10 * MINUTE), count(12, NIGHT)]
    )
    line = render_message(critical, zone=PARIS).line
    assert f"collected {SPAN}" in line
    assert "; trend 45 (27 Nov 09:00 +01:00) -> 12 (28 Nov 03:10 +01:00)" in line
    assert "2026-11-28" not in line
    assert "+00:00" not in line
    summer = alert(AlertKind.CRITICAL_LOW, [count(12, datetime(2026, 7, 1, 1, 5, tzinfo=UTC))])
    assert "collected 1 Jul 03:05 +02:00" in render_message(summer, zone=PARIS).line
    assert "collected 1 Jul 01:05 +00:00" in render_message(summer, zone=UTC).line


def test_a_critical_page_names_the_patients_population_and_ward() -> None:
    critical = alert(AlertKind.CRITICAL_LOW, [count(12, NIGHT)], location="HAEM-7")
    line = render_message(critical, zone=PARIS).line
    assert line.startswith(
        "CRITICAL LOW platelets: 12 x10^9/L (reported 12 10*9/L) for patient HOSP|42 "
        f"(adult, ward HAEM-7), collected {SPAN}"
    )
    nowhere = alert(AlertKind.CRITICAL_LOW, [count(12, NIGHT)], population="paediatric")
    assert "for patient HOSP|42 (paediatric), collected" in render_message(nowhere, zone=PARIS).line
    unknown = alert(AlertKind.CRITICAL_LOW, [count(12, NIGHT)], population=None)
    assert "for patient HOSP|42, collected" in render_message(unknown, zone=PARIS).line


def test_a_persistent_severe_page_says_how_low_for_how_long_not_persistent_itp() -> None:
    untreated = persistent_severe()
    line = render_message(untreated, zone=PARIS).line
    assert line.startswith("Platelets < 30 for 7 days, no first-line therapy on record: 18 x10^9/L")
    assert "Persistent" not in line
    assert "; trend 25 (21 Nov 03:10 +01:00) -> 22 (24 Nov 03:10 +01:00) -> 18 (28 Nov" in line
    transfused = persistent_severe(
        evidence={
            "treatments": (
                treatment(TreatmentCategory.PLATELET_TRANSFUSION, "platelets", NIGHT - 2 * DAY),
            )
        }
    )
    line = render_message(transfused, zone=PARIS).line
    assert ", no first-line therapy on record:" in line
    assert "; treatments on record: platelets on 26 Nov" in line


def test_persistent_severe_with_first_line_therapy_on_record_does_not_say_untreated() -> None:
    treated = persistent_severe(
        evidence={
            "first_line_on_record": True,
            "treatments": (
                treatment(TreatmentCategory.CORTICOSTEROID, "prednisolone", NIGHT - 3 * DAY),
            ),
        }
    )
    line = render_message(treated, zone=PARIS).line
    assert line.startswith("Platelets < 30 for 7 days: 18 x10^9/L")
    assert "no first-line" not in line
    assert "untreated" not in line
    assert "; treatments on record: prednisolone from 25 Nov" in line


def test_a_refractory_page_gives_the_baseline_and_the_therapy_dates() -> None:
    line = render_message(
        refractory(
            evidence={
                "treatments": (
                    treatment(TreatmentCategory.CORTICOSTEROID, "prednisolone", NIGHT - 14 * DAY),
                    treatment(TreatmentCategory.IVIG, "IVIG", NIGHT - 13 * DAY),
                    treatment(TreatmentCategory.IVIG, "IVIG", NIGHT - 12 * DAY),
                    treatment(TreatmentCategory.SPLENECTOMY, "splenectomy", NIGHT - 9 * DAY),
                )
            }
        ),
        zone=PARIS,
    ).line
    assert line.startswith("Refractory thrombocytopenia: 12 x10^9/L")
    assert "; baseline 25 (13 Nov 03:10 +01:00)" in line
    assert "; trend 19 (26 Nov 03:10 +01:00) -> 12 (28 Nov 03:10 +01:00)" in line
    assert (
        "; treatments on record: prednisolone from 14 Nov, IVIG from 15 Nov & 16 Nov, "
        "splenectomy on 19 Nov"
    ) in line


def test_a_long_trend_keeps_its_start_and_its_end() -> None:
    counts = [count(v, NIGHT - (7 - n) * DAY) for n, v in enumerate((90, 70, 50, 40, 30, 20, 12))]
    line = render_message(alert(AlertKind.CRITICAL_LOW, counts), zone=PARIS).line
    assert "; trend 90 (21 Nov 03:10 +01:00) -> ... -> 30 (" in line
    assert line.count(" -> ") == 4  # the first, then the last three


@pytest.mark.parametrize(
    ("status", "now", "said"),
    [
        (ResultStatus.CORRECTED, 140.0, "was corrected to 140 x10^9/L"),
        (ResultStatus.AMENDED, 95.0, "was amended to 95 x10^9/L"),
        (ResultStatus.ENTERED_IN_ERROR, None, "was entered in error and deleted"),
        (ResultStatus.WRONG_PATIENT, None, "was posted to the wrong patient"),
    ],
)
def test_a_withdrawal_says_which_count_was_wrong_and_what_it_became(
    status: ResultStatus, now: float | None, said: str
) -> None:
    paged = alert(AlertKind.CRITICAL_LOW, [count(12, NIGHT, result_id="LAB-INTERNAL-77")])
    was = paged.evidence.results[-1]
    correction = Correction(
        result_id=was.result_id,
        collected_at=was.collected_at,
        status=status,
        was=was.count,
        now=None
        if now is None
        else PlateletCount(value_10e9_per_l=now, original_value=f"{now:g}", original_unit="10*9/L"),
    )
    page = render_message(withdrawal_of(paged, correction), zone=PARIS)
    assert page.line == (
        "WITHDRAWN: the CRITICAL LOW platelets page for patient HOSP|42 was wrong: the count "
        f"of 12 x10^9/L collected {SPAN} {said}"
    )
    assert "LAB-INTERNAL-77" not in page.summary
    assert page.idempotency_key == page.alert_id == f"withdrawal-of-{paged.alert_id}"


def test_a_withdrawal_without_a_correction_gives_the_classifiers_reason() -> None:
    paged = persistent_severe()
    page = render_message(withdrawal_of(paged, None, "the evidence no longer holds"), zone=PARIS)
    assert page.line == (
        "WITHDRAWN: the Platelets < 30 for 7 days page for patient HOSP|42 was wrong: "
        "the evidence no longer holds"
    )


def test_a_page_names_the_route_and_dose_of_each_medication() -> None:
    """An antiemetic IV dexamethasone is still a systemic corticosteroid: the hematologist is
    told how and how much was given, to judge it."""
    given = treatment(TreatmentCategory.CORTICOSTEROID, "dexamethasone", NIGHT - 2 * DAY)
    given = given.model_copy(
        update={
            "route": Coding(system="http://snomed.info/sct", code="47625008", display="IV"),
            "dose": Dose(value=8, unit="mg"),
        }
    )
    line = render_message(
        alert(AlertKind.CRITICAL_LOW, [count(12, NIGHT)], evidence={"treatments": (given,)}),
        zone=PARIS,
    ).line
    assert "treatments on record: dexamethasone IV 8 mg from 26 Nov" in line


def test_a_smear_estimate_is_labelled_as_an_estimate() -> None:
    estimate = count(12, NIGHT).model_copy(
        update={"code": Coding(system="http://loinc.org", code="49497-1")}
    )
    line = render_message(alert(AlertKind.CRITICAL_LOW, [estimate]), zone=PARIS).line
    assert "12 x10^9/L (smear estimate; reported 12 10*9/L)" in line
    counted = render_message(alert(AlertKind.CRITICAL_LOW, [count(12, NIGHT)]), zone=PARIS).line
    assert "estimate" not in counted


async def test_a_failed_statement_names_none_of_its_values(store: NotifierStore) -> None:
    """Store errors are logged (a batch that failed, say): they must not carry the values, which
    hold alerts and their patients."""
    expires = datetime.now(UTC) + HOUR
    await store.open_session("s1", "HOSP|42", expires, datetime.now(UTC))
    with pytest.raises(IntegrityError) as failed:
        await store.open_session("s1", "HOSP|42", expires, datetime.now(UTC))
    assert "HOSP|42" not in str(failed.value)
