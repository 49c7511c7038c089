"""GET /predict (one event as query parameters) and POST /predict (a batch)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from fastapi import APIRouter, Request
from redis.exceptions import RedisError

from service.http.deps import check_key, read_body, runtime_of
from service.http.responses import ORJSONResponse
from service.http.schemas import (
    EXAMPLE_TRANSACTION,
    Prediction,
    PredictResponse,
    load_json,
    query_features,
    validate_predict,
)
from service.observability.logs import log_event
from service.runtime import Runtime
from service.serving.production_scoring import served_record

log = logging.getLogger(__name__)
router = APIRouter(tags=["predict"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/PredictBatch"},
                "examples": {
                    "batch": {
                        "summary": "two card transactions",
                        "value": {
                            "events": [
                                {"features": EXAMPLE_TRANSACTION},
                                {
                                    "features": {
                                        "amount": 12.5,
                                        "mcc": "5411",
                                        "country": "NL",
                                        "card_present": True,
                                    }
                                },
                            ]
                        },
                    }
                },
            }
        },
    },
}


# No FastAPI dependencies on these two routes (see service.http.deps.runtime_of): they are the
# hottest, and the solver cost more than the work it does.
@router.get(
    "/predict",
    response_model=Prediction,
    openapi_extra={
        "parameters": [
            {
                "name": "features",
                "in": "query",
                "required": False,
                "style": "form",
                "explode": True,
                "description": "each query parameter is one feature",
                "schema": {"type": "object"},
                "example": {"amount": 912.4, "mcc": "5732", "country": "NL", "ip_risk": 0.83},
            },
        ]
    },
    summary="Predict one event given as query parameters",
)
async def predict_one(request: Request) -> ORJSONResponse:
    """Every query parameter is a feature: `?amount=912.4&mcc=5732&country=NL`. Values that
    read as JSON numbers are numeric features; everything else is a string."""
    started = time.perf_counter()
    check_key(request, read=True)
    rt = runtime_of(request)
    features = query_features(
        request.query_params.multi_items(), rt.settings.max_features, request.app.state.validation
    )
    out = await _predict(rt, [features])
    rt.metrics.predict_latency.labels("get").observe(time.perf_counter() - started)
    return ORJSONResponse(out[0])


@router.post(
    "/predict",
    response_model=PredictResponse,
    openapi_extra=_BODY,
    summary="Predict a batch of events",
)
async def predict_batch(request: Request) -> ORJSONResponse:
    started = time.perf_counter()
    check_key(request, read=True)
    rt = runtime_of(request)
    data, strict_numbers = load_json(await read_body(request, rt.settings.max_body_bytes))
    out = await _predict(rt, validate_predict(data, request.app.state.validation, strict_numbers))
    rt.metrics.predict_latency.labels("post").observe(time.perf_counter() - started)
    return ORJSONResponse({"predictions": out})


async def _predict(rt: Runtime, features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    probs, labels, version = rt.served.predict(features)
    classes = rt.served.classes
    ids = _new_ids(len(features))
    if rt.settings.prediction_ttl_s > 0:
        now = time.time()
        served = [
            served_record(row, label, version, now)
            for row, label in zip(probs.tolist(), labels.tolist(), strict=True)
        ]
        await _save(rt, ids, features, served)
    rt.metrics.predictions.inc(len(features))
    return [
        {
            "label": classes[label],
            "probabilities": dict(zip(classes, row, strict=True)),
            "prediction_id": pid,
            "model_version": version,
        }
        for label, row, pid in zip(labels.tolist(), probs.tolist(), ids, strict=True)
    ]


def _new_ids(n: int) -> list[str]:
    """n random 128-bit prediction ids as 32 hex digits: one `os.urandom` call for the
    batch instead of one per `uuid.uuid4()` (a system call per prediction)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


async def _save(
    rt: Runtime, ids: list[str], features: list[dict[str, Any]], served: list[dict[str, Any]]
) -> None:
    """Keep features (and what was served) for late labels; a Redis outage must not stop
    predictions."""
    try:
        await rt.storage.predictions.save_many(
            list(zip(ids, features, strict=True)), rt.settings.prediction_ttl_s, served=served
        )
    except (RedisError, OSError) as exc:
        log_event(
            log,
            "prediction_not_stored",
            f"prediction features not stored: {exc}",
            level=logging.WARNING,
            n=len(ids),
        )
