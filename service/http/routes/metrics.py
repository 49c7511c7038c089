"""GET /metrics: Prometheus text exposition of this app's registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.http.deps import ReadKey

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics", dependencies=[ReadKey], summary="Prometheus metrics", response_class=Response
)
async def metrics(request: Request) -> Response:
    app_metrics = request.app.state.metrics
    rt = request.app.state.runtime
    if rt is not None:
        await rt.refresh_gauges()  # the numbers that need Redis: a scrape is the only cost
    return Response(app_metrics.render(), media_type=CONTENT_TYPE_LATEST)
