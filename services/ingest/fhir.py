"""FHIR R4 resources and Bundles to outcomes, one per entry. Pure.

Platelet Observations become lab results; MedicationAdministration, MedicationStatement and
Procedure of a treatment in the treatment table become treatment events (only when the treatment
was given or is being given, by a systemic route: anything else is filtered with the reason);
Conditions become diagnoses.

Entries are validated one by one with fhir.resources (R4B models): an invalid entry that has
nothing to do with platelets or treatments is filtered and its problem reported, and never
blocks the platelet Observation beside it; an invalid platelet Observation or treatment is
rejected (dead-lettered) with its validation errors, and so is one whose values break an event
limit (schemas/events.py: absurd times, over-long identifiers).

The body is untrusted JSON until validated, and the resources an entry points at (its Patient,
a contained Medication) are never validated, so every step through the document goes through
`_object`, `_objects` and `_text`: a value of the wrong type reads as absent, never as a crash.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
from pydantic_core import from_json

from schemas import (
    MAX_FLAGS,
    Coding,
    DiagnosisEvent,
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
from services.ingest.outcomes import (
    FieldRefused,
    Filter,
    Outcome,
    Publish,
    Rejection,
    RejectReason,
)
from services.ingest.status import FHIR_OBSERVATION_STATUS, NOT_MEASURED, RETRACTING
from services.ingest.times import ImplausibleTimeError, parse_fhir_birth_date, parse_fhir_datetime
from services.ingest.treatments import Recognised, TreatmentTable
from services.ingest.units import UnknownUnitError, UnreadableValueError, platelet_count

ACCEPTED_BUNDLE_TYPES = frozenset({"collection", "transaction", "batch", "message"})
TREATMENT_RESOURCES = frozenset({"MedicationAdministration", "MedicationStatement", "Procedure"})
# Statuses (FHIR R4 medication-admin-status, medication-statement-status, event-status) under
# which the treatment was given or is being given. Any other status (not-done, entered-in-error,
# preparation, unknown; a statement intended, not-taken, on-hold or unknown) is not therapy.
_GIVEN: dict[str, frozenset[str]] = {
    "MedicationAdministration": frozenset({"completed", "in-progress", "on-hold", "stopped"}),
    "MedicationStatement": frozenset({"active", "completed"}),
    "Procedure": frozenset({"completed", "in-progress", "on-hold", "stopped"}),
}
# A statement "stopped" was taken and then halted: therapy only when its period says when.
_GIVEN_WITH_A_PERIOD = {"MedicationStatement": "stopped"}
# Statuses that withdraw what an earlier version of the same resource (same id) recorded.
_WITHDRAWN: dict[str, frozenset[str]] = {
    "MedicationAdministration": frozenset({"entered-in-error", "not-done"}),
    "MedicationStatement": frozenset({"entered-in-error", "not-taken"}),
    "Procedure": frozenset({"entered-in-error", "not-done"}),
}
# Condition.clinicalStatus (condition-clinical) and verificationStatus (condition-ver-status).
_ON_RECORD = frozenset({"active", "recurrence", "relapse"})
_NOT_ON_RECORD = frozenset({"refuted", "entered-in-error"})
# Code systems listed first among a diagnosis' codes (the event keeps at most MAX_FLAGS).
_DIAGNOSIS_SYSTEMS = (
    "http://hl7.org/fhir/sid/icd-10",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://snomed.info/sct",
)
_UCUM = "http://unitsofmeasure.org"
_SSN_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/us-ssn", "urn:oid:2.16.840.1.113883.4.1"})
_MR = ("http://terminology.hl7.org/CodeSystem/v2-0203", "MR")
_MAX_DOSE_VALUE = 1e9  # beyond any dose in any unit; also keeps huge JSON integers out of float()
# A reference to a Patient by its logical id (FHIR id: 1 to 64 of [A-Za-z0-9-.]), maybe versioned.
_PATIENT_REFERENCE = re.compile(r"(?:^|/)Patient/([A-Za-z0-9.\-]{1,64})(?:/_history/[^/]+)?/?$")

Json = dict[str, Any]


def _object(value: object) -> Json:
    """A JSON object; anything else (a list, a string, a number) reads as an empty one."""
    return value if isinstance(value, dict) else {}


def _objects(value: object) -> list[Json]:
    """The objects of a JSON array; anything else reads as none."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _text(value: object) -> str | None:
    """A non-empty JSON string; anything else reads as absent."""
    return value if isinstance(value, str) and value else None


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
            full_url = _text(entry.get("fullUrl"))
            if full_url is not None:
                index[full_url] = resource
            resource_type, resource_id = (
                _text(resource.get("resourceType")),
                _text(resource.get("id")),
            )
            if resource_type and resource_id:
                index[f"{resource_type}/{resource_id}"] = resource
        return cls(index)

    def resolve(self, reference: object, holder: Json) -> Json:
        """The resource a Reference points at (contained, by fullUrl or by type/id); else {}."""
        ref = _text(_object(reference).get("reference"))
        if ref is None:
            return {}
        if ref.startswith("#"):
            contained = _objects(holder.get("contained"))
            return next((c for c in contained if c.get("id") == ref[1:]), {})
        if ref in self.by_reference:
            return self.by_reference[ref]
        tail = "/".join(ref.rstrip("/").split("/")[-2:])  # absolute URL to ResourceType/id
        return self.by_reference.get(tail, {})


def parse_fhir_json(raw: bytes) -> Any:
    """A FHIR body's JSON, read as strictly as the JSON feed reads its bodies: text that is not
    UTF-8, a lone surrogate escape (\\ud800) that is no character, NaN, or nesting deeper than
    200 levels (FHIR resources nest about 10) raises ValueError."""
    return from_json(raw, allow_inf_nan=False)


def read_fhir(raw: bytes, context: FeedContext, treatments: TreatmentTable) -> list[EntryOutcome]:
    """One outcome per resource (or Bundle entry); a body that is not FHIR JSON is one rejection
    (see parse_fhir_json)."""
    try:
        document = parse_fhir_json(raw)
    except ValueError as error:
        return [_whole(RejectReason.INVALID_JSON, f"body is not valid JSON: {error}")]
    if not isinstance(document, dict) or not _text(document.get("resourceType")):
        return [_whole(RejectReason.INVALID_FHIR, "body is not a FHIR resource (no resourceType)")]
    if document["resourceType"] != "Bundle":
        return [_entry(0, document, None, _Bundle({}), context, treatments)]
    bundle_type = document.get("type")
    if not isinstance(bundle_type, str) or bundle_type not in ACCEPTED_BUNDLE_TYPES:
        accepted = ", ".join(sorted(ACCEPTED_BUNDLE_TYPES))
        return [
            _whole(
                RejectReason.INVALID_FHIR,
                f"Bundle.type {_brief(bundle_type)} is not accepted ({accepted})",
            )
        ]
    if not isinstance(document.get("entry", []), list):
        return [_whole(RejectReason.INVALID_FHIR, "Bundle.entry is not an array of entries")]
    entries = _objects(document.get("entry"))
    bundle = _Bundle.of(entries)
    return [
        _entry(i, _object(e.get("resource")), _text(e.get("fullUrl")), bundle, context, treatments)
        for i, e in enumerate(entries)
    ]


def _brief(value: object) -> str:
    """A value quoted in a message, short enough for a log line or an HL7 field."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    resource_type = _text(resource.get("resourceType")) or ""
    where = f"entry[{index}]" if full_url is not None or index else resource_type

    def outcome(result: Outcome) -> EntryOutcome:
        return EntryOutcome(index, resource_type, full_url, result)

    recognised = (
        _treatment_of(resource, bundle, treatments)
        if resource_type in TREATMENT_RESOURCES
        else None
    )
    diagnosis = resource_type == "Condition" and bool(_codings(resource.get("code")))
    relevant = (
        recognised is not None
        or diagnosis
        or (resource_type == "Observation" and _platelet_coding(resource, context) is not None)
    )
    problems = _validation_errors(resource_type, resource, where)
    if not relevant:
        detail = f"{resource_type or 'entry'} not used by PlateletWatch"
        if resource_type == "Condition":
            detail = "Condition with no coded diagnosis (code.coding) not used by PlateletWatch"
        if problems:
            detail += f" (also invalid: {problems[0]['msg']} at {problems[0]['loc']})"
        return outcome(Filter(detail))
    if problems:
        return outcome(
            Rejection(RejectReason.INVALID_FHIR, f"invalid {resource_type}", problems, where)
        )
    try:
        patient = _patient(resource, bundle, context)
        if isinstance(patient, Rejection):
            return outcome(patient)
        if recognised is not None:
            return outcome(
                _treatment(resource, bundle, recognised, treatments, patient, where, context)
            )
        if diagnosis:
            return outcome(_diagnosis(resource, patient, full_url, where, context))
        return outcome(_observation(resource, patient, full_url, where, context))
    except FieldRefused as error:
        return outcome(error.rejection(RejectReason.INVALID_FHIR))
    except ValidationError as error:  # a value beyond an event limit (schemas/events.py)
        message = f"{resource_type} holds values PlateletWatch refuses"
        return outcome(Rejection(RejectReason.INVALID_FHIR, message, _errors(error, where), where))


def _validation_errors(
    resource_type: str, resource: Json, where: str
) -> tuple[dict[str, str], ...]:
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError):
        message = f"unknown resourceType {_brief(resource_type)}"
        return ({"loc": f"{where}.resourceType", "msg": message},)
    try:
        model.model_validate(resource)
    except ValidationError as error:
        return _errors(error, where)
    except (TypeError, KeyError, AttributeError) as error:
        # Some fhir.resources validators fail this way on values of the wrong JSON type.
        message = f"not a valid {resource_type} ({type(error).__name__} in its FHIR model)"
        return ({"loc": where, "msg": message},)
    return ()


def _errors(error: ValidationError, where: str) -> tuple[dict[str, str], ...]:
    return tuple(
        {"loc": f"{where}." + ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
        for e in error.errors(include_input=False, include_url=False)
    )


def _codings(concept: object) -> list[tuple[str, str]]:
    return [
        (_text(c.get("system")) or "", code)
        for c in _objects(_object(concept).get("coding"))
        if (code := _text(c.get("code")))
    ]


def _texts(concept: object) -> list[str]:
    concept = _object(concept)
    texts = [concept.get("text")] + [c.get("display") for c in _objects(concept.get("coding"))]
    return [t for t in texts if isinstance(t, str) and t]


def _platelet_coding(resource: Json, context: FeedContext) -> Coding | None:
    for coding in _objects(_object(resource.get("code")).get("coding")):
        system, code = _text(coding.get("system")) or "", _text(coding.get("code")) or ""
        if is_platelet_count(system, code, context.local_platelet_codes):
            return Coding(system=system, code=code, display=_text(coding.get("display")))
    return None


def _patient(resource: Json, bundle: _Bundle, context: FeedContext) -> Patient | Rejection:
    """The subject as authority + MRN: from the Patient in the Bundle, a logical identifier, or
    (when the site configures an authority for it) the reference itself."""
    subject = _object(resource.get("subject")) or _object(resource.get("patient"))
    target = bundle.resolve(subject, resource)
    identifiers = [*_objects([subject.get("identifier")]), *_objects(target.get("identifier"))]
    chosen = _usable_identifier(identifiers)
    birth = _text(target.get("birthDate"))
    birth_date = parse_fhir_birth_date(birth, context.local_zone) if birth else None
    if chosen is not None:
        return Patient(
            identifier=PatientIdentifier(authority=chosen[0], mrn=chosen[1]),
            birth_date=birth_date,
        )
    by_reference = _PATIENT_REFERENCE.search(_text(subject.get("reference")) or "")
    if context.fhir_reference_authority and by_reference:
        return Patient(
            identifier=PatientIdentifier(
                authority=context.fhir_reference_authority, mrn=by_reference[1]
            ),
            birth_date=birth_date,
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
        (system, value, i)
        for i in identifiers
        if (value := _text(i.get("value")))
        and (system := _text(i.get("system")))
        and system not in _SSN_SYSTEMS
    ]
    usable.sort(
        key=lambda candidate: (
            _MR
            not in [
                (c.get("system"), c.get("code"))
                for c in _objects(_object(candidate[2].get("type")).get("coding"))
            ]
        )
    )
    return (usable[0][0], usable[0][1]) if usable else None


def _observation(
    resource: Json, patient: Patient, full_url: str | None, where: str, context: FeedContext
) -> Outcome:
    code = _platelet_coding(resource, context)
    assert code is not None  # checked by the caller
    status = FHIR_OBSERVATION_STATUS.get(str(resource.get("status")))
    if status is None:
        message = f"Observation.status {_brief(resource.get('status'))} is not an R4 status"
        return Rejection(RejectReason.UNKNOWN_STATUS, message, location=f"{where}.status")
    collected = _first_time(
        context,
        (f"{where}.effectiveDateTime", resource.get("effectiveDateTime")),
        (f"{where}.effectiveInstant", resource.get("effectiveInstant")),
        (f"{where}.effectivePeriod.start", _object(resource.get("effectivePeriod")).get("start")),
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
        code_
        for concept in _objects(resource.get("interpretation"))
        for _, code_ in _codings(concept)
    )
    return Publish(
        lab_result(
            source="fhir",
            patient=patient,
            result_id=_result_id(resource, full_url, patient, code, collected),
            version=_text(_object(resource.get("meta")).get("versionId")) or "",
            code=code,
            count=count,
            status=status,
            abnormal_flags=flags,
            collected_at=collected,
            verified_at=_first_time(
                context, (f"{where}.issued", resource.get("issued")), required=False
            ),
            received_at=context.received_at,
        )
    )


def _result_id(
    resource: Json, full_url: str | None, patient: Patient, code: Coding, collected: datetime
) -> str:
    """Observation id, else a business identifier, else what identifies it clinically."""
    return _identity(resource, full_url, "Observation") or "obs:" + stable_event_id(
        patient.identifier.key, code.system, code.code, collected.isoformat()
    )


def _identity(resource: Json, full_url: str | None, resource_type: str) -> str | None:
    """The resource's id, else a business identifier, else a fullUrl that is no urn:uuid."""
    if resource_id := _text(resource.get("id")):
        return f"{resource_type}/{resource_id}"
    for identifier in _objects(resource.get("identifier")):
        if value := _text(identifier.get("value")):
            return f"{_text(identifier.get('system')) or ''}|{value}"
    if full_url and not full_url.startswith("urn:uuid:"):
        return full_url
    return None


def _first_time(
    context: FeedContext, *candidates: tuple[str, object], required: bool = True
) -> datetime | None:
    """The first (location, value) that holds a valid time; an implausible one (year 9999,
    offset +24:00) raises FieldRefused naming where it is, unless the time is not `required` (the
    verification time only times the page: it is passed over)."""
    for location, candidate in candidates:
        if isinstance(candidate, str):
            try:
                moment = parse_fhir_datetime(candidate, context.local_zone)
            except ImplausibleTimeError as error:
                if not required:
                    continue
                raise FieldRefused(location, f"{location}: {error}") from None
            if moment is not None:
                return moment
    return None


def _treatment_of(resource: Json, bundle: _Bundle, treatments: TreatmentTable) -> Recognised | None:
    concept = _treatment_concept(resource, bundle)
    return treatments.recognise(_codings(concept), _texts(concept))


def _treatment_concept(resource: Json, bundle: _Bundle) -> Json:
    """What was given or done: Procedure.code, medicationCodeableConcept, or the code of the
    Medication that medicationReference points at."""
    if resource.get("resourceType") == "Procedure":
        return _object(resource.get("code"))
    if "medicationCodeableConcept" in resource:
        return _object(resource.get("medicationCodeableConcept"))
    medication = bundle.resolve(resource.get("medicationReference"), resource)
    return _object(medication.get("code"))


def _treatment(
    resource: Json,
    bundle: _Bundle,
    recognised: Recognised,
    treatments: TreatmentTable,
    patient: Patient,
    where: str,
    context: FeedContext,
) -> Outcome:
    """The treatment event, or a Filter saying why it is not therapy: not given (by its status),
    or given only by local routes (eye, ear, skin, airways, nose)."""
    resource_type = resource["resourceType"]
    status = _text(resource.get("status")) or ""
    effective, performed = (
        _object(resource.get("effectivePeriod")),
        _object(resource.get("performedPeriod")),
    )
    resource_id = _text(resource.get("id"))
    withdrawn = status in _WITHDRAWN[resource_type] and resource_id is not None
    if _GIVEN_WITH_A_PERIOD.get(resource_type) == status and "start" not in effective:
        return Filter(f"{resource_type} with status {status!r} and no effectivePeriod: not given")
    if (
        status not in _GIVEN[resource_type]
        and _GIVEN_WITH_A_PERIOD.get(resource_type) != status
        and not withdrawn
    ):
        return Filter(f"{resource_type} with status {status!r}: not given")
    routes = _routes(resource)
    systemic = [route for route in routes if _local_route(route, treatments) is None]
    if routes and not systemic:
        local = _local_route(routes[0], treatments)
        return Filter(f"{resource_type} by the route {local!r}: not ITP therapy")
    when = _first_time(
        context,
        (f"{where}.effectiveDateTime", resource.get("effectiveDateTime")),
        (f"{where}.effectivePeriod.start", effective.get("start")),
        (f"{where}.performedDateTime", resource.get("performedDateTime")),
        (f"{where}.performedPeriod.start", performed.get("start")),
    )
    if when is None and withdrawn:
        when = context.received_at  # it only takes the earlier record out: its time is moot
    if when is None:
        message = "no time the treatment was given (effective[x] or performed[x])"
        return Rejection(RejectReason.NO_COLLECTION_TIME, message, location=f"{where}.effective")
    ended = _first_time(
        context,
        (f"{where}.effectivePeriod.end", effective.get("end")),
        (f"{where}.performedPeriod.end", performed.get("end")),
    )
    concept = _treatment_concept(resource, bundle)
    name = next(iter(_texts(concept)), recognised.category.value)
    identity = _text(resource.get("id")) or json.dumps(resource, sort_keys=True)
    common: dict[str, Any] = {
        "event_id": stable_event_id(
            "context", "fhir", patient.identifier.key, str(identity), status
        ),
        "source": "fhir",
        "patient": patient,
        "category": recognised.category,
        "line": recognised.line,
        "code": _first_coding(concept),
        "name": name,
        "received_at": context.received_at,
        "treatment_id": f"{resource_type}/{resource_id}" if resource_id else None,
        "on_record": not withdrawn,
    }
    dose = _dose(resource)
    if recognised.kind == "procedure":
        return Publish(ProcedureEvent(performed_at=when, **common))
    if recognised.kind == "transfusion":
        return Publish(TransfusionEvent(started_at=when, dose=dose, **common))
    route = _route_coding(systemic[0]) if systemic else None
    return Publish(
        MedicationEvent(started_at=when, ended_at=ended, dose=dose, route=route, **common)
    )


def _routes(resource: Json) -> list[Json]:
    """The routes the dosage names: MedicationAdministration.dosage.route, or the route of each
    of a MedicationStatement's dosages."""
    dosage = resource.get("dosage")
    dosages = [dosage] if isinstance(dosage, dict) else _objects(dosage)
    return [route for d in dosages if (route := _object(d.get("route"))) and _route_named(route)]


def _route_named(route: Json) -> bool:
    return bool(_codings(route) or _texts(route))


def _local_route(route: Json, treatments: TreatmentTable) -> str | None:
    return treatments.local_route(_codings(route), _texts(route))


def _route_coding(route: Json) -> Coding:
    """The route as the evidence names it: its first coding, else its text alone."""
    text = _text(route.get("text"))
    coding = _first_coding(route)
    if coding is not None:
        return coding if coding.display or not text else coding.model_copy(update={"display": text})
    return Coding(system="", code="", display=next(iter(_texts(route)), None))


def _diagnosis(
    resource: Json, patient: Patient, full_url: str | None, where: str, context: FeedContext
) -> Outcome:
    """A Condition as a diagnosis: on record while active, recurring or relapsed and neither
    refuted nor entered in error; otherwise the event retracts the diagnosis with its id."""
    codings = [
        Coding(system=_text(c.get("system")) or "", code=code, display=_text(c.get("display")))
        for c in _objects(_object(resource.get("code")).get("coding"))
        if (code := _text(c.get("code")))
    ]
    codings.sort(key=lambda c: c.system not in _DIAGNOSIS_SYSTEMS)  # stable: else as given
    clinical = _condition_status(resource.get("clinicalStatus"), "condition-clinical")
    verification = _condition_status(resource.get("verificationStatus"), "condition-ver-status")
    diagnosis_id = _condition_id(resource, full_url, patient, codings)
    version = _text(_object(resource.get("meta")).get("versionId")) or ""
    return Publish(
        DiagnosisEvent(
            event_id=stable_event_id(
                "context",
                "fhir",
                patient.identifier.key,
                diagnosis_id,
                version,
                clinical,
                verification,
            ),
            source="fhir",
            patient=patient,
            diagnosis_id=diagnosis_id,
            codes=tuple(codings[:MAX_FLAGS]),
            name=_text(_object(resource.get("code")).get("text")),
            on_record=clinical in _ON_RECORD and verification not in _NOT_ON_RECORD,
            recorded_at=_first_time(
                context,
                (f"{where}.recordedDate", resource.get("recordedDate")),
                (f"{where}.onsetDateTime", resource.get("onsetDateTime")),
                required=False,
            ),
            received_at=context.received_at,
        )
    )


def _condition_status(concept: object, code_system: str) -> str:
    """The code from the HL7 terminology code system (or a coding naming no system); a code
    from another system (a converter's SNOMED "Alive and well") is no status."""
    system = f"http://terminology.hl7.org/CodeSystem/{code_system}"
    return next((code for s, code in _codings(concept) if s in (system, "")), "")


def _condition_id(
    resource: Json, full_url: str | None, patient: Patient, codings: list[Coding]
) -> str:
    """Condition id, else a business identifier, else the fullUrl, else the patient's codes."""
    return _identity(resource, full_url, "Condition") or "condition:" + stable_event_id(
        patient.identifier.key, *(f"{c.system}|{c.code}" for c in codings)
    )


def _first_coding(concept: Json) -> Coding | None:
    """The concept's first coding, when it names both its system and its code."""
    first = next(iter(_objects(concept.get("coding"))), {})
    system, code = _text(first.get("system")), _text(first.get("code"))
    if system and code:
        return Coding(system=system, code=code, display=_text(first.get("display")))
    return None


def _dose(resource: Json) -> Dose | None:
    """The dose given, when it is a positive number with a unit; otherwise none is recorded
    (the dose is context for the hematologist, never used to decide an alert)."""
    dosage = resource.get("dosage")
    quantity: object = None
    if isinstance(dosage, dict):  # MedicationAdministration
        quantity = dosage.get("dose")
    elif isinstance(dosage, list):  # MedicationStatement
        rates = _objects(next(iter(_objects(dosage)), {}).get("doseAndRate"))
        quantity = rates[0].get("doseQuantity") if rates else None
    quantity = _object(quantity)
    value, unit = quantity.get("value"), _text(quantity.get("unit")) or _text(quantity.get("code"))
    if isinstance(value, bool) or not isinstance(value, int | float) or not unit:
        return None
    return Dose(value=float(value), unit=unit) if 0 < value <= _MAX_DOSE_VALUE else None
