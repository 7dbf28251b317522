"""One way to build a LabResult from any feed, so every feed identifies results alike. Pure."""

from datetime import datetime

from schemas import Coding, LabResult, Patient, PlateletCount, ResultStatus, Source, stable_event_id
from services.ingest.status import REPLACING


def lab_result(
    *,
    source: Source,
    patient: Patient,
    result_id: str,
    code: Coding,
    count: PlateletCount | None,
    status: ResultStatus,
    abnormal_flags: tuple[str, ...],
    collected_at: datetime,
    verified_at: datetime | None,
    received_at: datetime,
    version: str = "",
    replaces_result_id: str | None = None,
    location: str | None = None,
) -> LabResult:
    """The event id depends on the result's identity, version, status and value only, so a resent
    message gives the same id while a correction (new status or value) gives a new one. A
    correction or retraction replaces the result it names, by default the one with its own id."""
    value_identity = f"{count.original_value}|{count.original_unit}" if count else ""
    authority = patient.identifier.authority
    return LabResult(
        event_id=stable_event_id(
            "lab-result", source, authority, result_id, version, status, value_identity
        ),
        source=source,
        patient=patient,
        result_id=result_id,
        replaces_result_id=replaces_result_id or (result_id if status in REPLACING else None),
        code=code,
        count=count,
        status=status,
        abnormal_flags=abnormal_flags,
        collected_at=collected_at,
        verified_at=verified_at,
        received_at=received_at,
        location=location,
    )
