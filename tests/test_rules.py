"""The critical-low rule as a pure function: one page per episode, every repeat recorded."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import (
    AlertKind,
    Coding,
    LabResult,
    Patient,
    PatientIdentifier,
    PlateletCount,
    ResultStatus,
    stable_event_id,
)
from services.classifier.rules import PatientState, Rules, evaluate, load_rules

RULES = load_rules()
T0 = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


def result(
    value: float,
    hours: float = 0,
    status: ResultStatus = ResultStatus.FINAL,
    comparator: str | None = None,
    result_id: str | None = None,
) -> LabResult:
    rid = result_id or f"R-{value}-{hours}-{status}"
    return LabResult.model_validate(
        {
            "event_id": stable_event_id("test", rid, status),
            "source": "json",
            "patient": Patient(identifier=PatientIdentifier(authority="HOSP", mrn="42")),
            "result_id": rid,
            "code": Coding(system="http://loinc.org", code="777-3"),
            "count": PlateletCount(
                value_10e9_per_l=value,
                comparator=comparator,
                original_value=f"{comparator or ''}{value}",
                original_unit="10*9/L",
            ),
            "status": status,
            "collected_at": T0 + timedelta(hours=hours),
            "verified_at": T0 + timedelta(hours=hours, minutes=20),
            "received_at": T0 + timedelta(hours=hours, minutes=21),
        }
    )


def run(*results: LabResult) -> tuple[PatientState, list[list[str]]]:
    """Feed results in order; return the final state and the alert kinds each one raised."""
    state = PatientState()
    raised = []
    for r in results:
        evaluation = evaluate(state, r, RULES, r.received_at)
        state = evaluation.state
        raised.append([a.kind.value for a in evaluation.alerts])
    return state, raised


def test_default_rules_file_is_versioned_and_holds_the_numbers() -> None:
    assert RULES.version
    assert RULES.critical_low.below_10e9_per_l == 20
    assert RULES.critical_low.episode_closes_at_10e9_per_l == 50


def test_a_critical_value_raises_one_alert_with_its_evidence() -> None:
    r = result(12)
    evaluation = evaluate(PatientState(), r, RULES, T0)
    (alert,) = evaluation.alerts
    assert alert.kind is AlertKind.CRITICAL_LOW
    assert alert.value_10e9_per_l == 12
    assert alert.rule.version == RULES.version
    assert alert.result_verified_at == r.verified_at
    assert [e.result_id for e in alert.evidence.results] == [r.result_id]
    assert alert.patient == r.patient
    assert evaluation.state.critical_episode is not None
    assert evaluation.state.critical_episode.alert_id == alert.alert_id


def test_alert_id_is_the_same_when_the_result_is_evaluated_again_elsewhere() -> None:
    """After a crash a worker may evaluate the same result from a fresh state: same alert_id."""
    r = result(12)
    first = evaluate(PatientState(), r, RULES, T0).alerts[0]
    second = evaluate(PatientState(), r, RULES, T0 + timedelta(minutes=5)).alerts[0]
    assert first.alert_id == second.alert_id


@pytest.mark.parametrize(
    ("value", "comparator", "pages"),
    [
        (19.9, None, True),
        (20, None, False),
        (20, "<", True),
        (25, "<", False),
        (5, ">", False),
        (0, None, True),
    ],
)
def test_threshold_and_comparators(value: float, comparator: str | None, pages: bool) -> None:
    _, raised = run(result(value, comparator=comparator))
    assert raised == [["critical_low"] if pages else []]


def test_repeats_in_an_open_episode_are_suppressed_and_counted() -> None:
    state, raised = run(result(12), result(15, hours=6), result(11, hours=12))
    assert raised == [["critical_low"], [], []]
    assert state.critical_episode is not None
    assert state.critical_episode.suppressed_repeats == 2


def test_a_value_at_or_above_50_closes_the_episode_so_the_next_low_pages() -> None:
    _, raised = run(result(12), result(35, hours=6), result(60, hours=12), result(14, hours=18))
    assert raised == [["critical_low"], [], [], ["critical_low"]]


def test_preliminary_results_do_not_page_by_default() -> None:
    _, raised = run(result(8, status=ResultStatus.PRELIMINARY))
    assert raised == [[]]


def test_rules_file_can_let_preliminary_results_page(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: local-7\n"
        "critical_low:\n"
        "  below_10e9_per_l: 30\n"
        "  paging_statuses: [final, preliminary]\n"
        "  episode_closes_at_10e9_per_l: 50\n"
    )
    rules = load_rules(path)
    (alert,) = evaluate(
        PatientState(), result(25, status=ResultStatus.PRELIMINARY), rules, T0
    ).alerts
    assert alert.rule.version == "local-7"


def test_a_duplicate_event_changes_nothing() -> None:
    r = result(12)
    first = evaluate(PatientState(), r, RULES, T0)
    again = evaluate(first.state, r, RULES, T0 + timedelta(minutes=1))
    assert not first.duplicate
    assert again.duplicate
    assert again.alerts == ()
    assert again.state == first.state


def test_a_rules_file_with_a_typo_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: x\ncritical_low:\n  below: 20\n")
    with pytest.raises(ValidationError):
        load_rules(path)


def test_rules_are_plain_data() -> None:
    assert Rules.model_validate(RULES.model_dump()) == RULES
