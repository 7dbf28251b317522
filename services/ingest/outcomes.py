"""What becomes of each input: published, filtered (counted) or rejected (dead-lettered).

Every feed module turns one input (an HL7 message, a FHIR resource or Bundle, a JSON body) into
one Outcome per result or treatment it holds; the glue publishes, counts and dead-letters them.
"""

from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from schemas import DiagnosisEvent, LabResult, MedicationEvent, ProcedureEvent, TransfusionEvent

Event = LabResult | MedicationEvent | ProcedureEvent | TransfusionEvent | DiagnosisEvent


class RejectReason(StrEnum):
    """Bounded reasons, used as metric labels and in the dead letter."""

    INVALID_JSON = "invalid_json"
    INVALID_FIELDS = "invalid_fields"
    INVALID_FHIR = "invalid_fhir"
    UNPARSEABLE_HL7 = "unparseable_hl7"
    UNSUPPORTED_MESSAGE = "unsupported_message"
    UNSUPPORTED_VERSION = "unsupported_version"
    MESSAGE_TOO_LARGE = "message_too_large"
    COULD_NOT_READ = "could_not_read"  # a reader failed unexpectedly: the input is kept to study
    UNKNOWN_UNIT = "unknown_unit"
    UNREADABLE_VALUE = "unreadable_value"
    UNKNOWN_STATUS = "unknown_status"
    NO_PATIENT_IDENTIFIER = "no_patient_identifier"
    NO_COLLECTION_TIME = "no_collection_time"
    STORE_UNAVAILABLE = "store_unavailable"  # Kafka did not acknowledge: never dead-lettered


@dataclass(frozen=True, slots=True)
class Publish:
    event: Event


@dataclass(frozen=True, slots=True)
class Filter:
    """Accepted but not for PlateletWatch (another analyte, an unrelated resource): counted."""

    detail: str


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    message: str
    errors: tuple[dict[str, str], ...] = ()
    location: str = ""


Outcome = Publish | Filter | Rejection


def field_rejection(reason: RejectReason, location: str, message: str) -> Rejection:
    """A rejection about one field, with the location also given as a field error."""
    return Rejection(reason, message, ({"loc": location, "msg": message},), location)


def field_errors(error: ValidationError) -> tuple[dict[str, str], ...]:
    """pydantic errors as plain location/message pairs, without echoing the input values."""
    return tuple(
        {"loc": ".".join(str(part) for part in e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in error.errors(include_input=False, include_url=False)
    )


class FieldRefused(ValueError):
    """Raised deep in a reader when one field holds a value ingest must refuse (a time in year
    9999); `location` names it (OBX[1]-14, entry[1].effectiveDateTime). The reader turns it
    into a field_rejection for the entry."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(message)
        self.location = location

    def rejection(self, reason: RejectReason) -> Rejection:
        return field_rejection(reason, self.location, str(self))
