"""What every PlateletWatch HTTP service serves for operations: /healthz, /readyz, /metrics."""

from collections.abc import Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


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
