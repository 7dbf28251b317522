"""Ingest's public reading API gives, for the same bytes, what each feed's reader gives."""

import json

from schemas import LabResult, MedicationEvent
from services.ingest.fhir import read_fhir
from services.ingest.hl7v2.dispatch import read_message
from services.ingest.hl7v2.mllp import frame
from services.ingest.json_context import classify_context
from services.ingest.json_lab import classify_submission
from services.ingest.reading import (
    Publish,
    Rejection,
    read_fhir_json,
    read_hl7v2,
    read_json_context,
    read_json_lab_result,
)
from tests.conftest import REPO
from tests.test_fhir import bundle, observation
from tests.test_hl7 import message, platelet_obx
from tests.test_treatments import CONTEXT, TABLE, submission


def test_hl7v2_reads_every_message_framed_or_not_in_order() -> None:
    first, second = message(platelet_obx(value="12")), message(platelet_obx(value="9"))
    outcomes = list(read_hl7v2(frame(first) + frame(second), CONTEXT, TABLE))
    expected = [*read_message(first, CONTEXT, TABLE).outcomes]
    expected += read_message(second, CONTEXT, TABLE).outcomes
    assert outcomes == expected
    assert [o.event.count.value_10e9_per_l for o in outcomes if isinstance(o, Publish)] == [12, 9]
    assert list(read_hl7v2(b"no message here", CONTEXT, TABLE)) == []


def test_fhir_json_gives_one_outcome_per_entry() -> None:
    raw = json.dumps(bundle(observation(), observation())).encode()
    outcomes = read_fhir_json(raw, CONTEXT, TABLE)
    assert outcomes == [entry.outcome for entry in read_fhir(raw, CONTEXT, TABLE)]
    assert isinstance(read_fhir_json(b"{", CONTEXT, TABLE)[0], Rejection)


def test_json_lab_result_and_context_are_the_feeds_outcomes() -> None:
    raw = (REPO / "examples" / "lab-result-critical.json").read_bytes()
    lab = read_json_lab_result(raw, CONTEXT)
    assert lab == classify_submission(raw, CONTEXT)
    assert isinstance(lab, Publish)
    assert isinstance(lab.event, LabResult)
    treatment = read_json_context(submission(), CONTEXT, TABLE)
    assert treatment == classify_context(submission(), CONTEXT, TABLE)
    assert isinstance(treatment, Publish)
    assert isinstance(treatment.event, MedicationEvent)
