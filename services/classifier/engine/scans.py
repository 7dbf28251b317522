"""The rules' three scans over one patient's counts in collection order: critical_low,
refractory (per course) and persistent_severe. Pure.

`Scans` keeps each scan's state at the end of the history, so that a count newer than every
other one is evaluated in one step instead of a full rescan; what it derives are `Wanted` alerts,
which reconcile.py compares with what was already sent. A late value (collected before a value
already received) never triggers an alert and changes no repeat-paging decision.
"""

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from schemas import (
    AlertKind,
    Comparator,
    LabResult,
    MedicationEvent,
    Population,
    TreatmentCategory,
    TreatmentEvent,
    stable_event_id,
)
from services.classifier.engine.history import (
    COUNTING,
    VALUES_KEPT,
    History,
    forgetting_due_after,
    oldest_time,
    treatment_start,
)
from services.classifier.engine.values import UTC_EPOCHS, Value, epoch_seconds, shared_code
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
)

_ADULT = float("-inf")  # when a patient of unknown age is adult (population_at: always)


@dataclass(frozen=True, slots=True)
class Wanted:
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


def _adult_from(birth: date | None) -> float:
    """When a patient born on `birth` turns 18 (see rules.adulthood), as epoch_seconds gives
    it: a UTC time collected then or later is an adult's, as rules.population_at says."""
    day = adulthood(birth)
    return _ADULT if day is None else epoch_seconds(datetime.combine(day, time(), UTC))


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
    ) -> Wanted | None:
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
        return Wanted(alert_id, AlertKind.CRITICAL_LOW, value, (value,), critical.below)


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
    ) -> Wanted | None:
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
        refractory: list[Wanted],
        late: bool,
    ) -> Wanted | None:
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
        return Wanted(alert_id, AlertKind.PERSISTENT_SEVERE, value, self.run, persistent.below)


class Scans:
    """The rules' scans over a history in collection order, with their state at its end, so a
    value newer than every other one is evaluated in one step instead of a full rescan."""

    __slots__ = (
        "adult_from",
        "all_clear",
        "birth_date",
        "code",
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
        self.refractory: list[Wanted] = []
        self.wanted: dict[str, Wanted] = {}
        self.all_clear = False  # the last value scanned left nothing open (see step)
        # When the last value scanned was collected, and when the oldest time held passes the
        # horizon, as values.epoch_seconds gives them: compared with every value appended.
        self.newest_at: float | None = None
        self.birth_date: date | None = None  # the patient's, as the last value appended said
        self.adult_from = _ADULT  # ...and when they turn 18, as epoch_seconds gives it
        self.code: tuple[str, str] | None = None  # the last value appended's, as shared_code has it
        oldest = oldest_time(history)
        self.forgetting_due_after = (
            None if oldest is None else epoch_seconds(forgetting_due_after(oldest, rules))
        )
        late = _late(ordered)
        for value in ordered:
            self.step(history, value, late=value.result_id in late)

    def add_newest(self, history: History, result: LabResult) -> Sequence[Wanted] | None:
        """The common case, a counting result collected no earlier than every value known and
        replacing none, is added here and scanned in one step: appending a newest value cannot
        change an alert the earlier values warranted. Returns the alerts it newly warrants, or
        None, having added nothing, for anything else (the full path), as for a value that
        pushes the oldest one past the horizon."""
        count = result.count
        if count is None or result.status not in COUNTING:
            return None
        at = result.collected_at
        known = UTC_EPOCHS.get(id(at.tzinfo))  # epoch_seconds(at), its common case inline
        if known is not None and known[0] is at.tzinfo:
            at_seconds = (at - known[1]).total_seconds()
        else:
            at_seconds = epoch_seconds(at)
        newest_at, due = self.newest_at, self.forgetting_due_after
        if (newest_at is not None and at_seconds < newest_at) or (
            due is not None and at_seconds > due
        ):
            return None
        birth = result.patient.birth_date
        if birth != self.birth_date:  # demographics corrected, or the first value here
            self.birth_date, self.adult_from = birth, _adult_from(birth)
        population: Population = "adult" if at_seconds >= self.adult_from else "paediatric"
        code, coding = self.code, result.code
        if code is None or code[1] != coding.code or code[0] != coding.system:
            code = self.code = shared_code(coding.system, coding.code)  # code_of, kept
        seq = history.seq + 1
        values = history.values
        if not values.add_new(result, count, seq, population, code, at_seconds, VALUES_KEPT):
            return None  # held already, or replacing one held: the full path
        history.seq = seq
        if self.forgetting_due_after is None:
            self.forgetting_due_after = epoch_seconds(forgetting_due_after(at, self.rules))
        self.newest_at = at_seconds
        number, comparator = count.value_10e9_per_l, count.comparator
        if self._normal(number, comparator, self.populations[population]):
            return ()
        value = Value(
            result.result_id,
            result.event_id,
            number,
            comparator,
            count.original_value,
            count.original_unit,
            result.status,
            at,
            result.verified_at,
            seq,
            population,
            code,
            result.abnormal_flags,
        )
        return self._step(history, value, late=False)

    def step(self, history: History, value: Value, *, late: bool) -> Sequence[Wanted]:
        """Scan one more value, collected no earlier than all scanned; return the alerts it
        newly warrants. `late`: it arrived after a value collected later."""
        self.newest_at = epoch_seconds(value.at)
        if not late and self._normal(
            value.number, value.comparator, self.populations[value.population]
        ):
            return ()
        return self._step(history, value, late=late)

    def _normal(self, number: float, comparator: Comparator | None, rule: PopulationRules) -> bool:
        """The common normal count, with no course to judge it against: what each scan's step
        would do, done once in a row. False: the scans have to step."""
        if self.judging or not is_at_or_above(number, comparator, rule.all_clear_at):
            return False
        if not self.all_clear:
            self.critical.lowest = self.critical.last_page = None
            self.persistent.run, self.persistent.done = (), False
            self.all_clear = True
        return True

    def _step(self, history: History, value: Value, *, late: bool) -> Sequence[Wanted]:
        rule = self.populations[value.population]
        self.all_clear = False
        new: list[Wanted] = []
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
) -> Wanted:
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
    return Wanted(
        _alert_id(history, AlertKind.REFRACTORY, course.event.event_id),
        AlertKind.REFRACTORY,
        trigger,
        streak,
        limit,
        course.event,
        baseline,
        "; ".join(lines) or None,
    )
