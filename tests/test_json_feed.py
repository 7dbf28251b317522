"""The JSON lab feed, without a broker: every body ends as Publish, Filter or Rejection."""

import json
from datetime import UTC, datetime

import pytest

from schemas import LabResult
from services.ingest.codes import FeedContext
from services.ingest.deadletter import dead_letter
from services.ingest.json_lab import classify_submission
from services.ingest.outcomes import Filter, Outcome, Publish, Rejection, RejectReason
from services.ingest.units import UnknownUnitError, parse_value, to_10e9_per_l

RECEIVED = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CONTEXT = FeedContext(received_at=RECEIVED, local_zone=UTC)


def published(outcome: Outcome) -> LabResult:
    assert isinstance(outcome, Publish), outcome
    assert isinstance(outcome.event, LabResult)
    return outcome.event


def _body(**changes: object) -> bytes:
    body: dict[str, object] = {
        "patient": {"identifier": {"authority": "HOSP", "mrn": "42"}},
        "result_id": "R1",
        "code": {"system": "http://loinc.org", "code": "777-3"},
        "value": "12",
        "unit": "10*9/L",
        "collected_at": "2026-11-25T07:40:00+01:00",
    }
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("unit", "value", "expected"),
    [
        ("10*9/L", 12, 12),
        ("K/uL", 12, 12),
        ("x10E3/\u00b5L", 12, 12),
        ("10^3/mm3", 150, 150),
        ("10\\S\\9/L", 7, 7),
        ("/uL", 150000, 150),
        ("cumm", 12000, 12),
        ("{cells}/uL", 5000, 5),
    ],
)
def test_known_units_normalise_to_10e9_per_l(unit: str, value: float, expected: float) -> None:
    assert to_10e9_per_l(value, unit) == expected


@pytest.mark.parametrize("unit", ["g/dL", "10*6/uL", "", "mmol/L"])
def test_unknown_units_are_refused_never_guessed(unit: str) -> None:
    with pytest.raises(UnknownUnitError):
        to_10e9_per_l(12, unit)


def test_comparators_are_kept() -> None:
    assert parse_value("<5") == ("<", 5.0)
    assert parse_value(" >= 1000 ") == (">=", 1000.0)
    assert parse_value("12.5") == (None, 12.5)


def test_a_platelet_count_is_published_with_a_stable_event_id() -> None:
    result = published(classify_submission(_body(), CONTEXT))
    again = published(classify_submission(_body(), CONTEXT))
    assert result.count is not None
    assert result.count.value_10e9_per_l == 12
    assert result.count.original_unit == "10*9/L"
    assert result.patient.identifier.key == "HOSP|42"
    assert result.status == "final"
    assert result.received_at == RECEIVED
    assert result.event_id == again.event_id
    corrected = published(classify_submission(_body(status="corrected", value="14"), CONTEXT))
    assert corrected.event_id != result.event_id
    recorrected = published(classify_submission(_body(status="corrected", value="15"), CONTEXT))
    assert recorrected.event_id != corrected.event_id


def test_per_microlitre_with_comparator() -> None:
    count = published(classify_submission(_body(value="<5000", unit="/uL"), CONTEXT)).count
    assert count is not None
    assert (count.value_10e9_per_l, count.comparator, count.original_value) == (5, "<", "<5000")


def test_a_withdrawal_needs_no_value_but_a_final_result_does() -> None:
    withdrawn = published(
        classify_submission(_body(status="entered-in-error", value=None, unit=None), CONTEXT)
    )
    assert withdrawn.count is None
    missing = classify_submission(_body(value=None), CONTEXT)
    assert isinstance(missing, Rejection)
    assert missing.reason is RejectReason.UNREADABLE_VALUE


@pytest.mark.parametrize("code", ["11125-2", "33914-3", "718-7"])
def test_other_analytes_are_filtered_not_published(code: str) -> None:
    outcome = classify_submission(_body(code={"system": "http://loinc.org", "code": code}), CONTEXT)
    assert isinstance(outcome, Filter)
    assert code in outcome.detail


def test_a_configured_local_code_is_a_platelet_count() -> None:
    local = FeedContext(RECEIVED, UTC, frozenset({("99LAB", "PLT")}))
    body = _body(code={"system": "99LAB", "code": "PLT"})
    assert isinstance(classify_submission(body, CONTEXT), Filter)
    assert published(classify_submission(body, local)).code.code == "PLT"


def test_malformed_json_is_rejected() -> None:
    outcome = classify_submission(b'{"patient": ', CONTEXT)
    assert isinstance(outcome, Rejection)
    assert outcome.reason is RejectReason.INVALID_JSON


def test_field_errors_name_each_field_without_echoing_values() -> None:
    outcome = classify_submission(_body(collected_at="2026-11-25T07:40:00", result_id=""), CONTEXT)
    assert isinstance(outcome, Rejection)
    assert outcome.reason is RejectReason.INVALID_FIELDS
    locations = {error["loc"] for error in outcome.errors}
    assert locations == {"collected_at", "result_id"}
    assert all("input" not in error for error in outcome.errors)


def test_unknown_unit_and_unreadable_value_are_rejected_with_the_reason() -> None:
    unit = classify_submission(_body(unit="mg/dL"), CONTEXT)
    assert isinstance(unit, Rejection)
    assert unit.reason is RejectReason.UNKNOWN_UNIT
    assert "mg/dL" in unit.message
    value = classify_submission(_body(value="clumped"), CONTEXT)
    assert isinstance(value, Rejection)
    assert value.reason is RejectReason.UNREADABLE_VALUE


def test_dead_letter_keeps_the_raw_bytes_and_every_reason() -> None:
    rejection = Rejection(RejectReason.INVALID_JSON, "body is not valid JSON")
    text = dead_letter(b'{"a": ', "json", [rejection], "application/json", RECEIVED)
    assert (text.raw_payload, text.raw_encoding) == ('{"a": ', "utf-8")
    assert text.reason_code == "invalid_json"
    binary = dead_letter(b"\xff\xfe", "json", [rejection], None, RECEIVED)
    assert (binary.raw_payload, binary.raw_encoding) == ("//4=", "base64")
    assert text.event_id == dead_letter(b'{"a": ', "json", [rejection], None, RECEIVED).event_id
    unit = Rejection(RejectReason.UNKNOWN_UNIT, "unknown unit 'g'", ({"loc": "u", "msg": "m"},))
    both = dead_letter(b"x", "hl7v2", [unit, rejection], None, RECEIVED)
    assert both.reason_code == "unknown_unit"
    assert both.reason == "unknown unit 'g'; body is not valid JSON"
    assert both.errors == ({"loc": "u", "msg": "m"},)


# Absurd values: refused naming the field (or, for free text, cut), never passed on.


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("collected_at", "9999-12-31T23:59:59Z"),  # later an OverflowError in the classifier
        ("collected_at", "1899-12-31T23:59:59Z"),
        ("collected_at", "2026-11-25T07:40:00+23:59"),
        ("verified_at", "2101-01-01T00:00:00Z"),
        ("result_id", "9" * 9000),  # a 9 kB result id bloated the classifier's state
        ("replaces_result_id", "9" * 201),
        ("patient", {"identifier": {"authority": "HOSP", "mrn": "4" * 65}}),
        ("patient", {"identifier": {"authority": "H" * 201, "mrn": "42"}}),
        ("code", {"system": "http://loinc.org", "code": "7" * 65}),
        ("abnormal_flags", ["L"] * 11),
        ("abnormal_flags", ["L" * 17]),
    ],
)
def test_json_absurd_value_is_refused_naming_the_field(field: str, value: object) -> None:
    outcome = classify_submission(_body(**{field: value}), CONTEXT)
    assert isinstance(outcome, Rejection)
    assert outcome.reason is RejectReason.INVALID_FIELDS
    assert [error["loc"].split(".")[0] for error in outcome.errors] == [field]


@pytest.mark.parametrize(
    ("value", "unit", "reason"),
    [
        ("150000", "K/uL", RejectReason.UNREADABLE_VALUE),  # a /uL count with the wrong unit
        ("1" * 33, "10*9/L", RejectReason.UNREADABLE_VALUE),
        ("12", "u" * 33, RejectReason.UNKNOWN_UNIT),
    ],
)
def test_json_value_or_unit_beyond_any_platelet_count_is_refused(
    value: str, unit: str, reason: RejectReason
) -> None:
    outcome = classify_submission(_body(value=value, unit=unit), CONTEXT)
    assert isinstance(outcome, Rejection)
    assert outcome.reason is reason
    assert len(outcome.message) < 200


def test_json_placeholder_birth_date_is_left_out_not_refused() -> None:
    patient = {"identifier": {"authority": "HOSP", "mrn": "42"}, "birth_date": "1800-01-01"}
    result = published(classify_submission(_body(patient=patient), CONTEXT))
    assert result.patient.birth_date is None


def test_json_long_display_text_is_cut_to_200_characters() -> None:
    code = {"system": "http://loinc.org", "code": "777-3", "display": "P" * 500}
    assert published(classify_submission(_body(code=code), CONTEXT)).code.display == "P" * 200
