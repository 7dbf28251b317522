"""The classifier's engine: one patient's history in, the alerts it warrants out. Pure.

Every event updates the patient's history (values by collection time, treatments, alerts
raised). What the rules derive now is then compared with what was already sent:
- an alert derived and not sent pages;
- one sent and derived again with other evidence is re-sent under the same alert_id, which
  pages no one again (also when a run's start moved earlier: it keeps its id);
- a refractory alert takes over (supersedes) a persistent_severe one, which is closed quietly;
- one sent and no longer derived is withdrawn only when a value in its own evidence was
  corrected, deleted or posted to the wrong patient. A withdrawal tells everyone paged "that
  page was wrong"; anything else leaves the alert as it was.
Deriving from the history, not from arrival order, places late and corrected results where
they belong and makes the faust worker and the offline replay agree. Arrival order matters in
one place, as the clinical rules say: a late value (collected before a value already received)
never triggers an alert and changes no repeat-paging decision; it is evidence for the rest.
Every time is a UTC instant (the event contract holds them so), so windows are real time.
"""

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from schemas import (
    AlertKind,
    ClinicalContextEvent,
    Coding,
    Comparator,
    Correction,
    DiagnosisEvent,
    Evidence,
    EvidenceResult,
    LabResult,
    MedicationEvent,
    Patient,
    PlateletAlert,
    PlateletCount,
    Population,
    ProcedureEvent,
    ResultStatus,
    RuleRef,
    TransfusionEvent,
    TreatmentCategory,
    TreatmentEvent,
    clinical_context_adapter,
    stable_event_id,
)
from services.classifier.rules import (
    PopulationRules,
    Rules,
    adulthood,
    closes_critical_episode,
    is_at_or_above,
    is_below,
    is_critical_low,
    is_iwg_response,
    is_no_response,
    population_at,
    population_of,
)

_COUNTING = frozenset({ResultStatus.FINAL, ResultStatus.CORRECTED, ResultStatus.AMENDED})
_RETRACTING = frozenset({ResultStatus.ENTERED_IN_ERROR, ResultStatus.WRONG_PATIENT})
_RETRACTION_WORDS = {
    ResultStatus.ENTERED_IN_ERROR: "was entered in error and deleted",
    ResultStatus.WRONG_PATIENT: "was posted to the wrong patient",
}
_PANIC_FLAGS = frozenset({"LL", "AA", "<"})  # HL7 table 0078: below the lab's panic limit
SEEN_EVENTS_KEPT = 1000
# Beyond the horizon, a bound on what one patient's history holds (a count every hour, or a
# flood of treatments, must not outgrow a changelog record): the oldest go first, in batches
# of a tenth so that the one-step path is left only once per batch.
VALUES_KEPT = 500
TREATMENTS_KEPT = 100
DIAGNOSES_KEPT = 50


def _code_of(result: LabResult) -> tuple[str, str]:
    return _shared_code(result.code.system, result.code.code)


@lru_cache(maxsize=256)
def _shared_code(system: str, code: str) -> tuple[str, str]:
    """One tuple per distinct code (ingest passes platelet codes only: a handful), shared by
    every count that has it: a year of counts would otherwise hold one copy each."""
    return system, code


@dataclass(slots=True)
class Value:
    """One platelet count in the history, reduced to what rules and evidence need; `seq` is its
    arrival order for this patient, `population` the patient's age group at collection."""

    result_id: str
    event_id: str
    number: float  # 10^9/L; the count as reported is kept too, for the evidence
    comparator: Comparator | None
    original_value: str
    original_unit: str
    status: ResultStatus
    at: datetime
    verified_at: datetime | None
    seq: int
    population: Population
    code: tuple[str, str] | None = None  # (system, code): 49497-1 is a smear estimate
    flags: tuple[str, ...] = ()  # the lab's own (HL7 table 0078)

    @property
    def count(self) -> PlateletCount:
        return PlateletCount(
            value_10e9_per_l=self.number,
            comparator=self.comparator,
            original_value=self.original_value,
            original_unit=self.original_unit,
        )

    @classmethod
    def of(
        cls, result: LabResult, count: PlateletCount, seq: int, population: Population
    ) -> "Value":
        return cls(
            result.result_id,
            result.event_id,
            count.value_10e9_per_l,
            count.comparator,
            count.original_value,
            count.original_unit,
            result.status,
            result.collected_at,
            result.verified_at,
            seq,
            population,
            _code_of(result),
            result.abnormal_flags,
        )

    def to_json(self) -> list[Any]:
        return [
            self.result_id,
            self.event_id,
            self.number,
            self.comparator,
            self.original_value,
            self.original_unit,
            self.status.value,
            self.at.isoformat(),
            self.verified_at.isoformat() if self.verified_at else None,
            self.seq,
            self.population,
            list(self.code) if self.code else None,
            list(self.flags),
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> "Value":
        rid, eid, number, comparator, original, unit, status, at, verified, seq, population = data[
            :11
        ]
        code, flags = (data[11], data[12]) if len(data) > 11 else (None, ())  # before issue 14
        return cls(
            rid,
            eid,
            number,
            comparator,
            original,
            unit,
            ResultStatus(status),
            datetime.fromisoformat(at).astimezone(UTC),  # stored before times were held in UTC
            datetime.fromisoformat(verified).astimezone(UTC) if verified else None,
            seq,
            population,
            _shared_code(code[0], code[1]) if code else None,
            tuple(flags),
        )


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


@dataclass(slots=True)
class History:
    """What the classifier keeps per patient; bounded by the rules' horizon."""

    patient_key: str = ""  # the patient's identifier key, part of every alert id
    location: str | None = None  # the ward or unit last reported, for routing pages
    values: dict[str, Value] = field(default_factory=dict)
    treatments: dict[str, TreatmentEvent] = field(default_factory=dict)
    diagnoses: dict[str, DiagnosisEvent] = field(default_factory=dict)  # on record, by id
    raised: dict[str, Raised] = field(default_factory=dict)
    seen: dict[str, None] | None = None  # applied, no value held; oldest first; mostly none
    seq: int = 0
    suppressed_repeats: int = 0
    late_values: int = 0
    scans: "_Scans | None" = None  # derived, not stored: rebuilt by the next full evaluation

    def has_applied(self, event: LabResult | ClinicalContextEvent) -> bool:
        """An event applied before: its id is remembered, or it is the source of a value held
        (values carry their event id, so the common case costs no extra entry)."""
        if self.seen is not None and event.event_id in self.seen:
            return True
        if isinstance(event, LabResult):
            value = self.values.get(event.result_id)
            return value is not None and value.event_id == event.event_id
        return False

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
            "values": [v.to_json() for v in self.values.values()],
            "treatments": [t.model_dump(mode="json") for t in self.treatments.values()],
            "diagnoses": [d.model_dump(mode="json") for d in self.diagnoses.values()],
            "raised": [
                [
                    r.alert_id,
                    r.kind.value,
                    r.anchor_result_id,
                    list(r.evidence_key),
                    r.state.value,
                    list(r.results),
                ]
                for r in self.raised.values()
            ],
            "seen": list(self.seen or ()),
            "seq": self.seq,
            "suppressed_repeats": self.suppressed_repeats,
            "late_values": self.late_values,
        }

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
            history.values[value.result_id] = value
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


@dataclass(frozen=True, slots=True)
class _Wanted:
    """An alert the history warrants; `limit` is the rule's threshold the counts were below,
    `course` the therapy a refractory alert judges."""

    alert_id: str
    kind: AlertKind
    trigger: Value
    evidence: tuple[Value, ...]
    limit: float
    course: TreatmentEvent | None = None
    baseline: Value | None = None
    note: str | None = None


def treatment_start(treatment: TreatmentEvent) -> datetime:
    return treatment.performed_at if isinstance(treatment, ProcedureEvent) else treatment.started_at


def apply(
    history: History, event: LabResult | ClinicalContextEvent, rules: Rules, now: datetime
) -> Sequence[PlateletAlert]:
    """Add one event to the patient's history and return the alerts it causes (often none).

    Idempotent: an event already applied changes nothing and returns nothing.
    """
    scans = history.scans
    if (
        scans is not None
        and scans.rules is rules
        and isinstance(event, LabResult)
        and (history.seen is None or event.event_id not in history.seen)
    ):  # not applied before unless its value is held, which append_if_newest checks
        appended = scans.append_if_newest(history, event)
        if appended is not None:
            if event.location is not None:
                history.location = event.location
            new = scans.step(history, appended, late=False)
            if not new:
                return ()  # the common case: no list to allocate
            wanted = {w.alert_id: w for w in new}
            return _reconcile(history, event.patient, wanted, rules, now, {}, complete=False)
    if history.has_applied(event):
        return ()
    if isinstance(event, LabResult) and event.location is not None:
        history.location = event.location
    history.patient_key = event.patient.identifier.key  # the first event always comes here
    corrections: dict[str, Correction] = {}
    if isinstance(event, LabResult):
        corrections = _record_result(history, event, rules)
    elif isinstance(event, DiagnosisEvent):
        history.diagnoses.pop(event.diagnosis_id, None)
        if event.on_record:
            history.diagnoses[event.diagnosis_id] = event
            if len(history.diagnoses) > DIAGNOSES_KEPT:  # the longest known go first
                del history.diagnoses[next(iter(history.diagnoses))]
    else:
        _record_treatment(history, event)
    if not history.has_applied(event):
        history.remember(event.event_id)
    _forget_beyond_horizon(history, rules)
    ordered = sorted(history.values.values(), key=lambda v: (v.at, v.seq))
    history.scans = _Scans(history, rules, ordered)
    history.suppressed_repeats = history.scans.critical.suppressed
    history.late_values = history.scans.critical.late
    wanted = history.scans.wanted
    return _reconcile(history, event.patient, wanted, rules, now, corrections, complete=True)


def _record_result(history: History, result: LabResult, rules: Rules) -> dict[str, Correction]:
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
    counting = result.status in _COUNTING or (
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


def _record_treatment(history: History, treatment: TreatmentEvent) -> None:
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


def _forget_beyond_horizon(history: History, rules: Rules) -> None:
    """Forget values and treatments older than the horizon before the newest value, and the
    oldest beyond VALUES_KEPT and TREATMENTS_KEPT. In batches: only once the oldest is past the
    horizon by a tenth more (or the history a tenth fuller than kept), so that a patient followed
    for long does not leave the one-step path at every value."""
    if len(history.values) > VALUES_KEPT:
        by_age = sorted(history.values.values(), key=lambda v: (v.at, v.result_id))
        _forget_values(history, {v.result_id for v in by_age[: -VALUES_KEPT * 9 // 10]})
    if len(history.treatments) > TREATMENTS_KEPT:
        by_start = sorted(history.treatments.values(), key=treatment_start)
        for treatment in by_start[: -TREATMENTS_KEPT * 9 // 10]:
            del history.treatments[treatment.event_id]
    if not history.values:
        return
    newest = max(v.at for v in history.values.values())
    oldest = _oldest(history)
    if oldest is None or newest <= _forgetting_due_after(oldest, rules):
        return
    cutoff = newest - timedelta(days=rules.horizon_days)
    _forget_values(history, {rid for rid, v in history.values.items() if v.at < cutoff})
    for event_id in [e for e, t in history.treatments.items() if treatment_start(t) < cutoff]:
        del history.treatments[event_id]


def shrink(history: History) -> bool:
    """Forget the older half of the values (and the alerts resting on them), of the treatments
    and of the remembered event ids: what a history that no longer fits its changelog record
    gives up, oldest first, rather than the patient being set aside. False once nothing is left
    to forget. The next event takes the full path."""
    if not (history.values or history.treatments or history.seen):
        return False
    by_age = sorted(history.values.values(), key=lambda v: (v.at, v.result_id))
    _forget_values(history, {v.result_id for v in by_age[: (len(by_age) + 1) // 2]})
    by_start = sorted(history.treatments.values(), key=treatment_start)
    for treatment in by_start[: (len(by_start) + 1) // 2]:
        del history.treatments[treatment.event_id]
    if history.seen:
        kept = list(history.seen)[len(history.seen) // 2 :]
        history.seen = dict.fromkeys(kept) or None
    history.scans = None
    return True


def _forget_values(history: History, expired: set[str]) -> None:
    for rid in expired:
        del history.values[rid]
    for alert_id in [a for a, r in history.raised.items() if r.anchor_result_id in expired]:
        del history.raised[alert_id]  # expired with its evidence: not a withdrawal


def _oldest(history: History) -> datetime | None:
    times = [treatment_start(t) for t in history.treatments.values()]
    times += (v.at for v in history.values.values())
    return min(times, default=None)


def _forgetting_due_after(oldest: datetime, rules: Rules) -> datetime:
    return oldest + timedelta(days=rules.horizon_days * 1.1)


def _alert_id(history: History, kind: AlertKind, anchor: str) -> str:
    return stable_event_id("alert", history.patient_key, kind.value, anchor)


def _first_line(history: History, rules: Rules) -> list[TreatmentEvent]:
    """The first-line treatments on record, by start (the line as ingest's table or the site's
    override gives it)."""
    chosen = [t for t in history.treatments.values() if rules.line_of(t) == "first"]
    return sorted(chosen, key=treatment_start)


def _diagnosis_missing(history: History, rules: Rules) -> dict[Population, bool]:
    """Per population: whether its rules require a diagnosis the patient does not have on record
    (refractory and persistent_severe are then not derived)."""
    missing: dict[Population, bool] = {}
    for population, rule in rules.populations.items():
        required = rule.refractory.requires_diagnosis
        missing[population] = bool(required) and not any(
            wanted.matches(code.system, code.code)
            for diagnosis in history.diagnoses.values()
            for code in diagnosis.codes
            for wanted in required
        )
    return missing


def _late(ordered: list[Value]) -> set[str]:
    """Result ids of the late values: collected before a value that arrived ahead of them."""
    late: set[str] = set()
    earliest_arrival_after = None  # of the values collected after the group at hand
    end = len(ordered)
    while end:
        start = end - 1
        while start and ordered[start - 1].at == ordered[end - 1].at:
            start -= 1
        group = ordered[start:end]
        if earliest_arrival_after is not None:
            late.update(v.result_id for v in group if v.seq > earliest_arrival_after)
        first = min(v.seq for v in group)
        if earliest_arrival_after is None or first < earliest_arrival_after:
            earliest_arrival_after = first
        end = start
    return late


class _CriticalLowScan:
    """Page on a critical value; within the open episode, page again only on a further drop or
    after the repeat interval; every other repeat is counted as suppressed. A late value and a
    second tube collected at the same time as a paged one never page; late values neither
    open nor close an episode, so that they change no decision already made."""

    __slots__ = ("last_page", "late", "lowest", "suppressed")

    def __init__(self) -> None:
        self.lowest: float | None = None
        self.last_page: datetime | None = None
        self.suppressed = 0
        self.late = 0

    def step(
        self, history: History, value: Value, rule: PopulationRules, late: bool
    ) -> _Wanted | None:
        critical = rule.critical_low
        number, comparator = value.number, value.comparator
        if closes_critical_episode(number, comparator, critical):
            if not late:
                self.lowest = self.last_page = None
            return None
        if not is_critical_low(number, comparator, critical):
            return None
        if self.lowest is None or self.last_page is None:  # no open episode
            if late:
                self.late += 1
                return None
        elif (
            late
            or value.at == self.last_page
            or not (
                number <= self.lowest * (1 - critical.repage_drop_fraction)
                or value.at - self.last_page >= critical.repage_after
            )
        ):
            self.suppressed += 1
            return None
        self.lowest = number if self.lowest is None else min(self.lowest, number)
        self.last_page = value.at
        alert_id = _alert_id(history, AlertKind.CRITICAL_LOW, value.result_id)
        return _Wanted(alert_id, AlertKind.CRITICAL_LOW, value, (value,), critical.below)


@dataclass(frozen=True, slots=True)
class _Course:
    """What refractoriness is judged against: a first-line course (doses less than
    `new_course_after_days` apart) or a splenectomy. `event` is its first treatment: it names
    the course and anchors the alert's id."""

    event: TreatmentEvent
    start: datetime
    assess_from: datetime
    splenectomy: bool


def _courses(history: History, first_line: list[TreatmentEvent], rules: Rules) -> list[_Course]:
    """The courses on record, by start: `first_line` (by start) grouped, and splenectomies."""
    courses: list[_Course] = []
    last_dose: datetime | None = None
    for dose in first_line:
        start = treatment_start(dose)
        refractory = _rule_at(dose, rules).refractory
        if last_dose is None or start - last_dose >= timedelta(
            days=refractory.new_course_after_days
        ):
            courses.append(_Course(dose, start, start + refractory.assess_after, False))
        ended = dose.ended_at if isinstance(dose, MedicationEvent) else None
        last_dose = max(last_dose or start, ended or start)
    for operation in history.treatments.values():
        if operation.category is TreatmentCategory.SPLENECTOMY:
            start = treatment_start(operation)
            after = _rule_at(operation, rules).refractory.assess_after_splenectomy
            courses.append(_Course(operation, start, start + after, True))
    courses.sort(key=lambda c: (c.start, c.event.event_id))
    return courses


def _rule_at(treatment: TreatmentEvent, rules: Rules) -> PopulationRules:
    return rules.populations[
        population_at(treatment.patient.birth_date, treatment_start(treatment))
    ]


class _RefractoryScan:
    """IWG "no response", per course: from `assess_from`, `min_values` non-responding counts
    `min_gap_days` apart with no response between raise one alert for the course. A response
    (IWG) at any time after the course started ends its assessment: a later fall without a new
    course is loss of response, not refractoriness. A count within `post_transfusion_hours` of
    a platelet transfusion measures the transfused platelets: never a response, still a
    non-response when low. The baseline is the last count at or before the course started."""

    __slots__ = ("baseline", "course", "courses", "ended", "last", "raised", "streak", "transfused")

    def __init__(self, courses: list[_Course], transfused: list[datetime]) -> None:
        self.courses = courses  # the ones not yet started, by start
        self.transfused = transfused  # platelet transfusions, by start
        self.course: _Course | None = None
        self.last: Value | None = None
        self.baseline: Value | None = None
        self.streak: list[Value] = []
        self.ended = False
        self.raised = False

    def step(
        self, history: History, value: Value, rule: PopulationRules, rules: Rules, late: bool
    ) -> _Wanted | None:
        while self.courses and self.courses[0].start < value.at:
            self.course = self.courses.pop(0)
            self.baseline, self.streak, self.ended, self.raised = self.last, [], False, False
        self.last = value
        course = self.course
        if course is None or self.ended:
            return None
        refractory = rule.refractory
        number, comparator = value.number, value.comparator
        baseline = self.baseline.number if self.baseline is not None else None
        transfused = self._transfused_before(value.at, refractory.post_transfusion)
        if not transfused and is_iwg_response(number, comparator, baseline, refractory):
            self.ended, self.streak = True, []
            return None
        if value.at < course.assess_from:
            return None
        if not is_no_response(number, comparator, baseline, refractory):
            if not transfused:
                self.streak = []  # neither a response nor severe: not "persistently" low
            return None
        self.streak.append(value)
        if self.raised or late:  # a late value is evidence, never the trigger
            return None
        if len(self.streak) < refractory.min_values or value.at - self.streak[0].at < timedelta(
            days=refractory.min_gap_days
        ):
            return None
        self.raised = True
        return _refractory_alert(
            history, tuple(self.streak), course, self.baseline, refractory.below, rules
        )

    def _transfused_before(self, at: datetime, within: timedelta) -> bool:
        index = bisect_right(self.transfused, at)
        return index > 0 and at - self.transfused[index - 1] <= within


class _PersistentSevereScan:
    """Without first-line therapy on record: `min_values` values below the limit spanning
    `min_span_days`, none at or above it between them. Once per run; a refractory alert already
    raised for the same run replaces it. A late value joins the run but is never its trigger."""

    __slots__ = ("done", "first_line_at", "run")

    def __init__(self, first_line: TreatmentEvent | None) -> None:
        self.first_line_at = treatment_start(first_line) if first_line else None
        self.run: tuple[Value, ...] = ()
        self.done = False

    def step(
        self,
        history: History,
        value: Value,
        rule: PopulationRules,
        refractory: list[_Wanted],
        late: bool,
    ) -> _Wanted | None:
        persistent = rule.persistent_severe
        if not is_below(value.number, value.comparator, persistent.below):
            self.run, self.done = (), False
            return None
        self.run = (*self.run, value)
        span = value.at - self.run[0].at
        if (
            self.done
            or late
            or len(self.run) < persistent.min_values
            or span < timedelta(days=persistent.min_span_days)
        ):
            return None
        self.done = True
        treated = self.first_line_at is not None and self.first_line_at <= value.at
        replaced = any(self.run[0].at <= r.evidence[0].at for r in refractory)
        if treated or replaced:
            return None
        alert_id = _alert_id(history, AlertKind.PERSISTENT_SEVERE, self.run[0].result_id)
        return _Wanted(alert_id, AlertKind.PERSISTENT_SEVERE, value, self.run, persistent.below)


class _Scans:
    """The rules' scans over a history in collection order, with their state at its end, so a
    value newer than every other one is evaluated in one step instead of a full rescan."""

    __slots__ = (
        "adult_from",
        "all_clear",
        "birth_date",
        "critical",
        "forgetting_due_after",
        "judging",
        "newest_at",
        "persistent",
        "populations",
        "refractory",
        "refractory_scan",
        "rules",
        "undiagnosed",
        "wanted",
    )

    def __init__(self, history: History, rules: Rules, ordered: list[Value]) -> None:
        self.rules = rules
        self.populations = rules.populations
        self.critical = _CriticalLowScan()
        first_line = _first_line(history, rules)
        courses = _courses(history, first_line, rules)
        transfused = sorted(
            treatment_start(t)
            for t in history.treatments.values()
            if t.category is TreatmentCategory.PLATELET_TRANSFUSION
        )
        self.refractory_scan = _RefractoryScan(courses, transfused)
        self.judging = bool(courses)  # a course on record: every count may matter to it
        self.persistent = _PersistentSevereScan(first_line[0] if first_line else None)
        self.undiagnosed = _diagnosis_missing(history, rules)
        self.refractory: list[_Wanted] = []
        self.wanted: dict[str, _Wanted] = {}
        self.all_clear = False  # the last value scanned left nothing open (see step)
        self.newest_at: datetime | None = None  # the last value scanned was collected then
        self.birth_date: date | None = None  # the patient's, as the last value appended said
        self.adult_from: date | None = None  # ...and the day they turn 18 (None: unknown)
        oldest = _oldest(history)
        self.forgetting_due_after = None if oldest is None else _forgetting_due_after(oldest, rules)
        late = _late(ordered)
        for value in ordered:
            self.step(history, value, late=value.result_id in late)

    def append_if_newest(self, history: History, result: LabResult) -> Value | None:
        """The common case, a counting result collected no earlier than every value known and
        replacing none, is added here, to be scanned in one step: appending a newest value
        cannot change an alert the earlier values warranted. Anything else (None) takes the
        full path, as does a value that pushes the oldest one past the horizon."""
        count, at, result_id = result.count, result.collected_at, result.result_id
        values, replaces = history.values, result.replaces_result_id
        if (
            count is None
            or result.status not in _COUNTING
            or result_id in values
            or len(values) >= VALUES_KEPT
            or (replaces is not None and replaces in values)
            or (self.newest_at is not None and at < self.newest_at)
            or (self.forgetting_due_after is not None and at > self.forgetting_due_after)
        ):
            return None
        history.seq += 1
        birth = result.patient.birth_date
        if birth != self.birth_date:  # demographics corrected, or the first value here
            self.birth_date, self.adult_from = birth, adulthood(birth)
        value = values[result_id] = Value(  # Value.of, inlined on the path most events take
            result_id,
            result.event_id,
            count.value_10e9_per_l,
            count.comparator,
            count.original_value,
            count.original_unit,
            result.status,
            at,
            result.verified_at,
            history.seq,
            population_of(self.adult_from, at),
            _code_of(result),
            result.abnormal_flags,
        )
        if self.forgetting_due_after is None:
            self.forgetting_due_after = _forgetting_due_after(at, self.rules)
        return value

    def step(self, history: History, value: Value, *, late: bool) -> Sequence[_Wanted]:
        """Scan one more value, collected no earlier than all scanned; return the alerts it
        newly warrants. `late`: it arrived after a value collected later."""
        rule = self.populations[value.population]
        self.newest_at = value.at
        if (
            not self.judging
            and not late
            and is_at_or_above(value.number, value.comparator, rule.all_clear_at)
        ):  # the common normal count: what each scan's step would do, once in a row
            if not self.all_clear:
                self.critical.lowest = self.critical.last_page = None
                self.persistent.run, self.persistent.done = (), False
                self.all_clear = True
            return ()
        self.all_clear = False
        new: list[_Wanted] = []
        critical = self.critical.step(history, value, rule, late)
        history.suppressed_repeats = self.critical.suppressed
        if critical is not None:
            new.append(critical)
        undiagnosed = self.undiagnosed[value.population]  # not for the ITP pager: not derived
        refractory = self.refractory_scan.step(history, value, rule, self.rules, late)
        if refractory is not None and not undiagnosed:
            self.refractory.append(refractory)
            new.append(refractory)
        persistent = self.persistent.step(history, value, rule, self.refractory, late)
        if persistent is not None and not undiagnosed:
            new.append(persistent)
        for wanted in new:
            self.wanted[wanted.alert_id] = wanted
        return new


def _refractory_alert(
    history: History,
    streak: tuple[Value, ...],
    course: _Course,
    baseline: Value | None,
    limit: float,
    rules: Rules,
) -> _Wanted:
    trigger = streak[-1]
    tried = [t for t in history.treatments.values() if treatment_start(t) <= trigger.at]
    lines = []
    for label, line in (
        ("first-line", "first"),
        ("second-line", "second"),
        ("cytotoxic", "cytotoxic"),
    ):
        names = sorted({t.name for t in tried if rules.line_of(t) == line})
        if names:
            lines.append(f"{label}: {', '.join(names)}")
    if course.splenectomy or any(t.category is TreatmentCategory.SPLENECTOMY for t in tried):
        lines.append("post-splenectomy")
    return _Wanted(
        _alert_id(history, AlertKind.REFRACTORY, course.event.event_id),
        AlertKind.REFRACTORY,
        trigger,
        streak,
        limit,
        course.event,
        baseline,
        "; ".join(lines) or None,
    )


def _reconcile(
    history: History,
    patient: Patient,
    wanted: dict[str, _Wanted],
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


def _same_alert(history: History, want: _Wanted, claimed: set[str]) -> Raised | None:
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
    since = first.at - timedelta(days=30)
    earlier = sorted(
        (v for v in history.values.values() if since <= v.at < first.at),
        key=lambda v: (v.at, v.seq),
    )
    return tuple(earlier[-3:])


def _on_record(
    history: History, want: _Wanted, rules: Rules
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


def _evidence_result(value: Value) -> EvidenceResult:
    return EvidenceResult(
        event_id=value.event_id,
        result_id=value.result_id,
        count=value.count,
        status=value.status,
        collected_at=value.at,
        verified_at=value.verified_at,
        code=Coding(system=value.code[0], code=value.code[1]) if value.code else None,
        abnormal_flags=value.flags,
    )


def _lab_panics(history: History, want: _Wanted) -> str | None:
    """The lab's own panic flags (LL, AA, <) on counts our limit did not find critical, in the
    week up to the alert: a note for the hematologist, who may know the lab's reasons."""
    since = want.trigger.at - timedelta(days=7)
    evidence = {v.result_id for v in want.evidence}
    flagged = sorted(
        (
            v
            for v in history.values.values()
            if since <= v.at <= want.trigger.at
            and _PANIC_FLAGS.intersection(v.flags)
            and v.result_id not in evidence
            and not is_below(v.number, v.comparator, want.limit)
        ),
        key=lambda v: (v.at, v.seq),
    )
    notes = [
        f"the lab flagged {_count_text(v.count)} collected {v.at.strftime('%Y-%m-%d %H:%M UTC')} "
        f"{'/'.join(sorted(_PANIC_FLAGS.intersection(v.flags)))}"
        for v in flagged
    ]
    return "; ".join(notes) or None


def _alert(
    history: History,
    patient: Patient,
    want: _Wanted,
    rules: Rules,
    now: datetime,
    key: tuple[str, ...],
    supersedes: str | None,
) -> PlateletAlert:
    treatments = _on_record(history, want, rules)
    baseline = want.baseline
    return PlateletAlert(
        event_id=stable_event_id("alert-event", want.alert_id, *key),
        alert_id=want.alert_id,
        kind=want.kind,
        patient=patient,
        population=want.trigger.population,
        location=history.location,
        value_10e9_per_l=want.trigger.number,
        result_verified_at=want.trigger.verified_at,
        evidence=Evidence(
            results=tuple(_evidence_result(v) for v in want.evidence),
            treatments=treatments,
            first_line_on_record=any(rules.line_of(t) == "first" for t in treatments),
            limit_10e9_per_l=want.limit,
            baseline_10e9_per_l=baseline.number if baseline is not None else None,
            baseline_collected_at=baseline.at if baseline is not None else None,
            note="; ".join(n for n in (want.note, _lab_panics(history, want)) if n) or None,
            preceding=tuple(_evidence_result(v) for v in _preceding(history, want.evidence[0])),
        ),
        rule=RuleRef(
            id=want.kind.value,
            version=rules.version,
            overrides=rules.overrides,
            thresholds=rules.thresholds(want.trigger.population),
        ),
        raised_at=now,
        supersedes_alert_id=supersedes,
    )


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
