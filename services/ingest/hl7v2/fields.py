"""What every HL7 v2 reader reads alike: the patient (PID-3), and the refusal of a value that
breaks an event limit, named by its HL7 field. Pure."""

from collections.abc import Callable, Mapping

from pydantic import ValidationError

from schemas import Patient, PatientIdentifier
from services.ingest.hl7v2.message import Hl7Message, Segment
from services.ingest.outcomes import (
    FieldRefused,
    Outcome,
    Rejection,
    RejectReason,
    field_rejection,
)
from services.ingest.times import parse_hl7_date


def read_patient(message: Hl7Message, pid: Segment | None) -> Patient | None:
    """PID-3: the MR-typed identifier if there is one, else the first with an ID; its assigning
    authority, else the sending facility (MSH-4). None when there is no ID or no authority."""
    if pid is None:
        return None
    candidates = []
    for index, _ in enumerate(pid.repetitions(3)):
        mrn = pid.get(3, 1, repetition=index)
        if mrn:
            authority = pid.get(3, 4, 1, index) or pid.get(3, 4, 2, index)
            candidates.append((pid.get(3, 5, repetition=index) != "MR", mrn, authority))
    if not candidates:
        return None
    _, mrn, authority = sorted(candidates, key=lambda c: c[0])[0]
    authority = authority or message.msh.get(4, 1) or message.msh.get(4, 2)
    if not authority:
        return None
    return Patient(
        identifier=PatientIdentifier(authority=authority, mrn=mrn),
        birth_date=parse_hl7_date(pid.get(7)),
    )


def no_patient() -> Rejection:
    """The refusal of an entry whose message names no patient ingest can key it by."""
    return field_rejection(
        RejectReason.NO_PATIENT_IDENTIFIER,
        "PID-3",
        "no patient identifier (PID-3 with an ID and an assigning authority or MSH-4)",
    )


def refusing_bad_fields(
    where: str, read: Callable[[], Outcome], field_of_event: Mapping[str, str]
) -> Outcome:
    """The outcome `read` gives, or a rejection naming the field that stops it: an implausible
    time, or a value beyond an event limit (schemas/events.py), named by its HL7 field through
    `field_of_event` (model field such as "PatientIdentifier.mrn" -> "PID-3.1"), else `where`."""
    try:
        return read()
    except FieldRefused as error:
        return error.rejection(RejectReason.INVALID_FIELDS)
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
        loc = ".".join([error.title, *(str(part) for part in first["loc"])])
        location = next((f for key, f in field_of_event.items() if loc.startswith(key)), where)
        return field_rejection(RejectReason.INVALID_FIELDS, location, f"{location}: {first['msg']}")
