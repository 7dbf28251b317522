"""What every PlateletWatch HTTP service serves for operations (/healthz, /readyz, /metrics), and
the bearer-token check of their APIs."""

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

import services.build_info  # noqa: F401 - registers plateletwatch_build_info


def operations_router(service: str, ready: Callable[[], bool]) -> APIRouter:
    """Liveness says the process answers; readiness says it can do its work (broker connected)."""
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
