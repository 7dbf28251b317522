"""FHIR clinical context (issue 14): therapy that was not given or not given systemically is set
aside with a reason, every treatment carries its line of therapy, and Conditions are diagnoses."""

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import DiagnosisEvent, MedicationEvent, ProcedureEvent, Topic, TransfusionEvent
from services.ingest.outcomes import Filter, Publish
from tests.test_fhir import PATIENT, bundle, published, read, treatment
from tests.test_ingest_http import FHIR, Ingest, ingest  # noqa: F401 (the fixture)

PREDNISOLONE = {
    "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "8638"}],
    "text": "prednisolone 20 mg",
}
SCT = "http://snomed.info/sct"


def medication(resource_type: str, status: str, **changes: Any) -> dict[str, Any]:
    """Prednisolone given on 20 November, with `changes` (None removes a field)."""
    resource = treatment(
        resource_type,
        status=status,
        **{
            "medicationCodeableConcept": PREDNISOLONE,
            "effectiveDateTime": "2026-11-20T10:00:00Z",
            **changes,
        },
    )
    return {k: v for k, v in resource.items() if v is not None}


def statement(status: str, **changes: Any) -> dict[str, Any]:
    return medication("MedicationStatement", status, **changes)


def administration(status: str, **changes: Any) -> dict[str, Any]:
    return medication("MedicationAdministration", status, **changes)


def only(resource: dict[str, Any]) -> Publish | Filter:
    (_, entry) = read(bundle(PATIENT, resource))
    assert isinstance(entry.outcome, Publish | Filter), entry.outcome
    return entry.outcome


# --- therapy that was not given ----------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    ["intended", "not-taken", "on-hold", "entered-in-error", "unknown", "stopped", "cancelled"],
)
def test_a_statement_of_therapy_not_taken_does_not_count(status: str) -> None:
    outcome = only(statement(status))
    assert isinstance(outcome, Filter)
    assert status in outcome.detail


@pytest.mark.parametrize("status", ["active", "completed"])
def test_a_statement_of_therapy_taken_counts(status: str) -> None:
    outcome = only(statement(status))
    assert isinstance(outcome, Publish)
    assert outcome.event.category == "corticosteroid"


def test_a_stopped_statement_with_its_period_counts_and_keeps_its_end() -> None:
    stopped = statement(
        "stopped",
        effectiveDateTime=None,
        effectivePeriod={"start": "2026-11-01T08:00:00Z", "end": "2026-11-10T08:00:00Z"},
    )
    outcome = only(stopped)
    assert isinstance(outcome, Publish)
    assert isinstance(outcome.event, MedicationEvent)
    assert outcome.event.ended_at == datetime(2026, 11, 10, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("status", ["not-done", "entered-in-error"])
def test_an_administration_not_done_does_not_count(status: str) -> None:
    outcome = only(administration(status))
    assert isinstance(outcome, Filter)
    assert status in outcome.detail


def test_an_administration_in_progress_counts_from_its_start() -> None:
    running = administration(
        "in-progress", effectiveDateTime=None, effectivePeriod={"start": "2026-11-20T09:30:00Z"}
    )
    outcome = only(running)
    assert isinstance(outcome, Publish)
    assert isinstance(outcome.event, MedicationEvent)
    assert outcome.event.started_at == datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    assert outcome.event.ended_at is None


# --- routes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("54485002", "Ophthalmic route"),
        ("10547007", "Otic route"),
        ("6064005", "Topical route"),
        ("448598008", "Cutaneous route"),
        ("447694001", "Respiratory tract route"),
        ("46713006", "Nasal route"),
    ],
)
def test_a_steroid_by_a_local_route_is_not_itp_therapy(code: str, display: str) -> None:
    route = {"coding": [{"system": SCT, "code": code}]}
    given = administration(
        "completed", dosage={"route": route, "dose": {"value": 1, "unit": "drop"}}
    )
    outcome = only(given)
    assert isinstance(outcome, Filter)
    assert display.lower() in outcome.detail.lower()
    taken = statement("active", dosage=[{"route": route}])
    assert isinstance(only(taken), Filter)


@pytest.mark.parametrize("text", ["eye drops", "INHALED", "nasal spray", "Topical"])
def test_a_local_route_named_only_in_text_is_not_itp_therapy(text: str) -> None:
    given = administration("completed", dosage={"route": {"text": text}})
    outcome = only(given)
    assert isinstance(outcome, Filter)
    assert text in outcome.detail


def test_a_systemic_route_is_kept_on_the_event_with_the_dose() -> None:
    oral = {"coding": [{"system": SCT, "code": "26643006", "display": "Oral route"}]}
    outcome = only(
        administration("completed", dosage={"route": oral, "dose": {"value": 20, "unit": "mg"}})
    )
    assert isinstance(outcome, Publish)
    event = outcome.event
    assert isinstance(event, MedicationEvent)
    assert event.route is not None
    assert (event.route.system, event.route.code, event.route.display) == (
        SCT,
        "26643006",
        "Oral route",
    )
    assert event.dose is not None
    assert event.dose.value == 20


def test_a_statement_with_a_systemic_dosage_beside_a_local_one_counts() -> None:
    eye = {"route": {"coding": [{"system": SCT, "code": "54485002"}]}}
    oral = {"route": {"text": "oral"}}
    outcome = only(statement("active", dosage=[eye, oral]))
    assert isinstance(outcome, Publish)
    assert isinstance(outcome.event, MedicationEvent)
    assert outcome.event.route is not None
    assert outcome.event.route.display == "oral"


def test_no_route_at_all_is_kept() -> None:
    outcome = only(administration("completed"))
    assert isinstance(outcome, Publish)
    assert isinstance(outcome.event, MedicationEvent)
    assert outcome.event.route is None


# --- line of therapy ---------------------------------------------------------------------------


def test_every_treatment_event_carries_its_line_of_therapy() -> None:
    def procedure(code: str) -> dict[str, Any]:
        return treatment(
            "Procedure",
            code={"coding": [{"system": SCT, "code": code}]},
            performedDateTime="2026-10-01T09:00:00Z",
        )

    rituximab = administration(
        "completed", medicationCodeableConcept={"text": "rituximab 375 mg/m2"}
    )
    events = published(
        read(
            bundle(
                PATIENT,
                administration("completed"),
                rituximab,
                procedure("234319005"),
                procedure("12719002"),
            )
        )
    )
    assert [type(e) for e in events] == [
        MedicationEvent,
        MedicationEvent,
        ProcedureEvent,
        TransfusionEvent,
    ]
    assert [e.line for e in events] == ["first", "second", "procedure", "supportive"]


# --- diagnoses ---------------------------------------------------------------------------------

ITP = {
    "coding": [
        {"system": "http://hl7.org/fhir/sid/icd-10", "code": "D69.3"},
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "D69.3"},
        {"system": SCT, "code": "32273002", "display": "Idiopathic thrombocytopenic purpura"},
        {"system": "urn:oid:1.2.3.local", "code": "ITP"},
    ],
    "text": "Immune thrombocytopenia",
}


def condition(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": "cond-1",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        },
        "code": ITP,
        "subject": {"reference": "Patient/p1"},
        "recordedDate": "2026-11-02T11:00:00+01:00",
    }
    resource.update(changes)
    return {k: v for k, v in resource.items() if v is not None}


def _status(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": f"http://terminology.hl7.org/CodeSystem/{system}", "code": code}]}


def test_a_condition_in_a_bundle_is_a_diagnosis_on_record() -> None:
    (event,) = published(read(bundle(PATIENT, condition())))
    assert isinstance(event, DiagnosisEvent)
    assert event.diagnosis_id == "Condition/cond-1"
    assert event.patient.identifier.mrn == "MRN-42"
    assert [(c.system, c.code) for c in event.codes] == [
        ("http://hl7.org/fhir/sid/icd-10", "D69.3"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "D69.3"),
        (SCT, "32273002"),
        ("urn:oid:1.2.3.local", "ITP"),
    ]
    assert event.name == "Immune thrombocytopenia"
    assert event.on_record is True
    assert event.recorded_at == datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    assert event.source == "fhir"


def test_a_condition_alone_by_subject_identifier_and_onset() -> None:
    alone = condition(
        subject={"identifier": {"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-42"}},
        recordedDate=None,
        onsetDateTime="2026-10-30",
    )
    (entry,) = read(alone)
    assert isinstance(entry.outcome, Publish)
    event = entry.outcome.event
    assert isinstance(event, DiagnosisEvent)
    assert event.recorded_at == datetime(2026, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("clinical", "verification", "on_record"),
    [
        ("active", "confirmed", True),
        ("recurrence", "provisional", True),
        ("relapse", "unconfirmed", True),
        ("resolved", "confirmed", False),
        ("inactive", "confirmed", False),
        ("remission", "confirmed", False),
        ("active", "refuted", False),
        ("active", "entered-in-error", False),
    ],
)
def test_a_condition_is_on_record_only_while_active_and_not_refuted(
    clinical: str, verification: str, on_record: bool
) -> None:
    resource = condition(
        clinicalStatus=_status("condition-clinical", clinical),
        verificationStatus=_status("condition-ver-status", verification),
    )
    (event,) = published(read(bundle(PATIENT, resource)))
    assert event.on_record is on_record


def test_a_status_change_is_a_new_event_and_a_resend_is_not() -> None:
    first = published(read(bundle(PATIENT, condition())))[0]
    again = published(read(bundle(PATIENT, condition())))[0]
    resolved = published(
        read(bundle(PATIENT, condition(clinicalStatus=_status("condition-clinical", "resolved"))))
    )[0]
    assert first.event_id == again.event_id
    assert resolved.event_id != first.event_id
    assert resolved.diagnosis_id == first.diagnosis_id


def test_a_condition_without_a_coded_diagnosis_is_filtered_with_the_reason() -> None:
    (_, entry) = read(bundle(PATIENT, condition(code={"text": "low platelets"})))
    assert isinstance(entry.outcome, Filter)
    assert "code" in entry.outcome.detail


def test_a_condition_without_a_patient_identifier_is_refused() -> None:
    (entry,) = read(condition(subject={"reference": "Patient/unknown"}))
    assert not isinstance(entry.outcome, Publish | Filter)


def test_conditions_in_ndjson_are_read_by_replay(tmp_path: Any) -> None:
    import json

    from services.tools.replay import _read
    from tests.test_fhir import CONTEXT, TREATMENTS

    alone = condition(
        subject={"identifier": {"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-42"}}
    )
    path = tmp_path / "conditions.ndjson"
    path.write_text(json.dumps(alone) + "\n" + json.dumps(dict(alone, id="cond-2")) + "\n")
    events = list(_read(path, CONTEXT, TREATMENTS))
    assert [type(e) for e in events] == [DiagnosisEvent, DiagnosisEvent]
    assert [e.diagnosis_id for e in events] == ["Condition/cond-1", "Condition/cond-2"]


def test_an_ndjson_fhir_line_that_mentions_result_id_is_still_read_as_fhir(tmp_path: Any) -> None:
    """Replay tries a line with "result_id" in it as a lab result first; a FHIR resource never
    validates as one (its keys are not a LabResult's), so it is then read as FHIR."""
    import json

    from services.tools.replay import _read
    from tests.test_fhir import CONTEXT, TREATMENTS

    named = condition(  # a medical record number that reads "result_id"
        subject={"identifier": {"system": "urn:oid:2.16.840.1.113883.19.5", "value": "result_id"}}
    )
    line = json.dumps(named)
    assert '"result_id"' in line
    path = tmp_path / "conditions.ndjson"
    path.write_text(line + "\n")
    (event,) = _read(path, CONTEXT, TREATMENTS)
    assert isinstance(event, DiagnosisEvent)
    assert event.patient.identifier.mrn == "result_id"


@pytest.mark.integration
async def test_the_fhir_endpoint_takes_a_condition_alone_and_in_a_batch(
    ingest: Ingest,  # noqa: F811
) -> None:
    alone = condition(
        subject={"identifier": {"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-42"}}
    )
    accepted = await ingest.client.post("/fhir", json=alone, headers=FHIR)
    assert accepted.status_code == 202, accepted.text
    assert [e["outcome"] for e in accepted.json()["entries"]] == ["published"]
    refused = condition(id="cond-2", subject={"reference": "Patient/unknown"})
    batch = bundle(PATIENT, condition(id="cond-3"), refused, kind="batch")
    answer = await ingest.client.post("/fhir", json=batch, headers=FHIR)
    assert answer.status_code == 200, answer.text
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses == ["200 OK", "201 Created", "422 Unprocessable Entity"]
    records = await ingest.kafka.records(Topic.CLINICAL_CONTEXT)
    assert len(records) == 2
    assert len(await ingest.kafka.dead_letters()) == 1


@pytest.mark.parametrize(
    ("resource_type", "status"),
    [
        ("MedicationAdministration", "entered-in-error"),
        ("MedicationAdministration", "not-done"),
        ("MedicationStatement", "entered-in-error"),
        ("MedicationStatement", "not-taken"),
    ],
)
def test_a_record_withdrawn_under_its_id_takes_the_earlier_one_out(
    resource_type: str, status: str
) -> None:
    """The same resource id, now entered in error (or not done): the event withdraws the
    record it replaces, so the classifier forgets that therapy."""
    given = only(medication(resource_type, "completed", id="dex-1"))
    withdrawn = only(medication(resource_type, status, id="dex-1"))
    assert isinstance(given, Publish)
    assert isinstance(withdrawn, Publish)
    assert isinstance(given.event, MedicationEvent)
    assert isinstance(withdrawn.event, MedicationEvent)
    assert given.event.on_record
    assert not withdrawn.event.on_record
    assert withdrawn.event.treatment_id == given.event.treatment_id == f"{resource_type}/dex-1"
    assert withdrawn.event.event_id != given.event.event_id
