"""What a pager message says: one line a clinician can act on at 3 a.m., plus the full alert
for machines.

Pure. Every time is shown in the deployment's zone with its offset (the caller passes the zone);
the line names the patient's population and ward, the trend with its times, and every treatment
on record with its date. Nothing claims "untreated" or "no therapy" beyond what the evidence
says; a withdrawal says which count was wrong and what the lab made of it, never the lab's ids.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from schemas import (
    AckAction,
    AlertKind,
    Correction,
    Evidence,
    EvidenceResult,
    MedicationEvent,
    PlateletAlert,
    PlateletCount,
    ProcedureEvent,
    ResultStatus,
    TransfusionEvent,
)
from services.notifier.wall_clock import shown_at, shown_on

UNIT = "x10^9/L"
SMEAR_ESTIMATE = "49497-1"  # LOINC: platelets estimated on a blood smear
_NAMES = {
    AlertKind.CRITICAL_LOW: "CRITICAL LOW platelets",
    AlertKind.REFRACTORY: "Refractory thrombocytopenia",
}
TREND_POINTS = 5  # more are cut to the first and the last three: the line must fit a pager
_WRONG = {
    ResultStatus.ENTERED_IN_ERROR: "was entered in error and deleted",
    ResultStatus.WRONG_PATIENT: "was posted to the wrong patient",
}
_CHANGED = {ResultStatus.CORRECTED: "corrected", ResultStatus.AMENDED: "amended"}


@dataclass(frozen=True)
class Message:
    """A rendered pager message; `idempotency_key` (the alert_id) lets a receiver drop a resend.

    `line` says what happened; `summary` adds the acknowledge link, for one-line channels;
    `actions` are the signed links by action; `body` is the JSON a webhook receives."""

    idempotency_key: str
    alert_id: str
    kind: AlertKind
    withdraws_alert_id: str | None
    line: str
    summary: str
    actions: dict[str, str]
    body: dict[str, Any]


def kind_name(kind: AlertKind, evidence: Evidence) -> str:
    """What the alert is called: "CRITICAL LOW platelets", "Refractory thrombocytopenia", and
    for persistent-severe what it measured ("Platelets < 30 for 7 days"), never "persistent",
    which in ITP means 3 to 12 months (IWG)."""
    if kind is AlertKind.PERSISTENT_SEVERE:
        limit = evidence.limit_10e9_per_l
        low = f"Platelets < {limit:g}" if limit is not None else "Severe thrombocytopenia"
        days = _whole_days(evidence.results)
        return f"{low} for {days} day{'s' * (days != 1)}" if days else low
    return _NAMES.get(kind, "Platelet alert")


def headline(alert: PlateletAlert) -> str:
    """The start of the alert's line; a withdrawal is named for the alert it withdraws."""
    if alert.kind is AlertKind.WITHDRAWN:
        return f"WITHDRAWN: the {_withdrawn_name(alert)} page"
    name = kind_name(alert.kind, alert.evidence)
    if alert.kind is AlertKind.PERSISTENT_SEVERE and not alert.evidence.first_line_on_record:
        name += ", no first-line therapy on record"
    return name


def render_message(
    alert: PlateletAlert,
    actions: Mapping[AckAction, str] | None = None,
    why_you: str = "",
    *,
    zone: tzinfo,
) -> Message:
    """The pager message for an alert, its times in `zone`; `actions` are the signed links the
    recipient can act through; `why_you` tells a stand-in why the message came to them (a gap
    in the roster)."""
    patient = alert.patient.identifier.key
    if alert.kind is AlertKind.WITHDRAWN:
        line = f"{headline(alert)} for patient {patient} was wrong: {_what_was_wrong(alert, zone)}"
    else:
        who = ", ".join(
            part
            for part in (alert.population, f"ward {alert.location}" if alert.location else "")
            if part
        )
        collected = alert.evidence.results[-1].collected_at if alert.evidence.results else None
        line = (
            f"{headline(alert)}: {_value_text(alert)} for patient {patient}"
            + (f" ({who})" if who else "")
            + (f", collected {shown_at(collected, zone)}" if collected else "")
            + "".join(f"; {part}" for part in _context(alert.evidence, zone))
        )
    if why_you:
        line = f"[{why_you}] {line}"
    links = {action.value: url for action, url in (actions or {}).items()}
    ack = links.get(AckAction.ACKNOWLEDGE.value)
    summary = f"{line}. Acknowledge: {ack}" if ack else line
    return Message(
        idempotency_key=alert.alert_id,
        alert_id=alert.alert_id,
        kind=alert.kind,
        withdraws_alert_id=alert.withdraws_alert_id,
        line=line,
        summary=summary,
        actions=links,
        body={"summary": summary, "actions": links, "alert": alert.model_dump(mode="json")},
    )


def _value_text(alert: PlateletAlert) -> str:
    if not alert.evidence.results:
        return f"{alert.value_10e9_per_l:g} {UNIT}"
    result = alert.evidence.results[-1]
    trigger = result.count
    estimate = "smear estimate; " if _is_smear_estimate(result) else ""
    return (
        f"{_count(trigger)} ({estimate}reported {trigger.original_value} {trigger.original_unit})"
    )


def _is_smear_estimate(result: EvidenceResult) -> bool:
    """LOINC 49497-1, platelets estimated on a blood smear: weaker evidence than a count."""
    return result.code is not None and result.code.code == SMEAR_ESTIMATE


def _count(count: PlateletCount) -> str:
    return f"{count.comparator or ''}{count.value_10e9_per_l:g} {UNIT}"


def _context(evidence: Evidence, zone: tzinfo) -> list[str]:
    """The baseline, the trend of the counts with their times, and the treatments on record."""
    parts = []
    if evidence.baseline_10e9_per_l is not None:
        taken = evidence.baseline_collected_at
        when = f" ({shown_at(taken, zone)})" if taken is not None else ""
        parts.append(f"baseline {evidence.baseline_10e9_per_l:g}{when}")
    points = [*evidence.preceding, *evidence.results]
    if len(points) > 1:
        parts.append("trend " + _trend(points, zone))
    if evidence.treatments:
        parts.append("treatments on record: " + _treatments(evidence, zone))
    return parts


def _trend(points: Sequence[EvidenceResult], zone: tzinfo) -> str:
    said = [
        f"{p.count.comparator or ''}{p.count.value_10e9_per_l:g} ({shown_at(p.collected_at, zone)})"
        for p in points
    ]
    if len(said) > TREND_POINTS:
        said = [said[0], "...", *said[-3:]]
    return " -> ".join(said)


def _treatments(evidence: Evidence, zone: tzinfo) -> str:
    """Each treatment by name with its dates: "prednisolone from 14 Nov, IVIG from 15 Nov &
    16 Nov, splenectomy on 19 Nov" (a medication from its start, anything else on its day)."""
    dates: dict[tuple[str, str], list[str]] = {}
    for given in evidence.treatments:
        at = _when_given(given)
        verb = "from" if isinstance(given, MedicationEvent) else "on"
        days = dates.setdefault((_how_given(given), verb), [])
        if shown_on(at, zone) not in days:
            days.append(shown_on(at, zone))
    return ", ".join(f"{name} {verb} {' & '.join(days)}" for (name, verb), days in dates.items())


def _how_given(given: MedicationEvent | ProcedureEvent | TransfusionEvent) -> str:
    """The name, with the route and dose of a medication when known: "dexamethasone IV 8 mg"
    (an antiemetic dose is still a systemic corticosteroid; the hematologist judges it)."""
    parts = [given.name]
    if isinstance(given, MedicationEvent) and given.route is not None:
        parts.append(given.route.display or given.route.code)
    if isinstance(given, MedicationEvent | TransfusionEvent) and given.dose is not None:
        parts.append(f"{given.dose.value:g} {given.dose.unit}")
    return " ".join(parts)


def _when_given(given: MedicationEvent | ProcedureEvent | TransfusionEvent) -> datetime:
    return given.performed_at if isinstance(given, ProcedureEvent) else given.started_at


def _withdrawn_name(withdrawal: PlateletAlert) -> str:
    """The withdrawn alert's name: a withdrawal's rule id is the withdrawn alert's kind."""
    try:
        kind = AlertKind(withdrawal.rule.id)
    except ValueError:
        return "platelet alert"
    return kind_name(kind, withdrawal.evidence) if kind is not AlertKind.WITHDRAWN else "alert"


def _what_was_wrong(withdrawal: PlateletAlert, zone: tzinfo) -> str:
    """The count that was wrong and what the lab made of it; the classifier's reason when the
    withdrawal does not say."""
    correction: Correction | None = withdrawal.correction
    if correction is None:
        return withdrawal.withdrawal_reason or "its evidence no longer holds"
    if correction.status in _WRONG:
        became = _WRONG[correction.status]
    elif correction.now is not None:
        verb = _CHANGED.get(correction.status, "changed")
        became = f"was {verb} to {_count(correction.now)}"
    else:
        became = f"was marked {correction.status.value}"
    collected = shown_at(correction.collected_at, zone)
    return f"the count of {_count(correction.was)} collected {collected} {became}"


def _whole_days(results: Sequence[EvidenceResult]) -> int:
    """Whole days from the first count to the last."""
    if not results:
        return 0
    times = [r.collected_at for r in results]
    return (max(times) - min(times)).days
