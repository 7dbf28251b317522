"""Derived against sent: what the scans warrant now is compared with the alerts already sent,
and the alerts to publish are built (with their evidence, the treatments on record and the lab's
own panic flags). Pure. The package's docstring says what is sent, re-sent, superseded and
withdrawn, and why.
"""

from dataclasses import replace
from datetime import datetime, timedelta
from functools import lru_cache

from schemas import (
    AlertKind,
    Coding,
    Correction,
    Evidence,
    EvidenceResult,
    MedicationEvent,
    Patient,
    PlateletAlert,
    PlateletCount,
    ProcedureEvent,
    ResultStatus,
    RuleRef,
    TransfusionEvent,
    stable_event_id,
)
from services.classifier.engine.history import History, Raised, Sent, treatment_start
from services.classifier.engine.scans import Wanted
from services.classifier.engine.values import Value
from services.classifier.rules import Rules, is_below

_RETRACTION_WORDS = {
    ResultStatus.ENTERED_IN_ERROR: "was entered in error and deleted",
    ResultStatus.WRONG_PATIENT: "was posted to the wrong patient",
}
_PANIC_FLAGS = frozenset({"LL", "AA", "<"})  # HL7 table 0078: below the lab's panic limit
# An alert and its evidence validated from fields, nested models as dicts, in one call each:
# what PlateletAlert(...) does, without BaseModel.__init__ around every model (a third of the
# cost of the evidence, which a repeated alert of a low patient rebuilds at each count).
_platelet_alert = PlateletAlert.__pydantic_validator__.validate_python
_evidence_result_of = EvidenceResult.__pydantic_validator__.validate_python


def reconcile(
    history: History,
    patient: Patient,
    wanted: dict[str, Wanted],
    rules: Rules,
    now: datetime,
    corrections: dict[str, Correction],
    *,
    complete: bool,
) -> list[PlateletAlert]:
    """Compare what the rules derive (`wanted`) with what was sent: send what is new, re-send
    under the same id what has new evidence, supersede persistent_severe by refractory; when
    `wanted` is the complete set, withdraw what is no longer derived only if one of
    `corrections` touched its evidence. Alerts name the patient as the event causing them does:
    demographics corrected since earlier results are the ones to page with."""
    alerts: list[PlateletAlert] = []
    claimed = {alert_id for alert_id in wanted if alert_id in history.raised}
    for want in wanted.values():
        raised = history.raised.get(want.alert_id)
        if raised is None:
            raised = _same_alert(history, want, claimed)
            if raised is not None:  # its run or streak starts elsewhere now: the same alert
                claimed.add(raised.alert_id)
                want = replace(want, alert_id=raised.alert_id)
        key = tuple(v.event_id for v in want.evidence)
        results = tuple(v.result_id for v in want.evidence)
        supersedes = None
        if raised is not None:
            if raised.state is Sent.SUPERSEDED or (
                raised.state is Sent.ACTIVE and raised.evidence_key == key
            ):
                continue
        elif want.kind is AlertKind.REFRACTORY:
            supersedes = _supersede(history)
        history.raised[want.alert_id] = Raised(
            want.alert_id, want.kind, want.evidence[0].result_id, key, results
        )
        claimed.add(want.alert_id)
        alerts.append(_alert(history, patient, want, rules, now, key, supersedes))
    if not complete or not corrections:
        return alerts
    for raised in history.raised.values():
        if raised.state is not Sent.ACTIVE or raised.alert_id in claimed:
            continue
        wrong = [corrections[rid] for rid in raised.results if rid in corrections]
        if wrong:  # no longer derived because a value it rested on was wrong
            raised.state = Sent.WITHDRAWN
            alerts.append(_withdrawal(patient, raised, wrong[0], rules, now))
    return alerts


def _same_alert(history: History, want: Wanted, claimed: set[str]) -> Raised | None:
    """An alert already sent that `want` continues: same kind, sharing a value of its evidence
    (a run that a late earlier value now starts sooner, a course whose first dose was charted
    late, a streak that lost its first count), in whatever state it is."""
    results = {v.result_id for v in want.evidence}
    for raised in history.raised.values():
        if (
            raised.kind is want.kind
            and raised.alert_id not in claimed
            and not results.isdisjoint(raised.results)
        ):
            return raised
    return None


def _supersede(history: History) -> str | None:
    """Close the patient's open persistent_severe alerts as superseded by a refractory one;
    the newest of them is the one the refractory alert names."""
    newest = None
    for raised in history.raised.values():
        if raised.kind is AlertKind.PERSISTENT_SEVERE and raised.state is Sent.ACTIVE:
            raised.state = Sent.SUPERSEDED
            newest = raised.alert_id
    return newest


def _preceding(history: History, first: Value) -> tuple[Value, ...]:
    """The patient's last counts before the evidence, within 30 days: the trend into it."""
    before = first.at - timedelta(microseconds=1)  # times are held to the microsecond
    return tuple(history.values.in_order(first.at - timedelta(days=30), before, last=3))


def _on_record(
    history: History, want: Wanted, rules: Rules
) -> tuple[MedicationEvent | ProcedureEvent | TransfusionEvent, ...]:
    """Every treatment started within `treatments_shown_days` before the alert's first count
    (or still running then), up to its trigger, and the course it judges, oldest first."""
    since = want.evidence[0].at - timedelta(days=rules.treatments_shown_days)
    if want.course is not None:
        since = min(since, treatment_start(want.course))
    shown = []
    for treatment in history.treatments.values():
        start = treatment_start(treatment)
        ended = treatment.ended_at if isinstance(treatment, MedicationEvent) else None
        if start <= want.trigger.at and (start >= since or (ended is not None and ended >= since)):
            shown.append(treatment)
    return tuple(sorted(shown, key=lambda t: (treatment_start(t), t.event_id)))


@lru_cache(maxsize=256)
def _coding(system: str, code: str) -> Coding:
    """One Coding (frozen) per distinct code: evidence shows a handful, in every alert."""
    return Coding(system=system, code=code)


def _evidence_result(value: Value) -> EvidenceResult:
    result: EvidenceResult = _evidence_result_of(
        {
            "event_id": value.event_id,
            "result_id": value.result_id,
            "count": {
                "value_10e9_per_l": value.number,
                "comparator": value.comparator,
                "original_value": value.original_value,
                "original_unit": value.original_unit,
            },
            "status": value.status,
            "collected_at": value.at,
            "verified_at": value.verified_at,
            "code": _coding(*value.code) if value.code else None,
            "abnormal_flags": value.flags,
        }
    )
    return result


def _lab_panics(history: History, want: Wanted) -> str | None:
    """The lab's own panic flags (LL, AA, <) on counts our limit did not find critical, in the
    week up to the alert: a note for the hematologist, who may know the lab's reasons."""
    if not history.values.any_flagged(_PANIC_FLAGS):
        return None  # the common case: no count held has any of them
    since = want.trigger.at - timedelta(days=7)
    evidence = {v.result_id for v in want.evidence}
    flagged = [
        v
        for v in history.values.in_order(since, want.trigger.at)
        if _PANIC_FLAGS.intersection(v.flags)
        and v.result_id not in evidence
        and not is_below(v.number, v.comparator, want.limit)
    ]
    notes = [
        f"the lab flagged {_count_text(v.count)} collected {v.at.strftime('%Y-%m-%d %H:%M UTC')} "
        f"{'/'.join(sorted(_PANIC_FLAGS.intersection(v.flags)))}"
        for v in flagged
    ]
    return "; ".join(notes) or None


def _alert(
    history: History,
    patient: Patient,
    want: Wanted,
    rules: Rules,
    now: datetime,
    key: tuple[str, ...],
    supersedes: str | None,
) -> PlateletAlert:
    treatments = _on_record(history, want, rules)
    baseline = want.baseline
    alert: PlateletAlert = _platelet_alert(
        {
            "event_id": stable_event_id("alert-event", want.alert_id, *key),
            "alert_id": want.alert_id,
            "kind": want.kind,
            "patient": patient,
            "population": want.trigger.population,
            "location": history.location,
            "value_10e9_per_l": want.trigger.number,
            "result_verified_at": want.trigger.verified_at,
            "evidence": {
                "results": tuple(_evidence_result(v) for v in want.evidence),
                "treatments": treatments,
                "first_line_on_record": any(rules.line_of(t) == "first" for t in treatments),
                "limit_10e9_per_l": want.limit,
                "baseline_10e9_per_l": baseline.number if baseline is not None else None,
                "baseline_collected_at": baseline.at if baseline is not None else None,
                "note": "; ".join(n for n in (want.note, _lab_panics(history, want)) if n) or None,
                "preceding": tuple(
                    _evidence_result(v) for v in _preceding(history, want.evidence[0])
                ),
            },
            "rule": {
                "id": want.kind.value,
                "version": rules.version,
                "overrides": rules.overrides,
                "thresholds": rules.thresholds(want.trigger.population),
            },
            "raised_at": now,
            "supersedes_alert_id": supersedes,
        }
    )
    return alert


def _count_text(count: PlateletCount) -> str:
    return f"{count.comparator or ''}{count.value_10e9_per_l:g} x10^9/L"


def _withdrawal(
    patient: Patient, raised: Raised, wrong: Correction, rules: Rules, now: datetime
) -> PlateletAlert:
    collected = wrong.collected_at.strftime("%Y-%m-%d %H:%M UTC")
    if wrong.now is None:
        became = _RETRACTION_WORDS.get(wrong.status, "was withdrawn by the lab")
    else:
        became = f"was {wrong.status.value} to {_count_text(wrong.now)}"
    because = f"the count of {_count_text(wrong.was)} collected {collected} {became}"
    return PlateletAlert(
        event_id=stable_event_id("alert-event", raised.alert_id, "withdrawn", *raised.evidence_key),
        alert_id=stable_event_id("withdrawal", raised.alert_id),
        kind=AlertKind.WITHDRAWN,
        patient=patient,
        evidence=Evidence(note=f"withdraws {raised.kind.value} alert {raised.alert_id}"),
        rule=RuleRef(id=raised.kind.value, version=rules.version, overrides=rules.overrides),
        raised_at=now,
        withdraws_alert_id=raised.alert_id,
        withdrawal_reason=because,
        correction=wrong,
    )
