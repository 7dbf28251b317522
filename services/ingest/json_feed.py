"""The plain JSON lab feed: what a sender posts, and how it becomes a LabResult.

Pure: no I/O. Every submission ends as exactly one outcome — Publish, Filter (not a platelet
count: acknowledged and counted) or a Rejection (dead-lettered, sender told why).
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from schemas import (
    Coding,
    LabResult,
    Patient,
    PlateletCount,
    ResultStatus,
    stable_event_id,
)
from services.ingest.codes import is_platelet_count
from services.ingest.units import (
    UnknownUnitError,
    UnreadableValueError,
    parse_value,
    to_10e9_per_l,
)


class LabResultSubmission(BaseModel):
    """One lab result as a sender posts it to POST /v1/lab-results."""

    model_config = ConfigDict(extra="forbid")

    patient: Patient
    result_id: str = Field(min_length=1, description="The lab's id for this result.")
    replaces_result_id: str | None = None
    code: Coding
    value: str | float = Field(description='A number, or a string such as "12" or "<5".')
    unit: str = Field(min_length=1)
    status: ResultStatus = ResultStatus.FINAL
    abnormal_flags: tuple[str, ...] = ()
    collected_at: AwareDatetime
    verified_at: AwareDatetime | None = None


class RejectReason(StrEnum):
    """Bounded reasons, used as metric labels and in the dead letter."""

    INVALID_JSON = "invalid_json"
    INVALID_FIELDS = "invalid_fields"
    UNKNOWN_UNIT = "unknown_unit"
    UNREADABLE_VALUE = "unreadable_value"


@dataclass(frozen=True)
class Publish:
    result: LabResult


@dataclass(frozen=True)
class Filter:
    """Accepted but not a platelet count: counted, not published."""

    code: str


@dataclass(frozen=True)
class Rejection:
    reason: RejectReason
    message: str
    errors: tuple[dict[str, str], ...] = ()


Outcome = Publish | Filter | Rejection


def field_errors(error: ValidationError) -> tuple[dict[str, str], ...]:
    """pydantic errors as plain location/message pairs, without echoing the input values."""
    return tuple(
        {"loc": ".".join(str(part) for part in e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in error.errors(include_input=False, include_url=False)
    )


def classify_submission(raw: bytes, received_at: datetime) -> Outcome:
    """Decide what happens to one posted body."""
    try:
        submission = LabResultSubmission.model_validate_json(raw)
    except ValidationError as error:
        if any(e["type"] == "json_invalid" for e in error.errors()):
            return Rejection(
                RejectReason.INVALID_JSON, "body is not valid JSON", field_errors(error)
            )
        return Rejection(
            RejectReason.INVALID_FIELDS, "lab result has invalid fields", field_errors(error)
        )
    if not is_platelet_count(submission.code.system, submission.code.code):
        return Filter(code=submission.code.code)
    try:
        comparator, number = parse_value(str(submission.value))
        count = PlateletCount(
            value_10e9_per_l=to_10e9_per_l(number, submission.unit),
            comparator=comparator,
            original_value=str(submission.value),
            original_unit=submission.unit,
        )
    except UnknownUnitError as error:
        return Rejection(
            RejectReason.UNKNOWN_UNIT, str(error), ({"loc": "unit", "msg": str(error)},)
        )
    except UnreadableValueError as error:
        return Rejection(
            RejectReason.UNREADABLE_VALUE, str(error), ({"loc": "value", "msg": str(error)},)
        )
    return Publish(to_lab_result(submission, count, received_at))


def to_lab_result(
    submission: LabResultSubmission, count: PlateletCount, received_at: datetime
) -> LabResult:
    identifier = submission.patient.identifier
    return LabResult(
        event_id=stable_event_id(
            "lab-result", "json", identifier.authority, submission.result_id, submission.status
        ),
        source="json",
        patient=submission.patient,
        result_id=submission.result_id,
        replaces_result_id=submission.replaces_result_id,
        code=submission.code,
        count=count,
        status=submission.status,
        abnormal_flags=submission.abnormal_flags,
        collected_at=submission.collected_at,
        verified_at=submission.verified_at,
        received_at=received_at,
    )
