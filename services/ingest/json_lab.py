"""The plain JSON lab feed: what a sender posts, and how it becomes a LabResult.

Pure: no I/O. Every submission ends as exactly one outcome — Publish, Filter (not a platelet
count: acknowledged and counted) or a Rejection (dead-lettered, sender told why).
"""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import (
    MAX_FLAGS,
    ClinicalTime,
    Coding,
    Flag,
    Identifier,
    LabResult,
    Patient,
    PlateletCount,
    ResultStatus,
)
from services.ingest.codes import FeedContext, is_platelet_count
from services.ingest.lab_results import lab_result
from services.ingest.outcomes import (
    Filter,
    Outcome,
    Publish,
    Rejection,
    RejectReason,
    field_errors,
    field_rejection,
)
from services.ingest.status import NOT_MEASURED, RETRACTING
from services.ingest.units import UnknownUnitError, UnreadableValueError, platelet_count


class LabResultSubmission(BaseModel):
    """One lab result as a sender posts it to POST /v1/lab-results.

    The limits are the event's (schemas/events.py): times within 1900..2100 and offsets of at
    most 14:00, identifiers of at most 200 characters (MRN 64), and so on; a body beyond them
    is refused with the field named. Display text longer than 200 characters is cut."""

    model_config = ConfigDict(extra="forbid")

    patient: Patient
    result_id: Identifier = Field(description="The lab's id for this result.")
    replaces_result_id: Identifier | None = None
    code: Coding
    value: str | float | None = Field(
        default=None, description='A number, or a string such as "12" or "<5"; none to withdraw.'
    )
    unit: str | None = None
    status: ResultStatus = ResultStatus.FINAL
    abnormal_flags: tuple[Flag, ...] = Field(default=(), max_length=MAX_FLAGS)
    collected_at: ClinicalTime
    verified_at: ClinicalTime | None = None
    location: str | None = Field(
        default=None, max_length=64, description="The patient's ward or unit, for routing."
    )


def classify_submission(raw: bytes, context: FeedContext) -> Outcome:
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
    code = submission.code
    if not is_platelet_count(code.system, code.code, context.local_platelet_codes):
        return Filter(f"{code.system} {code.code} is not a platelet count")
    if submission.value is None:
        if submission.status in RETRACTING:
            return Publish(to_lab_result(submission, None, context.received_at))
        if submission.status in NOT_MEASURED:
            return Filter(f"platelet count not yet available (status {submission.status})")
        return field_rejection(
            RejectReason.UNREADABLE_VALUE, "value", "a platelet count needs a value"
        )
    if not submission.unit:
        return field_rejection(RejectReason.UNKNOWN_UNIT, "unit", "a platelet count needs a unit")
    try:
        count = platelet_count(str(submission.value), submission.unit)
    except UnknownUnitError as error:
        return field_rejection(RejectReason.UNKNOWN_UNIT, "unit", str(error))
    except UnreadableValueError as error:
        return field_rejection(RejectReason.UNREADABLE_VALUE, "value", str(error))
    return Publish(to_lab_result(submission, count, context.received_at))


def to_lab_result(
    submission: LabResultSubmission, count: PlateletCount | None, received_at: datetime
) -> LabResult:
    return lab_result(
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
        location=submission.location,
    )
