"""One patient's history as the classifier keeps it, and its (de)serialisation. Pure.

The history holds the platelet counts by collection time (each with its arrival order), the
treatments and diagnoses on record and the alerts already sent. It is bounded: values and
treatments beyond the rules' horizon, or beyond VALUES_KEPT and TREATMENTS_KEPT, are forgotten
oldest first, and `shrink` gives up the older half when a record no longer fits its changelog.
`History.from_json` reads every form written before (issues 13 and 14); a stored context event
that no longer validates is left out rather than failing the patient.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from schemas import (
    AlertKind,
    ClinicalContextEvent,
    Correction,
    DiagnosisEvent,
    LabResult,
    ProcedureEvent,
    ResultStatus,
    TreatmentEvent,
    clinical_context_adapter,
)
from services.classifier.engine.values import JSON_ENCODER, Value, Values, json_text
from services.classifier.rules import Rules, population_at

if TYPE_CHECKING:
    from services.classifier.engine.scans import Scans

COUNTING = frozenset({ResultStatus.FINAL, ResultStatus.CORRECTED, ResultStatus.AMENDED})
_RETRACTING = frozenset({ResultStatus.ENTERED_IN_ERROR, ResultStatus.WRONG_PATIENT})
SEEN_EVENTS_KEPT = 1000
# Beyond the horizon, a bound on what one patient's history holds (a count every hour, or a
# flood of treatments, must not outgrow a changelog record): the oldest go first, in batches
# of a tenth so that the one-step path is left only once per batch.
VALUES_KEPT = 500
TREATMENTS_KEPT = 100
DIAGNOSES_KEPT = 50


class Sent(StrEnum):
    """Where an alert already sent stands."""

    ACTIVE = "active"
    WITHDRAWN = "withdrawn"  # a value it rested on was wrong: everyone paged was told
    SUPERSEDED = "superseded"  # a refractory alert took over: closed, never withdrawn


@dataclass(slots=True)
class Raised:
    """An alert sent: its identity, the events and results its evidence held when last sent."""

    alert_id: str
    kind: AlertKind
    anchor_result_id: str
    evidence_key: tuple[str, ...]  # event ids: a change re-sends the alert
    results: tuple[str, ...]  # result ids: only a correction of one of these withdraws it
    state: Sent = Sent.ACTIVE
    # Its JSON as last written, and in which state: only `state` ever changes. Not stored.
    written: tuple[Sent, str] | None = field(default=None, compare=False, repr=False)

    def row_json(self) -> str:
        """Its row of the changelog record's "raised", as JSON_ENCODER writes it."""
        if self.written is None or self.written[0] is not self.state:
            text = (
                f"[{json_text(self.alert_id)},{json_text(self.kind.value)},"
                f"{json_text(self.anchor_result_id)},{_json_list(self.evidence_key)},"
                f"{json_text(self.state.value)},{_json_list(self.results)}]"
            )
            self.written = (self.state, text)
        return self.written[1]


@dataclass(slots=True)
class History:
    """What the classifier keeps per patient; bounded by the rules' horizon."""

    patient_key: str = ""  # the patient's identifier key, part of every alert id
    location: str | None = None  # the ward or unit last reported, for routing pages
    values: Values = field(default_factory=Values)  # by result id
    treatments: dict[str, TreatmentEvent] = field(default_factory=dict)
    diagnoses: dict[str, DiagnosisEvent] = field(default_factory=dict)  # on record, by id
    raised: dict[str, Raised] = field(default_factory=dict)
    seen: dict[str, None] | None = None  # applied, no value held; oldest first; mostly none
    seq: int = 0
    suppressed_repeats: int = 0
    late_values: int = 0
    scans: "Scans | None" = None  # derived, not stored: rebuilt by the next full evaluation
    # Each treatment's and diagnosis's JSON as last encoded, by event id, with the event it is
    # of (events are replaced, never changed): see `encoded`. Not stored.
    context_json: dict[str, tuple[ClinicalContextEvent, str]] | None = field(
        default=None, compare=False, repr=False
    )

    def has_applied(self, event: LabResult | ClinicalContextEvent) -> bool:
        """An event applied before: its id is remembered, or it is the source of a value held
        (values carry their event id, so the common case costs no extra entry)."""
        if self.seen is not None and event.event_id in self.seen:
            return True
        if isinstance(event, LabResult):
            return self.values.event_id_of(event.result_id) == event.event_id
        return False

    def is_new(self) -> bool:
        """Nothing applied yet: no count ever held, nothing else on record."""
        return self.seq == 0 and not (
            self.values or self.treatments or self.diagnoses or self.raised or self.seen
        )

    def remember(self, event_id: str) -> None:
        """Remember an applied event that leaves no value of its own, within a bound."""
        if self.seen is None:
            self.seen = {}
        self.seen[event_id] = None
        if len(self.seen) > SEEN_EVENTS_KEPT:
            del self.seen[next(iter(self.seen))]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form for the patient's changelog record."""
        return {
            "patient_key": self.patient_key,
            "location": self.location,
            "values": self.values.to_json(),
            "treatments": [t.model_dump(mode="json") for t in self.treatments.values()],
            "diagnoses": [d.model_dump(mode="json") for d in self.diagnoses.values()],
            "raised": self._raised_json(),
            "seen": list(self.seen or ()),
            "seq": self.seq,
            "suppressed_repeats": self.suppressed_repeats,
            "late_values": self.late_values,
        }

    def encoded(self) -> str:
        """`to_json` as JSON_ENCODER writes it, in the same text, without encoding again what
        was encoded before: the values held (see Values.encoded), and each treatment and
        diagnosis, made into JSON once while it stays on record."""
        known, kept = self.context_json or {}, {}

        def json_of(event: ClinicalContextEvent) -> str:
            cached = known.get(event.event_id)
            if cached is None or cached[0] is not event:  # new, or another event under its id
                cached = (event, JSON_ENCODER.encode(event.model_dump(mode="json")))
            kept[event.event_id] = cached
            return cached[1]

        treatments = ",".join(map(json_of, self.treatments.values()))
        diagnoses = ",".join(map(json_of, self.diagnoses.values()))
        self.context_json = kept or None  # what left the record is not kept
        raised = ",".join([r.row_json() for r in self.raised.values()])
        location = "null" if self.location is None else json_text(self.location)
        return (
            f'{{"patient_key":{json_text(self.patient_key)},"location":{location},'
            f'"values":[{self.values.encoded()}],"treatments":[{treatments}],'
            f'"diagnoses":[{diagnoses}],"raised":[{raised}],"seen":{_json_list(self.seen or ())},'
            f'"seq":{self.seq},"suppressed_repeats":{self.suppressed_repeats},'
            f'"late_values":{self.late_values}}}'
        )

    def _raised_json(self) -> list[list[Any]]:
        return [
            [
                r.alert_id,
                r.kind.value,
                r.anchor_result_id,
                list(r.evidence_key),
                r.state.value,
                list(r.results),
            ]
            for r in self.raised.values()
        ]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "History":
        history = cls(
            patient_key=data["patient_key"],
            location=data.get("location"),
            seen=dict.fromkeys(data["seen"]) or None,
            seq=data["seq"],
            suppressed_repeats=data["suppressed_repeats"],
            late_values=data["late_values"],
        )
        for raw in data["values"]:
            value = Value.from_json(raw)
            history.values[value.result_id] = value  # a result id written twice: the last counts
        for raw in (*data["treatments"], *data.get("diagnoses", ())):
            try:
                context = clinical_context_adapter.validate_python(raw)
            except ValidationError:
                continue  # stored before ingest bounded it (a time in 2206): left out, not fatal
            if isinstance(context, DiagnosisEvent):
                history.diagnoses[context.diagnosis_id] = context
            else:
                history.treatments[context.event_id] = context
        for alert_id, kind, anchor, key, state, *results in data["raised"]:
            # Written before issue 13: a withdrawn flag, and the anchor as the only result known.
            if isinstance(state, bool):
                state = Sent.WITHDRAWN if state else Sent.ACTIVE
            held = tuple(results[0]) if results else (anchor,)
            history.raised[alert_id] = Raised(
                alert_id, AlertKind(kind), anchor, tuple(key), held, Sent(state)
            )
        return history


def _json_list(texts: Iterable[str]) -> str:
    return f"[{','.join(map(json_text, texts))}]"


def treatment_start(treatment: TreatmentEvent) -> datetime:
    return treatment.performed_at if isinstance(treatment, ProcedureEvent) else treatment.started_at


def record_result(history: History, result: LabResult, rules: Rules) -> dict[str, Correction]:
    """Put a result in the history; return, by result id, the values it corrected or removed.

    A correction takes the place of the value it corrects in arrival order too: correcting
    yesterday's count does not make it a late value."""
    replaced = {result.result_id}
    if result.replaces_result_id:
        replaced.add(result.replaces_result_id)
    previous = [history.values.pop(rid) for rid in replaced if rid in history.values]
    for old in previous:
        history.remember(old.event_id)
    population = population_at(result.patient.birth_date, result.collected_at)
    counting = result.status in COUNTING or (
        result.status is ResultStatus.PRELIMINARY
        and rules.populations[population].critical_low.page_preliminary
    )
    if result.count is not None and counting:
        if previous:
            seq = min(old.seq for old in previous)
        else:
            history.seq += 1
            seq = history.seq
        history.values[result.result_id] = Value.of(result, result.count, seq, population)
    elif previous and result.status not in _RETRACTING:
        history.values[result.result_id] = previous[0]  # a non-counting update keeps the value
        return {}
    now = None if result.status in _RETRACTING else result.count
    return {
        old.result_id: Correction(
            result_id=old.result_id,
            collected_at=old.at,
            status=result.status,
            was=old.count,
            now=now,
        )
        for old in previous
    }


def record_treatment(history: History, treatment: TreatmentEvent) -> None:
    """Put a treatment in the history, in place of an earlier record of it (same treatment_id);
    one the sender withdrew (entered in error, not done) only takes the earlier one out. Alerts
    already sent on it stand: a withdrawal is for a count that was wrong."""
    if treatment.treatment_id is not None:
        for event_id in [
            e for e, t in history.treatments.items() if t.treatment_id == treatment.treatment_id
        ]:
            del history.treatments[event_id]
    if treatment.on_record:
        history.treatments[treatment.event_id] = treatment


def forget_beyond_horizon(history: History, rules: Rules) -> None:
    """Forget values and treatments older than the horizon before the newest value, and the
    oldest beyond VALUES_KEPT and TREATMENTS_KEPT. In batches: only once the oldest is past the
    horizon by a tenth more (or the history a tenth fuller than kept), so that a patient followed
    for long does not leave the one-step path at every value."""
    if len(history.values) > VALUES_KEPT:
        _forget_values(history, set(history.values.by_age()[: -VALUES_KEPT * 9 // 10]))
    if len(history.treatments) > TREATMENTS_KEPT:
        by_start = sorted(history.treatments.values(), key=treatment_start)
        for treatment in by_start[: -TREATMENTS_KEPT * 9 // 10]:
            del history.treatments[treatment.event_id]
    newest = history.values.newest()
    if newest is None:
        return
    oldest = oldest_time(history)
    if oldest is None or newest <= forgetting_due_after(oldest, rules):
        return
    cutoff = newest - timedelta(days=rules.horizon_days)
    _forget_values(history, history.values.collected_before(cutoff))
    for event_id in [e for e, t in history.treatments.items() if treatment_start(t) < cutoff]:
        del history.treatments[event_id]


def shrink(history: History) -> bool:
    """Forget the older half of the values (and the alerts resting on them), of the treatments
    and of the remembered event ids: what a history that no longer fits its changelog record
    gives up, oldest first, rather than the patient being set aside. False once nothing is left
    to forget. The next event takes the full path."""
    if not (history.values or history.treatments or history.seen):
        return False
    by_age = history.values.by_age()
    _forget_values(history, set(by_age[: (len(by_age) + 1) // 2]))
    by_start = sorted(history.treatments.values(), key=treatment_start)
    for treatment in by_start[: (len(by_start) + 1) // 2]:
        del history.treatments[treatment.event_id]
    if history.seen:
        kept = list(history.seen)[len(history.seen) // 2 :]
        history.seen = dict.fromkeys(kept) or None
    history.scans = None
    return True


def _forget_values(history: History, expired: set[str]) -> None:
    history.values.remove(expired)
    for alert_id in [a for a, r in history.raised.items() if r.anchor_result_id in expired]:
        del history.raised[alert_id]  # expired with its evidence: not a withdrawal


def oldest_time(history: History) -> datetime | None:
    times = [treatment_start(t) for t in history.treatments.values()]
    oldest = history.values.oldest()
    if oldest is not None:
        times.append(oldest)
    return min(times, default=None)


def forgetting_due_after(oldest: datetime, rules: Rules) -> datetime:
    return oldest + timedelta(days=rules.horizon_days * 1.1)
