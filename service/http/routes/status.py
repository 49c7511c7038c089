"""GET / (the live status page) and GET /state/history (the samples its charts start from)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from service.http.deps import ReadKey, Rt
from service.http.responses import ORJSONResponse
from service.http.schemas import ErrorResponse

router = APIRouter(tags=["monitoring"])


def _page() -> str:
    return (
        resources.files("service.http")
        .joinpath("static", "status.html")
        .read_text(encoding="utf-8")
    )


@router.get("/", response_class=HTMLResponse, summary="Live status page (self-contained HTML)")
async def status_page() -> HTMLResponse:
    return HTMLResponse(_page(), headers={"Cache-Control": "no-store"})


@router.get(
    "/state/history",
    dependencies=[ReadKey],
    responses={422: {"model": ErrorResponse}},
    summary="Recent samples of the served model",
)
async def history(
    rt: Rt, after: float | None = Query(None, description="only samples newer than this time")
) -> ORJSONResponse:
    return ORJSONResponse(
        {
            "interval_s": rt.settings.history_interval_s,
            "classes": rt.served.classes,
            "samples": rt.history.since(after),
        }
    )
