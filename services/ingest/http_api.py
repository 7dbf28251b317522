"""Ingest over HTTP: FHIR R4 resources and Bundles, and the project's own JSON events.

A sender gets 2xx only once Kafka has acknowledged every event; 422 (with the problems, per
entry for a Bundle) once the refused input is safely in the dead-letter topic; 503 when Kafka
cannot take either, so the sender retries and nothing is lost; 401 without a valid bearer token.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from services.config import Settings
from services.ingest.codes import FeedContext
from services.ingest.context_feed import ClinicalContextSubmission, classify_context
from services.ingest.deadletter import Source
from services.ingest.fhir_feed import EntryOutcome, read_fhir
from services.ingest.json_feed import LabResultSubmission, classify_submission
from services.ingest.outcomes import Filter, Outcome, Publish
from services.ingest.pipeline import Accepted, IngestPipeline
from services.ingest.treatments import TreatmentTable
from services.web import bearer_token_check, operations_router

log = logging.getLogger(__name__)

_BROKER_UNAVAILABLE = {
    "outcome": "unavailable",
    "detail": "the input could not be stored durably (Kafka unavailable); nothing was accepted, "
    "please retry",
}
_FHIR_TYPES = ["application/fhir+json", "application/json"]


def _json_body(model: Any) -> dict[str, Any]:
    """OpenAPI description of a body read raw (so a bad one can be dead-lettered byte for byte)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _entry_view(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Publish):
        return {"outcome": "published", "event_id": outcome.event.event_id}
    if isinstance(outcome, Filter):
        return {"outcome": "filtered", "detail": outcome.detail}
    return {
        "outcome": "rejected",
        "reason": outcome.reason.value,
        "detail": outcome.message,
        "errors": list(outcome.errors),
    }


def _response(accepted: Accepted, body: dict[str, Any]) -> JSONResponse:
    body = {"outcome": accepted.outcome, **body}
    if accepted.dead_letter_id:
        body["dead_letter_id"] = accepted.dead_letter_id
    return JSONResponse(body, status_code=422 if accepted.rejections else 202)


def create_app(
    settings: Settings,
    pipeline: IngestPipeline,
    treatments: TreatmentTable,
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
) -> FastAPI:
    """`start` and `stop` bring up and down what the app depends on (publisher, MLLP server)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await start()
        try:
            yield
        finally:
            await stop()

    app = FastAPI(
        title="PlateletWatch ingest",
        description="Lab results and treatment context in; Kafka events out. "
        "HL7 v2 ORU^R01 arrives over MLLP on its own port.",
        lifespan=lifespan,
    )
    app.include_router(operations_router("ingest", lambda: pipeline.ready))
    authorised = bearer_token_check(settings.ingest_api_tokens)

    async def ingest(
        request: Request,
        source: Source,
        read: Callable[[bytes, FeedContext], list[EntryOutcome]],
        render: Callable[[list[EntryOutcome]], dict[str, Any]],
    ) -> JSONResponse:
        raw = await request.body()
        context = pipeline.context()
        entries = read(raw, context)
        try:
            accepted = await pipeline.accept(
                source,
                raw,
                [entry.outcome for entry in entries],
                request.headers.get("content-type"),
                context.received_at,
            )
        except (KafkaError, TimeoutError) as error:
            log.error("Kafka did not acknowledge a %s input: %s", source, type(error).__name__)
            return JSONResponse(_BROKER_UNAVAILABLE, status_code=503, headers={"Retry-After": "5"})
        final = [replace(e, outcome=o) for e, o in zip(entries, accepted.outcomes, strict=True)]
        return _response(accepted, render(final))

    def one(outcome: Outcome) -> list[EntryOutcome]:
        return [EntryOutcome(0, "", None, outcome)]

    def single(entries: list[EntryOutcome]) -> dict[str, Any]:
        return _entry_view(entries[0].outcome)

    def per_entry(entries: list[EntryOutcome]) -> dict[str, Any]:
        return {
            "entries": [
                {
                    "index": entry.index,
                    "resourceType": entry.resource_type,
                    "fullUrl": entry.full_url,
                    **_entry_view(entry.outcome),
                }
                for entry in entries
            ]
        }

    @app.post(
        "/v1/lab-results",
        status_code=202,
        dependencies=[Depends(authorised)],
        openapi_extra=_json_body(LabResultSubmission),
        responses={422: {"description": "Refused; the body was dead-lettered with the reason."}},
    )
    async def post_lab_result(request: Request) -> JSONResponse:
        """One lab result. Platelet counts are published; other analytes are filtered."""
        return await ingest(
            request, "json", lambda raw, ctx: one(classify_submission(raw, ctx)), single
        )

    @app.post(
        "/v1/clinical-context",
        status_code=202,
        dependencies=[Depends(authorised)],
        openapi_extra=_json_body(ClinicalContextSubmission),
        responses={422: {"description": "Refused; the body was dead-lettered with the reason."}},
    )
    async def post_clinical_context(request: Request) -> JSONResponse:
        """One treatment given (steroid, IVIG, rituximab, TPO-RA, splenectomy, transfusion...)."""
        return await ingest(
            request, "json", lambda raw, ctx: one(classify_context(raw, ctx, treatments)), single
        )

    @app.post(
        "/fhir",
        status_code=202,
        dependencies=[Depends(authorised)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {media: {"schema": {"type": "object"}} for media in _FHIR_TYPES},
            }
        },
        responses={422: {"description": "Refused entries were dead-lettered; see `entries`."}},
    )
    async def post_fhir(request: Request) -> JSONResponse:
        """A FHIR R4 Bundle (collection, transaction, batch, message) or one resource
        (Observation, MedicationAdministration, MedicationStatement, Procedure); answers with
        one outcome per entry."""
        return await ingest(
            request, "fhir", lambda raw, ctx: read_fhir(raw, ctx, treatments), per_entry
        )

    return app
