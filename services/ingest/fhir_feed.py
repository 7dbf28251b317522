"""FHIR R4 resources and Bundles to outcomes, one per entry. Pure.

Entries are validated one by one with fhir.resources (R4B models): an invalid entry that has
nothing to do with platelets or treatments is filtered and its problem reported, and never
blocks the platelet Observation beside it; an invalid platelet Observation or treatment is
rejected (dead-lettered) with its validation errors.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from schemas import (
    Coding,
    Dose,
    MedicationEvent,
    Patient,
    PatientIdentifier,
    ProcedureEvent,
    TransfusionEvent,
    stable_event_id,
)
from services.ingest.codes import FeedContext, is_platelet_count
from services.ingest.lab_results import lab_result
from services.ingest.outcomes import Filter, Outcome, Publish, Rejection, RejectReason
from services.ingest.status import FHIR_OBSERVATION_STATUS, NOT_MEASURED, RETRACTING
from services.ingest.times import parse_fhir_datetime
from services.ingest.treatments import Recognised, TreatmentTable
from services.ingest.units import UnknownUnitError, UnreadableValueError, platelet_count

ACCEPTED_BUNDLE_TYPES = frozenset({"collection", "transaction", "batch", "message"})
TREATMENT_RESOURCES = frozenset({"MedicationAdministration", "MedicationStatement", "Procedure"})
# Statuses meaning the treatment was not (or not really) given.
_NOT_GIVEN = frozenset(
    {"not-done", "entered-in-error", "not-taken", "cancelled", "preparation", "unknown"}
)
_UCUM = "http://unitsofmeasure.org"
_SSN_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/us-ssn", "urn:oid:2.16.840.1.113883.4.1"})
_MR = ("http://terminology.hl7.org/CodeSystem/v2-0203", "MR")

Json = dict[str, Any]


@dataclass(frozen=True)
class EntryOutcome:
    index: int
    resource_type: str
    full_url: str | None
    outcome: Outcome


@dataclass(frozen=True)
class _Bundle:
    """Resources of the Bundle, findable by fullUrl and by ResourceType/id."""

    by_reference: dict[str, Json]

    @classmethod
    def of(cls, entries: list[Json]) -> "_Bundle":
        index: dict[str, Json] = {}
        for entry in entries:
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                continue
            if isinstance(entry.get("fullUrl"), str):
                index[entry["fullUrl"]] = resource
            if resource.get("id") and resource.get("resourceType"):
                index[f"{resource['resourceType']}/{resource['id']}"] = resource
        return cls(index)

    def resolve(self, reference: Json | None, holder: Json) -> Json | None:
        ref = (reference or {}).get("reference")
        if not isinstance(ref, str):
            return None
        if ref.startswith("#"):
            return next((c for c in holder.get("contained", []) if c.get("id") == ref[1:]), None)
        if ref in self.by_reference:
            return self.by_reference[ref]
        tail = "/".join(ref.rstrip("/").split("/")[-2:])  # absolute URL to ResourceType/id
        return self.by_reference.get(tail)


def read_fhir(raw: bytes, context: FeedContext, treatments: TreatmentTable) -> list[EntryOutcome]:
    """One outcome per resource (or Bundle entry); a body that is not FHIR JSON is one rejection."""
    try:
        document = json.loads(raw)
    except ValueError as error:
        return [_whole(RejectReason.INVALID_JSON, f"body is not valid JSON: {error}")]
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        return [_whole(RejectReason.INVALID_FHIR, "body is not a FHIR resource (no resourceType)")]
    if document["resourceType"] != "Bundle":
        return [_entry(0, document, None, _Bundle({}), context, treatments)]
    if document.get("type") not in ACCEPTED_BUNDLE_TYPES:
        accepted = ", ".join(sorted(ACCEPTED_BUNDLE_TYPES))
        return [
            _whole(
                RejectReason.INVALID_FHIR,
                f"Bundle.type {document.get('type')!r} is not accepted ({accepted})",
            )
        ]
    entries = [e for e in document.get("entry", []) if isinstance(e, dict)]
    bundle = _Bundle.of(entries)
    return [
        _entry(i, e.get("resource") or {}, e.get("fullUrl"), bundle, context, treatments)
        for i, e in enumerate(entries)
    ]


def _whole(reason: RejectReason, message: str) -> EntryOutcome:
    return EntryOutcome(0, "", None, Rejection(reason, message, location="body"))


def _entry(
    index: int,
    resource: Json,
    full_url: str | None,
    bundle: _Bundle,
    context: FeedContext,
    treatments: TreatmentTable,
) -> EntryOutcome:
    resource_type = str(resource.get("resourceType", ""))
    where = f"entry[{index}]" if full_url is not None or index else resource_type

    def outcome(result: Outcome) -> EntryOutcome:
        return EntryOutcome(index, resource_type, full_url, result)

    recognised = (
        _treatment_of(resource, bundle, treatments)
        if resource_type in TREATMENT_RESOURCES
        else None
    )
    relevant = recognised is not None or (
        resource_type == "Observation" and _platelet_coding(resource, context) is not None
    )
    problems = _validation_errors(resource_type, resource, where)
    if not relevant:
        detail = f"{resource_type or 'entry'} not used by PlateletWatch"
        if problems:
            detail += f" (also invalid: {problems[0]['msg']} at {problems[0]['loc']})"
        return outcome(Filter(detail))
    if problems:
        return outcome(
            Rejection(RejectReason.INVALID_FHIR, f"invalid {resource_type}", problems, where)
        )
    patient = _patient(resource, bundle, context)
    if isinstance(patient, Rejection):
        return outcome(patient)
    if recognised is not None:
        return outcome(_treatment(resource, bundle, recognised, patient, where, context))
    return outcome(_observation(resource, patient, full_url, where, context))


def _validation_errors(
    resource_type: str, resource: Json, where: str
) -> tuple[dict[str, str], ...]:
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError):
        return ({"loc": f"{where}.resourceType", "msg": f"unknown resourceType {resource_type!r}"},)
    try:
        model.model_validate(resource)
    except ValidationError as error:
        return tuple(
            {"loc": f"{where}." + ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
            for e in error.errors(include_input=False, include_url=False)
        )
    return ()


def _codings(concept: Json | None) -> list[tuple[str, str]]:
    return [
        (str(c.get("system", "")), str(c.get("code", "")))
        for c in (concept or {}).get("coding", [])
        if isinstance(c, dict) and c.get("code")
    ]


def _texts(concept: Json | None) -> list[str]:
    concept = concept or {}
    texts = [concept.get("text")] + [c.get("display") for c in concept.get("coding", [])]
    return [t for t in texts if isinstance(t, str) and t]


def _platelet_coding(resource: Json, context: FeedContext) -> Coding | None:
    for coding in resource.get("code", {}).get("coding", []):
        system, code = str(coding.get("system", "")), str(coding.get("code", ""))
        if is_platelet_count(system, code, context.local_platelet_codes):
            return Coding(system=system, code=code, display=coding.get("display"))
    return None


def _patient(resource: Json, bundle: _Bundle, context: FeedContext) -> Patient | Rejection:
    """The subject as authority + MRN: from the Patient in the Bundle, a logical identifier, or
    (when the site configures an authority for it) the reference itself."""
    subject = resource.get("subject") or resource.get("patient") or {}
    target = bundle.resolve(subject, resource)
    identifiers = (target or {}).get("identifier", [])
    if isinstance(subject.get("identifier"), dict):
        identifiers = [subject["identifier"], *identifiers]
    chosen = _usable_identifier(identifiers)
    birth = (target or {}).get("birthDate")
    birth_date = parse_fhir_datetime(birth, context.local_zone) if isinstance(birth, str) else None
    if chosen is not None:
        return Patient(
            identifier=PatientIdentifier(authority=chosen[0], mrn=chosen[1]),
            birth_date=birth_date.date() if birth_date else None,
        )
    reference = subject.get("reference")
    if context.fhir_reference_authority and isinstance(reference, str) and "Patient/" in reference:
        logical_id = reference.rstrip("/").split("/")[-1]
        return Patient(
            identifier=PatientIdentifier(
                authority=context.fhir_reference_authority, mrn=logical_id
            ),
            birth_date=birth_date.date() if birth_date else None,
        )
    message = (
        "no usable patient identifier: include the Patient (with an MR-typed or system-qualified "
        "identifier other than SSN) in the Bundle, or use subject.identifier"
    )
    return Rejection(
        RejectReason.NO_PATIENT_IDENTIFIER,
        message,
        ({"loc": "subject", "msg": message},),
        "subject",
    )


def _usable_identifier(identifiers: list[Json]) -> tuple[str, str] | None:
    """MR-typed first, then any system-qualified identifier; never an SSN."""
    usable = [
        i
        for i in identifiers
        if isinstance(i, dict)
        and i.get("value")
        and i.get("system")
        and i["system"] not in _SSN_SYSTEMS
    ]
    usable.sort(
        key=lambda i: (
            _MR
            not in [(c.get("system"), c.get("code")) for c in i.get("type", {}).get("coding", [])]
        )
    )
    return (str(usable[0]["system"]), str(usable[0]["value"])) if usable else None


def _observation(
    resource: Json, patient: Patient, full_url: str | None, where: str, context: FeedContext
) -> Outcome:
    code = _platelet_coding(resource, context)
    assert code is not None  # checked by the caller
    status = FHIR_OBSERVATION_STATUS.get(str(resource.get("status")))
    if status is None:
        message = f"Observation.status {resource.get('status')!r} is not an R4 status"
        return Rejection(RejectReason.UNKNOWN_STATUS, message, location=f"{where}.status")
    collected = _first_time(
        context,
        resource.get("effectiveDateTime"),
        resource.get("effectiveInstant"),
        (resource.get("effectivePeriod") or {}).get("start"),
    )
    if collected is None:
        message = (
            "no collection time (effectiveDateTime, effectivePeriod.start or effectiveInstant)"
        )
        return Rejection(RejectReason.NO_COLLECTION_TIME, message, location=f"{where}.effective")
    quantity = resource.get("valueQuantity")
    if not isinstance(quantity, dict) or quantity.get("value") is None:
        if status in RETRACTING:
            count = None
        elif status in NOT_MEASURED:
            return Filter(f"platelet count not available (status {status.value})")
        else:
            message = "a platelet Observation needs valueQuantity with a value"
            return Rejection(RejectReason.UNREADABLE_VALUE, message, location=f"{where}.value")
    else:
        unit = quantity.get("code") if quantity.get("system") == _UCUM else None
        unit = unit or quantity.get("unit") or quantity.get("code") or ""
        try:
            count = platelet_count(f"{quantity.get('comparator', '')}{quantity['value']}", unit)
        except UnknownUnitError as error:
            return Rejection(
                RejectReason.UNKNOWN_UNIT, str(error), location=f"{where}.valueQuantity"
            )
        except UnreadableValueError as error:
            return Rejection(
                RejectReason.UNREADABLE_VALUE, str(error), location=f"{where}.valueQuantity"
            )
    flags = tuple(
        code_ for concept in resource.get("interpretation", []) for _, code_ in _codings(concept)
    )
    return Publish(
        lab_result(
            source="fhir",
            patient=patient,
            result_id=_result_id(resource, full_url, patient, code, collected),
            version=str((resource.get("meta") or {}).get("versionId", "")),
            code=code,
            count=count,
            status=status,
            abnormal_flags=flags,
            collected_at=collected,
            verified_at=_first_time(context, resource.get("issued")),
            received_at=context.received_at,
        )
    )


def _result_id(
    resource: Json, full_url: str | None, patient: Patient, code: Coding, collected: datetime
) -> str:
    """Observation id, else a business identifier, else what identifies it clinically."""
    if resource.get("id"):
        return f"Observation/{resource['id']}"
    for identifier in resource.get("identifier", []):
        if identifier.get("value"):
            return f"{identifier.get('system', '')}|{identifier['value']}"
    if full_url and not full_url.startswith("urn:uuid:"):
        return full_url
    return "obs:" + stable_event_id(
        patient.identifier.key, code.system, code.code, collected.isoformat()
    )


def _first_time(context: FeedContext, *candidates: Any) -> datetime | None:
    for candidate in candidates:
        if isinstance(candidate, str):
            moment = parse_fhir_datetime(candidate, context.local_zone)
            if moment is not None:
                return moment
    return None


def _treatment_of(resource: Json, bundle: _Bundle, treatments: TreatmentTable) -> Recognised | None:
    concept = resource.get("code") if resource.get("resourceType") == "Procedure" else None
    if concept is None:
        concept = resource.get("medicationCodeableConcept")
        if concept is None:
            medication = bundle.resolve(resource.get("medicationReference"), resource)
            concept = (medication or {}).get("code")
    return treatments.recognise(_codings(concept), _texts(concept))


def _treatment(
    resource: Json,
    bundle: _Bundle,
    recognised: Recognised,
    patient: Patient,
    where: str,
    context: FeedContext,
) -> Outcome:
    status = str(resource.get("status", ""))
    if status in _NOT_GIVEN:
        return Filter(f"{resource['resourceType']} with status {status!r}: not given")
    when = _first_time(
        context,
        resource.get("effectiveDateTime"),
        (resource.get("effectivePeriod") or {}).get("start"),
        resource.get("performedDateTime"),
        (resource.get("performedPeriod") or {}).get("start"),
    )
    if when is None:
        message = "no time the treatment was given (effective[x] or performed[x])"
        return Rejection(RejectReason.NO_COLLECTION_TIME, message, location=f"{where}.effective")
    ended = _first_time(
        context,
        (resource.get("effectivePeriod") or {}).get("end"),
        (resource.get("performedPeriod") or {}).get("end"),
    )
    concept = (
        resource.get("code")
        or resource.get("medicationCodeableConcept")
        or (bundle.resolve(resource.get("medicationReference"), resource) or {}).get("code")
    )
    codings = (concept or {}).get("coding", [])
    first = codings[0] if codings else None
    name = next(iter(_texts(concept)), recognised.category.value)
    identity = resource.get("id") or json.dumps(resource, sort_keys=True)
    common: dict[str, Any] = {
        "event_id": stable_event_id(
            "context", "fhir", patient.identifier.key, str(identity), status
        ),
        "source": "fhir",
        "patient": patient,
        "category": recognised.category,
        "code": Coding(system=first["system"], code=first["code"], display=first.get("display"))
        if first and first.get("system") and first.get("code")
        else None,
        "name": name,
        "received_at": context.received_at,
    }
    dose = _dose(resource)
    if recognised.kind == "procedure":
        return Publish(ProcedureEvent(performed_at=when, **common))
    if recognised.kind == "transfusion":
        return Publish(TransfusionEvent(started_at=when, dose=dose, **common))
    return Publish(MedicationEvent(started_at=when, ended_at=ended, dose=dose, **common))


def _dose(resource: Json) -> Dose | None:
    dosage = resource.get("dosage")
    quantity = None
    if isinstance(dosage, dict):  # MedicationAdministration
        quantity = dosage.get("dose")
    elif isinstance(dosage, list) and dosage:  # MedicationStatement
        rates = dosage[0].get("doseAndRate", [])
        quantity = rates[0].get("doseQuantity") if rates else None
    if (
        isinstance(quantity, dict)
        and quantity.get("value")
        and (quantity.get("unit") or quantity.get("code"))
    ):
        return Dose(
            value=float(quantity["value"]), unit=str(quantity.get("unit") or quantity.get("code"))
        )
    return None
