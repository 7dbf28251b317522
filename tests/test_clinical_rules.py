"""Issue 13's clinical safety rules, from timelines a hematologist would meet.

A withdrawal tells everyone paged "that page was wrong": it is sent only when a value in the
alert's own evidence was corrected, deleted or posted to the wrong patient. Refractory is judged
per first-line course, on real time, with transfusions and splenectomy understood.
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from schemas import (
    AlertKind,
    PlateletAlert,
    ResultStatus,
    TreatmentCategory,
    stable_event_id,
)
from services.classifier.engine import History, apply
from tests.test_engine import (
    ADULT,
    RULES,
    T0,
    feed,
    flat,
    kinds,
    result,
    splenectomy,
    transfusion,
    treatment,
)


def every(alerts: list[list[PlateletAlert]]) -> list[PlateletAlert]:
    return [a for batch in alerts for a in batch]


def withdrawals(alerts: list[list[PlateletAlert]]) -> list[PlateletAlert]:
    return [a for a in every(alerts) if a.kind is AlertKind.WITHDRAWN]


# --- 1. a withdrawal only when the paged value was wrong -----------------------------------


def test_a_late_older_critical_value_neither_pages_nor_withdraws_the_current_alert() -> None:
    _, alerts = feed(result(15, days=1, result_id="NOW"), result(10, days=0, result_id="OLD"))
    assert kinds(alerts) == [["critical_low"], []]


def test_correcting_one_value_does_not_withdraw_the_page_for_another() -> None:
    # 12 pages; 60 closes the episode; 14 opens a new one and pages. The 60 is then corrected
    # to 45: re-read, 14 would have been a suppressed repeat, but 14 itself was never wrong.
    _, alerts = feed(
        result(12, days=0, result_id="A"),
        result(60, days=0.25, result_id="B"),
        result(14, days=0.5, result_id="C"),
        result(45, days=0.25, status=ResultStatus.CORRECTED, result_id="B"),
    )
    assert kinds(alerts) == [["critical_low"], [], ["critical_low"], []]


def test_two_tubes_with_the_same_collection_time_page_once() -> None:
    for second in (11, 5):  # a similar count, and a far lower one
        _, alerts = feed(
            result(12, result_id="TUBE-2"), result(second, result_id="TUBE-1")
        )  # TUBE-1 sorts first by id, but arrived second
        assert kinds(alerts) == [["critical_low"], []], second


def test_a_correction_to_a_lower_value_after_a_normal_count_updates_the_alert() -> None:
    _, alerts = feed(
        result(12, result_id="R1"),
        result(150, days=1, result_id="R2"),
        result(8, status=ResultStatus.CORRECTED, result_id="R1"),
    )
    (paged,), (), (updated,) = alerts
    assert updated.kind is AlertKind.CRITICAL_LOW
    assert updated.alert_id == paged.alert_id
    assert updated.value_10e9_per_l == 8


def test_a_late_earlier_low_value_keeps_the_persistent_alert_and_its_id() -> None:
    _, alerts = feed(
        result(25, days=0), result(28, days=3), result(27, days=7), result(26, days=-2)
    )
    (paged,), (updated,) = alerts[2], alerts[3]  # the run now starts on day -2: new evidence...
    assert updated.alert_id == paged.alert_id  # ...for the same alert, which pages no one again
    assert updated.evidence.results[0].result_id == "R@-2"
    assert not withdrawals(alerts)


def test_a_therapy_charted_late_does_not_withdraw_persistent_severe() -> None:
    # Dexamethasone started on day 5, charted on day 8: too recent to judge, so no refractory;
    # the counts are still < 30 and nothing they rested on was wrong.
    _, alerts = feed(
        result(25, days=0), result(28, days=3), result(27, days=7),
        treatment(TreatmentCategory.CORTICOSTEROID, 5, "dexamethasone"),
    )  # fmt: skip
    assert flat(alerts) == ["persistent_severe"]


def test_refractory_supersedes_persistent_severe_without_a_withdrawal() -> None:
    # The same patient's dexamethasone was started 10 days before the first count, charted
    # late: the counts are then a failure of first-line therapy.
    history, alerts = feed(
        result(25, days=0), result(28, days=3), result(27, days=7),
        treatment(TreatmentCategory.CORTICOSTEROID, -10, "dexamethasone"),
    )  # fmt: skip
    (persistent,), (refractory,) = alerts[2], alerts[3]
    assert refractory.kind is AlertKind.REFRACTORY
    assert refractory.supersedes_alert_id == persistent.alert_id
    assert not withdrawals(alerts)
    assert not apply(history, result(24, days=8), RULES, T0)  # superseded stays quiet


def test_a_correction_that_no_longer_holds_withdraws_and_says_which_value() -> None:
    _, alerts = feed(
        result(12, result_id="R1"), result(140, status=ResultStatus.CORRECTED, result_id="R1")
    )
    (withdrawal,) = alerts[1]
    correction = withdrawal.correction
    assert correction is not None
    assert (correction.result_id, correction.status, correction.collected_at) == (
        "R1", ResultStatus.CORRECTED, T0,
    )  # fmt: skip
    assert correction.was.value_10e9_per_l == 12
    assert correction.now is not None
    assert correction.now.value_10e9_per_l == 140
    assert "R1" not in (withdrawal.withdrawal_reason or "")  # no internal result ids
    assert "12" in (withdrawal.withdrawal_reason or "")


# --- 2. real time ----------------------------------------------------------------------------


def test_the_repeat_window_is_real_hours_across_a_daylight_saving_change() -> None:
    paris = ZoneInfo("Europe/Paris")  # summer time starts 29 March 2026 at 02:00
    first = result(12).model_validate(
        result(12).model_dump() | {"collected_at": datetime(2026, 3, 28, 12, 0, tzinfo=paris)}
    )
    second = result(14, result_id="R2").model_validate(
        result(14, result_id="R2").model_dump()
        | {"collected_at": datetime(2026, 3, 29, 12, 30, tzinfo=paris)}  # 23.5 h later
    )
    _, alerts = feed(first, second)
    assert kinds(alerts) == [["critical_low"], []]


# --- 3. refractory per course ----------------------------------------------------------------


def test_normal_counts_after_therapy_are_never_refractory() -> None:
    _, alerts = feed(
        result(80, days=-1), treatment(TreatmentCategory.CORTICOSTEROID, 0, "dexamethasone"),
        result(90, days=7), result(95, days=8),
    )  # fmt: skip
    assert flat(alerts) == []


def test_below_twice_the_baseline_and_below_the_ceiling_is_no_response() -> None:
    _, alerts = feed(
        result(22, days=-1), treatment(TreatmentCategory.CORTICOSTEROID, 0, "dexamethasone"),
        result(35, days=7), result(38, days=8),
    )  # fmt: skip
    assert flat(alerts) == ["refractory"]


def test_a_fall_after_a_response_without_a_new_course_is_loss_of_response() -> None:
    _, alerts = feed(
        result(10, days=-1), treatment(TreatmentCategory.IVIG, 0, "Privigen"),
        result(120, days=10), result(15, days=100), result(14, days=100.5),
    )  # fmt: skip
    assert "refractory" not in flat(alerts)
    assert flat(alerts).count("critical_low") == 2  # the -1 day count, and the fall
    _, again = feed(
        result(10, days=-1), treatment(TreatmentCategory.IVIG, 0, "Privigen"),
        result(120, days=10), result(15, days=100),
        treatment(TreatmentCategory.CORTICOSTEROID, 102, "dexamethasone"),
        result(14, days=110), result(13, days=111),
    )  # fmt: skip
    assert flat(again).count("refractory") == 1  # the new course failed


def test_a_count_within_24_hours_of_a_transfusion_is_not_a_response() -> None:
    _, alerts = feed(
        result(10, days=-1), treatment(TreatmentCategory.IVIG, 0, "Privigen"),
        result(25, days=7), transfusion(7.5), result(60, days=7.6), result(24, days=8),
    )  # fmt: skip
    assert "refractory" in flat(alerts)


def test_a_low_count_after_a_transfusion_still_counts_as_no_response() -> None:
    _, alerts = feed(
        result(10, days=-1), treatment(TreatmentCategory.IVIG, 0, "Privigen"),
        transfusion(7), result(25, days=7.1), result(24, days=8.2),
    )  # fmt: skip
    assert "refractory" in flat(alerts)


def test_splenectomy_is_judged_from_seven_days_after_the_operation() -> None:
    _, early = feed(splenectomy(0), result(22, days=1), result(21, days=2))
    assert "refractory" not in flat(early)
    _, later = feed(splenectomy(0), result(22, days=8), result(21, days=9))
    assert flat(later) == ["refractory"]


def test_refractory_alert_id_is_stable_when_the_streak_starts_earlier() -> None:
    _, alerts = feed(
        result(10, days=-1), treatment(TreatmentCategory.IVIG, 0, "Privigen"),
        result(25, days=9), result(24, days=10), result(26, days=8),
    )  # fmt: skip
    raised = [a for a in every(alerts) if a.kind is AlertKind.REFRACTORY]
    assert {a.alert_id for a in raised} == {raised[0].alert_id}
    assert not withdrawals(alerts)


# --- 4. evidence names every treatment on record ---------------------------------------------


def test_persistent_severe_names_the_second_line_treatments_on_record() -> None:
    _, alerts = feed(
        treatment(TreatmentCategory.RITUXIMAB, -30, "rituximab"),
        treatment(TreatmentCategory.TPO_RECEPTOR_AGONIST, -20, "eltrombopag"),
        result(25), result(28, days=3), result(27, days=7),
    )  # fmt: skip
    (alert,) = every(alerts)
    assert alert.kind is AlertKind.PERSISTENT_SEVERE
    assert {t.name for t in alert.evidence.treatments} == {"rituximab", "eltrombopag"}
    assert alert.evidence.first_line_on_record is False
    assert alert.evidence.limit_10e9_per_l == 30


def test_a_critical_alert_names_a_recent_transfusion_and_first_line_therapy() -> None:
    _, alerts = feed(
        treatment(TreatmentCategory.CORTICOSTEROID, -3, "dexamethasone"), transfusion(-1),
        result(9),
    )  # fmt: skip
    (alert,) = every(alerts)
    assert {t.category for t in alert.evidence.treatments} == {
        TreatmentCategory.CORTICOSTEROID, TreatmentCategory.PLATELET_TRANSFUSION,
    }  # fmt: skip
    assert alert.evidence.first_line_on_record is True


def test_refractory_evidence_gives_the_baseline_and_when_it_was_taken() -> None:
    _, alerts = feed(
        result(12, days=-1), treatment(TreatmentCategory.IVIG, 0, "Privigen"),
        result(25, days=7), result(24, days=8),
    )  # fmt: skip
    (refractory,) = [a for a in every(alerts) if a.kind is AlertKind.REFRACTORY]
    assert refractory.evidence.baseline_10e9_per_l == 12
    assert refractory.evidence.baseline_collected_at == T0 - timedelta(days=1)
    assert refractory.evidence.first_line_on_record is True


def test_a_history_stored_before_issue_13_still_loads_and_keeps_its_alerts() -> None:
    """Records written by the previous engine: a withdrawn flag instead of a state, no result ids
    of the evidence, times with the sender's offset. A correction of the paged value still
    withdraws; a late value does not."""
    history, alerts = feed(result(12, result_id="R1"))
    record = history.to_json()
    record["raised"] = [[a, k, anchor, key, False] for a, k, anchor, key, *_ in record["raised"]]
    for value in record["values"]:
        value[7] = datetime.fromisoformat(value[7]).astimezone(ZoneInfo("Europe/Paris")).isoformat()
    restored = History.from_json(record)
    assert restored.values["R1"].at.utcoffset() == timedelta(0)
    assert not apply(restored, result(10, days=-1, result_id="OLD"), RULES, T0)
    (withdrawal,) = apply(
        restored, result(140, status=ResultStatus.CORRECTED, result_id="R1"), RULES, T0
    )
    assert withdrawal.withdraws_alert_id == alerts[0][0].alert_id


def test_a_refractory_alert_raised_by_the_previous_engine_is_not_paged_again() -> None:
    """Its id was anchored on the therapy and the streak's first count; today's is anchored on
    the course. Recognised by its evidence, it is neither re-paged nor withdrawn."""
    history, _ = feed(
        result(10, days=-1), treatment(TreatmentCategory.IVIG, 0, "Privigen"),
        result(25, days=7), result(24, days=8),
    )  # fmt: skip
    record = history.to_json()
    old_id = stable_event_id("alert", ADULT.identifier.key, "refractory", "therapy|R@7")
    record["raised"] = [
        [old_id if kind == "refractory" else alert_id, kind, anchor, key, False]
        for alert_id, kind, anchor, key, *_ in record["raised"]
    ]
    restored = History.from_json(record)
    assert not apply(restored, result(23, days=9), RULES, T0)
    assert not apply(restored, treatment(TreatmentCategory.RITUXIMAB, 9.5, "rituximab"), RULES, T0)
    assert restored.raised[old_id].state.value == "active"
