"""The classifier's engine: one patient's history in, the alerts it warrants out. Pure.

Every event updates the patient's history (values by collection time, treatments, alerts raised);
then the alerts the whole history warrants are derived afresh and compared with those already
raised: a new one is emitted, one whose evidence changed is re-emitted under the same alert_id,
and one no longer warranted is withdrawn. Deriving from the history, not from arrival order,
places late and corrected results where they belong and makes the faust worker and the offline
replay agree. Arrival order matters in one place only, as the clinical rule says: a late critical
value older than a normal value already received does not open a new critical episode.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from schemas import (
    AlertKind,
    ClinicalContextEvent,
    Comparator,
    Evidence,
    EvidenceResult,
    LabResult,
    MedicationEvent,
    Patient,
    PlateletAlert,
    PlateletCount,
    ProcedureEvent,
    ResultStatus,
    RuleRef,
    TransfusionEvent,
    TreatmentCategory,
    clinical_context_adapter,
    stable_event_id,
)
from services.classifier.rules import (
    Population,
    PopulationRules,
    Rules,
    adulthood,
    closes_critical_episode,
    is_at_or_above,
    is_below,
    is_critical_low,
    is_iwg_response,
    population_at,
    population_of,
)

_COUNTING = frozenset({ResultStatus.FINAL, ResultStatus.CORRECTED, ResultStatus.AMENDED})
_RETRACTING = frozenset({ResultStatus.ENTERED_IN_ERROR, ResultStatus.WRONG_PATIENT})
_RETRACTION_WORDS = {
    ResultStatus.ENTERED_IN_ERROR: "entered in error and deleted",
    ResultStatus.WRONG_PATIENT: "posted to the wrong patient",
}
SEEN_EVENTS_KEPT = 1000
# Beyond the horizon, a bound on what one patient's history holds (a count every hour, or a
# flood of treatments, must not outgrow a changelog record): the oldest go first, in batches
# of a tenth so that the one-step path is left only once per batch.
VALUES_KEPT = 500
TREATMENTS_KEPT = 100


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
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> "Value":
        rid, eid, number, comparator, original, unit, status, at, verified, seq, population = data
        return cls(
            rid,
            eid,
            number,
            comparator,
            original,
            unit,
            ResultStatus(status),
            datetime.fromisoformat(at),
            datetime.fromisoformat(verified) if verified else None,
            seq,
            population,
        )


@dataclass(slots=True)
class Raised:
    alert_id: str
    kind: AlertKind
    anchor_result_id: str
    evidence_key: tuple[str, ...]
    withdrawn: bool = False


@dataclass(slots=True)
class History:
    """What the classifier keeps per patient; bounded by the rules' horizon."""

    patient_key: str = ""  # the patient's identifier key, part of every alert id
    location: str | None = None  # the ward or unit last reported, for routing pages
    values: dict[str, Value] = field(default_factory=dict)
    treatments: dict[str, ClinicalContextEvent] = field(default_factory=dict)
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
            "raised": [
                [r.alert_id, r.kind.value, r.anchor_result_id, list(r.evidence_key), r.withdrawn]
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
        for raw in data["treatments"]:
            try:
                treatment = clinical_context_adapter.validate_python(raw)
            except ValidationError:
                continue  # stored before ingest bounded it (a time in 2206): left out, not fatal
            history.treatments[treatment.event_id] = treatment
        for alert_id, kind, anchor, key, withdrawn in data["raised"]:
            history.raised[alert_id] = Raised(
                alert_id, AlertKind(kind), anchor, tuple(key), withdrawn
            )
        return history


@dataclass(frozen=True, slots=True)
class _Wanted:
    """An alert the history warrants."""

    alert_id: str
    kind: AlertKind
    trigger: Value
    evidence: tuple[Value, ...]
    treatments: tuple[ClinicalContextEvent, ...] = ()
    baseline: float | None = None
    note: str | None = None


def treatment_start(treatment: ClinicalContextEvent) -> datetime:
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
            new = scans.step(history, appended)
            if not new:
                return ()  # the common case: no list to allocate
            wanted = {w.alert_id: w for w in new}
            return _reconcile(history, event.patient, wanted, rules, now, None, complete=False)
    if history.has_applied(event):
        return ()
    if isinstance(event, LabResult) and event.location is not None:
        history.location = event.location
    history.patient_key = event.patient.identifier.key  # the first event always comes here
    reason = None
    if isinstance(event, LabResult):
        reason = _record_result(history, event, rules)
    else:
        history.treatments[event.event_id] = event
    if not history.has_applied(event):
        history.remember(event.event_id)
    _forget_beyond_horizon(history, rules)
    ordered = sorted(history.values.values(), key=lambda v: (v.at, v.result_id))
    history.scans = _Scans(history, rules, ordered)
    history.suppressed_repeats = history.scans.critical.suppressed
    history.late_values = history.scans.critical.late
    wanted = history.scans.wanted
    return _reconcile(history, event.patient, wanted, rules, now, reason, complete=True)


def _record_result(history: History, result: LabResult, rules: Rules) -> str | None:
    """Put a result in the history; return the reason to give if it removes or changes one."""
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
        history.seq += 1
        history.values[result.result_id] = Value.of(result, result.count, history.seq, population)
    elif previous and result.status not in _RETRACTING:
        history.values[result.result_id] = previous[0]  # a non-counting update keeps the value
        return None
    if not previous:
        return None
    if result.status in _RETRACTING:
        return f"result {result.result_id} was {_RETRACTION_WORDS[result.status]}"
    assert result.count is not None
    value = f"{result.count.comparator or ''}{result.count.value_10e9_per_l:g}"
    return f"result {result.result_id} was {result.status.value} to {value} x10^9/L"


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


def _first(
    history: History, categories: frozenset[TreatmentCategory]
) -> ClinicalContextEvent | None:
    chosen = [t for t in history.treatments.values() if t.category in categories]
    return min(chosen, key=treatment_start, default=None)


class _CriticalLowScan:
    """Page on a critical value; within the open episode, page again only on a further drop or
    after the repeat interval; every other repeat is counted as suppressed."""

    __slots__ = ("closing", "last_page", "late", "lowest", "suppressed")

    def __init__(self, closing: list[tuple[datetime, int]]) -> None:
        self.closing = closing  # (collected, arrival) of values that close an episode
        self.lowest: float | None = None
        self.last_page: datetime | None = None
        self.suppressed = 0
        self.late = 0

    def step(self, history: History, value: Value, rule: PopulationRules) -> _Wanted | None:
        critical = rule.critical_low
        number, comparator = value.number, value.comparator
        if closes_critical_episode(number, comparator, critical):
            self.lowest = self.last_page = None
            return None
        if not is_critical_low(number, comparator, critical):
            return None
        if self.lowest is None or self.last_page is None:  # no open episode
            if any(at > value.at and seq < value.seq for at, seq in self.closing):
                self.late += 1  # a newer normal value was already known: no new episode
                return None
        elif not (
            number <= self.lowest * (1 - critical.repage_drop_fraction)
            or value.at - self.last_page >= critical.repage_after
        ):
            self.suppressed += 1
            return None
        self.lowest = number if self.lowest is None else min(self.lowest, number)
        self.last_page = value.at
        alert_id = _alert_id(history, AlertKind.CRITICAL_LOW, value.result_id)
        return _Wanted(alert_id, AlertKind.CRITICAL_LOW, value, (value,))


class _RefractoryScan:
    """IWG "no response" after first-line therapy (from `assess_after_days`), or low counts after
    splenectomy: `min_values` non-responding values `min_gap_days` apart with no response between.
    A response closes the episode."""

    __slots__ = ("baseline", "post_splenectomy", "raised", "started", "streak", "therapy")

    def __init__(self, therapy: ClinicalContextEvent, post_splenectomy: bool) -> None:
        self.therapy = therapy
        self.started = treatment_start(therapy)
        self.post_splenectomy = post_splenectomy
        self.baseline: float | None = None
        self.streak: list[Value] = []
        self.raised: _Wanted | None = None

    def step(
        self, history: History, value: Value, rule: PopulationRules, rules: Rules
    ) -> tuple[_Wanted | None, bool]:
        """(a newly met alert, whether this value closed an open episode)"""
        refractory = rule.refractory
        number, comparator = value.number, value.comparator
        if value.at < self.started:
            self.baseline = number  # the last value before therapy
            return None, False
        too_early = (
            value.at <= self.started
            if self.post_splenectomy
            else value.at < self.started + timedelta(days=refractory.assess_after_days)
        )
        if too_early:
            return None, False
        responded = is_iwg_response(number, comparator, self.baseline, refractory) or (
            self.post_splenectomy and is_at_or_above(number, comparator, refractory.below)
        )
        if responded:
            closed = self.raised is not None
            self.streak, self.raised = [], None
            return None, closed
        self.streak.append(value)
        gap = value.at - self.streak[0].at
        enough = len(self.streak) >= refractory.min_values and gap >= timedelta(
            days=refractory.min_gap_days
        )
        if self.raised is None and enough:
            self.raised = _refractory_alert(
                history, self.streak, self.therapy, self.baseline, self.post_splenectomy, rules
            )
            return self.raised, False
        return None, False


class _PersistentSevereScan:
    """Without first-line therapy on record: `min_values` values below the limit spanning
    `min_span_days`, none at or above it between them. Once per run; a refractory alert already
    raised for the same run replaces it."""

    __slots__ = ("done", "first_line_at", "run")

    def __init__(self, first_line: ClinicalContextEvent | None) -> None:
        self.first_line_at = treatment_start(first_line) if first_line else None
        self.run: tuple[Value, ...] = ()
        self.done = False

    def step(
        self, history: History, value: Value, rule: PopulationRules, refractory: list[_Wanted]
    ) -> _Wanted | None:
        persistent = rule.persistent_severe
        if not is_below(value.number, value.comparator, persistent.below):
            self.run, self.done = (), False
            return None
        self.run = (*self.run, value)
        span = value.at - self.run[0].at
        if (
            self.done
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
        return _Wanted(alert_id, AlertKind.PERSISTENT_SEVERE, value, self.run)


class _Scans:
    """The rules' scans over a history in collection order, with their state at its end, so a
    value newer than every other one is evaluated in one step instead of a full rescan."""

    __slots__ = (
        "adult_from",
        "all_clear",
        "birth_date",
        "critical",
        "forgetting_due_after",
        "newest_at",
        "newest_result_id",
        "open_refractory",
        "persistent",
        "populations",
        "refractory",
        "refractory_scans",
        "rules",
        "wanted",
    )

    def __init__(self, history: History, rules: Rules, ordered: list[Value]) -> None:
        self.rules = rules
        self.populations = rules.populations
        self.critical = _CriticalLowScan(
            [
                (v.at, v.seq)
                for v in ordered
                if closes_critical_episode(
                    v.number,
                    v.comparator,
                    rules.populations[v.population].critical_low,
                )
            ]
        )
        first_line = _first(history, rules.first_line)
        splenectomy = _first(history, frozenset({TreatmentCategory.SPLENECTOMY}))
        self.refractory_scans = tuple(
            _RefractoryScan(therapy, post)
            for therapy, post in ((first_line, False), (splenectomy, True))
            if therapy is not None
        )
        self.persistent = _PersistentSevereScan(first_line)
        self.refractory: list[_Wanted] = []
        self.open_refractory: _RefractoryScan | None = None  # whose alert is still open
        self.wanted: dict[str, _Wanted] = {}
        self.all_clear = False  # the last value scanned left nothing open (see step)
        self.newest_at: datetime | None = None  # the last value scanned: collected...
        self.newest_result_id = ""  # ...and its result id, the tie-breaker
        self.birth_date: date | None = None  # the patient's, as the last value appended said
        self.adult_from: date | None = None  # ...and the day they turn 18 (None: unknown)
        oldest = _oldest(history)
        self.forgetting_due_after = None if oldest is None else _forgetting_due_after(oldest, rules)
        for value in ordered:
            self.step(history, value)

    def append_if_newest(self, history: History, result: LabResult) -> Value | None:
        """The common case, a counting result newer than every value known and replacing none,
        is added here, to be scanned in one step: appending a newest value cannot change an
        alert the earlier values warranted. Anything else (None) takes the full path, as does a
        value that pushes the oldest one past the horizon."""
        count, at, result_id = result.count, result.collected_at, result.result_id
        values, replaces = history.values, result.replaces_result_id
        if (
            count is None
            or result.status not in _COUNTING
            or result_id in values
            or len(values) >= VALUES_KEPT
            or (replaces is not None and replaces in values)
            or (
                self.newest_at is not None
                and (
                    at < self.newest_at
                    or (at == self.newest_at and result_id <= self.newest_result_id)
                )
            )
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
        )
        if self.forgetting_due_after is None:
            self.forgetting_due_after = _forgetting_due_after(at, self.rules)
        return value

    def step(self, history: History, value: Value) -> Sequence[_Wanted]:
        """Scan one more value, newer than all scanned; return the alerts it newly warrants."""
        rule = self.populations[value.population]
        self.newest_at, self.newest_result_id = value.at, value.result_id
        if not self.refractory_scans and is_at_or_above(
            value.number, value.comparator, rule.all_clear_at
        ):  # the common normal count: what each scan's step would do, once in a row
            if not self.all_clear:
                self.critical.lowest = self.critical.last_page = None
                self.persistent.run, self.persistent.done = (), False
                self.all_clear = True
            return ()
        self.all_clear = False
        new: list[_Wanted] = []
        critical = self.critical.step(history, value, rule)
        history.suppressed_repeats = self.critical.suppressed
        if critical is not None:
            new.append(critical)
        for scan in self.refractory_scans:
            met, closed = scan.step(history, value, rule, self.rules)
            if closed and self.open_refractory is scan:
                self.open_refractory = None
            if met is not None and self.open_refractory is None:  # once per episode
                self.open_refractory = scan
                self.refractory.append(met)
                new.append(met)
        persistent = self.persistent.step(history, value, rule, self.refractory)
        if persistent is not None:
            new.append(persistent)
        for wanted in new:
            self.wanted[wanted.alert_id] = wanted
        return new


def _refractory_alert(
    history: History,
    streak: list[Value],
    therapy: ClinicalContextEvent,
    baseline: float | None,
    post_splenectomy: bool,
    rules: Rules,
) -> _Wanted:
    trigger = streak[-1]
    tried = tuple(
        sorted(
            (t for t in history.treatments.values() if treatment_start(t) <= trigger.at),
            key=treatment_start,
        )
    )
    lines = []
    for label, categories in (
        ("first-line", rules.first_line),
        ("second-line", rules.second_line),
        ("cytotoxic", rules.cytotoxic),
    ):
        names = sorted({t.name for t in tried if t.category in categories})
        if names:
            lines.append(f"{label}: {', '.join(names)}")
    if post_splenectomy or any(t.category is TreatmentCategory.SPLENECTOMY for t in tried):
        lines.append("post-splenectomy")
    anchor = f"{therapy.event_id}|{streak[0].result_id}"
    return _Wanted(
        _alert_id(history, AlertKind.REFRACTORY, anchor),
        AlertKind.REFRACTORY,
        trigger,
        tuple(streak),
        tried,
        baseline,
        "; ".join(lines) or None,
    )


def _reconcile(
    history: History,
    patient: Patient,
    wanted: dict[str, _Wanted],
    rules: Rules,
    now: datetime,
    reason: str | None,
    *,
    complete: bool,
) -> list[PlateletAlert]:
    """Emit what is wanted and new (or changed); when `wanted` is the complete set, also
    withdraw what is raised and no longer wanted. Alerts name the patient as the event causing
    them does: demographics corrected since earlier results are the ones to page with."""
    alerts: list[PlateletAlert] = []
    for alert_id, want in wanted.items():
        key = tuple(v.event_id for v in want.evidence)
        raised = history.raised.get(alert_id)
        if raised is not None and not raised.withdrawn and raised.evidence_key == key:
            continue
        history.raised[alert_id] = Raised(alert_id, want.kind, want.evidence[0].result_id, key)
        preceding = _preceding(history, want.evidence[0])
        alerts.append(_alert(patient, history.location, want, preceding, rules, now, key))
    for alert_id, raised in history.raised.items():
        if not complete or raised.withdrawn or alert_id in wanted:
            continue
        raised.withdrawn = True
        alerts.append(_withdrawal(patient, raised, rules, now, reason))
    return alerts


def _preceding(history: History, first: Value) -> tuple[Value, ...]:
    """The patient's last counts before the evidence, within 30 days: the trend into it."""
    since = first.at - timedelta(days=30)
    earlier = sorted(
        (v for v in history.values.values() if since <= v.at < first.at),
        key=lambda v: (v.at, v.result_id),
    )
    return tuple(earlier[-3:])


def _evidence_result(value: Value) -> EvidenceResult:
    return EvidenceResult(
        event_id=value.event_id,
        result_id=value.result_id,
        count=value.count,
        status=value.status,
        collected_at=value.at,
        verified_at=value.verified_at,
    )


def _alert(
    patient: Patient,
    location: str | None,
    want: _Wanted,
    preceding: tuple[Value, ...],
    rules: Rules,
    now: datetime,
    key: tuple[str, ...],
) -> PlateletAlert:
    treatments = tuple(
        t
        for t in want.treatments
        if isinstance(t, MedicationEvent | ProcedureEvent | TransfusionEvent)
    )
    return PlateletAlert(
        event_id=stable_event_id("alert-event", want.alert_id, *key),
        alert_id=want.alert_id,
        kind=want.kind,
        patient=patient,
        population=want.trigger.population,
        location=location,
        value_10e9_per_l=want.trigger.number,
        result_verified_at=want.trigger.verified_at,
        evidence=Evidence(
            results=tuple(_evidence_result(v) for v in want.evidence),
            treatments=treatments,
            baseline_10e9_per_l=want.baseline,
            note=want.note,
            preceding=tuple(_evidence_result(v) for v in preceding),
        ),
        rule=RuleRef(id=want.kind.value, version=rules.version),
        raised_at=now,
    )


def _withdrawal(
    patient: Patient, raised: Raised, rules: Rules, now: datetime, reason: str | None
) -> PlateletAlert:
    because = reason or f"the evidence no longer meets {raised.kind.value}"
    return PlateletAlert(
        event_id=stable_event_id("alert-event", raised.alert_id, "withdrawn", *raised.evidence_key),
        alert_id=stable_event_id("withdrawal", raised.alert_id),
        kind=AlertKind.WITHDRAWN,
        patient=patient,
        evidence=Evidence(note=f"withdraws {raised.kind.value} alert {raised.alert_id}"),
        rule=RuleRef(id=raised.kind.value, version=rules.version),
        raised_at=now,
        withdraws_alert_id=raised.alert_id,
        withdrawal_reason=because,
    )
