"""GET /models (champion, shadows, versions), POST /models/{name}/promote, POST /models/rollback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.errors import BadRequest
from service.http.deps import ApiKey, ReadKey, Rt, read_body
from service.http.responses import ORJSONResponse
from service.http.schemas import ErrorResponse, parse_json

router = APIRouter(tags=["models"])

_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


@router.get("/models", dependencies=[ReadKey], summary="Champion, shadow challengers, versions")
async def models(rt: Rt) -> ORJSONResponse:
    body = {
        **rt.control.describe(),
        "versions": await rt.control.versions(),
        "operations": await rt.control.operations(),
    }
    return ORJSONResponse(body)


_ROLLBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"version": {"type": "integer", "minimum": 1}},
                    "required": ["version"],
                },
                "example": {"version": 12},
            }
        },
    }
}


@router.post(
    "/models/rollback",
    dependencies=[ApiKey],
    responses=_WRITE_ERRORS,
    openapi_extra=_ROLLBACK_BODY,
    summary="Serve and learn from an earlier kept version",
)
async def rollback_route(request: Request, rt: Rt) -> ORJSONResponse:
    """Body `{"version": v}`, a version listed by `GET /models`."""
    data = parse_json(await read_body(request, 4096))
    version = data.get("version") if isinstance(data, dict) else None
    if type(version) is not int or version < 1:
        raise BadRequest(f"version: must be a positive integer, got {version!r}")
    return ORJSONResponse(await rt.control.rollback(version))


@router.post(
    "/models/{name}/promote",
    dependencies=[ApiKey],
    responses=_WRITE_ERRORS,
    summary="Make a shadow challenger the champion that /predict serves",
)
async def promote_route(name: str, rt: Rt) -> ORJSONResponse:
    return ORJSONResponse(await rt.control.promote(name))
