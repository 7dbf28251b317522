"""What every PlateletWatch HTTP service serves for operations (/healthz, /readyz, /metrics), the
bearer-token check of their APIs, and how they answer a request that fails validation."""

import hmac
import logging
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypedDict

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

import services.build_info  # noqa: F401 - registers plateletwatch_build_info

log = logging.getLogger(__name__)


class DocsUrls(TypedDict):
    docs_url: str | None
    redoc_url: str | None
    openapi_url: str | None


def api_docs_urls(enabled: bool) -> DocsUrls:
    """FastAPI's arguments for its interactive docs and schema: served only when enabled
    (PLATELETWATCH_API_DOCS), for they list every route to whoever can reach the service."""
    if enabled:
        return DocsUrls(docs_url="/docs", redoc_url="/redoc", openapi_url="/openapi.json")
    return DocsUrls(docs_url=None, redoc_url=None, openapi_url=None)


def operations_router(service: str, ready: Callable[[], bool]) -> APIRouter:
    """Liveness says the process answers; readiness says it can do its work (broker reachable)."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        is_ready = ready()
        return JSONResponse(
            {"status": "ready" if is_ready else "not ready", "service": service},
            status_code=200 if is_ready else 503,
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def bearer_token_check(tokens: list[SecretStr]) -> Callable[..., None]:
    """A FastAPI dependency refusing (401) any request without one of `tokens`; none: refuse all."""
    accepted = [token.get_secret_value().encode() for token in tokens]
    bearer = HTTPBearer(auto_error=False)

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        offered = credentials.credentials.encode() if credentials else b""
        if not any(hmac.compare_digest(offered, token) for token in accepted):
            raise HTTPException(
                status_code=401,
                detail="a valid bearer token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return authorised


def without_inputs(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors as type, location and message only: never the `input` (a body may
    carry a patient's identifiers), nor `ctx` or `url`, which can quote it."""
    return [
        {"type": error.get("type"), "loc": list(error.get("loc", ())), "msg": error.get("msg")}
        for error in errors
    ]


def answer_validation_errors_without_inputs(app: FastAPI) -> None:
    """Replace FastAPI's answers to invalid requests, which echo what was sent: 422 with each
    error's type, location and message; a response failing its own model is a 500 logged the
    same way (FastAPI's default logs the offending values)."""

    async def invalid_request(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        errors = without_inputs(error.errors())
        log.info("refused an invalid request to %s: %s", _route(request), _summary(errors))
        return JSONResponse({"detail": errors}, status_code=422)

    async def invalid_response(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ResponseValidationError)
        errors = without_inputs(error.errors())
        log.error("%s made an invalid response: %s", _route(request), _summary(errors))
        return JSONResponse({"detail": "internal error"}, status_code=500)

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ResponseValidationError, invalid_response)


def _route(request: Request) -> str:
    """The route's template (/v1/alerts/{alert_id}/actions), not the path: a path may hold a
    link's token."""
    route = request.scope.get("route")
    return str(getattr(route, "path", "an unknown route"))


def _summary(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))} {e['type']}" for e in errors)
