"""FHIR bodies of the wrong shape, each once a crash (HTTP 500): now an outcome, never raised.

Every test is one crashing input the fuzzer (make fuzz) or a sender found, made minimal.
"""

import json
from typing import Any

import pytest

from services.ingest.fhir import read_fhir
from services.ingest.outcomes import Filter, Outcome, Publish, Rejection, RejectReason
from tests.test_fhir import CONTEXT, PATIENT, TREATMENTS, bundle, observation, treatment


def outcomes(document: Any) -> list[Outcome]:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return [entry.outcome for entry in read_fhir(raw, CONTEXT, TREATMENTS)]


def refused(document: Any, reason: RejectReason = RejectReason.INVALID_FHIR) -> Rejection:
    rejections = [o for o in outcomes(document) if isinstance(o, Rejection)]
    assert [r.reason for r in rejections] == [reason], rejections
    return rejections[0]


def medication(**changes: Any) -> dict[str, Any]:
    return treatment("MedicationStatement", effectiveDateTime="2026-11-20", **changes)


def test_fhir_bundle_type_as_list_is_refused() -> None:
    refused({"resourceType": "Bundle", "type": [], "entry": []})


def test_fhir_bundle_entry_as_number_is_refused() -> None:
    refused({"resourceType": "Bundle", "type": "collection", "entry": 5})


def test_fhir_entry_resource_as_list_is_filtered_beside_the_platelet() -> None:
    document = bundle(PATIENT, observation())
    document["entry"].append({"resource": [1]})
    assert [type(o) for o in outcomes(document)] == [Filter, Publish, Filter]


def test_fhir_observation_code_as_string_is_filtered() -> None:
    assert [type(o) for o in outcomes(observation(code="x"))] == [Filter]


def test_fhir_coding_as_string_is_filtered() -> None:
    assert [type(o) for o in outcomes(observation(code={"coding": "777-3"}))] == [Filter]


def test_fhir_platelet_display_as_object_is_refused() -> None:
    code = {"coding": [{"system": "http://loinc.org", "code": "777-3", "display": {"x": 1}}]}
    refused(bundle(PATIENT, observation(code=code)))


def test_fhir_medication_reference_as_string_is_filtered() -> None:
    assert [type(o) for o in outcomes(medication(medicationReference="Medication/1"))] == [Filter]


def test_fhir_medication_concept_as_string_is_filtered() -> None:
    document = medication(medicationCodeableConcept="prednisone")
    assert [type(o) for o in outcomes(document)] == [Filter]


def test_fhir_contained_as_number_is_filtered() -> None:
    document = medication(medicationReference={"reference": "#m1"}, contained=5)
    assert [type(o) for o in outcomes(document)] == [Filter]


@pytest.mark.parametrize("resource_type", ["Nonsense", 5])
def test_fhir_contained_resource_of_no_known_type_is_refused(resource_type: object) -> None:
    """fhir.resources raises KeyError or TypeError here, not a ValidationError."""
    refused(bundle(PATIENT, observation(contained=[{"resourceType": resource_type}])))


def test_fhir_url_as_list_in_an_unrelated_entry_is_filtered() -> None:
    """fhir.resources raises TypeError (unhashable list) for a url given as a list."""
    header = {
        "resourceType": "MessageHeader",
        "eventCoding": {"code": "R01"},
        "source": {"endpoint": ["https://lab.example"]},
    }
    assert [type(o) for o in outcomes(bundle(header, PATIENT, observation()))] == [
        Filter,
        Filter,
        Publish,
    ]


@pytest.mark.parametrize(
    "identifier_type", [[{"coding": []}], "MR", {"coding": 0.5}, {"coding": ["MR"]}]
)
def test_fhir_patient_identifier_type_of_the_wrong_shape_still_finds_the_patient(
    identifier_type: object,
) -> None:
    identifier = {**PATIENT["identifier"][1], "type": identifier_type}
    patient = {**PATIENT, "identifier": [identifier]}
    (_, published) = outcomes(bundle(patient, observation()))
    assert isinstance(published, Publish)
    assert published.event.patient.identifier.mrn == "MRN-42"


def test_fhir_patient_identifier_system_as_list_is_not_an_identifier() -> None:
    identifier = {**PATIENT["identifier"][1], "system": [["urn:oid:2.16.840.1.113883.19.5"]]}
    patient = {**PATIENT, "identifier": [identifier]}
    refused(bundle(patient, observation()), RejectReason.NO_PATIENT_IDENTIFIER)


def test_fhir_patient_identifier_value_as_object_is_not_an_identifier() -> None:
    identifier = {**PATIENT["identifier"][1], "value": {"display": "MRN-42"}}
    patient = {**PATIENT, "identifier": [identifier]}
    refused(bundle(patient, observation()), RejectReason.NO_PATIENT_IDENTIFIER)


def test_fhir_lone_surrogate_in_full_url_is_refused() -> None:
    body = json.dumps(bundle(PATIENT, observation(id=None))).replace("urn:uuid:1", "\\ud800")
    rejection = refused(body.encode(), RejectReason.INVALID_JSON)
    json.dumps(rejection.message, ensure_ascii=False).encode("utf-8")  # renders as JSON


def test_fhir_deeply_nested_body_is_refused() -> None:
    refused(b"[" * 1000 + b"]" * 1000, RejectReason.INVALID_JSON)  # was a RecursionError


def test_fhir_dose_that_is_not_a_positive_number_is_left_out() -> None:
    administration = treatment(
        "MedicationAdministration",
        medicationCodeableConcept={"text": "Prednisone 60 mg"},
        effectiveDateTime="2026-11-20T08:00:00Z",
        dosage={"dose": {"value": -60, "unit": "mg"}},
    )
    (_, published) = outcomes(bundle(PATIENT, administration))
    assert isinstance(published, Publish)
    assert published.event.dose is None  # type: ignore[union-attr]
