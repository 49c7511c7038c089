"""The FastAPI application: `create_app(settings)`; its lifespan runs the model's runtime
(`service.lifecycle.open_runtime`, with the learner unless the role is "api")."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import __version__
from service.http.error_handlers import install_error_handlers
from service.http.middleware import RequestIdMiddleware
from service.http.openapi import build_openapi
from service.http.responses import ORJSONResponse
from service.http.routes import ROUTERS
from service.http.schemas import ValidationContext
from service.lifecycle import open_runtime
from service.observability.logs import log_event
from service.observability.prometheus import ServiceMetrics
from service.runtime import Runtime
from service.settings import Settings, get_settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Streaming online learning for imbalanced classification (fraud, abuse, failures).

Send labeled events to `POST /learn`; the learner keeps class-frequency estimates in Redis,
rescales each class's gradient by smoothed factors and updates the model incrementally.
`/predict` serves calibrated probabilities; `/drift`, `/state` and `/metrics` watch it.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with open_runtime(settings, app.state.metrics, learn=settings.role == "all") as rt:
        app.state.runtime = rt
        # Start-up objects live as long as the process: keep them out of GC passes.
        gc.collect()
        gc.freeze()
        log_event(
            log, "ready", "service ready", model_version=rt.served.model_version, role=settings.role
        )
        try:
            yield
        finally:
            app.state.runtime = None
            gc.unfreeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service as an ASGI app; nothing starts until its lifespan runs."""
    settings = settings or get_settings()
    app = FastAPI(
        title="streambalance",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=_lifespan,
        default_response_class=ORJSONResponse,
    )
    metrics = ServiceMetrics()
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runtime = None
    # The request validators' limits, built once (the hot routes read them per request).
    app.state.validation = ValidationContext(
        list(settings.classes),
        settings.max_features,
        settings.max_batch_events,
        max_name_chars=settings.max_feature_name_chars,
        max_value_chars=settings.max_feature_value_chars,
        timestamp_max_age_s=settings.timestamp_max_age_s,
        timestamp_max_skew_s=settings.timestamp_max_skew_s,
    )
    metrics.attach_model(lambda: _view(app))
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware, http_metrics=metrics.http, excluded_paths=["/metrics"])
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


def _view(app: FastAPI) -> dict[str, Any] | None:
    rt: Runtime | None = app.state.runtime
    return None if rt is None else rt.model_view()


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    if not app.openapi_schema:
        app.openapi_schema = build_openapi(app, settings)
    return app.openapi_schema
