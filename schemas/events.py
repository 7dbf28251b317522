"""Event models exchanged over Kafka.

Every event carries a stable `event_id` (the same input always yields the same id, so a
re-delivered event is recognised downstream), a `schema_version`, and timezone-aware times that keep
apart when something happened clinically (collected, administered) from when it was recorded
(verified) and when PlateletWatch received it.
"""

import base64
import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)
from pydantic_core import TzInfo

SCHEMA_VERSION: Literal[1] = 1

Source = Literal["hl7v2", "fhir", "json"]
"""The feed an event came in by: HL7 v2 (MLLP), FHIR R4 (HTTP) or PlateletWatch's own JSON."""

Population = Literal["paediatric", "adult"]
"""A patient's age group at collection (paediatric under 18 years): each has its own rules and
its own on-call team."""

# Plausible clinical times. Anything outside is a sender's error (a year 9999, an offset of
# +24:00) and would break date arithmetic downstream, so ingest refuses it with the reason.
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2100, 12, 31)
MAX_UTC_OFFSET = timedelta(hours=14)  # the widest offset in use (Kiribati, +14:00)

# Length limits. Identifiers and codes longer than these are refused, never cut: a cut
# identifier could merge two patients or two results. Free text (display text, treatment
# names, dose units) is cut instead: it is shown to people, never matched on, and refusing a
# critical count for a long label would lose the alert. A birth date outside 1900..2100 is a
# site's placeholder for "unknown" and reads as unknown. The reported value of a count is
# checked by services/ingest/units.py, not here: the classifier rebuilds counts from its
# stored history, where one accepted before these limits must still load.
MAX_ID_LENGTH = 200  # assigning authorities, result ids, coding systems: URIs and OIDs fit
MAX_MRN_LENGTH = 64
MAX_CODE_LENGTH = 64
MAX_EVENT_ID_LENGTH = 64  # ours are UUIDs (36 characters)
MAX_TEXT_LENGTH = 200
MAX_FLAG_LENGTH = 16  # abnormal flags are codes (HL7 table 0078, FHIR interpretation)
MAX_FLAGS = 10
MAX_UNIT_LENGTH = 32
MAX_VALUE_LENGTH = 32


def implausible_time(moment: datetime) -> str | None:
    """Why a time cannot be a clinical time, or None when it can."""
    offset = moment.utcoffset()
    if not EARLIEST_DATE <= moment.date() <= LATEST_DATE:
        return f"{moment.isoformat()} is outside {EARLIEST_DATE}..{LATEST_DATE}"
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        return f"{moment.isoformat()} has a UTC offset beyond ±14:00"
    if offset is not None and offset % timedelta(minutes=1):
        return f"{moment.isoformat()} has a UTC offset that is not whole minutes"
    return None


_FIXED_OFFSETS = (timezone, TzInfo)  # pydantic reads "Z" and "+00:00" as a TzInfo
# The zone pydantic gives every "Z" it reads (one object, shared): a time in it, or in UTC, is
# already a UTC instant, and its year is its UTC year. Only a shortcut: a time in any other zone
# object takes the full check.
_ZULU = TypeAdapter(AwareDatetime).validate_json('"2000-01-01T00:00:00Z"').tzinfo


def _plausible_time(moment: datetime) -> datetime:
    """The instant in UTC, once plausible: elapsed time is then real time whatever zone the
    sender wrote (two local times across a daylight-saving change subtract on the wall clock)."""
    zone = moment.tzinfo
    if (zone is _ZULU or zone is UTC) and EARLIEST_DATE.year <= moment.year <= LATEST_DATE.year:
        return moment  # most times: read from JSON, or made, in UTC; the bounds are whole years
    if (
        type(moment.tzinfo) in _FIXED_OFFSETS
        and not moment.utcoffset()
        and EARLIEST_DATE <= moment.date() <= LATEST_DATE
    ):
        return moment  # UTC already (not London in winter: it has DST)
    problem = implausible_time(moment)
    if problem is not None:
        raise ValueError(problem)
    return moment.astimezone(UTC)


def _known_birth_date(day: date | None) -> date | None:
    return day if day is None or EARLIEST_DATE <= day <= LATEST_DATE else None


def _cut_to(limit: int) -> BeforeValidator:
    return BeforeValidator(lambda value: value[:limit] if isinstance(value, str) else value)


ClinicalTime = Annotated[AwareDatetime, AfterValidator(_plausible_time)]
"""A timezone-aware time within 1900-01-01..2100-12-31 and UTC offsets of at most 14:00, held
in UTC (shown in the deployment's zone by whoever displays it)."""
BirthDate = Annotated[date | None, AfterValidator(_known_birth_date)]
"""A birth date, or None: one outside 1900..2100 (a placeholder) reads as unknown."""
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
EventId = Annotated[str, Field(max_length=MAX_EVENT_ID_LENGTH)]
FreeText = Annotated[str, _cut_to(MAX_TEXT_LENGTH), Field(max_length=MAX_TEXT_LENGTH)]
"""Text for people, cut to 200 characters rather than refused."""
Flag = Annotated[str, Field(max_length=MAX_FLAG_LENGTH)]

_EVENT_NAMESPACE = uuid.UUID("5b0f3c4e-6f0c-4d7e-9a51-3f1b8c2d9e10")
_NAMESPACE_BYTES = _EVENT_NAMESPACE.bytes


def stable_event_id(*identity: str) -> str:
    """Return a deterministic id for an event from the parts that identify it.

    The same parts always give the same id, so a resent message is recognised as a duplicate.
    It is str(uuid.uuid5(_EVENT_NAMESPACE, "\x1f".join(identity))), computed from SHA-1
    directly: a third of the time, no UUID object made (every result ingest reads needs one).
    A part that is not valid UTF-8 (a lone surrogate) raises UnicodeEncodeError, as uuid5 does.
    """
    name = "\x1f".join(identity).encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatientIdentifier(_Event):
    """A medical record number qualified by the authority that assigned it (PID-3 / identifier)."""

    authority: str = Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="Assigning authority, e.g. a hospital OID.",
    )
    mrn: str = Field(
        min_length=1,
        max_length=MAX_MRN_LENGTH,
        description="Medical record number within that authority.",
    )

    @property
    def key(self) -> str:
        """Kafka message key: keeps one patient's events ordered on one partition."""
        return f"{self.authority}|{self.mrn}"


class Patient(_Event):
    identifier: PatientIdentifier
    birth_date: BirthDate = Field(
        default=None,
        description="Needed to tell paediatric from adult patients; one outside 1900..2100 "
        "reads as unknown.",
    )


class Coding(_Event):
    system: str = Field(
        max_length=MAX_ID_LENGTH,
        description="Code system URI, e.g. http://loinc.org, or a local system.",
    )
    code: str = Field(max_length=MAX_CODE_LENGTH)
    display: FreeText | None = Field(default=None, description="Cut to 200 characters.")


class ResultStatus(StrEnum):
    """Result status in FHIR R4 terms; HL7 v2 OBX-11 maps onto it (W becomes wrong-patient)."""

    REGISTERED = "registered"
    PRELIMINARY = "preliminary"
    FINAL = "final"
    AMENDED = "amended"
    CORRECTED = "corrected"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"
    WRONG_PATIENT = "wrong-patient"
    UNKNOWN = "unknown"


Comparator = Literal["<", "<=", ">", ">="]
# Far above any count measured in a living patient (extreme thrombocytosis stays below ~5,000):
# a larger number is a unit or transcription error, refused by ingest (services/ingest/units.py).
MAX_PLATELETS_10E9_PER_L = 10_000


class PlateletCount(_Event):
    """A platelet count normalised to 10^9/L, keeping what the lab actually sent."""

    value_10e9_per_l: float = Field(ge=0, allow_inf_nan=False)
    comparator: Comparator | None = Field(
        default=None, description='Kept from values such as "<5": the true value lies beyond it.'
    )
    original_value: str
    original_unit: str = Field(max_length=MAX_UNIT_LENGTH)


_WITHDRAWING = frozenset({ResultStatus.ENTERED_IN_ERROR, ResultStatus.WRONG_PATIENT})


class LabResult(_Event):
    """One verified (or preliminary, corrected, deleted...) platelet result for one patient."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: EventId
    source: Source
    patient: Patient
    result_id: Identifier = Field(
        description="The lab's identity for this result, stable across resends."
    )
    replaces_result_id: Identifier | None = Field(
        default=None, description="For corrections and deletions: the result this one replaces."
    )
    code: Coding
    count: PlateletCount | None = Field(
        description="Absent only when the result is withdrawn (entered-in-error, wrong-patient)."
    )
    status: ResultStatus
    abnormal_flags: tuple[Flag, ...] = Field(default=(), max_length=MAX_FLAGS)
    location: str | None = Field(
        default=None,
        max_length=64,
        description="The ward or unit the patient was in (HL7 PV1-3.1): routes the page.",
    )
    collected_at: ClinicalTime = Field(description="Specimen collection: the clinical time.")
    verified_at: ClinicalTime | None = Field(default=None, description="Released by the lab.")
    received_at: ClinicalTime = Field(description="Accepted by PlateletWatch ingest.")

    @model_validator(mode="after")
    def _only_a_withdrawal_may_lack_a_count(self) -> Self:
        if self.count is None and self.status not in _WITHDRAWING:
            raise ValueError("a lab result carries a count unless it withdraws an earlier one")
        return self


class TreatmentCategory(StrEnum):
    CORTICOSTEROID = "corticosteroid"
    IVIG = "ivig"
    ANTI_D = "anti_d"
    RITUXIMAB = "rituximab"
    TPO_RECEPTOR_AGONIST = "tpo_receptor_agonist"
    VINCRISTINE = "vincristine"
    CYCLOPHOSPHAMIDE = "cyclophosphamide"
    SPLENECTOMY = "splenectomy"
    PLATELET_TRANSFUSION = "platelet_transfusion"
    FOSTAMATINIB = "fostamatinib"
    IMMUNOSUPPRESSANT = "immunosuppressant"  # danazol, mycophenolate, azathioprine, ciclosporin


TherapyLine = Literal["first", "second", "cytotoxic", "procedure", "supportive"]
"""A treatment's line of therapy, as the treatment table gives it."""

DEFAULT_LINES: dict[TreatmentCategory, TherapyLine] = {
    TreatmentCategory.CORTICOSTEROID: "first",
    TreatmentCategory.IVIG: "first",
    TreatmentCategory.ANTI_D: "first",
    TreatmentCategory.RITUXIMAB: "second",
    TreatmentCategory.TPO_RECEPTOR_AGONIST: "second",
    TreatmentCategory.FOSTAMATINIB: "second",
    TreatmentCategory.IMMUNOSUPPRESSANT: "second",
    TreatmentCategory.VINCRISTINE: "cytotoxic",
    TreatmentCategory.CYCLOPHOSPHAMIDE: "cytotoxic",
    TreatmentCategory.SPLENECTOMY: "procedure",
    TreatmentCategory.PLATELET_TRANSFUSION: "supportive",
}
"""The line of an event that does not say (sent before ingest stamped it); the shipped treatment
table says the same."""


class Dose(_Event):
    value: float = Field(gt=0, allow_inf_nan=False)
    unit: Annotated[str, _cut_to(MAX_UNIT_LENGTH)] = Field(
        max_length=MAX_UNIT_LENGTH, description="Cut to 32 characters."
    )


class _ContextEvent(_Event):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: EventId
    source: Source
    patient: Patient
    category: TreatmentCategory
    line: TherapyLine | None = Field(
        default=None,
        description="The line of therapy from ingest's treatment table, the one source of truth; "
        "absent on events sent before it was stamped (then DEFAULT_LINES applies).",
    )
    code: Coding | None = None
    name: FreeText = Field(
        description="What the source called it, e.g. a brand name; cut to 200 characters."
    )
    received_at: ClinicalTime
    treatment_id: Identifier | None = Field(
        default=None,
        description="The sender's identity of the record (MedicationAdministration/Statement or "
        "Procedure id, RXA order and sub-ids): a later event with the same one replaces it.",
    )
    on_record: bool = Field(
        default=True,
        description="False when the sender withdrew the record (entered in error, not done, "
        "RXA-21 D): it retracts the earlier event with the same treatment_id.",
    )


class MedicationEvent(_ContextEvent):
    kind: Literal["medication"] = "medication"
    dose: Dose | None = None
    route: Coding | None = Field(
        default=None,
        description="How it was given (FHIR dosage.route, HL7 RXR-1), named in the evidence. "
        "Only systemic routes reach the classifier: ingest sets aside eye drops, inhalers...",
    )
    started_at: ClinicalTime
    ended_at: ClinicalTime | None = None


class ProcedureEvent(_ContextEvent):
    kind: Literal["procedure"] = "procedure"
    performed_at: ClinicalTime


class TransfusionEvent(_ContextEvent):
    kind: Literal["transfusion"] = "transfusion"
    dose: Dose | None = Field(default=None, description="Platelets given, e.g. 3.0 10*11.")
    started_at: ClinicalTime


TreatmentEvent = MedicationEvent | ProcedureEvent | TransfusionEvent


class DiagnosisEvent(_Event):
    """A diagnosis on the patient's record (FHIR Condition, HL7 v2 DG1/PRB), or its retraction:
    a later event with the same `diagnosis_id` replaces the earlier one."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: EventId
    source: Source
    patient: Patient
    kind: Literal["diagnosis"] = "diagnosis"
    diagnosis_id: Identifier = Field(
        description="The sender's identity of the diagnosis (Condition id, DG1/PRB identifier)."
    )
    codes: tuple[Coding, ...] = Field(
        min_length=1, max_length=MAX_FLAGS, description="ICD-10(-CM) and SNOMED CT codings."
    )
    name: FreeText | None = Field(default=None, description="Cut to 200 characters.")
    on_record: bool = Field(
        description="True while clinically active (active, recurrence, relapse) and not refuted "
        "or entered in error; False retracts an earlier event with the same diagnosis_id."
    )
    recorded_at: ClinicalTime | None = None
    received_at: ClinicalTime


ClinicalContextEvent = Annotated[
    MedicationEvent | ProcedureEvent | TransfusionEvent | DiagnosisEvent,
    Field(discriminator="kind"),
]
clinical_context_adapter: TypeAdapter[ClinicalContextEvent] = TypeAdapter(ClinicalContextEvent)


class AlertKind(StrEnum):
    CRITICAL_LOW = "critical_low"
    PERSISTENT_SEVERE = "persistent_severe"
    REFRACTORY = "refractory"
    WITHDRAWN = "withdrawn"


class Thresholds(_Event):
    """The rules' limits for the patient's population when the alert was raised: a chart of the
    counts draws them, so it shows the lines the alert was judged by."""

    critical_below_10e9_per_l: float = Field(gt=0, description="critical_low pages below this.")
    refractory_below_10e9_per_l: float = Field(
        gt=0, description="Counts that stay below this despite first-line treatment: refractory."
    )


class RuleRef(_Event):
    id: str
    version: str = Field(description="Version of the rules file that produced the alert.")
    overrides: tuple[str, ...] = Field(
        default=(),
        description="Where the site's rules file overrides the treatment table's line of "
        'therapy, e.g. "anti_d: second".',
    )
    thresholds: Thresholds | None = Field(
        default=None,
        description="The population's limits; absent on withdrawals and on alerts raised before "
        "rules version 2026-11-28.2.",
    )


class EvidenceResult(_Event):
    event_id: str
    result_id: str
    count: PlateletCount
    status: ResultStatus
    collected_at: AwareDatetime
    verified_at: AwareDatetime | None = None
    code: Coding | None = Field(
        default=None, description="The LOINC (or local) code: 49497-1 is a smear estimate."
    )
    abnormal_flags: tuple[Flag, ...] = Field(
        default=(), description="The lab's own flags (HL7 table 0078: LL, AA, <...)."
    )


class Evidence(_Event):
    """Enough for a hematologist to judge the alert without opening the chart."""

    results: tuple[EvidenceResult, ...] = ()
    treatments: tuple[MedicationEvent | ProcedureEvent | TransfusionEvent, ...] = Field(
        default=(),
        description="Every treatment on record in the alert's window (first- and second-line, "
        "cytotoxic, splenectomy, platelet transfusions), oldest first: none means untreated.",
    )
    first_line_on_record: bool = Field(
        default=False,
        description="A first-line therapy (corticosteroid, IVIG, anti-D) is among the treatments.",
    )
    limit_10e9_per_l: float | None = Field(
        default=None, description="The rule's limit the counts were below, e.g. 30."
    )
    baseline_10e9_per_l: float | None = None
    baseline_collected_at: AwareDatetime | None = Field(
        default=None, description="When the baseline (the last count before the course) was taken."
    )
    note: str | None = None
    preceding: tuple[EvidenceResult, ...] = Field(
        default=(),
        description="Up to three earlier counts from the 30 days before, oldest first: the "
        "trend, shown beside the evidence but not part of it.",
    )


class Correction(_Event):
    """What was wrong with a value an alert rested on: the count as paged, and what the lab
    made of it (a corrected count, or none when it was deleted or posted to the wrong patient)."""

    result_id: str
    collected_at: AwareDatetime
    status: ResultStatus
    was: PlateletCount
    now: PlateletCount | None = None


class PlateletAlert(_Event):
    """An alert raised by the classifier, or (kind `withdrawn`) the retraction of one."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    alert_id: str = Field(description="Stable identity of the alert: the dedupe key downstream.")
    kind: AlertKind
    patient: Patient
    population: Population | None = Field(
        default=None, description="Age group at collection (paediatric < 18 y): routes the page."
    )
    location: str | None = Field(
        default=None, description="The patient's ward or unit, as last reported: routes the page."
    )
    value_10e9_per_l: float | None = Field(
        default=None, description="The triggering value, normalised; absent for a withdrawal."
    )
    result_verified_at: AwareDatetime | None = Field(
        default=None, description="When the triggering result was released: starts the page clock."
    )
    evidence: Evidence
    rule: RuleRef
    raised_at: AwareDatetime
    withdraws_alert_id: str | None = None
    withdrawal_reason: str | None = None
    correction: Correction | None = Field(
        default=None, description="For a withdrawal: the value that was wrong and what it became."
    )
    supersedes_alert_id: str | None = Field(
        default=None,
        description="An earlier alert this one takes over (refractory after persistent_severe): "
        "its paging is closed as superseded, not withdrawn.",
    )

    @model_validator(mode="after")
    def _withdrawal_names_what_it_withdraws(self) -> Self:
        if self.kind is AlertKind.WITHDRAWN:
            if not (self.withdraws_alert_id and self.withdrawal_reason):
                raise ValueError("a withdrawn alert names withdraws_alert_id and withdrawal_reason")
            if self.supersedes_alert_id is not None:
                raise ValueError("a withdrawal supersedes nothing")
        elif self.value_10e9_per_l is None or self.withdraws_alert_id is not None:
            raise ValueError("an alert carries its triggering value and withdraws nothing")
        return self


class DeliveryStep(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    ESCALATED = "escalated"
    ACKED = "acked"
    DECLINED = "declined"  # "not my patient": the chain moves on to the next tier
    SUPERSEDED = "superseded"  # a newer alert (refractory) took over: not a withdrawal
    RESOLVED = "resolved"
    WITHDRAWN = "withdrawn"
    ROSTER_GAP = "roster_gap"  # nobody held the tier: the fallback was paged instead


class DeliveryEvent(_Event):
    """One step in getting an alert to a person; recipients are roster roles, never patients."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    alert_id: str
    step: DeliveryStep
    channel: str
    recipient: str
    attempt: int = Field(ge=1)
    detail: str | None = None
    occurred_at: AwareDatetime


class AckAction(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    NOT_MY_PATIENT = "not_my_patient"
    RESOLVE = "resolve"


class AckEvent(_Event):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    alert_id: str
    action: AckAction
    by: str
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime


class DeadLetter(_Event):
    """An input ingest refused, or an event the classifier could not apply, kept so that nothing
    is lost and it can be replayed."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    source: Literal[Source, "classifier"]
    reason_code: str = Field(description="A short, bounded code such as unknown_unit.")
    reason: str = Field(
        description="Why it was refused, in words an integration engineer can act on."
    )
    errors: tuple[dict[str, str], ...] = ()
    raw_payload: str
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    content_type: str | None = None
    received_at: AwareDatetime

    @staticmethod
    def payload_of(raw: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
        """The raw bytes as a letter keeps them: text stays text, anything else is base64, so a
        replay gets the very same bytes."""
        try:
            return raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii"), "base64"
