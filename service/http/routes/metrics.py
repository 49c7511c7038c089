"""GET /metrics: Prometheus text exposition of this app's registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from service.http.deps import ReadKey

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics", dependencies=[ReadKey], summary="Prometheus metrics", response_class=Response
)
async def metrics(request: Request) -> Response:
    app_metrics = request.app.state.metrics
    rt = request.app.state.runtime
    if rt is not None:
        # The two numbers that need Redis are read here, so a scrape is the only cost.
        try:
            lag = await rt.stream_lag()
            app_metrics.stream_lag.set(lag)
            app_metrics.dead_letters = await rt.storage.stream.dead_letters()
        except (RedisError, OSError):
            pass  # a scrape still answers with what the process knows
    return Response(app_metrics.render(), media_type=CONTENT_TYPE_LATEST)
