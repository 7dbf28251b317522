"""Hand-built PlateletAlert events for the notifier's tests: what the classifier emits, without
running it (its rules change on their own schedule; the notifier's text must not follow them)."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import (
    AlertKind,
    Correction,
    Evidence,
    EvidenceResult,
    MedicationEvent,
    Patient,
    PatientIdentifier,
    PlateletAlert,
    PlateletCount,
    ProcedureEvent,
    ResultStatus,
    RuleRef,
    TransfusionEvent,
    TreatmentCategory,
)

# 28 Nov 2026 03:10 in Paris (+01:00): the night the on-call doctor reads the page.
NIGHT = datetime(2026, 11, 28, 2, 10, tzinfo=UTC)
DAY = timedelta(days=1)
PATIENT = Patient(
    identifier=PatientIdentifier(authority="HOSP", mrn="42"), birth_date=datetime(1970, 5, 1).date()
)


def count(value: float, at: datetime, result_id: str | None = None, **kw: Any) -> EvidenceResult:
    """One count as the evidence holds it; `result_id` defaults to one naming its time."""
    status = kw.pop("status", ResultStatus.FINAL)
    return EvidenceResult(
        event_id=f"event-{result_id or at.isoformat()}",
        result_id=result_id or f"R-{at:%m%d%H%M}",
        count=PlateletCount(
            value_10e9_per_l=value,
            original_value=kw.pop("original_value", f"{value:g}"),
            original_unit=kw.pop("original_unit", "10*9/L"),
            comparator=kw.pop("comparator", None),
        ),
        status=status,
        collected_at=at,
        verified_at=at + timedelta(minutes=40),
    )


def treatment(
    category: TreatmentCategory, name: str, at: datetime
) -> MedicationEvent | ProcedureEvent | TransfusionEvent:
    """A treatment on record from `at`: a splenectomy is a procedure, a platelet transfusion a
    transfusion, anything else a medication."""
    common: dict[str, Any] = {
        "event_id": f"treatment-{name}",
        "source": "json",
        "patient": PATIENT,
        "category": category,
        "name": name,
        "received_at": at,
    }
    if category is TreatmentCategory.SPLENECTOMY:
        return ProcedureEvent(**common, performed_at=at)
    if category is TreatmentCategory.PLATELET_TRANSFUSION:
        return TransfusionEvent(**common, started_at=at)
    return MedicationEvent(**common, started_at=at)


def alert(
    kind: AlertKind,
    results: Sequence[EvidenceResult],
    alert_id: str | None = None,
    patient: Patient = PATIENT,
    **fields: Any,
) -> PlateletAlert:
    """An alert of `kind` resting on `results` (the last one triggers it); `fields` are any
    other PlateletAlert fields, `evidence` fields given as `evidence={...}`."""
    evidence = Evidence(results=tuple(results), **fields.pop("evidence", {}))
    trigger = results[-1]
    return PlateletAlert(
        event_id=f"event-{alert_id or kind.value}",
        alert_id=alert_id or f"{kind.value}-alert",
        kind=kind,
        patient=patient,
        population=fields.pop("population", "adult"),
        location=fields.pop("location", None),
        value_10e9_per_l=trigger.count.value_10e9_per_l,
        result_verified_at=trigger.verified_at,
        evidence=evidence,
        rule=RuleRef(id=kind.value, version="2026.11"),
        raised_at=fields.pop("raised_at", trigger.verified_at or trigger.collected_at),
        **fields,
    )


def persistent_severe(alert_id: str = "persistent-alert", **fields: Any) -> PlateletAlert:
    """Counts < 30 from 21 to 28 Nov, no first-line therapy on record."""
    counts = [count(v, NIGHT - d * DAY) for v, d in ((25, 7), (22, 4), (18, 0))]
    evidence = {"limit_10e9_per_l": 30.0, "first_line_on_record": False} | fields.pop(
        "evidence", {}
    )
    return alert(AlertKind.PERSISTENT_SEVERE, counts, alert_id, evidence=evidence, **fields)


def refractory(
    alert_id: str = "refractory-alert", supersedes: str | None = None, **fields: Any
) -> PlateletAlert:
    """Two counts < 30 a week after prednisolone (from 14 Nov), baseline 25 on 13 Nov."""
    counts = [count(v, NIGHT - d * DAY) for v, d in ((19, 2), (12, 0))]
    evidence = {
        "limit_10e9_per_l": 30.0,
        "first_line_on_record": True,
        "baseline_10e9_per_l": 25.0,
        "baseline_collected_at": NIGHT - 15 * DAY,
        "treatments": (
            treatment(TreatmentCategory.CORTICOSTEROID, "prednisolone", NIGHT - 14 * DAY),
        ),
    } | fields.pop("evidence", {})
    return alert(
        AlertKind.REFRACTORY,
        counts,
        alert_id,
        evidence=evidence,
        supersedes_alert_id=supersedes,
        **fields,
    )


def withdrawal_of(
    withdrawn: PlateletAlert, correction: Correction | None, reason: str = "result corrected"
) -> PlateletAlert:
    """The classifier's withdrawal of `withdrawn`, saying what was wrong."""
    return PlateletAlert(
        event_id=f"withdrawal-event-{withdrawn.alert_id}",
        alert_id=f"withdrawal-of-{withdrawn.alert_id}",
        kind=AlertKind.WITHDRAWN,
        patient=withdrawn.patient,
        population=withdrawn.population,
        location=withdrawn.location,
        evidence=withdrawn.evidence,
        rule=RuleRef(id=withdrawn.kind.value, version=withdrawn.rule.version),
        raised_at=withdrawn.raised_at + timedelta(minutes=30),
        withdraws_alert_id=withdrawn.alert_id,
        withdrawal_reason=reason,
        correction=correction,
    )
