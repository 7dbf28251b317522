"""The classifier engine as a pure function, case by case and at every boundary."""

import random
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from schemas import (
    AlertKind,
    Coding,
    LabResult,
    MedicationEvent,
    Patient,
    PatientIdentifier,
    PlateletAlert,
    PlateletCount,
    ProcedureEvent,
    ResultStatus,
    Thresholds,
    TransfusionEvent,
    TreatmentCategory,
    stable_event_id,
)
from services.classifier.engine import TREATMENTS_KEPT, VALUES_KEPT, History, apply
from services.classifier.rules import Rules, load_rules, population_at

RULES = load_rules()
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
ADULT = Patient(
    identifier=PatientIdentifier(authority="HOSP", mrn="42"), birth_date=date(1970, 5, 1)
)


def result(
    value: float | None,
    days: float = 0,
    status: ResultStatus = ResultStatus.FINAL,
    comparator: str | None = None,
    result_id: str | None = None,
    patient: Patient = ADULT,
) -> LabResult:
    rid = result_id or f"R@{days}"
    count = (
        PlateletCount(
            value_10e9_per_l=value,
            comparator=comparator,
            original_value=f"{comparator or ''}{value:g}",
            original_unit="10*9/L",
        )
        if value is not None
        else None
    )
    return LabResult(
        event_id=stable_event_id("test", rid, status, str(value)),
        source="json",
        patient=patient,
        result_id=rid,
        code=Coding(system="http://loinc.org", code="777-3"),
        count=count,
        status=status,
        collected_at=T0 + timedelta(days=days),
        verified_at=T0 + timedelta(days=days, minutes=30),
        received_at=T0 + timedelta(days=days, hours=1),
    )


def treatment(category: TreatmentCategory, days: float, name: str = "") -> MedicationEvent:
    return MedicationEvent(
        event_id=stable_event_id("test-treatment", category, str(days)),
        source="json",
        patient=ADULT,
        category=category,
        name=name or category.value,
        started_at=T0 + timedelta(days=days),
        received_at=T0 + timedelta(days=days),
    )


def splenectomy(days: float) -> ProcedureEvent:
    return ProcedureEvent(
        event_id=stable_event_id("test-splenectomy", str(days)),
        source="json",
        patient=ADULT,
        category=TreatmentCategory.SPLENECTOMY,
        name="Laparoscopic splenectomy",
        performed_at=T0 + timedelta(days=days),
        received_at=T0 + timedelta(days=days),
    )


def transfusion(days: float) -> TransfusionEvent:
    return TransfusionEvent(
        event_id=stable_event_id("test-transfusion", str(days)),
        source="json",
        patient=ADULT,
        category=TreatmentCategory.PLATELET_TRANSFUSION,
        name="Platelets, apheresis",
        started_at=T0 + timedelta(days=days),
        received_at=T0 + timedelta(days=days),
    )


def feed(*events: Any, history: History | None = None) -> tuple[History, list[list[PlateletAlert]]]:
    """Apply events in arrival order; return the history and the alerts each one caused."""
    history = history or History()
    out = [list(apply(history, e, RULES, e.received_at)) for e in events]
    return history, out


def kinds(alerts: list[list[PlateletAlert]]) -> list[list[str]]:
    return [[a.kind.value for a in batch] for batch in alerts]


def flat(alerts: list[list[PlateletAlert]]) -> list[str]:
    return [a.kind.value for batch in alerts for a in batch]


# --- critical_low --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "comparator", "pages"),
    [(19.9, None, True), (20, None, False), (20.1, None, False), (20, "<", True), (21, "<", False),
     (5, ">", False), (0, None, True)],
)  # fmt: skip
def test_critical_low_threshold(value: float, comparator: str | None, pages: bool) -> None:
    _, alerts = feed(result(value, comparator=comparator))
    assert kinds(alerts) == [["critical_low"] if pages else []]


def test_a_critical_alert_carries_its_evidence() -> None:
    r = result(12)
    (alert,) = feed(r)[1][0]
    assert alert.value_10e9_per_l == 12
    assert alert.population == "adult"
    assert alert.rule.version == RULES.version
    assert alert.result_verified_at == r.verified_at
    (evidence,) = alert.evidence.results
    assert (evidence.result_id, evidence.count.original_value, evidence.collected_at) == (
        r.result_id, "12", r.collected_at,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("second", "hours", "pages"),
    [(9.6, 6, True), (9.7, 6, False), (14, 23.9, False), (14, 24, True)],
)
def test_repeat_policy_20_percent_or_24_hours(second: float, hours: float, pages: bool) -> None:
    history, alerts = feed(result(12), result(second, days=hours / 24))
    assert kinds(alerts) == [["critical_low"], ["critical_low"] if pages else []]
    assert history.suppressed_repeats == (0 if pages else 1)


def test_episode_closes_at_50_and_the_next_critical_value_pages() -> None:
    _, alerts = feed(
        result(12), result(49.9, days=0.2), result(15, days=0.4), result(50, days=0.5),
        result(14, days=0.6),
    )  # fmt: skip
    assert kinds(alerts) == [["critical_low"], [], [], [], ["critical_low"]]


def test_preliminary_does_not_page_unless_the_rules_say_so(tmp_path: Path) -> None:
    _, alerts = feed(result(8, status=ResultStatus.PRELIMINARY))
    assert kinds(alerts) == [[]]
    text = Path(__file__).parents[1].joinpath("services/classifier/default_rules.yaml").read_text()
    custom = tmp_path / "rules.yaml"
    custom.write_text(
        re.sub(
            r"^version: .*$",
            'version: "site-7"',
            text.replace("page_preliminary: false", "page_preliminary: true"),
            flags=re.MULTILINE,
        )
    )
    rules = load_rules(custom)
    (alert,) = apply(History(), result(8, status=ResultStatus.PRELIMINARY), rules, T0)
    assert alert.rule.version == "site-7"


def test_a_duplicate_event_changes_nothing() -> None:
    history, alerts = feed(result(12), result(12))
    assert kinds(alerts) == [["critical_low"], []]
    assert len(history.values) == 1


def test_an_original_resent_after_its_correction_changes_nothing() -> None:
    original = result(12, result_id="R1")
    corrected = result(140, status=ResultStatus.CORRECTED, result_id="R1")
    history, alerts = feed(original, corrected, original, corrected)
    assert kinds(alerts) == [["critical_low"], ["withdrawn"], [], []]
    assert history.values["R1"].number == 140


def test_a_late_critical_value_older_than_a_known_normal_value_opens_no_episode() -> None:
    history, alerts = feed(result(150, days=2), result(10, days=1))
    assert kinds(alerts) == [[], []]
    assert history.late_values == 1
    _, in_order = feed(result(10, days=1), result(150, days=2))
    assert kinds(in_order) == [["critical_low"], []]


def test_a_late_value_is_placed_by_collection_time() -> None:
    # 12 at day 0 pages; 11 collected at day 0.5 arrives after 60 at day 1: the episode it
    # belongs to (day 0 to day 1) was already paged, so it is a suppressed repeat, not a page.
    history, alerts = feed(result(12), result(60, days=1), result(11, days=0.5))
    assert kinds(alerts) == [["critical_low"], [], []]
    assert history.suppressed_repeats == 1


def test_alert_ids_are_stable_and_independent_of_arrival() -> None:
    a = feed(result(12))[1][0][0]
    b = feed(result(150, days=-5), result(12))[1][1][0]
    assert a.alert_id == b.alert_id


# --- withdrawals ---------------------------------------------------------------------------


def test_a_correction_above_the_limit_withdraws_the_alert() -> None:
    _, alerts = feed(
        result(12, result_id="R1"), result(140, status=ResultStatus.CORRECTED, result_id="R1")
    )
    raised, withdrawn = alerts[0][0], alerts[1][0]
    assert withdrawn.kind is AlertKind.WITHDRAWN
    assert withdrawn.withdraws_alert_id == raised.alert_id
    assert withdrawn.withdrawal_reason == (
        "the count of 12 x10^9/L collected 2026-01-01 08:00 UTC was corrected to 140 x10^9/L"
    )


def test_a_correction_that_still_meets_the_rule_keeps_the_alert_with_new_evidence() -> None:
    _, alerts = feed(
        result(12, result_id="R1"), result(8, status=ResultStatus.CORRECTED, result_id="R1")
    )
    raised, updated = alerts[0][0], alerts[1][0]
    assert updated.kind is AlertKind.CRITICAL_LOW
    assert updated.alert_id == raised.alert_id
    assert updated.event_id != raised.event_id
    assert updated.value_10e9_per_l == 8


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (ResultStatus.ENTERED_IN_ERROR, "entered in error"),
        (ResultStatus.WRONG_PATIENT, "wrong patient"),
    ],
)
def test_deletion_and_wrong_patient_withdraw(status: ResultStatus, words: str) -> None:
    history, alerts = feed(result(12, result_id="R1"), result(None, status=status, result_id="R1"))
    (withdrawn,) = alerts[1]
    assert words in (withdrawn.withdrawal_reason or "")
    assert history.values == {}


def test_a_correction_before_any_alert_simply_counts() -> None:
    _, alerts = feed(
        result(60, result_id="R1"), result(12, status=ResultStatus.CORRECTED, result_id="R1")
    )
    assert kinds(alerts) == [[], ["critical_low"]]


def test_withdrawing_the_first_page_of_an_episode_may_promote_the_repeat() -> None:
    # 12 pages; 11 is a suppressed repeat. Deleting 12 leaves 11 as the opening value: it pages.
    _, alerts = feed(
        result(12, result_id="R1"),
        result(11, days=0.1, result_id="R2"),
        result(None, status=ResultStatus.ENTERED_IN_ERROR, result_id="R1"),
    )
    assert sorted(kinds(alerts)[2]) == ["critical_low", "withdrawn"]


# --- persistent_severe ---------------------------------------------------------------------


def test_persistent_severe_needs_three_values_over_seven_days() -> None:
    _, alerts = feed(result(25), result(28, days=3), result(26, days=6.9), result(27, days=7))
    assert kinds(alerts) == [[], [], [], ["persistent_severe"]]
    (alert,) = alerts[3]
    assert [e.result_id for e in alert.evidence.results] == ["R@0", "R@3", "R@6.9", "R@7"]


def test_a_value_of_30_between_breaks_the_run() -> None:
    _, alerts = feed(result(25), result(30, days=3), result(26, days=6), result(27, days=8))
    assert kinds(alerts) == [[], [], [], []]


def test_persistent_severe_is_not_raised_once_first_line_therapy_is_on_record() -> None:
    _, alerts = feed(
        treatment(TreatmentCategory.CORTICOSTEROID, -1, "dexamethasone"),
        result(25), result(28, days=3), result(27, days=7),
    )  # fmt: skip
    assert "persistent_severe" not in flat(alerts)


def test_persistent_severe_once_per_run() -> None:
    _, alerts = feed(*(result(25, days=d) for d in (0, 3, 7, 9, 12)))
    assert flat(alerts) == ["persistent_severe"]


# --- refractory ----------------------------------------------------------------------------


def refractory_case(second_day: float, values: tuple[float, float] = (25, 24)) -> list[str]:
    _, alerts = feed(
        result(10, days=-1),  # baseline: last value before therapy (also a critical page)
        treatment(TreatmentCategory.IVIG, 0, "Privigen"),
        result(values[0], days=7),
        result(values[1], days=second_day),
    )
    return [k for k in flat(alerts) if k != "critical_low"]


def test_refractory_after_first_line_two_values_a_day_apart_from_day_7() -> None:
    assert refractory_case(8) == ["refractory"]
    assert refractory_case(7.9) == []  # less than 1 day apart


def test_refractory_counts_only_from_seven_days_after_therapy() -> None:
    _, alerts = feed(
        result(10, days=-1), treatment(TreatmentCategory.IVIG, 0),
        result(25, days=6.9), result(24, days=7.95),
    )  # fmt: skip
    assert "refractory" not in flat(alerts)


@pytest.mark.parametrize(
    ("baseline", "value", "refractory"),
    [(20, 38, True), (20, 39.9, True), (20, 40, False), (10, 29.9, True), (10, 30, False),
     (30, 49.9, True), (30, 50, False), (60, 99.9, False), (60, 100, False)],
)  # fmt: skip
def test_iwg_response_boundaries(baseline: float, value: float, refractory: bool) -> None:
    """No response: < 30, or < 2x baseline (1.9x is) while < 50; at 50 and above a count
    short of twice the baseline is neither (never refractory); >= 100 always responds."""
    _, alerts = feed(
        result(baseline, days=-1), treatment(TreatmentCategory.CORTICOSTEROID, 0),
        result(value, days=7), result(value, days=8),
    )  # fmt: skip
    assert ("refractory" in flat(alerts)) is refractory


def test_a_response_between_restarts_the_count_and_closes_the_episode() -> None:
    _, alerts = feed(
        result(10, days=-1), treatment(TreatmentCategory.IVIG, 0),
        result(25, days=7), result(45, days=7.5), result(24, days=8),
    )  # fmt: skip
    assert "refractory" not in flat(alerts)


def test_refractory_names_therapies_and_replaces_persistent_severe_after_splenectomy() -> None:
    _, alerts = feed(
        treatment(TreatmentCategory.RITUXIMAB, -30, "Rituxan"),
        splenectomy(-20),
        result(25, days=-10), result(22, days=-9), result(24, days=-2),
    )  # fmt: skip
    flat = [a for batch in alerts for a in batch]
    assert [a.kind.value for a in flat] == ["refractory"]
    note = flat[0].evidence.note or ""
    assert "post-splenectomy" in note
    assert "second-line: Rituxan" in note
    assert {t.category for t in flat[0].evidence.treatments} == {"rituximab", "splenectomy"}


def test_refractory_after_splenectomy_supersedes_persistent_severe() -> None:
    """Judged from 7 days after the operation: the counts on post-operative days 1-2 are not."""
    _, alerts = feed(
        result(25), result(28, days=3), result(26, days=7),
        splenectomy(8), result(22, days=9), result(21, days=10),
        result(22, days=15), result(21, days=16),
    )  # fmt: skip
    assert flat(alerts) == ["persistent_severe", "refractory"]
    persistent, refractory = [a for batch in alerts for a in batch]
    assert refractory.supersedes_alert_id == persistent.alert_id


def test_refractory_once_per_course_and_again_for_a_new_course() -> None:
    """A response ends the course's assessment: the fall after it is loss of response. A new
    first-line course is judged afresh, against its own baseline."""
    _, alerts = feed(
        result(10, days=-1), treatment(TreatmentCategory.IVIG, 0),
        result(25, days=7), result(24, days=8), result(23, days=9),
        result(120, days=10), result(22, days=11), result(21, days=12),
        treatment(TreatmentCategory.CORTICOSTEROID, 30), result(22, days=37), result(21, days=38),
    )  # fmt: skip
    refractory = [a for batch in alerts for a in batch if a.kind.value == "refractory"]
    assert len(refractory) == 2
    assert [a.evidence.baseline_10e9_per_l for a in refractory] == [10, 21]


# --- populations, state --------------------------------------------------------------------


def test_population_is_age_at_collection() -> None:
    assert population_at(date(2008, 1, 2), datetime(2026, 1, 1, tzinfo=UTC)) == "paediatric"
    assert population_at(date(2008, 1, 1), datetime(2026, 1, 1, tzinfo=UTC)) == "adult"
    assert population_at(None, datetime(2026, 1, 1, tzinfo=UTC)) == "adult"
    leapling = date(2008, 2, 29)  # turns 18 on 1 March 2026, a common year
    assert population_at(leapling, datetime(2026, 2, 28, 23, tzinfo=UTC)) == "paediatric"
    assert population_at(leapling, datetime(2026, 3, 1, tzinfo=UTC)) == "adult"
    assert population_at(leapling, datetime(2028, 2, 28, tzinfo=UTC)) == "adult"
    child = Patient(
        identifier=PatientIdentifier(authority="H", mrn="c"), birth_date=date(2015, 3, 1)
    )
    (alert,) = apply(History(), result(9, patient=child), RULES, T0)
    assert alert.population == "paediatric"


def test_an_alert_carries_the_limits_of_its_population_for_the_chart(tmp_path: Path) -> None:
    text = Path(__file__).parents[1].joinpath("services/classifier/default_rules.yaml").read_text()
    rules = Rules.model_validate(yaml.safe_load(text))
    child_rules = rules.populations["paediatric"].model_copy(
        update={
            "critical_low": rules.populations["adult"].critical_low.model_copy(
                update={"below": 25}
            ),
            "refractory": rules.populations["adult"].refractory.model_copy(update={"below": 35}),
        }
    )
    site = rules.model_copy(
        update={"populations": {**rules.populations, "paediatric": child_rules}}
    )
    child = Patient(
        identifier=PatientIdentifier(authority="H", mrn="c"), birth_date=date(2015, 3, 1)
    )
    (for_child,) = apply(History(), result(9, patient=child), site, T0)
    (for_adult,) = apply(History(), result(9), site, T0)
    assert for_child.rule.thresholds == Thresholds(
        critical_below_10e9_per_l=25, refractory_below_10e9_per_l=35
    )
    assert for_adult.rule.thresholds == Thresholds(
        critical_below_10e9_per_l=20, refractory_below_10e9_per_l=30
    )


def test_the_one_step_path_follows_a_birthday_and_a_corrected_birth_date() -> None:
    born = date(2008, 1, 3)  # turns 18 on 3 January 2026, two days after T0
    patient = Patient(identifier=PatientIdentifier(authority="H", mrn="t"), birth_date=born)
    history, alerts = feed(*(result(9, days=day, patient=patient) for day in (0, 1.5, 3)))
    assert [v.population for v in history.values.values()] == ["paediatric"] * 2 + ["adult"]
    assert [a.population for [a] in alerts] == ["paediatric"] * 2 + ["adult"]
    assert history.scans is not None  # every value after the first took the one-step path
    corrected = patient.model_copy(update={"birth_date": date(2015, 3, 1)})
    scans = history.scans
    (alert,) = apply(history, result(8, days=4.5, patient=corrected), RULES, T0)
    assert history.scans is scans
    assert alert.population == history.values["R@4.5"].population == "paediatric"


def test_the_one_step_path_turns_a_patient_adult_at_midnight_utc_on_their_18th_birthday() -> None:
    """As population_at says: the count collected a microsecond before midnight is a child's."""
    leapling = Patient(
        identifier=PatientIdentifier(authority="H", mrn="l"), birth_date=date(2008, 2, 29)
    )
    midnight = datetime(2026, 3, 1, tzinfo=UTC)  # 18 in a common year: 1 March
    times = [midnight - timedelta(days=1), midnight - timedelta(microseconds=1), midnight]
    counts = [
        result(150, days=n, patient=leapling).model_copy(update={"collected_at": at})
        for n, at in enumerate(times)
    ]
    history, _ = feed(counts[0])
    scans = history.scans
    feed(*counts[1:], history=history)
    assert scans is not None
    assert history.scans is scans  # the last two took the one-step path
    assert [v.population for v in history.values.in_order()] == [
        population_at(leapling.birth_date, at) for at in times
    ]
    assert [v.population for v in history.values.in_order()] == ["paediatric"] * 2 + ["adult"]


def test_history_is_bounded_by_the_horizon() -> None:
    history, _ = feed(result(12), *(result(150, days=d) for d in range(30, 800, 30)))
    oldest = min(v.at for v in history.values.values())
    newest = T0 + timedelta(days=780)
    assert newest - oldest <= timedelta(days=RULES.horizon_days * 1.1)  # forgotten in batches
    assert len(history.raised) == 0  # the old alert expired with its evidence, without withdrawal


def test_a_patient_followed_beyond_the_horizon_stays_on_the_one_step_path() -> None:
    history, full_evaluations, days = History(), 0, range(0, 3 * 365, 7)
    for day in days:
        scans = history.scans
        apply(history, result(150, days=day), RULES, T0)
        full_evaluations += history.scans is not scans
    batches = (days[-1] - RULES.horizon_days) / (RULES.horizon_days * 0.1)
    assert full_evaluations <= 1 + batches + 1  # not one per value once past the horizon


def test_history_keeps_the_newest_values_within_a_bound() -> None:
    """Hourly counts would outgrow a changelog record within the horizon: the oldest go, in
    batches, and the one-step path is left once per batch only."""
    history, full_evaluations = History(), 0
    for hour in range(2 * VALUES_KEPT):
        scans = history.scans
        apply(history, result(150, days=hour / 24, result_id=f"H{hour}"), RULES, T0)
        full_evaluations += history.scans is not scans
    assert VALUES_KEPT * 0.9 <= len(history.values) <= VALUES_KEPT
    assert f"H{2 * VALUES_KEPT - 1}" in history.values
    assert "H0" not in history.values
    assert full_evaluations <= 1 + (VALUES_KEPT // (VALUES_KEPT // 10)) + 1


def test_history_keeps_the_newest_treatments_within_a_bound() -> None:
    history, _ = feed(*(treatment(TreatmentCategory.IVIG, day / 10) for day in range(300)))
    assert len(history.treatments) <= TREATMENTS_KEPT
    assert treatment(TreatmentCategory.IVIG, 29.9).event_id in history.treatments
    assert treatment(TreatmentCategory.IVIG, 0).event_id not in history.treatments


def test_an_alert_names_the_ward_last_reported() -> None:
    history, alerts = feed(
        result(150, days=0).model_copy(update={"location": "ED"}),
        result(140, days=1),  # a result without a ward changes nothing
        result(9, days=2).model_copy(update={"location": "HAEM-7"}),
    )
    (alert,) = alerts[2]
    assert alert.location == history.location == "HAEM-7"


def test_history_survives_its_json_form() -> None:
    original = result(12, result_id="R1")
    corrected = result(30, status=ResultStatus.CORRECTED, result_id="R1")
    history, _ = feed(original, treatment(TreatmentCategory.IVIG, 1), result(11, days=2), corrected)
    restored = History.from_json(history.to_json())
    assert restored.to_json() == history.to_json()
    assert restored.patient_key == ADULT.identifier.key
    assert not apply(restored, result(11, days=2), RULES, T0)
    assert not apply(restored, original, RULES, T0)  # resent after its correction


def test_a_rules_file_with_a_typo_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: x\nhorizon_days: 10\npopulations: {adult: {critical: {}}}\n")
    with pytest.raises(ValidationError):
        load_rules(path)


def random_story(rng: random.Random) -> list[Any]:
    """Results (in and out of order, corrected, deleted, resent) and treatments, at random."""
    events: list[Any] = []
    ids: list[str] = []
    day = 0.0
    for _ in range(rng.randint(5, 40)):
        roll = rng.random()
        if roll < 0.06:
            events.append(treatment(rng.choice(list(TreatmentCategory)), day + rng.uniform(-10, 2)))
        elif roll < 0.12 and ids:
            rid = rng.choice(ids)
            status = rng.choice([ResultStatus.CORRECTED, ResultStatus.ENTERED_IN_ERROR])
            value = None if status is ResultStatus.ENTERED_IN_ERROR else rng.uniform(1, 200)
            events.append(result(value, rng.uniform(0, day + 1), status, result_id=rid))
        elif roll < 0.16 and events:
            events.append(rng.choice(events))  # a resent event
        else:
            late = rng.random() < 0.15
            day = day if late else day + rng.choice([0.2, 0.5, 1, 2, 3, 7, 30])
            at = rng.uniform(0, day) if late else day
            rid = f"R{len(ids)}"
            ids.append(rid)
            events.append(
                result(
                    rng.choice([5, 12, 18, 25, 29, 35, 60, 150, rng.uniform(1, 300)]),
                    at,
                    result_id=rid,
                )
            )
    return events


@pytest.mark.parametrize("seed", range(300))
def test_the_one_step_path_gives_exactly_what_a_full_evaluation_gives(seed: int) -> None:
    """Appending a newest value is scanned in one step; forcing a full evaluation every time
    must give the very same alerts, event by event."""
    events = random_story(random.Random(seed))
    fast, full = History(), History()
    for event in events:
        full.scans = None  # no one-step path: every event evaluates the whole history
        expected = apply(full, event, RULES, T0)
        assert list(apply(fast, event, RULES, T0)) == list(expected)


# Result ids and counts as reported with the characters the held text escapes (see values.py).
_ODD = ["R\x00nul-", "R\x01esc-", "R\x02mid-", "R\ttab-", "R é-", ""]


def _odd_story(rng: random.Random) -> list[Any]:
    """random_story, its result ids (and so the ids corrections name) given odd characters, some
    event ids not UUIDs, and results that replace an earlier result id under a new one."""
    prefix = rng.choice(_ODD)
    events: list[Any] = []
    for event in random_story(rng):
        if isinstance(event, LabResult):
            update: dict[str, Any] = {"result_id": prefix + event.result_id}
            if rng.random() < 0.3:
                update["event_id"] = f"event {prefix}{event.event_id[:8]}"
            if event.count is not None and rng.random() < 0.2:
                odd_count = event.count.model_copy(update={"original_value": f"{prefix}~"})
                update["count"] = odd_count
            event = event.model_copy(update=update)
            if rng.random() < 0.1:
                events.append(
                    event.model_copy(
                        update={
                            "result_id": f"{event.result_id}/2",
                            "replaces_result_id": event.result_id,
                            "event_id": f"{event.event_id}/2",
                        }
                    )
                )
        events.append(event)
    return events


@pytest.mark.parametrize("seed", range(200))
def test_the_one_step_path_holds_exactly_what_a_full_evaluation_holds(seed: int) -> None:
    """What the one-step path appends (Values.add_new) is held as a full evaluation holds it,
    also for ids with the characters the held text escapes and event ids not UUIDs; a result
    resent, or replacing one held, is declined by it and taken by the full path."""
    fast, full = History(), History()
    for event in _odd_story(random.Random(seed)):
        full.scans = None  # no one-step path: every event evaluates the whole history
        expected = apply(full, event, RULES, T0)
        assert list(apply(fast, event, RULES, T0)) == list(expected)
        assert fast.to_json() == full.to_json()
        assert fast.encoded() == full.encoded()


@pytest.mark.parametrize(
    "first",
    [
        result(9, result_id="R1"),
        result(150, result_id="R1").model_copy(update={"location": "ED"}),
        result(9, status=ResultStatus.PRELIMINARY, result_id="R1"),
        result(None, status=ResultStatus.ENTERED_IN_ERROR, result_id="R1"),
    ],
)
def test_a_new_patients_first_result_comes_out_as_the_full_evaluation_has_it(
    first: LabResult,
) -> None:
    """A new patient's first result is scanned in one step (most patients replay holds have
    few results): the alerts and the history must be the full evaluation's."""
    history, (alerts,) = feed(first)
    full, (expected,) = feed(first, history=History(seen={"an earlier event": None}))
    assert [a.model_dump() for a in alerts] == [a.model_dump() for a in expected]
    assert history.to_json() == full.to_json() | {"seen": list(history.seen or ())}
    assert history.patient_key == ADULT.identifier.key
    assert history.scans is not None
    assert (
        feed(result(8, days=2, result_id="R2"), history=history)[1]
        == feed(result(8, days=2, result_id="R2"), history=full)[1]
    )


def test_an_alert_shows_the_last_three_counts_before_its_evidence_within_30_days() -> None:
    _, alerts = feed(
        result(150, days=-31, result_id="too old"),
        result(140, days=-20, result_id="A"),
        result(130, days=-10, result_id="B"),
        result(120, days=-5, result_id="C"),
        result(110, days=-1, result_id="D"),
        result(9, days=0, result_id="paged"),
    )
    (alert,) = alerts[-1]
    assert [r.result_id for r in alert.evidence.preceding] == ["B", "C", "D"]
    _, alerts = feed(
        result(140, days=-31, result_id="too old"),
        result(9, days=0, result_id="paged"),
        result(150, days=0, result_id="same tube time").model_copy(update={"event_id": "e2"}),
        result(8, days=2, result_id="paged again"),
    )
    (alert,) = alerts[-1]
    assert [r.result_id for r in alert.evidence.preceding] == ["paged", "same tube time"]
