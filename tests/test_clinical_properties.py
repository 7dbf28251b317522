"""Properties of the classifier's rules over random timelines of one patient (hypothesis).

(a) No alert is withdrawn unless the event withdrawing it corrected or removed a value in that
    alert's own evidence, as last sent.
(b) The offline replay (one live history) and the worker (each event decoded from the JSON Kafka
    carries, the history read back from its changelog record before each event) send the very
    same alerts.
(c) Permuting the arrival order of results with distinct collection times never withdraws a
    value that was never corrected.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    AlertKind,
    Coding,
    LabResult,
    MedicationEvent,
    PlateletAlert,
    PlateletCount,
    ProcedureEvent,
    ResultStatus,
    TransfusionEvent,
    TreatmentCategory,
    clinical_context_adapter,
    stable_event_id,
)
from services.classifier.engine import History, apply
from services.classifier.state import decode, encode
from services.config import Settings
from tests.test_engine import ADULT, RULES

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)
# Counts around every threshold the rules use: 20 (critical), 30, 50, 100, twice a baseline.
COUNTS = st.sampled_from([3, 8, 12, 15, 19, 20, 22, 25, 29, 30, 35, 45, 49, 50, 60, 90, 120, 200])
HOURS = st.integers(min_value=0, max_value=24 * 40)

LIMIT = Settings().classifier_state_limit_bytes

Event = LabResult | MedicationEvent | ProcedureEvent | TransfusionEvent


def count(value: float) -> PlateletCount:
    return PlateletCount(
        value_10e9_per_l=value, original_value=f"{value:g}", original_unit="10*9/L"
    )


def lab(result_id: str, value: float | None, hours: int, status: ResultStatus) -> LabResult:
    return LabResult(
        event_id=stable_event_id("prop", result_id, status, str(value), str(hours)),
        source="json",
        patient=ADULT,
        result_id=result_id,
        code=Coding(system="http://loinc.org", code="777-3"),
        count=None if value is None else count(value),
        status=status,
        collected_at=T0 + timedelta(hours=hours),
        verified_at=T0 + timedelta(hours=hours, minutes=40),
        received_at=T0 + timedelta(hours=hours, minutes=50),
    )


def therapy(category: TreatmentCategory, hours: int) -> Event:
    at = T0 + timedelta(hours=hours)
    common: dict[str, Any] = {
        "event_id": stable_event_id("prop-treatment", category, str(hours)),
        "source": "json",
        "patient": ADULT,
        "category": category,
        "name": category.value,
        "received_at": at,
    }
    if category is TreatmentCategory.SPLENECTOMY:
        return ProcedureEvent(performed_at=at, **common)
    if category is TreatmentCategory.PLATELET_TRANSFUSION:
        return TransfusionEvent(started_at=at, **common)
    return MedicationEvent(started_at=at, **common)


@st.composite
def timelines(draw: st.DrawFn, *, corrections: bool = True) -> list[Event]:
    """Results at distinct or shared times, in and out of order; corrections, deletions and
    wrong-patient marks of earlier results; treatments of every kind; resends."""
    events: list[Event] = []
    held: dict[str, int] = {}  # result id -> collection hour
    for step in range(draw(st.integers(min_value=1, max_value=30))):
        roll = draw(st.integers(min_value=0, max_value=99))
        if roll < 12:
            category = draw(st.sampled_from(list(TreatmentCategory)))
            events.append(therapy(category, draw(HOURS)))
        elif roll < 24 and held and corrections:
            rid = draw(st.sampled_from(sorted(held)))
            status = draw(
                st.sampled_from(
                    [
                        ResultStatus.CORRECTED,
                        ResultStatus.ENTERED_IN_ERROR,
                        ResultStatus.WRONG_PATIENT,
                    ]
                )
            )
            value = draw(COUNTS) if status is ResultStatus.CORRECTED else None
            events.append(lab(rid, value, held[rid], status))
        elif roll < 28 and events:
            events.append(draw(st.sampled_from(events)))  # resent
        else:
            rid = f"R{step}"
            held[rid] = draw(HOURS)
            events.append(lab(rid, draw(COUNTS), held[rid], ResultStatus.FINAL))
    return events


def replayed(events: list[Event]) -> list[list[PlateletAlert]]:
    history = History()
    return [list(apply(history, event, RULES, NOW)) for event in events]


def through_the_worker(events: list[Event]) -> list[list[PlateletAlert]]:
    """As services/classifier/worker.py does: decode the record, restore the patient from the
    changelog record written after the previous event, apply, encode."""
    stored: bytes | None = None
    out = []
    for event in events:
        wire = event.model_dump_json().encode()
        decoded: Event = (
            LabResult.model_validate_json(wire)
            if isinstance(event, LabResult)
            else clinical_context_adapter.validate_json(wire)
        )
        history = decode(stored) if stored is not None else History()
        out.append(list(apply(history, decoded, RULES, NOW)))
        stored = encode(history, LIMIT)
    return out


def corrected_in(event: Event) -> set[str]:
    if not isinstance(event, LabResult):
        return set()
    if event.status not in (
        ResultStatus.CORRECTED,
        ResultStatus.AMENDED,
        ResultStatus.ENTERED_IN_ERROR,
        ResultStatus.WRONG_PATIENT,
        ResultStatus.FINAL,  # a final result resent with the same id and a new count
    ):
        return set()
    return {event.result_id} | ({event.replaces_result_id} if event.replaces_result_id else set())


def assert_withdrawals_rest_on_corrections(
    events: list[Event], alerts: list[list[PlateletAlert]]
) -> None:
    evidence: dict[str, set[str]] = {}  # alert id -> result ids of its evidence, as last sent
    for event, batch in zip(events, alerts, strict=True):
        for alert in batch:
            if alert.kind is AlertKind.WITHDRAWN:
                withdrawn = alert.withdraws_alert_id or ""
                touched = corrected_in(event) & evidence[withdrawn]
                assert touched, f"{withdrawn} withdrawn by an event that corrected none of it"
                assert alert.correction is not None
                assert alert.correction.result_id in touched
            else:
                evidence[alert.alert_id] = {r.result_id for r in alert.evidence.results}


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(timelines())
def test_no_alert_is_withdrawn_unless_its_own_evidence_was_corrected(events: list[Event]) -> None:
    assert_withdrawals_rest_on_corrections(events, replayed(events))


@PROPERTY
@given(timelines())
def test_replay_and_the_worker_send_the_same_alerts(events: list[Event]) -> None:
    assert through_the_worker(events) == replayed(events)


@PROPERTY
@given(timelines(corrections=False), st.randoms(use_true_random=False), st.data())
def test_arrival_order_never_withdraws_a_value_never_corrected(
    events: list[Event], random: Any, data: st.DataObject
) -> None:
    results: dict[datetime, LabResult] = {}  # one result per collection time
    others: list[Event] = []
    for event in events:
        if isinstance(event, LabResult):
            results.setdefault(event.collected_at, event)
        else:
            others.append(event)
    shuffled: list[Event] = [*results.values(), *others]
    random.shuffle(shuffled)
    late_corrections = [
        lab(r.result_id, data.draw(COUNTS), int((r.collected_at - T0).total_seconds() // 3600),
            ResultStatus.CORRECTED)
        for r in data.draw(st.lists(st.sampled_from(list(results.values())), max_size=3))
    ] if results else []  # fmt: skip
    timeline = shuffled + late_corrections
    alerts = replayed(timeline)
    corrected = {c.result_id for c in late_corrections}
    for batch in alerts[: len(shuffled)]:
        assert not [a for a in batch if a.kind is AlertKind.WITHDRAWN]
    for batch in alerts[len(shuffled) :]:
        for alert in batch:
            if alert.kind is AlertKind.WITHDRAWN:
                assert alert.correction is not None
                assert alert.correction.result_id in corrected
    assert_withdrawals_rest_on_corrections(timeline, alerts)
