"""GET /healthz (alive, no dependencies) and GET /readyz (model loaded, Redis takes writes)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.errors import NotReady
from service.http.responses import ORJSONResponse
from service.http.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def healthz() -> ORJSONResponse:
    return ORJSONResponse({"status": "ok"})


@router.get("/readyz", response_model=ReadyResponse, summary="Readiness")
async def readyz(request: Request) -> ORJSONResponse:
    rt = request.app.state.runtime
    if rt is None:
        raise NotReady("service: starting up")
    if rt.served.trainer is None:
        raise NotReady("model: not loaded yet")
    problem = await rt.storage.write_problem()
    if problem is not None:
        raise NotReady(f"redis: {problem}")
    return ORJSONResponse({"status": "ready", "model_version": rt.served.model_version})
