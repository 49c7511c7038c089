"""The ceiling of the stack: a bare FastAPI app that validates events and answers.

Same routes, the same request parsing (orjson) and the same pydantic event models as the
service (`service.http.schemas`), but no Redis, no featurization, no model: whatever the service
spends beyond this app is the cost of its own work. Run it the way the benchmark does:

    uvicorn bench.reference_app:app --loop uvloop --http httptools --workers 1

It deliberately does not import torch (nothing here needs it), so its garbage collector
sees only its own objects.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, Request

from service.http.error_handlers import install_error_handlers
from service.http.responses import ORJSONResponse
from service.http.schemas import (
    ValidationContext,
    check_features,
    load_json,
    query_features,
    validate_learn,
    validate_predict,
)

__all__ = ["CLASSES", "app", "create_reference_app"]

CLASSES = ("legit", "fraud")
# The service's defaults (service.settings: max_features=1000, max_batch_events=1000).
MAX_FEATURES = 1000
MAX_EVENTS = 1000
_PROBS = {"legit": 0.98, "fraud": 0.02}


def _prediction() -> dict[str, Any]:
    return {
        "label": CLASSES[0],
        "probabilities": _PROBS,
        "prediction_id": uuid.uuid4().hex,
        "model_version": 0,
    }


def create_reference_app() -> FastAPI:
    """Build the reference app: parse, validate, answer; no state and no I/O beyond HTTP."""
    ref = FastAPI(title="streambalance reference (validate and answer)")
    install_error_handlers(ref)
    ctx = ValidationContext(list(CLASSES), MAX_FEATURES, MAX_EVENTS)

    @ref.post("/learn")
    async def learn(request: Request) -> ORJSONResponse:
        data, strict_numbers = load_json(await request.body())
        events = validate_learn(data, ctx, strict_numbers)
        return ORJSONResponse({"accepted": len(events), "duplicates": 0}, status_code=202)

    @ref.get("/predict")
    async def predict_one(request: Request) -> ORJSONResponse:
        features = query_features(request.query_params.multi_items(), MAX_FEATURES)
        check_features(features, MAX_FEATURES)
        return ORJSONResponse(_prediction())

    @ref.post("/predict")
    async def predict_many(request: Request) -> ORJSONResponse:
        data, strict_numbers = load_json(await request.body())
        batch = validate_predict(data, ctx, strict_numbers)
        return ORJSONResponse({"predictions": [_prediction() for _ in batch]})

    @ref.get("/readyz")
    async def readyz() -> ORJSONResponse:
        return ORJSONResponse({"ready": True})

    return ref


app = create_reference_app()
