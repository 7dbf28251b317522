"""Treatment context posted as the project's own JSON: recognised against the treatment table.
Pure."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import (
    ClinicalTime,
    Coding,
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
from services.ingest.json_feed import field_errors
from services.ingest.outcomes import Filter, Outcome, Publish, Rejection, RejectReason
from services.ingest.treatments import TreatmentTable


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
    status: Literal["completed", "in-progress", "not-done", "entered-in-error"] = "completed"
    started_at: ClinicalTime = Field(description="Administered, started or performed.")
    ended_at: ClinicalTime | None = None


def classify_context(raw: bytes, context: FeedContext, treatments: TreatmentTable) -> Outcome:
    try:
        submission = ClinicalContextSubmission.model_validate_json(raw)
    except ValidationError as error:
        invalid_json = any(e["type"] == "json_invalid" for e in error.errors())
        reason = RejectReason.INVALID_JSON if invalid_json else RejectReason.INVALID_FIELDS
        return Rejection(reason, "clinical context has invalid fields", field_errors(error))
    codings = [(submission.code.system, submission.code.code)] if submission.code else []
    recognised = treatments.recognise(codings, [submission.name])
    if recognised is None:
        return Filter(f"{submission.name!r} is not a treatment PlateletWatch tracks")
    if submission.status in ("not-done", "entered-in-error"):
        return Filter(f"treatment with status {submission.status!r}: not given")
    common: dict[str, Any] = {
        "event_id": stable_event_id(
            "context", "json", submission.patient.identifier.key, submission.context_id
        ),
        "source": "json",
        "patient": submission.patient,
        "category": recognised.category,
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
            **common,
        )
    )
