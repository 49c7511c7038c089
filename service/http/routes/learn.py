"""POST /learn: validate, deduplicate and append labeled events to the stream (one round trip)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from service.errors import PayloadTooLarge, RateLimited, ServiceError
from service.http.deps import API_KEY_PARAMETER, check_key, read_body, runtime_of
from service.http.rate_limit import enforce
from service.http.responses import ORJSONResponse
from service.http.schemas import (
    EXAMPLE_TRANSACTION,
    ErrorResponse,
    LearnResponse,
    load_json,
    query_flag,
    validate_learn,
)
from service.ingest.late_labels import stream_records
from service.runtime import Runtime

router = APIRouter(tags=["learn"])

_EXAMPLES = {
    "single": {
        "summary": "one labeled card transaction",
        "value": {
            "id": "tx-8d1f3",
            "features": EXAMPLE_TRANSACTION,
            "label": "fraud",
            "timestamp": "2026-11-27T03:14:07Z",
        },
    },
    "batch": {
        "summary": "a batch (labels by name or index)",
        "value": {
            "events": [
                {
                    "id": "tx-1",
                    "features": {"amount": 12.5, "mcc": "5411", "country": "NL"},
                    "label": "legit",
                },
                {"id": "tx-2", "features": EXAMPLE_TRANSACTION, "label": 1},
            ]
        },
    },
    "late_label": {
        "summary": "a chargeback: label for an earlier prediction",
        "value": {"prediction_id": "4f0c2b9e8a7d4c1f9b3e2a6d5c8b7a90", "label": "fraud"},
    },
}

_BODY = {
    "parameters": [
        {
            "name": "wait",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean", "default": False},
            "description": "answer only once the learner has applied the events",
        },
        API_KEY_PARAMETER,
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/LearnEvent"},
                        {"$ref": "#/components/schemas/LearnBatch"},
                    ]
                },
                "examples": _EXAMPLES,
            }
        },
    },
}


# No FastAPI dependencies or declared parameters (see service.http.deps.runtime_of): `wait` and
# the API key are read here and documented through `_BODY`.
@router.post(
    "/learn",
    status_code=202,
    openapi_extra=_BODY,
    response_model=LearnResponse,
    responses={
        200: {"model": LearnResponse, "description": "with wait=true: applied"},
        401: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        429: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
        504: {"model": ErrorResponse},
    },
    summary="Learn from labeled events",
)
async def learn(request: Request) -> ORJSONResponse:
    """One event, or `{"events": [...]}`; an event is `{id?, features, label, timestamp?}` or a
    late label `{prediction_id, label}`. Events with an already-seen `id` are dropped."""
    started = time.perf_counter()
    check_key(request, read=False)
    rt = runtime_of(request)
    wait = query_flag(request.query_params, "wait")
    records = await _validated_records(request, rt)
    result = await rt.storage.stream.append(records)
    if result.duplicates:
        rt.metrics.events_duplicate.inc(result.duplicates)
    body: dict[str, Any] = {"accepted": result.accepted, "duplicates": result.duplicates}
    status = 202
    if wait:
        if result.entry_id is None:
            body["model_version"] = rt.served.model_version
        else:
            body["model_version"] = await rt.waiters.wait(
                result.entry_id, rt.settings.wait_timeout_s
            )
        status = 200
    rt.metrics.learn_latency.observe(time.perf_counter() - started)
    return ORJSONResponse(body, status_code=status)


async def _validated_records(request: Request, rt: Runtime) -> list[dict[str, Any]]:
    """Body -> stream records; every rejection is counted by reason, then re-raised."""
    data: Any = None
    try:
        data, strict_numbers = load_json(await read_body(request, rt.settings.max_body_bytes))
        events = validate_learn(data, request.app.state.validation, strict_numbers)
        if rt.rate_limiter is not None:  # before late labels take (consume) their predictions
            try:
                await enforce(rt.rate_limiter, request, len(events))
            except RateLimited as exc:
                exc.extra["reason"] = "rate_limited"  # counted below, not sent
                raise
        return await stream_records(
            events,
            rt.storage.predictions,
            batched=isinstance(data, dict) and "events" in data,
            give_back_ttl_s=rt.settings.prediction_ttl_s or 60,
            observe_label_delay=rt.metrics.label_delay.observe,
        )
    except ServiceError as exc:
        reason = (
            "too_large"
            if isinstance(exc, PayloadTooLarge)
            else exc.extra.pop("reason", "validation")
        )
        events_in = data.get("events") if isinstance(data, dict) else None
        rt.metrics.events_rejected.labels(reason).inc(
            len(events_in) if isinstance(events_in, list) else 1
        )
        raise
