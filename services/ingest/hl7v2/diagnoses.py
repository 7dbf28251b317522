"""HL7 v2 diagnoses (DG1) and problems (PRB) to DiagnosisEvent outcomes. Pure.

Each DG1 or PRB, in any accepted message (ORU^R01, ADT^A08, ADT^A31), belongs to the patient of
the PID before it and becomes one outcome: a diagnosis coded in ICD-10, ICD-10-CM or SNOMED CT
is published (on record, or taken off it by a delete, a refutation or a resolution); one with
only other codes is filtered; one whose action or status is not understood, or that names no
patient, is refused with an ERR naming the segment and field, never guessed.

Identity (`diagnosis_id`): DG1-20 or PRB-4 when sent; else the diagnosis's own code, so that a
later message about the same code replaces it. A DG1 set id is not an identity: it numbers the
DG1 within one message, and another diagnosis may hold the same number in the next.
"""

from datetime import datetime
from functools import partial

from schemas import Coding, DiagnosisEvent, Patient, stable_event_id
from services.ingest.codes import FeedContext
from services.ingest.hl7v2.fields import no_patient, read_patient, refusing_bad_fields
from services.ingest.hl7v2.message import Hl7Message, Segment
from services.ingest.outcomes import Filter, Outcome, Publish, RejectReason, field_rejection
from services.ingest.times import ImplausibleTimeError, parse_hl7_timestamp
from services.ingest.treatments import SNOMED, canonical_system

ICD_10 = "http://hl7.org/fhir/sid/icd-10"
ICD_10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
DIAGNOSIS_SYSTEMS = frozenset({ICD_10, ICD_10_CM, SNOMED})

# HL7 v2 table 0396 names (and common variants, OIDs) for ICD-10; SNOMED's are the treatments'.
_ICD_ALIASES = {
    "I10": ICD_10,
    "ICD10": ICD_10,
    "ICD-10": ICD_10,
    "2.16.840.1.113883.6.3": ICD_10,
    "I10C": ICD_10_CM,
    "ICD10CM": ICD_10_CM,
    "ICD-10-CM": ICD_10_CM,
    "2.16.840.1.113883.6.90": ICD_10_CM,
}

# DG1-21 (table 0206): A add, U update, X no change keep it on record; D delete takes it off.
_DG1_ON_RECORD = {"": True, "A": True, "U": True, "X": True, "D": False}
# PRB-1 (table 0287): add, correct, link, unchanged, unlink, update; DE delete takes it off.
_PRB_ACTIONS = {"AD", "CO", "LI", "UC", "UN", "UP"}
# PRB-14 life cycle and PRB-13 confirmation (user-defined tables; FHIR Condition's words),
# compared as lower-case letters only: "Ruled-Out" is "ruledout".
_ACTIVE = {"active", "recurrence", "relapse"}
_NOT_ACTIVE = {"inactive", "resolved", "resolution", "remission"}
_NOT_SO = {"refuted", "ruledout", "erroneous", "enteredinerror", "error"}
_LIFE_CYCLES = _ACTIVE | _NOT_ACTIVE
_CONFIRMATIONS = _NOT_SO | {
    "confirmed", "provisional", "differential", "unconfirmed", "working", "suspected",
}  # fmt: skip

_FIELD_OF_EVENT = {"PatientIdentifier.mrn": "PID-3.1", "PatientIdentifier.authority": "PID-3.4"}


def read_diagnoses(message: Hl7Message, context: FeedContext) -> list[Outcome]:
    """One outcome per DG1 and PRB, in message order; none when the message holds neither."""
    outcomes: list[Outcome] = []
    pid: Segment | None = None
    seen = {"DG1": 0, "PRB": 0}
    for segment in message.segments:
        if segment.name == "PID":
            pid = segment
        elif segment.name in seen:
            seen[segment.name] += 1
            where = f"{segment.name}[{seen[segment.name]}]"
            read = _dg1 if segment.name == "DG1" else _prb
            fields = {
                **_FIELD_OF_EVENT,
                "Coding": f"{where}-3",
                "DiagnosisEvent.diagnosis_id": f"{where}-{20 if segment.name == 'DG1' else 4}",
            }
            outcomes.append(
                refusing_bad_fields(
                    where, partial(read, message, pid, segment, where, context), fields
                )
            )
    return outcomes


def read_adt_diagnoses(message: Hl7Message, context: FeedContext) -> list[Outcome]:
    """An ADT^A08 or ADT^A31: its diagnoses only; without any, one Filter (nothing to publish)."""
    kind = f"{message.msh.get(9, 1)}^{message.msh.get(9, 2)}"
    return read_diagnoses(message, context) or [Filter(f"{kind} holds no DG1 or PRB")]


def _dg1(
    message: Hl7Message, pid: Segment | None, dg1: Segment, where: str, context: FeedContext
) -> Outcome:
    action = dg1.get(21).upper()
    on_record = _DG1_ON_RECORD.get(action)
    if on_record is None:
        return field_rejection(
            RejectReason.UNKNOWN_STATUS,
            f"{where}-21",
            f"action {action[:8]!r} is not in table 0206",
        )
    return _diagnosis(
        message,
        pid,
        dg1,
        where,
        context,
        identifier=_identifier(dg1, 20),
        on_record=on_record,
        recorded_at=_time(dg1.get(5), context),
        fallback_system=dg1.get(2),
        fallback_name=dg1.get(4),
    )


def _prb(
    message: Hl7Message, pid: Segment | None, prb: Segment, where: str, context: FeedContext
) -> Outcome:
    action = prb.get(1).upper()
    if action not in _PRB_ACTIONS | {"DE", ""}:
        return field_rejection(
            RejectReason.UNKNOWN_STATUS, f"{where}-1", f"action {action[:8]!r} is not in table 0287"
        )
    life_cycle, confirmation = _words(prb, 14), _words(prb, 13)
    for field, words, known in ((14, life_cycle, _LIFE_CYCLES), (13, confirmation, _CONFIRMATIONS)):
        if words and not words & known:
            what = "life cycle" if field == 14 else "confirmation"
            return field_rejection(
                RejectReason.UNKNOWN_STATUS,
                f"{where}-{field}",
                f"{what} status {prb.get(field)[:20]!r} is none of {', '.join(sorted(known))}",
            )
    on_record = (
        action != "DE"
        and not confirmation & _NOT_SO
        and (not life_cycle or bool(life_cycle & _ACTIVE))
    )
    return _diagnosis(
        message,
        pid,
        prb,
        where,
        context,
        identifier=_identifier(prb, 4),
        on_record=on_record,
        recorded_at=_time(prb.get(7), context) or _time(prb.get(2), context),
    )


def _diagnosis(
    message: Hl7Message,
    pid: Segment | None,
    segment: Segment,
    where: str,
    context: FeedContext,
    *,
    identifier: str,
    on_record: bool,
    recorded_at: datetime | None,
    fallback_system: str = "",
    fallback_name: str = "",
) -> Outcome:
    """The event for a DG1 or PRB whose action and status are understood: the code in field 3."""
    codes = _codes(segment, fallback_system)
    if not codes:
        return Filter(f"{where}: {segment.get(3, 1)}^{segment.get(3, 3)} is no ICD-10 or SNOMED CT")
    patient = read_patient(message, pid)
    if patient is None:
        return no_patient()
    name = segment.get(3, 2) or segment.get(3, 5) or segment.get(3, 9) or fallback_name
    identity = identifier or f"code:{codes[0].system}|{codes[0].code}"
    return Publish(
        DiagnosisEvent(
            event_id=_event_id(message, patient, identity, on_record, codes, recorded_at),
            source="hl7v2",
            patient=patient,
            diagnosis_id=identity,
            codes=codes,
            name=name or None,
            on_record=on_record,
            recorded_at=recorded_at,
            received_at=context.received_at,
        )
    )


def _codes(segment: Segment, fallback_system: str) -> tuple[Coding, ...]:
    """The ICD-10(-CM) and SNOMED CT codings of field 3 (primary, then alternate triplet); a
    triplet with no system takes `fallback_system` (DG1-2, the coding method of v2.3)."""
    codes = []
    for code_at, text_at, system_at in ((1, 2, 3), (4, 5, 6)):
        code = segment.get(3, code_at)
        system = diagnosis_system(segment.get(3, system_at) or fallback_system)
        if code and system in DIAGNOSIS_SYSTEMS:
            codes.append(Coding(system=system, code=code, display=segment.get(3, text_at) or None))
    return tuple(codes)


def diagnosis_system(system: str) -> str:
    """The FHIR URI of an HL7 v2 coding-system name (I10, I10C, SCT, ...); else as sent."""
    return _ICD_ALIASES.get(system.strip().upper(), canonical_system(system))


def _identifier(segment: Segment, field: int) -> str:
    """An EI field (entity ^ namespace) as "SEG-n:entity^namespace"; "" when not sent."""
    parts = [segment.get(field, 1), segment.get(field, 2)]
    entity = "^".join(part for part in parts if part)
    return f"{segment.name}-{field}:{entity}" if parts[0] else ""


def _words(segment: Segment, field: int) -> set[str]:
    """The code and text of a CWE status, as lower-case letters only ("Ruled-Out" -> "ruledout")."""
    values = (segment.get(field, 1), segment.get(field, 2))
    return {"".join(c for c in value.lower() if c.isalpha()) for value in values if value}


def _time(text: str, context: FeedContext) -> datetime | None:
    """An optional time: one that is malformed or implausible is passed over, never refused."""
    try:
        return parse_hl7_timestamp(text, context.local_zone) if text else None
    except ImplausibleTimeError:
        return None


def _event_id(
    message: Hl7Message,
    patient: Patient,
    identity: str,
    on_record: bool,
    codes: tuple[Coding, ...],
    recorded_at: datetime | None,
) -> str:
    """The same message resent gives the same id; a later message (a re-add after a delete)
    gives a new one, so the classifier does not take it for one already applied."""
    return stable_event_id(
        "diagnosis",
        "hl7v2",
        patient.identifier.key,
        identity,
        str(on_record),
        *(f"{c.system}|{c.code}" for c in codes),
        recorded_at.isoformat() if recorded_at else "",
        message.msh.get(4, 1),
        message.msh.get(10),
    )
