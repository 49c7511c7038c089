"""GET /drift: every drift and training-health signal of the served model."""

from __future__ import annotations

from fastapi import APIRouter

from service.http.deps import ReadKey, Rt
from service.http.responses import ORJSONResponse
from service.http.schemas import DriftResponse

router = APIRouter(tags=["monitoring"])


@router.get(
    "/drift",
    dependencies=[ReadKey],
    response_model=DriftResponse,
    summary="Drift and training-health signals",
)
async def drift(rt: Rt) -> ORJSONResponse:
    """`drift_detected` is true while any signal is in state `drift`."""
    return ORJSONResponse(rt.served.read(lambda trainer: trainer.drift.report()))
