"""Treatment recognition from the data table, and the JSON treatment-context feed."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import (
    DEFAULT_LINES,
    MedicationEvent,
    ProcedureEvent,
    TransfusionEvent,
    TreatmentCategory,
)
from services.ingest.codes import FeedContext
from services.ingest.json_context import classify_context
from services.ingest.outcomes import Filter, Publish, Rejection, RejectReason
from services.ingest.treatments import load_treatment_table

TABLE = load_treatment_table()
CONTEXT = FeedContext(received_at=datetime(2026, 11, 25, tzinfo=UTC), local_zone=UTC)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Dexamethasone 40 mg PO daily x4", "corticosteroid"),
        ("DECADRON inj", "corticosteroid"),
        ("Solu-Medrol 1 g IV", "corticosteroid"),
        ("prednisone 1 mg/kg", "corticosteroid"),
        ("Privigen 1 g/kg", "ivig"),
        ("IVIG 0.4 g/kg/day", "ivig"),
        ("Gammagard Liquid", "ivig"),
        ("WinRho SDF 50 mcg/kg", "anti_d"),
        ("Rituxan 375 mg/m2", "rituximab"),
        ("MabThera", "rituximab"),
        ("Promacta 50 mg", "tpo_receptor_agonist"),
        ("Revolade 25mg", "tpo_receptor_agonist"),
        ("romiplostim (Nplate) 1 mcg/kg SC", "tpo_receptor_agonist"),
        ("avatrombopag", "tpo_receptor_agonist"),
        ("vincristine 1.4 mg/m2", "vincristine"),
        ("Cytoxan", "cyclophosphamide"),
        ("Laparoscopic splenectomy", "splenectomy"),
        ("Apheresis platelets, 1 unit", "platelet_transfusion"),
    ],
)
def test_names_and_brands(text: str, category: str) -> None:
    recognised = TABLE.recognise([], [text])
    assert recognised is not None
    assert recognised.category == category


@pytest.mark.parametrize(
    "text",
    [
        "amoxicillin",
        "Pred Forte eye drops",
        "anti-D antibody screen",
        "platelet count",
        "dexa scan",
    ],
)
def test_no_false_positives(text: str) -> None:
    assert TABLE.recognise([], [text]) is None


@pytest.mark.parametrize(
    ("system", "code", "category"),
    [
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "3264", "corticosteroid"),
        ("RXNORM", "121191", "rituximab"),  # HL7 v2 table 0396 name for RxNorm
        ("http://snomed.info/sct", "234319005", "splenectomy"),
        ("SCT", "12719002", "platelet_transfusion"),
        ("http://www.whocc.no/atc", "B02BX04", "tpo_receptor_agonist"),
    ],
)
def test_codes_match_exactly_whatever_the_system_spelling(
    system: str, code: str, category: str
) -> None:
    recognised = TABLE.recognise([(system, code)], [])
    assert recognised is not None
    assert recognised.category == category


def test_every_category_has_names_and_the_table_a_version() -> None:
    assert TABLE.version
    assert set(TABLE.categories) == set(TreatmentCategory)
    assert all(entry.names for entry in TABLE.categories.values())
    unverified = {(u["system"], u["code"]) for u in TABLE.unverified}
    assert not unverified & {(c.system, c.code) for e in TABLE.categories.values() for c in e.codes}


def submission(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "patient": {"identifier": {"authority": "HOSP", "mrn": "42"}},
        "context_id": "MAR-1",
        "name": "Nplate 250 mcg",
        "dose": {"value": 250, "unit": "ug"},
        "started_at": "2026-11-20T10:00:00Z",
    }
    body.update(changes)
    return json.dumps(body).encode()


def test_context_submission_becomes_the_right_event() -> None:
    outcome = classify_context(submission(), CONTEXT, TABLE)
    assert isinstance(outcome, Publish)
    assert isinstance(outcome.event, MedicationEvent)
    assert outcome.event.category == "tpo_receptor_agonist"
    assert outcome.event.dose is not None
    splenectomy = classify_context(submission(name="Splenectomy", dose=None), CONTEXT, TABLE)
    assert isinstance(splenectomy, Publish)
    assert isinstance(splenectomy.event, ProcedureEvent)
    transfusion = classify_context(submission(name="Platelet transfusion"), CONTEXT, TABLE)
    assert isinstance(transfusion, Publish)
    assert isinstance(transfusion.event, TransfusionEvent)
    again = classify_context(submission(), CONTEXT, TABLE)
    assert isinstance(again, Publish)
    assert again.event.event_id == outcome.event.event_id


def test_context_submissions_that_are_filtered_or_refused() -> None:
    assert isinstance(classify_context(submission(name="paracetamol"), CONTEXT, TABLE), Filter)
    assert isinstance(classify_context(submission(status="on-hold"), CONTEXT, TABLE), Filter)
    refused = classify_context(submission(started_at="2026-11-20T10:00:00"), CONTEXT, TABLE)
    assert isinstance(refused, Rejection)
    assert refused.reason is RejectReason.INVALID_FIELDS


def test_context_with_an_implausible_time_or_identifier_is_refused() -> None:
    for changes in ({"started_at": "9999-12-31T00:00:00Z"}, {"context_id": "C" * 201}):
        refused = classify_context(submission(**changes), CONTEXT, TABLE)
        assert isinstance(refused, Rejection)
        assert [error["loc"] for error in refused.errors] == list(changes)


def test_context_long_name_is_cut_to_200_characters() -> None:
    outcome = classify_context(submission(name="Nplate " + "x" * 500), CONTEXT, TABLE)
    assert isinstance(outcome, Publish)
    assert outcome.event.name == "Nplate " + "x" * 193


def test_the_table_agrees_with_the_default_lines_of_older_events() -> None:
    """Events sent before ingest stamped the line read it from DEFAULT_LINES: the same lines."""
    table = load_treatment_table()
    assert {category: entry.line for category, entry in table.categories.items()} == DEFAULT_LINES


@pytest.mark.parametrize(
    ("system", "code", "category"),
    [
        ("http://www.whocc.no/atc", "B02BX09", "fostamatinib"),
        ("ATC", "L01XC02", "rituximab"),
        ("http://www.whocc.no/atc", "G03XA01", "immunosuppressant"),
        ("http://www.whocc.no/atc", "L04AA06", "immunosuppressant"),
        ("http://www.whocc.no/atc", "L04AX01", "immunosuppressant"),
        ("http://www.whocc.no/atc", "L04AD01", "immunosuppressant"),
        ("RXNORM", "1256", "immunosuppressant"),
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "3008", "immunosuppressant"),
        ("http://terminology.hl7.org/CodeSystem/v2-0426", "PLTPH", "platelet_transfusion"),
        ("http://terminology.hl7.org/CodeSystem/v2-0426", "PLTP", "platelet_transfusion"),
    ],
)
def test_issue_14_codes(system: str, code: str, category: str) -> None:
    recognised = TABLE.recognise([(system, code)], [])
    assert recognised is not None
    assert recognised.category == category
    assert recognised.line == ("supportive" if category == "platelet_transfusion" else "second")


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Tavalisse 100 mg BID", "fostamatinib"),
        ("Tavlesse", "fostamatinib"),
        ("danazol 200 mg", "immunosuppressant"),
        ("CellCept 500 mg", "immunosuppressant"),
        ("Pooled platelets x1", "platelet_transfusion"),
        ("Platelet pheresis, leukoreduced", "platelet_transfusion"),
    ],
)
def test_issue_14_names(text: str, category: str) -> None:
    recognised = TABLE.recognise([], [text])
    assert recognised is not None
    assert recognised.category == category


def test_lusutrombopag_is_not_itp_therapy() -> None:
    """Licensed for thrombocytopenia in chronic liver disease before a procedure, not for ITP."""
    assert TABLE.recognise([("http://www.whocc.no/atc", "B02BX07")], ["Mulpleta 3 mg"]) is None
    assert TABLE.recognise([], ["lusutrombopag"]) is None


def test_the_table_knows_the_routes_that_are_not_itp_therapy() -> None:
    eye = TABLE.local_route([("SCT", "54485002")], [])
    assert eye is not None
    assert "Ophthalmic" in eye
    assert TABLE.local_route([], ["by inhalation"]) == "by inhalation"
    assert TABLE.local_route([("http://snomed.info/sct", "26643006")], ["oral"]) is None
    assert TABLE.local_route([], ["intravenous"]) is None
    assert TABLE.local_route([], ["transdermal"]) is None


@pytest.mark.parametrize("status", ["intended", "on-hold", "cancelled", "unknown"])
def test_context_therapy_that_was_not_given_is_filtered(status: str) -> None:
    outcome = classify_context(submission(status=status), CONTEXT, TABLE)
    assert isinstance(outcome, Filter)
    assert status in outcome.detail


@pytest.mark.parametrize("status", ["entered-in-error", "not-done", "not-taken"])
def test_context_therapy_withdrawn_takes_out_what_was_posted_under_its_id(status: str) -> None:
    given = classify_context(submission(), CONTEXT, TABLE)
    withdrawn = classify_context(submission(status=status), CONTEXT, TABLE)
    assert isinstance(given, Publish)
    assert isinstance(withdrawn, Publish)
    assert (given.event.on_record, withdrawn.event.on_record) == (True, False)
    assert given.event.treatment_id == withdrawn.event.treatment_id == "MAR-1"
    assert given.event.event_id != withdrawn.event.event_id


def test_context_stopped_counts_only_with_its_end() -> None:
    assert isinstance(classify_context(submission(status="stopped"), CONTEXT, TABLE), Filter)
    stopped = classify_context(
        submission(status="stopped", ended_at="2026-11-22T10:00:00Z"), CONTEXT, TABLE
    )
    assert isinstance(stopped, Publish)
    assert isinstance(stopped.event, MedicationEvent)
    assert stopped.event.ended_at == datetime(2026, 11, 22, 10, tzinfo=UTC)


def test_context_route_eye_drops_are_filtered_and_a_systemic_route_is_kept() -> None:
    eye = {"system": "http://snomed.info/sct", "code": "54485002", "display": "Ophthalmic route"}
    drops = classify_context(submission(name="dexamethasone 0.1%", route=eye), CONTEXT, TABLE)
    assert isinstance(drops, Filter)
    assert "Ophthalmic" in drops.detail
    oral = {"system": "http://snomed.info/sct", "code": "26643006", "display": "Oral route"}
    tablets = classify_context(submission(name="dexamethasone 40 mg", route=oral), CONTEXT, TABLE)
    assert isinstance(tablets, Publish)
    assert isinstance(tablets.event, MedicationEvent)
    assert tablets.event.route is not None
    assert tablets.event.route.code == "26643006"
    assert tablets.event.line == "first"


def test_context_events_carry_their_line_of_therapy() -> None:
    lines = []
    for name in ("Nplate 250 mcg", "Splenectomy", "Platelet transfusion", "vincristine"):
        outcome = classify_context(submission(name=name), CONTEXT, TABLE)
        assert isinstance(outcome, Publish)
        lines.append(outcome.event.line)
    assert lines == ["second", "procedure", "supportive", "cytotoxic"]


def diagnosis_body(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "kind": "diagnosis",
        "patient": {"identifier": {"authority": "HOSP", "mrn": "42"}},
        "diagnosis_id": "PROBLEM-7",
        "codes": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "D69.3"}],
        "name": "Immune thrombocytopenia",
        "recorded_at": "2026-11-02T10:00:00Z",
    }
    body.update(changes)
    return json.dumps(body).encode()


def test_context_diagnosis_becomes_a_diagnosis_event() -> None:
    from schemas import DiagnosisEvent

    outcome = classify_context(diagnosis_body(), CONTEXT, TABLE)
    assert isinstance(outcome, Publish)
    event = outcome.event
    assert isinstance(event, DiagnosisEvent)
    assert (event.diagnosis_id, event.on_record, event.source) == ("PROBLEM-7", True, "json")
    assert event.codes[0].code == "D69.3"
    retracted = classify_context(diagnosis_body(on_record=False), CONTEXT, TABLE)
    assert isinstance(retracted, Publish)
    assert retracted.event.event_id != event.event_id
    again = classify_context(diagnosis_body(), CONTEXT, TABLE)
    assert isinstance(again, Publish)
    assert again.event.event_id == event.event_id


def test_context_diagnosis_without_codes_or_with_treatment_fields_is_refused() -> None:
    for body in (diagnosis_body(codes=[]), diagnosis_body(started_at="2026-11-20T10:00:00Z")):
        refused = classify_context(body, CONTEXT, TABLE)
        assert isinstance(refused, Rejection)
        assert refused.reason is RejectReason.INVALID_FIELDS
