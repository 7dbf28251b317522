"""The classifier's own state: a history's changelog record, its limit, and the dead letter of
an event it could not apply. No broker needed."""

import json
from datetime import UTC, datetime

import pytest

from schemas import DeadLetter, TreatmentCategory
from services.classifier.dead_letters import RAW_BYTES_KEPT, classifier_dead_letter
from services.classifier.engine import History, apply
from services.classifier.state import (
    PatientState,
    StateTooLargeError,
    decode,
    encode,
    encode_within,
)
from tests.test_engine import RULES, T0, result, treatment

LIMIT = 512_000


def test_a_history_survives_its_changelog_record() -> None:
    history = History()
    apply(history, result(12, result_id="R1"), RULES, T0)
    again = decode(encode(history, LIMIT))
    assert again.to_json() == history.to_json()


def test_a_history_past_the_limit_is_refused_not_written() -> None:
    history = History(patient_key="H|1", seen=dict.fromkeys(f"{i:0100d}" for i in range(600)))
    assert len(encode(history, 100_000)) > 60_000
    with pytest.raises(StateTooLargeError, match="limit 50000"):
        encode(history, 50_000)


def test_a_failed_event_leaves_the_patient_as_the_changelog_has_them() -> None:
    history = History()
    apply(history, result(150, result_id="R1"), RULES, T0)
    state = PatientState(history, encode(history, LIMIT))
    apply(history, result(9, days=1, result_id="R2"), RULES, T0)  # then the write fails
    restored = state.restored()
    assert set(restored.history.values) == {"R1"}
    assert restored.stored == state.stored
    assert PatientState(History(), None).restored().history.values == {}


def test_a_record_that_is_not_a_history_is_refused() -> None:
    with pytest.raises(ValueError, match="must be a JSON object"):
        decode(b"[1, 2]")
    with pytest.raises(json.JSONDecodeError):
        decode(b"not json")


def test_the_dead_letter_keeps_the_event_and_why() -> None:
    raw = json.dumps({"event_id": "e1"}).encode()
    letter = classifier_dead_letter(
        raw, "lab.results.v1", "engine_error", "could not apply it", datetime.now(UTC)
    )
    assert letter.raw_payload.encode() == raw
    assert letter.source == "classifier"
    assert letter.reason == "could not apply it [from lab.results.v1]"
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


def test_a_huge_event_is_dead_lettered_cut_with_its_size_and_hash() -> None:
    raw = b'{"x":"' + b"a" * (2 * RAW_BYTES_KEPT) + b'"}'
    letter = classifier_dead_letter(
        raw, "lab.results.v1", "undecodable_event", "not a lab_result", datetime.now(UTC)
    )
    assert len(letter.raw_payload) == RAW_BYTES_KEPT
    assert f"of {len(raw)} bytes; sha256 " in letter.reason
    binary = classifier_dead_letter(b"\xff\xfe", "t", "undecodable_event", "x", datetime.now(UTC))
    assert binary.raw_encoding == "base64"


def test_a_stored_treatment_todays_models_refuse_is_left_out_not_the_patient() -> None:
    """Ingest accepted a treatment charted for 2206 before times were bounded; the history
    holding it must still load (the count that pages is in it), without that treatment."""
    history = History()
    apply(history, result(9, result_id="R1"), RULES, T0)
    apply(history, treatment(TreatmentCategory.IVIG, 1), RULES, T0)
    stored = json.loads(encode(history, LIMIT))
    (charted,) = stored["treatments"]
    stored["treatments"].append({**charted, "event_id": "typo", "started_at": "2206-01-01T00:00Z"})
    again = decode(json.dumps(stored).encode())
    assert set(again.values) == {"R1"}
    assert list(again.treatments) == [charted["event_id"]]


def test_a_history_that_outgrows_its_record_forgets_its_older_half() -> None:
    history = History()
    for day in range(200):
        apply(history, result(150, day, result_id=f"{'X' * 150}-{day}"), RULES, T0)
    assert len(encode(history, LIMIT)) > 30_000
    stored, shrunk = encode_within(history, 30_000)
    assert shrunk
    assert len(stored) <= 30_000
    kept = decode(stored)
    assert f"{'X' * 150}-199" in kept.values  # the newest stay
    assert f"{'X' * 150}-0" not in kept.values
    assert history.scans is None  # the next event takes the full path
    assert encode_within(kept, LIMIT)[1] is False
