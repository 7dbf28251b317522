"""The classifier's own state: a history's changelog record, its limit, and the dead letter of
an event it could not apply. No broker needed."""

import json
from datetime import UTC, datetime

import pytest

from schemas import Coding, DeadLetter, ResultStatus, TreatmentCategory
from services.classifier.dead_letters import RAW_BYTES_KEPT, classifier_dead_letter
from services.classifier.engine import History, apply, shrink
from services.classifier.state import (
    PatientState,
    StateTooLargeError,
    decode,
    encode,
    encode_within,
)
from tests.test_clinical_inputs import diagnosis
from tests.test_engine import RULES, T0, result, treatment

LIMIT = 512_000


def test_a_history_survives_its_changelog_record() -> None:
    history = History()
    apply(history, result(12, result_id="R1"), RULES, T0)
    again = decode(encode(history, LIMIT))
    assert again.to_json() == history.to_json()


ODD_ID = 'R"3\\\u00e9'  # a quote, a backslash and an accented letter: JSON escapes each


def the_json_of(history: History) -> bytes:
    """The record as the JSON of to_json(): what encode's kept fragments must add up to."""
    return json.dumps(history.to_json(), separators=(",", ":")).encode()


def test_the_record_written_from_kept_fragments_is_the_json_of_the_history() -> None:
    """encode keeps the JSON of counts and treatments written before; whatever happens to the
    history after (a count added, replaced in place, a treatment replaced, a shrink, a decode of
    a record in an older form), the record is still exactly the JSON of the history."""
    history = History()
    steps = [
        result(150, 0, result_id="R1"),
        result(9, 1, result_id="R2", comparator="<"),
        treatment(TreatmentCategory.IVIG, 1.5),
        result(25, 8, result_id=ODD_ID),  # written with JSON escapes
        result(60, 1, ResultStatus.CORRECTED, result_id="R2"),  # replaced in place
        treatment(TreatmentCategory.IVIG, 1.5).model_copy(update={"name": "Octagam"}),
        result(24, 9, result_id="R4"),
        result(None, 0, ResultStatus.ENTERED_IN_ERROR, result_id="R1"),  # removed
        result(22, 10, result_id="R5"),
    ]
    for event in steps:
        apply(history, event, RULES, T0)
        assert encode(history, LIMIT) == the_json_of(history)
        assert encode(history, LIMIT) == the_json_of(history)  # kept, and still right
    assert set(history.values) == {"R2", ODD_ID, "R4", "R5"}
    assert shrink(history)
    assert encode(history, LIMIT) == the_json_of(history)
    apply(history, result(21, 11, result_id="R6"), RULES, T0)
    assert encode(history, LIMIT) == the_json_of(history)
    old = history.to_json()  # as written before issue 14: no codes or flags on counts
    old["values"] = [row[:11] for row in old["values"]]
    again = decode(json.dumps(old).encode())
    assert encode(again, LIMIT) == the_json_of(again)
    apply(again, result(20, 12, result_id="R7"), RULES, T0)
    assert encode(again, LIMIT) == the_json_of(again)
    assert decode(encode(again, LIMIT)).to_json() == again.to_json()


def test_a_record_holding_two_events_with_one_event_id_is_still_the_json_of_the_history() -> None:
    """The JSON kept is by event id; a treatment and a diagnosis sent under one event id (a
    sender's bug, or a record written so) must each be written as what they are."""
    history = History()
    apply(history, result(9, result_id="R1"), RULES, T0)
    apply(history, treatment(TreatmentCategory.IVIG, 1), RULES, T0)
    (charted,) = history.treatments.values()
    itp = Coding(system="http://snomed.info/sct", code="32273002", display="ITP")
    stored = json.loads(encode(history, LIMIT))
    same_id = diagnosis(itp).model_copy(update={"event_id": charted.event_id})
    stored["diagnoses"] = [same_id.model_dump(mode="json")]
    again = decode(json.dumps(stored).encode())
    assert len(again.treatments) == len(again.diagnoses) == 1
    assert encode(again, LIMIT) == the_json_of(again)
    assert encode(again, LIMIT) == the_json_of(again)


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
