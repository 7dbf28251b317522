"""Clinical context posted as the project's own JSON. Pure.

A treatment is recognised against the treatment table; one not given (by its status) or given by
a local route (eye, ear, skin, airways, nose) is filtered with the reason. A body with
"kind": "diagnosis" is a diagnosis on the patient's record, or its retraction.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import from_json

from schemas import (
    MAX_FLAGS,
    ClinicalTime,
    Coding,
    DiagnosisEvent,
    Dose,
    FreeText,
    Identifier,
    MedicationEvent,
    Patient,
    ProcedureEvent,
    TransfusionEvent,
    stable_event_id,
)
from services.ingest.codes import FeedContext
from services.ingest.outcomes import (
    Filter,
    Outcome,
    Publish,
    Rejection,
    RejectReason,
    field_errors,
)
from services.ingest.treatments import TreatmentTable

# Statuses under which a treatment counts (FHIR's words); "stopped" counts with its ended_at.
_GIVEN = frozenset({"completed", "in-progress", "active"})
# Statuses that withdraw what was posted earlier under the same context_id.
_WITHDRAWN = frozenset({"entered-in-error", "not-done", "not-taken"})
TreatmentStatus = Literal[
    "completed",
    "in-progress",
    "active",
    "stopped",
    "on-hold",
    "not-done",
    "not-taken",
    "intended",
    "cancelled",
    "unknown",
    "entered-in-error",
]


class ClinicalContextSubmission(BaseModel):
    """A treatment given, as a sender posts it to POST /v1/clinical-context; limits as the
    event's (schemas/events.py), a name longer than 200 characters is cut."""

    model_config = ConfigDict(extra="forbid")

    patient: Patient
    context_id: Identifier = Field(description="The sender's id for this administration.")
    name: FreeText = Field(
        min_length=1, description='What was given or done, e.g. "Nplate 250 mcg".'
    )
    code: Coding | None = None
    dose: Dose | None = None
    route: Coding | None = Field(
        default=None,
        description="How it was given (a SNOMED CT route, or a display alone). Eye, ear, skin, "
        "inhaled and nasal routes are not ITP therapy: such a treatment is filtered.",
    )
    status: TreatmentStatus = Field(
        default="completed",
        description="Counts when completed, in-progress or active, or stopped with ended_at; "
        "entered-in-error, not-done and not-taken withdraw what was posted under the same "
        "context_id; any other status (intended, on-hold, cancelled...) is filtered.",
    )
    started_at: ClinicalTime = Field(description="Administered, started or performed.")
    ended_at: ClinicalTime | None = None


class DiagnosisSubmission(BaseModel):
    """A diagnosis on the patient's record, as a sender posts it to POST /v1/clinical-context
    with "kind": "diagnosis"; on_record false retracts the one with the same diagnosis_id."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["diagnosis"]
    patient: Patient
    diagnosis_id: Identifier = Field(description="The sender's id for this diagnosis.")
    codes: tuple[Coding, ...] = Field(
        min_length=1, max_length=MAX_FLAGS, description="ICD-10, ICD-10-CM or SNOMED CT codings."
    )
    name: FreeText | None = None
    on_record: bool = True
    recorded_at: ClinicalTime | None = None


ContextSubmission = ClinicalContextSubmission | DiagnosisSubmission
CONTEXT_BODY_SCHEMA = TypeAdapter(ContextSubmission).json_schema()
"""The OpenAPI description of a clinical-context body: a treatment or a diagnosis."""


def _is_diagnosis(raw: bytes) -> bool:
    try:
        body = from_json(raw)
    except ValueError:
        return False  # the treatment model reports the invalid JSON
    return isinstance(body, dict) and body.get("kind") == "diagnosis"


def classify_context(raw: bytes, context: FeedContext, treatments: TreatmentTable) -> Outcome:
    """A treatment or diagnosis event, a Filter saying why not, or a Rejection of the body."""
    model: type[ClinicalContextSubmission | DiagnosisSubmission] = (
        DiagnosisSubmission if _is_diagnosis(raw) else ClinicalContextSubmission
    )
    try:
        submission = model.model_validate_json(raw)
    except ValidationError as error:
        invalid_json = any(e["type"] == "json_invalid" for e in error.errors())
        reason = RejectReason.INVALID_JSON if invalid_json else RejectReason.INVALID_FIELDS
        return Rejection(reason, "clinical context has invalid fields", field_errors(error))
    if isinstance(submission, DiagnosisSubmission):
        return Publish(_diagnosis(submission, context))
    return _treatment(submission, context, treatments)


def _diagnosis(submission: DiagnosisSubmission, context: FeedContext) -> DiagnosisEvent:
    key = submission.patient.identifier.key
    return DiagnosisEvent(
        event_id=stable_event_id(
            "context", "json", key, submission.diagnosis_id, str(submission.on_record)
        ),
        source="json",
        patient=submission.patient,
        diagnosis_id=submission.diagnosis_id,
        codes=submission.codes,
        name=submission.name,
        on_record=submission.on_record,
        recorded_at=submission.recorded_at,
        received_at=context.received_at,
    )


def _treatment(
    submission: ClinicalContextSubmission, context: FeedContext, treatments: TreatmentTable
) -> Outcome:
    codings = [(submission.code.system, submission.code.code)] if submission.code else []
    recognised = treatments.recognise(codings, [submission.name])
    if recognised is None:
        return Filter(f"{submission.name!r} is not a treatment PlateletWatch tracks")
    status = submission.status
    if status == "stopped" and submission.ended_at is None:
        return Filter("treatment with status 'stopped' and no ended_at: not given")
    withdrawn = status in _WITHDRAWN
    if status not in _GIVEN and status != "stopped" and not withdrawn:
        return Filter(f"treatment with status {status!r}: not given")
    route = submission.route
    local = (
        treatments.local_route(
            [(route.system, route.code)] if route.code else [],
            [route.display] if route.display else [],
        )
        if route is not None
        else None
    )
    if local is not None:
        return Filter(f"treatment by the route {local!r}: not ITP therapy")
    key, context_id = submission.patient.identifier.key, submission.context_id
    common: dict[str, Any] = {
        "event_id": stable_event_id(
            "context", "json", key, context_id, *(["withdrawn"] * withdrawn)
        ),
        "treatment_id": context_id,
        "on_record": not withdrawn,
        "source": "json",
        "patient": submission.patient,
        "category": recognised.category,
        "line": recognised.line,
        "code": submission.code,
        "name": submission.name,
        "received_at": context.received_at,
    }
    if recognised.kind == "procedure":
        return Publish(ProcedureEvent(performed_at=submission.started_at, **common))
    if recognised.kind == "transfusion":
        return Publish(
            TransfusionEvent(started_at=submission.started_at, dose=submission.dose, **common)
        )
    return Publish(
        MedicationEvent(
            started_at=submission.started_at,
            ended_at=submission.ended_at,
            dose=submission.dose,
            route=submission.route,
            **common,
        )
    )
