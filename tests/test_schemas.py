"""The event contracts: exported JSON Schema in step with the models, and their invariants."""

import random
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from schemas import (
    AlertKind,
    ClinicalTime,
    Dose,
    Evidence,
    LabResult,
    Patient,
    PatientIdentifier,
    PlateletAlert,
    PlateletCount,
    RuleRef,
    stable_event_id,
)
from schemas.export import JSON_DIR, drifted_files, render_schemas, write_schemas

PATIENT = Patient(identifier=PatientIdentifier(authority="HOSP", mrn="42"))
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_checked_in_json_schemas_match_the_models() -> None:
    assert drifted_files(JSON_DIR) == [], "run `make schemas` and commit schemas/json/"


def test_drift_is_detected_and_repaired(tmp_path) -> None:
    write_schemas(tmp_path)
    assert drifted_files(tmp_path) == []
    (tmp_path / "lab_result.schema.json").write_text("{}")
    (tmp_path / "retired.schema.json").write_text("{}")
    assert drifted_files(tmp_path) == ["lab_result.schema.json", "retired.schema.json"]
    write_schemas(tmp_path)
    assert drifted_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(render_schemas())


def test_stable_event_id_depends_only_on_identity() -> None:
    assert stable_event_id("a", "b") == stable_event_id("a", "b")
    assert stable_event_id("a", "b") != stable_event_id("a", "c")
    assert stable_event_id("ab", "c") != stable_event_id("a", "bc")


def test_stable_event_id_is_the_uuid5_of_the_joined_parts() -> None:
    """Computed from SHA-1 directly for speed: the very ids uuid5 gave (ids already published,
    and alert ids on record, must not change), over many parts of any text."""
    rng = random.Random(17)
    alphabet = "ab-|:\x1f\x00 é漢😀" + "".join(map(chr, range(32, 127)))
    for _ in range(20_000):
        parts = tuple(
            "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
            for _ in range(rng.randrange(1, 6))
        )
        expected = str(
            uuid.uuid5(uuid.UUID("5b0f3c4e-6f0c-4d7e-9a51-3f1b8c2d9e10"), "\x1f".join(parts))
        )
        assert stable_event_id(*parts) == expected, parts
    assert stable_event_id() == str(
        uuid.uuid5(uuid.UUID("5b0f3c4e-6f0c-4d7e-9a51-3f1b8c2d9e10"), "")
    )
    with pytest.raises(UnicodeEncodeError):
        stable_event_id("\ud800")  # a lone surrogate, refused as uuid5 refuses it


def test_times_must_carry_a_timezone() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        LabResult.model_validate(
            {
                "event_id": "e1",
                "source": "json",
                "patient": PATIENT.model_dump(),
                "result_id": "r1",
                "code": {"system": "http://loinc.org", "code": "777-3"},
                "count": {"value_10e9_per_l": 12, "original_value": "12", "original_unit": "K/uL"},
                "status": "final",
                "collected_at": "2026-11-25T08:00:00",
                "received_at": "2026-11-25T08:00:00Z",
            }
        )


def _alert(**fields: object) -> PlateletAlert:
    base: dict[str, object] = {
        "event_id": "e",
        "alert_id": "a",
        "patient": PATIENT,
        "evidence": Evidence(),
        "rule": RuleRef(id="critical_low", version="1"),
        "raised_at": NOW,
    }
    return PlateletAlert.model_validate({**base, **fields})


def test_a_withdrawal_names_the_alert_it_withdraws_and_why() -> None:
    with pytest.raises(ValidationError, match="withdraws_alert_id"):
        _alert(kind=AlertKind.WITHDRAWN)
    withdrawn = _alert(
        kind=AlertKind.WITHDRAWN, withdraws_alert_id="a0", withdrawal_reason="result corrected"
    )
    assert withdrawn.withdraws_alert_id == "a0"


def test_an_alert_carries_its_triggering_value() -> None:
    with pytest.raises(ValidationError, match="triggering value"):
        _alert(kind=AlertKind.CRITICAL_LOW)
    assert _alert(kind=AlertKind.CRITICAL_LOW, value_10e9_per_l=12).value_10e9_per_l == 12


def test_a_count_or_dose_stored_before_the_ingest_limits_still_loads() -> None:
    """The classifier rebuilds counts and treatments from its stored history: a count ingest
    now refuses (a unit error, 150,000 x10^9/L), a long dose unit or a placeholder birth date
    accepted earlier must load, not stop the classifier."""
    count = PlateletCount(value_10e9_per_l=150_000, original_value="150000", original_unit="K/uL")
    assert count.value_10e9_per_l == 150_000
    assert Dose(value=1, unit="u" * 40).unit == "u" * 32
    patient = Patient.model_validate(
        {"identifier": {"authority": "H", "mrn": "1"}, "birth_date": "1800-01-01"}
    )
    assert patient.birth_date is None


def test_clinical_times_are_held_as_utc_instants_even_from_a_zone_with_no_offset_today() -> None:
    """London in winter is UTC+0 but has summer time: its times are converted too, so that
    two of them subtract in real hours across the change."""
    adapter = TypeAdapter(ClinicalTime)
    winter = adapter.validate_python(datetime(2026, 3, 28, 12, tzinfo=ZoneInfo("Europe/London")))
    summer = adapter.validate_python(datetime(2026, 3, 29, 12, tzinfo=ZoneInfo("Europe/London")))
    assert winter.tzinfo is UTC
    assert summer - winter == timedelta(hours=23)


@pytest.mark.parametrize(
    ("written", "held"),
    [
        ("2026-11-25T08:00:00Z", datetime(2026, 11, 25, 8, tzinfo=UTC)),
        ("2026-11-25T09:30:00+01:30", datetime(2026, 11, 25, 8, tzinfo=UTC)),
        ("1900-01-01T00:00:00Z", datetime(1900, 1, 1, tzinfo=UTC)),
        ("2100-12-31T23:59:59.999999Z", datetime(2100, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("1900-01-01T01:00:00+01:00", datetime(1900, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_clinical_time_read_from_json_is_held_as_the_utc_instant(
    written: str, held: datetime
) -> None:
    moment = TypeAdapter(ClinicalTime).validate_json(f'"{written}"')
    assert moment == held
    assert moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "written",
    [
        "1899-12-31T23:59:59.999999Z",
        "2101-01-01T00:00:00Z",
        "2026-11-25T08:00:00+14:30",
        "2026-11-25T08:00:00",
    ],
)
def test_an_implausible_or_zoneless_clinical_time_from_json_is_refused(written: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(ClinicalTime).validate_json(f'"{written}"')


@pytest.mark.parametrize(
    ("written", "held"),
    [
        ("1900-01-01", "1900-01-01"),
        ("2100-12-31", "2100-12-31"),
        ("1899-12-31", None),
        ("2101-01-01", None),
        (None, None),
    ],
)
def test_a_birth_date_outside_1900_to_2100_reads_as_unknown(
    written: str | None, held: str | None
) -> None:
    patient = Patient.model_validate(
        {"identifier": {"authority": "HOSP", "mrn": "42"}, "birth_date": written}
    )
    assert (None if patient.birth_date is None else patient.birth_date.isoformat()) == held


def test_only_a_withdrawal_may_lack_a_count() -> None:
    fields = {
        "event_id": "e1",
        "source": "json",
        "patient": PATIENT.model_dump(),
        "result_id": "r1",
        "code": {"system": "http://loinc.org", "code": "777-3"},
        "count": None,
        "collected_at": "2026-11-25T08:00:00Z",
        "received_at": "2026-11-25T08:00:00Z",
    }
    for status in ("entered-in-error", "wrong-patient"):
        assert LabResult.model_validate({**fields, "status": status}).count is None
    with pytest.raises(ValidationError, match="carries a count"):
        LabResult.model_validate({**fields, "status": "final"})
