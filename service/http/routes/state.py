"""GET /state: the learner's view of the stream (frequencies, factors, counts, versions)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from redis.exceptions import RedisError

from service.http.deps import ReadKey, Rt
from service.http.responses import ORJSONResponse
from service.http.schemas import StateResponse

router = APIRouter(tags=["monitoring"])


@router.get(
    "/state",
    dependencies=[ReadKey],
    response_model=StateResponse,
    summary="Class frequencies, factors, counts and model version",
)
async def state(rt: Rt) -> ORJSONResponse:
    rt.served.require_trainer()
    view = rt.model_view()
    assert view is not None
    try:
        lag: int | None = await rt.stream_lag()
    except (RedisError, OSError):
        lag = None
    classes = view["classes"]
    settings = rt.settings
    body: dict[str, Any] = {
        "model": settings.model_name,
        "model_version": view["model_version"],
        "checkpoint_version": view["checkpoint_version"],
        "checkpoint_time": view["checkpoint_time"],
        "strategy": view["strategy"],
        "network": settings.network,
        "role": settings.role,
        "classes": classes,
        "events_learned": view["events_learned"],
        "class_frequencies": dict(zip(classes, view["frequencies"], strict=True)),
        "factors": dict(zip(classes, view["factors"], strict=True)),
        "counts": dict(zip(classes, view["counts"], strict=True)),
        "steps": view["steps"],
        "skipped_steps": view["skipped_steps"],
        "clipped_steps": view["clipped_steps"],
        "stream_lag": lag,
        "prequential": view["quality"],
        "production": view["production"],  # served predictions scored by late labels
        "feature_names": round(view["feature_names"]),  # distinct, estimated
        "checkpoint_bytes": view["checkpoint_bytes"],
    }
    return ORJSONResponse(body)
