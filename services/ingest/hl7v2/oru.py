"""HL7 v2 ORU^R01 (versions 2.3 to 2.5.1) to lab-result outcomes. Pure.

dispatch.read_message checks MSH and hands an ORU^R01 to `read_oru`. Each OBX becomes one
outcome: a platelet count is published, anything else is filtered, and a platelet OBX that
cannot be read safely (unknown unit, no patient, no collection time) is rejected with an ERR
naming the segment and field. The DG1 and PRB an ORU carries are read as diagnoses.
"""

from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from schemas import (
    Coding,
    LabResult,
    Patient,
    PlateletCount,
    ResultStatus,
)
from services.ingest.codes import FeedContext, is_platelet_count
from services.ingest.hl7v2.diagnoses import read_diagnoses
from services.ingest.hl7v2.fields import no_patient, read_patient, refusing_bad_fields
from services.ingest.hl7v2.message import Hl7Message, Segment
from services.ingest.lab_results import lab_result
from services.ingest.outcomes import (
    FieldRefused,
    Filter,
    Outcome,
    Publish,
    RejectReason,
    field_rejection,
)
from services.ingest.status import HL7_RESULT_STATUS, NOT_MEASURED, RETRACTING
from services.ingest.times import ImplausibleTimeError, parse_hl7_timestamp
from services.ingest.units import UnknownUnitError, UnreadableValueError, platelet_count


@dataclass
class _Group:
    """An OBR with the OBX and SPM segments that follow it (OBX before any OBR form a group too)."""

    obr: Segment | None
    observations: list[Segment] = field(default_factory=list)
    specimens: list[Segment] = field(default_factory=list)


# Where each model field comes from, to name the HL7 field when a value breaks an event limit.
_FIELD_OF_EVENT = {
    "PatientIdentifier.mrn": "PID-3.1",
    "PatientIdentifier.authority": "PID-3.4",
    "LabResult.result_id": "OBR-3",
    "LabResult.replaces_result_id": "OBR-3",
    "LabResult.code": "OBX-3",
    "LabResult.abnormal_flags": "OBX-8",
}


@dataclass(frozen=True)
class _PatientGroup:
    pid: Segment | None
    group: _Group


def _observations(message: Hl7Message, context: FeedContext) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for patient_group in _groups_in_order(message):
        outcomes.extend(_group_outcomes(message, patient_group.pid, patient_group.group, context))
    return outcomes


def read_oru(message: Hl7Message, context: FeedContext) -> list[Outcome]:
    """An ORU^R01: its observations, then any diagnoses (DG1, PRB) it carries."""
    return [*_observations(message, context), *read_diagnoses(message, context)]


def _groups_in_order(message: Hl7Message) -> list[_PatientGroup]:
    """Group OBX and SPM under the OBR (and PID) before them; an SPM after its OBX still counts."""
    ordered: list[_PatientGroup] = []
    pid: Segment | None = None
    for segment in message.segments:
        if segment.name == "PID":
            pid = segment
        elif segment.name == "OBR":
            ordered.append(_PatientGroup(pid, _Group(segment)))
        elif segment.name in ("OBX", "SPM"):
            if not ordered or ordered[-1].pid is not pid:
                ordered.append(_PatientGroup(pid, _Group(None)))
            group = ordered[-1].group
            (group.observations if segment.name == "OBX" else group.specimens).append(segment)
    return ordered


def _group_outcomes(
    message: Hl7Message, pid: Segment | None, group: _Group, context: FeedContext
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for position, obx in enumerate(group.observations, start=1):
        where = f"OBX[{position}]" + (f" of OBR {group.obr.get(1)}" if group.obr else "")
        code = _platelet_code(obx, context)
        if code is None:
            outcomes.append(
                Filter(f"{where}: {obx.get(3, 1)}^{obx.get(3, 3)} is not a platelet count")
            )
            continue
        outcomes.append(
            refusing_bad_fields(
                where,
                partial(_platelet_outcome, message, pid, group, obx, code, where, context),
                _FIELD_OF_EVENT,
            )
        )
    return outcomes


def _platelet_code(obx: Segment, context: FeedContext) -> Coding | None:
    """The OBX-3 triplet (primary, then alternate) that names a platelet count, if any."""
    for code_at, text_at, system_at in ((1, 2, 3), (4, 5, 6)):
        code, system = obx.get(3, code_at), obx.get(3, system_at)
        if code and is_platelet_count(system, code, context.local_platelet_codes):
            return Coding(system=system, code=code, display=obx.get(3, text_at) or None)
    return None


def _platelet_outcome(
    message: Hl7Message,
    pid: Segment | None,
    group: _Group,
    obx: Segment,
    code: Coding,
    where: str,
    context: FeedContext,
) -> Outcome:
    status_code = obx.get(11)
    status = HL7_RESULT_STATUS.get(status_code)
    if status is None:
        return field_rejection(
            RejectReason.UNKNOWN_STATUS,
            f"{where}-11",
            f"result status {status_code[:20]!r} is not in table 0085",
        )
    patient = read_patient(message, pid)
    if patient is None:
        return no_patient()
    collected_at = _collection_time(group, obx, where, context)
    if collected_at is None:
        return field_rejection(
            RejectReason.NO_COLLECTION_TIME,
            f"{where}-14",
            "no specimen collection time (OBX-14, SPM-17 or OBR-7)",
        )
    times = (collected_at, _verified_time(message, group, obx, where, context))
    if len(obx.repetitions(5)) > 1:
        return field_rejection(
            RejectReason.UNREADABLE_VALUE, f"{where}-5", "platelet result repeats its value"
        )
    try:
        value = _value_text(obx)
    except UnreadableValueError as error:
        return field_rejection(RejectReason.UNREADABLE_VALUE, f"{where}-5", str(error))
    if not value:
        if status in RETRACTING:
            return Publish(
                _lab_result(message, pid, patient, group, obx, code, status, None, times, context)
            )
        if status in NOT_MEASURED:
            return Filter(f"{where}: platelet count not yet available (status {status_code})")
        return field_rejection(
            RejectReason.UNREADABLE_VALUE, f"{where}-5", "platelet result has no value"
        )
    unit = obx.get(6, 1) or obx.get(6, 2)
    try:
        count = platelet_count(value, unit)
    except UnknownUnitError as error:
        return field_rejection(RejectReason.UNKNOWN_UNIT, f"{where}-6", str(error))
    except UnreadableValueError as error:
        return field_rejection(RejectReason.UNREADABLE_VALUE, f"{where}-5", str(error))
    return Publish(
        _lab_result(message, pid, patient, group, obx, code, status, count, times, context)
    )


# SN separators (HL7 v2.5 2A.72) that make the value something other than one number.
_SN_NOT_A_COUNT = {"-": "a range", ":": "a ratio", "/": "a ratio", "+": "a categorical value"}


def _value_text(obx: Segment) -> str:
    """OBX-5 as a plain value, "" when empty. A structured numeric (SN) reads as the NM form of
    the same number: "^12" and "=^12" as "12", "<^5" as "<5", so both forms give one event.
    Raises UnreadableValueError for an SN that is no single count: a range (^10^-^20), a ratio
    (^1^:^128), a categorical value (^2^+) or a comparator no count can carry (<>)."""
    if obx.get(2) != "SN":
        return obx.get(5)
    comparator, number, *rest = [*obx.components(5), "", ""]
    separator = next((part for part in rest if part), "")
    if separator:
        what = _SN_NOT_A_COUNT.get(rest[0], "a structured numeric with two numbers")
        sent = "^".join(obx.components(5))[:32]
        raise UnreadableValueError(f"OBX-5 is {what} ({sent}), not a single platelet count")
    if comparator not in ("", "=", "<", "<=", ">", ">="):
        raise UnreadableValueError(
            f"OBX-5 comparator {comparator[:8]!r} is not one a platelet count can carry "
            "(<, <=, >, >= or =)"
        )
    return f"{comparator.lstrip('=')}{number}"


def _first_timestamp(
    candidates: list[tuple[str, str]], context: FeedContext, required: bool = True
) -> datetime | None:
    """The first candidate (field, text) that holds a valid timestamp; a malformed one is
    skipped, an implausible one (year 9999, offset +2400) raises FieldRefused naming its field,
    unless the time is not `required` (then it is skipped too)."""
    for location, text in candidates:
        try:
            moment = parse_hl7_timestamp(text, context.local_zone) if text else None
        except ImplausibleTimeError as error:
            if not required:
                continue
            raise FieldRefused(location, f"{location}: {error}") from None
        if moment is not None:
            return moment
    return None


def _collection_time(
    group: _Group, obx: Segment, where: str, context: FeedContext
) -> datetime | None:
    """OBX-14, else SPM-17, else OBR-7."""
    candidates = [(f"{where}-14", obx.get(14))]
    candidates += [("SPM-17", spm.get(17)) for spm in group.specimens]
    if group.obr is not None:
        candidates.append(("OBR-7", group.obr.get(7)))
    return _first_timestamp(candidates, context)


def _verified_time(
    message: Hl7Message, group: _Group, obx: Segment, where: str, context: FeedContext
) -> datetime | None:
    """OBR-22 (some senders shift it, so it must parse), else OBX-19, else the message time.
    Optional (it only times the page): an implausible one is passed over, never refused."""
    obr_22 = group.obr.get(22) if group.obr else ""
    candidates = [("OBR-22", obr_22), (f"{where}-19", obx.get(19)), ("MSH-7", message.msh.get(7))]
    return _first_timestamp(candidates, context, required=False)


def _result_id(message: Hl7Message, group: _Group, obx: Segment, code: Coding) -> str:
    """Filler order number (else placer, else message id) + OBX-3 code + OBX-4 sub-id."""
    order = ""
    if group.obr is not None:
        order = "^".join(p for p in (group.obr.get(3, 1), group.obr.get(3, 2)) if p) or "^".join(
            p for p in (group.obr.get(2, 1), group.obr.get(2, 2)) if p
        )
    order = order or f"msg:{message.msh.get(4, 1)}:{message.msh.get(10)}"
    return f"{order}|{code.system}:{code.code}|{obx.get(4)}"


def _lab_result(
    message: Hl7Message,
    pid: Segment | None,
    patient: Patient,
    group: _Group,
    obx: Segment,
    code: Coding,
    status: ResultStatus,
    count: PlateletCount | None,
    times: tuple[datetime, datetime | None],
    context: FeedContext,
) -> LabResult:
    """`times` are the collection and verification times."""
    return lab_result(
        source="hl7v2",
        patient=patient,
        result_id=_result_id(message, group, obx, code),
        code=code,
        count=count,
        status=status,
        abnormal_flags=tuple(
            flag for i in range(len(obx.repetitions(8))) if (flag := obx.get(8, repetition=i))
        ),
        collected_at=times[0],
        verified_at=times[1],
        received_at=context.received_at,
        location=_ward(message, pid),
    )


def _ward(message: Hl7Message, pid: Segment | None) -> str | None:
    """PV1-3.1, the point of care, of the visit that follows the patient's PID."""
    after_pid = pid is None
    for segment in message.segments:
        if segment is pid:
            after_pid = True
        elif segment.name == "PID" and after_pid:
            return None  # the next patient's
        elif segment.name == "PV1" and after_pid:
            return segment.get(3, 1)[:64] or None
    return None
