"""FHIR R4 resources and Bundles, entry by entry, without a broker."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import LabResult, MedicationEvent, ProcedureEvent, ResultStatus, TransfusionEvent
from services.ingest.codes import FeedContext
from services.ingest.fhir import EntryOutcome, read_fhir
from services.ingest.outcomes import Filter, Publish, Rejection, RejectReason
from services.ingest.treatments import load_treatment_table

RECEIVED = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CONTEXT = FeedContext(received_at=RECEIVED, local_zone=UTC)
TREATMENTS = load_treatment_table()
PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [
        {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"},
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ]
            },
            "system": "urn:oid:2.16.840.1.113883.19.5",
            "value": "MRN-42",
        },
    ],
    "birthDate": "2012-04-07",
}


def observation(**changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "plt-1",
        "meta": {"versionId": "1"},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-25T07:40:00+01:00",
        "issued": "2026-11-25T08:05:00+01:00",
        "valueQuantity": {
            "value": 12,
            "unit": "10*3/uL",
            "system": "http://unitsofmeasure.org",
            "code": "10*3/uL",
        },
        "interpretation": [{"coding": [{"code": "LL"}]}],
    }
    resource.update(changes)
    return {k: v for k, v in resource.items() if v is not None}


def bundle(*resources: dict[str, Any], kind: str = "collection") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"fullUrl": f"urn:uuid:{i}", "resource": r} for i, r in enumerate(resources)],
    }


def treatment(resource_type: str, **changes: Any) -> dict[str, Any]:
    """A completed MedicationAdministration, MedicationStatement or Procedure for Patient/p1."""
    return {
        "resourceType": resource_type,
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        **changes,
    }


def read(document: Any, context: FeedContext = CONTEXT) -> list[EntryOutcome]:
    return read_fhir(json.dumps(document).encode(), context, TREATMENTS)


def published(entries: list[EntryOutcome]) -> list[Any]:
    return [e.outcome.event for e in entries if isinstance(e.outcome, Publish)]


@pytest.mark.parametrize("kind", ["collection", "transaction", "batch", "message"])
def test_a_platelet_observation_in_a_bundle(kind: str) -> None:
    (result,) = published(read(bundle(PATIENT, observation(), kind=kind)))
    assert isinstance(result, LabResult)
    assert result.patient.identifier.key == "urn:oid:2.16.840.1.113883.19.5|MRN-42"  # MR, never SSN
    assert str(result.patient.birth_date) == "2012-04-07"
    assert result.count is not None
    assert result.count.value_10e9_per_l == 12
    assert result.abnormal_flags == ("LL",)
    assert result.result_id == "Observation/plt-1"
    assert result.verified_at is not None


def test_a_new_version_is_a_new_event_and_a_resend_is_not() -> None:
    first = published(read(bundle(PATIENT, observation())))[0]
    again = published(read(bundle(PATIENT, observation())))[0]
    corrected = published(
        read(bundle(PATIENT, observation(status="corrected", meta={"versionId": "2"})))
    )[0]
    assert first.event_id == again.event_id
    assert corrected.event_id != first.event_id
    assert corrected.replaces_result_id == first.result_id


def test_entered_in_error_withdraws_without_a_value() -> None:
    (result,) = published(
        read(bundle(PATIENT, observation(status="entered-in-error", valueQuantity=None)))
    )
    assert result.status is ResultStatus.ENTERED_IN_ERROR
    assert result.count is None


def test_an_invalid_unrelated_entry_never_blocks_the_platelet_beside_it() -> None:
    allergy = {
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": "Patient/p1"},
        "reaction": [{}],
    }
    entries = read(bundle(PATIENT, allergy, observation()))
    assert [type(e.outcome) for e in entries] == [Filter, Filter, Publish]
    assert isinstance(entries[1].outcome, Filter)
    assert "invalid" in entries[1].outcome.detail


def test_an_invalid_platelet_observation_is_rejected_with_its_errors() -> None:
    quantity = {"value": "twelve", "unit": "10*9/L"}
    entries = read(bundle(PATIENT, observation(valueQuantity=quantity)))
    (entry,) = [e for e in entries if e.resource_type == "Observation"]
    assert isinstance(entry.outcome, Rejection)
    assert entry.outcome.reason is RejectReason.INVALID_FHIR
    assert any("valueQuantity.value" in error["loc"] for error in entry.outcome.errors)


@pytest.mark.parametrize("status", ["done", "wrong-patient"])
def test_a_status_outside_r4_is_refused(status: str) -> None:
    entries = read(bundle(PATIENT, observation(status=status)))
    assert isinstance(entries[1].outcome, Rejection)
    assert entries[1].outcome.reason is RejectReason.UNKNOWN_STATUS


def test_unit_text_without_ucum_code_and_unknown_units() -> None:
    quantity = {"value": 123, "unit": "10+3/ul"}
    (result,) = published(read(bundle(PATIENT, observation(valueQuantity=quantity))))
    assert result.count.value_10e9_per_l == 123
    entries = read(bundle(PATIENT, observation(valueQuantity={"value": 12, "unit": "mg/dL"})))
    assert isinstance(entries[1].outcome, Rejection)
    assert entries[1].outcome.reason is RejectReason.UNKNOWN_UNIT


def test_comparator_is_kept() -> None:
    quantity = {"value": 5, "comparator": "<", "unit": "10*9/L"}
    (result,) = published(read(bundle(PATIENT, observation(valueQuantity=quantity))))
    assert (result.count.comparator, result.count.value_10e9_per_l) == ("<", 5)


def test_patient_identity() -> None:
    lone = observation(subject={"reference": "Patient/example"})
    (entry,) = read(lone)
    assert isinstance(entry.outcome, Rejection)
    assert entry.outcome.reason is RejectReason.NO_PATIENT_IDENTIFIER
    with_authority = FeedContext(RECEIVED, UTC, fhir_reference_authority="https://ehr.example/fhir")
    (result,) = published(read(lone, with_authority))
    assert result.patient.identifier.key == "https://ehr.example/fhir|example"
    logical = observation(subject={"identifier": {"system": "urn:mrn", "value": "7"}})
    (result,) = published(read(logical))
    assert result.patient.identifier.key == "urn:mrn|7"
    ssn_only = dict(PATIENT, identifier=[PATIENT["identifier"][0]])
    (_, entry) = read(bundle(ssn_only, observation()))
    assert isinstance(entry.outcome, Rejection)


def test_no_collection_time_is_refused() -> None:
    entries = read(bundle(PATIENT, observation(effectiveDateTime=None)))
    assert isinstance(entries[1].outcome, Rejection)
    assert entries[1].outcome.reason is RejectReason.NO_COLLECTION_TIME


def test_rituximab_administration_with_dose() -> None:
    administration = {
        "resourceType": "MedicationAdministration",
        "id": "ma-1",
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "121191"}],
            "text": "rituximab 375 mg/m2",
        },
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-20T10:00:00Z",
        "dosage": {"dose": {"value": 500, "unit": "mg"}},
    }
    (event,) = published(read(bundle(PATIENT, administration)))
    assert isinstance(event, MedicationEvent)
    assert event.category == "rituximab"
    assert (event.dose.value, event.dose.unit) == (500, "mg")
    assert event.started_at == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def test_medication_statement_by_brand_name_through_a_medication_reference() -> None:
    medication = {"resourceType": "Medication", "id": "m1", "code": {"text": "Nplate 250 mcg vial"}}
    statement = {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationReference": {"reference": "Medication/m1"},
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2026-11-01", "end": "2026-11-22"},
    }
    (event,) = published(read(bundle(PATIENT, medication, statement)))
    assert event.category == "tpo_receptor_agonist"
    assert event.ended_at is not None


def test_procedures_splenectomy_and_platelet_transfusion() -> None:
    def procedure(code: str, display: str) -> dict[str, Any]:
        return {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {
                "coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}]
            },
            "subject": {"reference": "Patient/p1"},
            "performedDateTime": "2026-10-01T09:00:00Z",
        }

    events = published(
        read(
            bundle(
                PATIENT,
                procedure("234319005", "Splenectomy"),
                procedure("12719002", "Platelet transfusion"),
            )
        )
    )
    assert [type(e) for e in events] == [ProcedureEvent, TransfusionEvent]
    assert [e.category for e in events] == ["splenectomy", "platelet_transfusion"]


def test_treatment_not_given_and_unrelated_medications_are_filtered() -> None:
    not_done = {
        "resourceType": "MedicationAdministration",
        "status": "not-done",
        "medicationCodeableConcept": {"text": "dexamethasone 40 mg"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-11-20T10:00:00Z",
    }
    other = dict(not_done, status="completed", medicationCodeableConcept={"text": "amoxicillin"})
    entries = read(bundle(PATIENT, not_done, other))
    assert [type(e.outcome) for e in entries] == [Filter, Filter, Filter]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", RejectReason.INVALID_JSON),
        (b'{"resource": "Observation"}', RejectReason.INVALID_FHIR),
        (
            json.dumps({"resourceType": "Bundle", "type": "searchset"}).encode(),
            RejectReason.INVALID_FHIR,
        ),
    ],
)
def test_bodies_that_are_not_acceptable_fhir(body: bytes, reason: RejectReason) -> None:
    (entry,) = read_fhir(body, CONTEXT, TREATMENTS)
    assert isinstance(entry.outcome, Rejection)
    assert entry.outcome.reason is reason


# Absurd values: refused naming where they are (or, for free text, cut), never passed on.


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59Z", "2026-11-25T07:40:00+23:59", "1899-12-31T12:00:00Z"]
)
def test_fhir_implausible_collection_time_is_refused_naming_it(when: str) -> None:
    entries = read(bundle(PATIENT, observation(effectiveDateTime=when)))
    rejection = entries[1].outcome
    assert isinstance(rejection, Rejection)
    assert rejection.reason is RejectReason.INVALID_FHIR
    assert [error["loc"] for error in rejection.errors] == ["entry[1].effectiveDateTime"]


def test_fhir_implausible_treatment_time_is_refused() -> None:
    procedure = treatment("Procedure", code={"text": "Splenectomy"}, performedDateTime="2101-01-01")
    rejection = read(bundle(PATIENT, procedure))[1].outcome
    assert isinstance(rejection, Rejection)
    assert rejection.location == "entry[1].performedDateTime"


def test_fhir_placeholder_birth_date_is_left_out_not_refused() -> None:
    (result,) = published(read(bundle(dict(PATIENT, birthDate="1800-01-01"), observation())))
    assert result.patient.birth_date is None


def test_fhir_result_id_over_200_characters_is_refused() -> None:
    identifier = [{"system": "urn:lab", "value": "9" * 9000}]
    entries = read(bundle(PATIENT, observation(id=None, identifier=identifier)))
    rejection = entries[1].outcome
    assert isinstance(rejection, Rejection)
    assert rejection.reason is RejectReason.INVALID_FHIR
    assert [error["loc"] for error in rejection.errors] == ["entry[1].result_id"]


def test_fhir_mrn_over_64_characters_is_refused() -> None:
    identifier = dict(PATIENT["identifier"][1], value="M" * 65)
    entries = read(bundle(dict(PATIENT, identifier=[identifier]), observation()))
    rejection = entries[1].outcome
    assert isinstance(rejection, Rejection)
    assert rejection.reason is RejectReason.INVALID_FHIR
    assert [error["loc"] for error in rejection.errors] == ["entry[1].mrn"]


def test_fhir_patient_reference_must_hold_a_fhir_id() -> None:
    with_authority = FeedContext(RECEIVED, UTC, fhir_reference_authority="https://ehr.example/fhir")
    for reference in ("Patient/", "Patient/" + "x" * 65):
        (entry,) = read(observation(subject={"reference": reference}), with_authority)
        assert isinstance(entry.outcome, Rejection)
        assert entry.outcome.reason is RejectReason.NO_PATIENT_IDENTIFIER
    versioned = observation(subject={"reference": "Patient/p-9/_history/2"})
    (result,) = published(read(versioned, with_authority))
    assert result.patient.identifier.mrn == "p-9"


def test_fhir_long_display_text_is_cut_to_200_characters() -> None:
    code = {"coding": [{"system": "http://loinc.org", "code": "777-3", "display": "P" * 500}]}
    (result,) = published(read(bundle(PATIENT, observation(code=code))))
    assert result.code.display == "P" * 200


def test_fhir_refusals_quote_at_most_a_few_characters_of_what_was_sent() -> None:
    entries = read(bundle(PATIENT, observation(status="s" * 9000)))
    assert isinstance(entries[1].outcome, Rejection)
    assert len(entries[1].outcome.message) < 200


def test_fhir_implausible_issued_time_is_passed_over_and_the_count_still_pages() -> None:
    """Observation.issued is optional (it only times the page): year 9999 there must not cost
    the critical count."""
    document = bundle(PATIENT, observation(issued="9999-12-31T00:00:00Z"))
    (result,) = published(read(document))
    assert isinstance(result, LabResult)
    assert result.verified_at is None
