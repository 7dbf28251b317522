"""Ingest over HTTP: the JSON lab feed. FHIR R4 endpoints hang off the same app later.

A sender gets 202 only once Kafka has acknowledged the event; 422 (with field errors) once the
refused body is safely in the dead-letter topic; 503 when Kafka cannot take either, so the sender
retries and nothing is lost.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from schemas import Topic
from services.config import Settings
from services.ingest.deadletter import dead_letter
from services.ingest.json_feed import Filter, LabResultSubmission, Publish, classify_submission
from services.kafka.producer import EventPublisher
from services.web import operations_router

log = logging.getLogger(__name__)

INPUTS = Counter(
    "plateletwatch_ingest_inputs_total",
    "Inputs received, by feed and by what became of them.",
    ["source", "outcome"],
)
DEAD_LETTERS = Counter(
    "plateletwatch_ingest_dead_letters_total",
    "Inputs refused and written to the dead-letter topic, by reason.",
    ["source", "reason"],
)

_BROKER_UNAVAILABLE = {
    "detail": "the event could not be stored durably (Kafka unavailable); nothing was accepted, "
    "please retry"
}


def create_app(settings: Settings, publisher: EventPublisher) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()

    app = FastAPI(
        title="PlateletWatch ingest",
        description="Lab results and treatment context in; Kafka events out.",
        lifespan=lifespan,
    )
    app.include_router(operations_router("ingest", lambda: publisher.started))

    @app.post(
        "/v1/lab-results",
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": LabResultSubmission.model_json_schema()}
                },
            }
        },
        responses={422: {"description": "Refused; the body was dead-lettered with the reason."}},
    )
    async def post_lab_result(request: Request) -> JSONResponse:
        """Accept one lab result. Platelet counts are published; other analytes are filtered."""
        raw = await request.body()
        received_at = datetime.now(UTC)
        outcome = classify_submission(raw, received_at)
        try:
            if isinstance(outcome, Publish):
                result = outcome.result
                await publisher.publish(
                    settings.topic(Topic.LAB_RESULTS), result.patient.identifier.key, result
                )
                INPUTS.labels(source="json", outcome="published").inc()
                return JSONResponse(
                    {"outcome": "published", "event_id": result.event_id}, status_code=202
                )
            if isinstance(outcome, Filter):
                INPUTS.labels(source="json", outcome="filtered").inc()
                return JSONResponse(
                    {"outcome": "filtered", "detail": "not a platelet count; not published"},
                    status_code=202,
                )
            letter = dead_letter(
                raw, "json", outcome, request.headers.get("content-type"), received_at
            )
            await publisher.publish(settings.topic(Topic.INGEST_DEADLETTER), None, letter)
        except (KafkaError, TimeoutError) as error:
            INPUTS.labels(source="json", outcome="unavailable").inc()
            log.error("Kafka did not acknowledge a json input: %s", type(error).__name__)
            return JSONResponse(_BROKER_UNAVAILABLE, status_code=503, headers={"Retry-After": "5"})
        INPUTS.labels(source="json", outcome="dead_lettered").inc()
        DEAD_LETTERS.labels(source="json", reason=outcome.reason.value).inc()
        log.info("json input dead-lettered: %s", outcome.reason.value)
        return JSONResponse(
            {
                "outcome": "dead_lettered",
                "reason": outcome.reason.value,
                "detail": outcome.message,
                "errors": list(outcome.errors),
                "dead_letter_id": letter.event_id,
            },
            status_code=422,
        )

    return app
