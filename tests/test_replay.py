"""`plateletwatch replay`: the engine over files, no broker."""

import json
import re
from pathlib import Path

import pytest

from schemas import PlateletAlert
from services.ingest.hl7v2.mllp import frame
from tests.conftest import REPO, run_cli
from tests.test_engine import result
from tests.test_hl7 import message, platelet_obx

CONFORMANCE = REPO.parent / "shared" / "conformance"
RULES = REPO / "services" / "classifier" / "default_rules.yaml"


def replay(*args: str) -> tuple[int, list[PlateletAlert], str]:
    done = run_cli("replay", *args, env={"PATH": "/usr/bin:/bin"})
    alerts = [PlateletAlert.model_validate_json(line) for line in done.stdout.splitlines()]
    return done.returncode, alerts, done.stderr


def test_hl7_messages_framed_or_separated_by_blank_lines(tmp_path: Path) -> None:
    framed = tmp_path / "framed.hl7"
    framed.write_bytes(
        frame(message(platelet_obx(value="12"))) + frame(message(platelet_obx(value="9")))
    )
    plain = tmp_path / "plain.hl7"
    other = message(platelet_obx(value="150")).replace(b"FL-77", b"FL-78")
    plain.write_bytes(message(platelet_obx(value="8")).replace(b"\r", b"\n") + b"\n\n" + other)
    code, alerts, summary = replay(str(framed), str(plain))
    assert code == 0
    # 12, then 9 and 8 for the same result (resent with new values): one alert, its evidence
    # updated twice under the same alert_id; 150 is another result
    assert [a.kind.value for a in alerts] == ["critical_low"] * 3
    assert len({a.alert_id for a in alerts}) == 1
    assert [a.value_10e9_per_l for a in alerts] == [12, 9, 8]
    assert "events read: 4" in summary


def test_ndjson_events_in_order_with_a_bad_line_counted(tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    lines = [
        result(12, result_id="R1").model_dump_json(),
        "{not json",
        result(14, days=0.1).model_dump_json(),
    ]
    events.write_text("\n".join(lines) + "\n")
    code, alerts, summary = replay(str(events))
    assert code == 0
    assert [a.kind.value for a in alerts] == ["critical_low"]
    assert "rejected: 1" in summary
    assert "invalid_json: 1" in summary
    assert "critical_low: 1" in summary


def test_ndjson_lab_result_lines_refused_are_counted_as_before(tmp_path: Path) -> None:
    """Lab result lines are read inline (the common line); one that does not validate is still
    told apart by _ndjson_line: broken JSON, or fields refused."""
    refused = json.loads(result(13, result_id="R2").model_dump_json()) | {"status": "nonsense"}
    events = tmp_path / "events.ndjson"
    lines = [
        result(12, result_id="R1").model_dump_json(),
        '{"result_id": "R3", broken',
        json.dumps(refused),
    ]
    events.write_text("\n".join(lines) + "\n")
    code, alerts, summary = replay(str(events))
    assert code == 0
    assert [a.value_10e9_per_l for a in alerts] == [12]
    assert "events read: 1" in summary
    assert "rejected: 2" in summary
    assert "invalid_json: 1" in summary
    assert "invalid_fields: 1" in summary


def test_a_rules_file_changes_what_pages(tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    events.write_text(result(25).model_dump_json() + "\n")
    code, alerts, summary = replay(str(events))
    assert (code, alerts) == (0, [])
    assert "events read: 1" in summary
    rules = tmp_path / "rules.yaml"
    tuned = RULES.read_text().replace("below: 20 ", "below: 30 ")
    rules.write_text(re.sub(r"^version: .*$", 'version: "tuned-1"', tuned, flags=re.MULTILINE))
    code, alerts, _ = replay(str(events), "--rules", str(rules))
    assert code == 0
    assert [(a.kind.value, a.rule.version) for a in alerts] == [("critical_low", "tuned-1")]


@pytest.mark.parametrize(
    "args",
    [["missing.ndjson"], ["{events}", "--rules", "missing.yaml"], ["{events}", "--rules", "{bad}"]],
)
def test_unusable_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    events = tmp_path / "events.ndjson"
    events.write_text("")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nnot: [valid")
    filled = [a.format(events=events, bad=bad) for a in args]
    code, _, summary = replay(*filled)
    assert code == 2
    assert "Traceback" not in summary


@pytest.mark.skipif(
    not CONFORMANCE.is_dir(), reason=f"conformance samples not found at {CONFORMANCE}"
)
def test_replay_over_the_conformance_samples() -> None:
    files = sorted(str(p) for p in CONFORMANCE.glob("*/*") if p.suffix in (".hl7", ".json"))
    code, alerts, summary = replay(*files)
    assert code == 0
    assert alerts == []  # the published samples hold normal platelet counts only
    # 3 platelet counts and the H&P Bundle's 2 Conditions; the CCD Bundle's SSN-only patient
    # refuses its count and its 4 Conditions, and the US Core Observation names no authority
    assert "events read: 5" in summary
    assert "no_patient_identifier: 6" in summary
    rules = REPO / "services" / "classifier" / "default_rules.yaml"
    assert rules.is_file()


def test_a_pretty_printed_fhir_bundle_and_ndjson_after_blank_lines(tmp_path: Path) -> None:
    import json

    from tests.test_fhir import PATIENT, bundle, observation

    document = tmp_path / "bundle.json"
    critical = observation(valueQuantity={"value": 8, "unit": "10*9/L"})
    document.write_text(json.dumps(bundle(PATIENT, critical), indent=2))
    events = tmp_path / "events.ndjson"
    events.write_text("\n\n" + result(12, result_id="N1").model_dump_json() + "\n")
    code, alerts, summary = replay(str(document), str(events))
    assert code == 0
    assert [a.value_10e9_per_l for a in alerts] == [8, 12]
    assert "events read: 2" in summary


def test_a_file_that_is_not_text_is_a_counted_rejection(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\xff\xfe\x00 not a feed\n")
    code, alerts, summary = replay(str(garbage))
    assert (code, alerts) == (0, [])
    assert "invalid_json: 1" in summary


def test_ndjson_diagnosis_events_are_read_like_treatments(tmp_path: Path) -> None:
    """A PlateletWatch diagnosis event has "kind": "diagnosis" and no "category"."""
    from datetime import UTC, datetime

    from schemas import Coding, DiagnosisEvent, Patient, PatientIdentifier
    from services.ingest.codes import FeedContext
    from services.ingest.treatments import load_treatment_table
    from services.tools.replay import _read

    received = datetime(2026, 11, 25, tzinfo=UTC)
    diagnosis = DiagnosisEvent(
        event_id="d-1",
        source="json",
        patient=Patient(identifier=PatientIdentifier(authority="HOSP", mrn="42")),
        diagnosis_id="PRB-1",
        codes=(Coding(system="http://hl7.org/fhir/sid/icd-10", code="D69.3"),),
        on_record=True,
        received_at=received,
    )
    events = tmp_path / "context.ndjson"
    events.write_text(diagnosis.model_dump_json() + "\n")
    context = FeedContext(received_at=received, local_zone=UTC)
    assert list(_read(events, context, load_treatment_table())) == [diagnosis]


def test_ndjson_read_a_few_lines_at_a_time_keeps_file_order_and_line_numbers(
    tmp_path: Path,
) -> None:
    """Replay decodes NDJSON lines a few at a time before applying them: across those steps the
    events still come in file order, blank lines are skipped and a refusal names its line."""
    from datetime import UTC, datetime

    from services.ingest.codes import FeedContext
    from services.ingest.reading import Rejection
    from services.ingest.treatments import load_treatment_table
    from services.tools.replay import _LINES_AT_ONCE, _read

    results = [result(100 + n, result_id=f"R{n}", days=n) for n in range(2 * _LINES_AT_ONCE + 5)]
    lines = [r.model_dump_json() for r in results]
    lines.insert(_LINES_AT_ONCE - 1, "")  # a blank line at the end of the first step
    lines.insert(_LINES_AT_ONCE + 4, '{"result_id": "broken",')  # in the second
    events = tmp_path / "events.ndjson"
    events.write_text("\n".join(lines) + "\n")
    context = FeedContext(received_at=datetime(2026, 11, 25, tzinfo=UTC), local_zone=UTC)
    read = list(_read(events, context, load_treatment_table()))
    refused = [r for r in read if isinstance(r, Rejection)]
    assert [r for r in read if not isinstance(r, Rejection)] == results
    assert len(refused) == 1
    assert refused[0].message.startswith(f"events.ndjson:{_LINES_AT_ONCE + 5}:")
    assert read.index(refused[0]) == _LINES_AT_ONCE + 3  # after the results before it
