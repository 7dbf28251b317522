"""Ingest over HTTP: FHIR R4 resources and Bundles, and the project's own JSON events.

A sender gets 2xx only once Kafka has acknowledged every event (a batch or transaction Bundle:
200 with a batch-response, refused entries answered in it); 422 (on FHIR, 400 for a body that
is not JSON) once the refused input is safely in the dead-letter topic; 413 for a body over the
limit or a result too large to store (permanent); 503 when Kafka cannot take it, so the sender
retries and nothing is lost; 401 without a valid bearer token. Errors are RFC 9457 problem
details on the JSON API and OperationOutcomes on FHIR. Whatever a reader does with a body, the
answer is one of these (a 500, in the same form, only if the answer itself cannot be written
after the input was stored: resending it is harmless); nothing of a body is ever logged.
"""

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from http import HTTPStatus
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from schemas import Source
from services.config import Settings
from services.ingest.codes import FeedContext
from services.ingest.fhir import EntryOutcome, read_fhir
from services.ingest.http_answers import (
    FHIR_MEDIA_TYPES,
    Answer,
    BatchRequest,
    Failure,
    body_too_large,
    failed,
    fhir_answer,
    fhir_failure,
    json_answer,
    json_failure,
    unavailable,
    unsupported_media_type,
)
from services.ingest.json_context import CONTEXT_BODY_SCHEMA, classify_context
from services.ingest.json_lab import LabResultSubmission, classify_submission
from services.ingest.outcomes import Outcome
from services.ingest.pipeline import (
    COULD_NOT_PROCESS,
    INPUTS,
    Accepted,
    IngestPipeline,
    read_safely,
)
from services.ingest.treatments import TreatmentTable
from services.web import (
    answer_validation_errors_without_inputs,
    api_docs_urls,
    bearer_token_check,
    operations_router,
)

log = logging.getLogger(__name__)

Reader = Callable[[bytes, FeedContext], list[EntryOutcome]]
Render = Callable[[bytes, list[EntryOutcome], str | None], Answer]


class BodyTooLargeError(Exception):
    def __init__(self, size: int | None) -> None:
        super().__init__(f"body of {size} bytes")
        self.size = size


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (BodyTooLargeError) as soon as its Content-Length or the bytes read so
    far pass `limit`: a body too large is never held whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(None)
        chunks.append(chunk)
    return b"".join(chunks)


class _AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped, so an answer never fails to encode whatever
    text it quotes (the readers refuse a lone surrogate; this holds should one slip through)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


def _send(answer: Answer) -> Response:
    return _AsciiJSONResponse(
        answer.body, answer.status, headers=answer.headers, media_type=answer.media_type
    )


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI description of a body read raw (so a bad one can be dead-lettered byte for byte)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


def _whole(outcome: Outcome) -> list[EntryOutcome]:
    return [EntryOutcome(0, "", None, outcome)]


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
        **api_docs_urls(settings.api_docs),
    )
    answer_validation_errors_without_inputs(app)
    app.include_router(operations_router("ingest", lambda: pipeline.ready))
    authorised = bearer_token_check(settings.ingest_api_tokens)
    limit = settings.ingest_http_max_body_bytes

    @app.exception_handler(HTTPException)
    async def refused(request: Request, error: HTTPException) -> Response:
        """401 (and 404, 405) in the feed's own terms: OperationOutcome or problem details."""
        path = request.url.path
        if not path.startswith(("/fhir", "/v1/")):
            return await http_exception_handler(request, error)
        code = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_")
        failure = Failure(error.status_code, code, str(error.detail), dict(error.headers or {}))
        return _send(fhir_failure(failure) if path.startswith("/fhir") else json_failure(failure))

    async def store(
        source: Source, raw: bytes, entries: list[EntryOutcome], content_type: str | None
    ) -> tuple[list[EntryOutcome], Accepted] | Failure:
        """Hand the outcomes to the pipeline; if that fails other than by an outage, refuse the
        whole input (dead-lettered). The entries come back with their final outcomes."""
        received_at = pipeline.context().received_at
        try:
            outcomes = [entry.outcome for entry in entries]
            accepted = await pipeline.accept(source, raw, outcomes, content_type, received_at)
        except (KafkaError, TimeoutError) as error:
            log.error("Kafka did not acknowledge a %s input: %s", source, type(error).__name__)
            return unavailable()
        except Exception as error:  # any failure at all: the sender must get an answer
            log.error("a %s input could not be processed (%s)", source, type(error).__name__)
            entries = _whole(COULD_NOT_PROCESS)
            try:
                accepted = await pipeline.accept(
                    source, raw, [COULD_NOT_PROCESS], content_type, received_at
                )
            except Exception as again:  # nothing stored: the sender must retry
                log.error(
                    "a %s input could not be dead-lettered (%s)", source, type(again).__name__
                )
                return unavailable()
        final = [replace(e, outcome=o) for e, o in zip(entries, accepted.outcomes, strict=True)]
        return final, accepted

    async def ingest(
        request: Request,
        source: Source,
        read: Reader,
        render: Render,
        fail: Callable[[Failure], Answer],
    ) -> Response:
        """Read the body within the limit, read it safely, store what came of it, answer."""
        try:
            raw = await read_body(request, limit)
        except BodyTooLargeError as error:
            INPUTS.labels(source=source, outcome="too_large").inc()
            return _send(fail(body_too_large(error.size, limit)))
        context = pipeline.context()
        entries = read_safely(source, lambda: read(raw, context), _whole)
        stored = await store(source, raw, entries, request.headers.get("content-type"))
        if isinstance(stored, Failure):
            return _send(fail(stored))
        final, accepted = stored
        try:
            return _send(render(raw, final, accepted.dead_letter_id))
        except Exception as error:  # stored, but the answer could not be written: retry is safe
            log.error("a %s answer could not be written (%s)", source, type(error).__name__)
            return _send(fail(failed()))

    def single(_: bytes, entries: list[EntryOutcome], dead_letter_id: str | None) -> Answer:
        return json_answer(entries[0].outcome, dead_letter_id)

    def per_entry(raw: bytes, entries: list[EntryOutcome], dead_letter_id: str | None) -> Answer:
        return fhir_answer(entries, dead_letter_id, BatchRequest.of(raw))

    problems: dict[int | str, dict[str, Any]] = {
        413: {"description": "Body over the size limit, or a result too large to store."},
        422: {"description": "Refused; the body was dead-lettered with the reason."},
        503: {"description": "Kafka unavailable: nothing stored, retry."},
    }

    @app.post(
        "/v1/lab-results",
        status_code=202,
        dependencies=[Depends(authorised)],
        openapi_extra=_json_body(LabResultSubmission.model_json_schema()),
        responses=problems,
    )
    async def post_lab_result(request: Request) -> Response:
        """One lab result. Platelet counts are published; other analytes are filtered.
        Errors are RFC 9457 problem details (application/problem+json)."""
        return await ingest(
            request,
            "json",
            lambda raw, ctx: _whole(classify_submission(raw, ctx)),
            single,
            json_failure,
        )

    @app.post(
        "/v1/clinical-context",
        status_code=202,
        dependencies=[Depends(authorised)],
        openapi_extra=_json_body(CONTEXT_BODY_SCHEMA),
        responses=problems,
    )
    async def post_clinical_context(request: Request) -> Response:
        """One treatment given (steroid, IVIG, rituximab, TPO-RA, splenectomy, transfusion...),
        or, with "kind": "diagnosis", a diagnosis on record. A treatment not given (intended,
        not-taken, cancelled...) or given by an eye, ear, skin, inhaled or nasal route is
        accepted and filtered. Errors are RFC 9457 problem details (application/problem+json)."""
        return await ingest(
            request,
            "json",
            lambda raw, ctx: _whole(classify_context(raw, ctx, treatments)),
            single,
            json_failure,
        )

    @app.post(
        "/fhir",
        status_code=202,
        dependencies=[Depends(authorised)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {media: {"schema": {"type": "object"}} for media in FHIR_MEDIA_TYPES},
            }
        },
        responses={
            200: {"description": "A batch or transaction: a batch-response, entry by entry."},
            **problems,
            415: {"description": "Not a FHIR JSON media type."},
        },
    )
    async def post_fhir(request: Request) -> Response:
        """A FHIR R4 Bundle (collection, transaction, batch, message) or one resource
        (Observation, MedicationAdministration, MedicationStatement, Procedure, Condition). A
        batch or transaction is answered with a batch-response or transaction-response (one
        entry per request entry); anything else with one outcome per entry. Every error is an
        OperationOutcome."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in FHIR_MEDIA_TYPES:
            return _send(fhir_failure(unsupported_media_type()))
        return await ingest(
            request,
            "fhir",
            lambda raw, ctx: read_fhir(raw, ctx, treatments),
            per_entry,
            fhir_failure,
        )

    return app
