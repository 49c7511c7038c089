"""The FastAPI application: `create_app(settings)` and the runtime it starts and stops.

Start-up: an embedded Redis-protocol server when no `REDIS_URL` is set, the model's storage, the
latest checkpoint (plus a replay of this learner's pending entries), then the learner task
(role "all") or the checkpoint watcher (role "api"). Shutdown: the learner drains what is
already in the stream, writes a final checkpoint, and the embedded server is stopped.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from service.deps import Runtime
from service.http.error_handlers import install_error_handlers
from service.http.middleware import RequestIdMiddleware
from service.http.responses import ORJSONResponse
from service.learner_loop import Learner, VersionWatcher
from service.observability.logs import log_event, log_startup
from service.observability.prometheus import ServiceMetrics
from service.ratelimit import RateLimiter
from service.routes import ROUTERS
from service.settings import Settings, get_settings
from service.storage.client import connect, wait_until_reachable
from service.storage.model_storage import ModelStorage

__all__ = ["create_app", "open_runtime"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Streaming online learning for imbalanced classification (fraud, abuse, failures).

Send labeled events to `POST /learn`; the learner keeps class-frequency estimates in Redis,
rescales each class's gradient by smoothed factors and updates the model incrementally.
`/predict` serves calibrated probabilities; `/drift`, `/state` and `/metrics` watch it.
"""


@asynccontextmanager
async def open_runtime(
    settings: Settings, metrics: ServiceMetrics, *, learn: bool
) -> AsyncIterator[Runtime]:
    """Everything one process needs, started in order and stopped in reverse.

    learn: run the learner (restore + replay + loop); otherwise serve checkpoints only,
    hot-reloading each new one.
    """
    import torch

    # Micro-batches are small: intra-op threads only contend (10x slower on a busy 2-core box).
    torch.set_num_threads(settings.torch_threads)
    log_startup(log, settings, redis="embedded" if settings.redis_url is None else "external")
    rt = Runtime(settings, metrics)
    url = settings.redis_url
    if url is None:
        from service.storage.embedded_server import EmbeddedRedis

        rt.embedded = EmbeddedRedis(data_dir=settings.data_dir / "redis")
        # On this (main) thread: the child then gets SIGTERM if this process dies, even by kill -9.
        url = rt.embedded.start()
        log.info("embedded Redis-protocol server at %s", url)
    block_s = settings.batch_max_wait_ms / 1000.0
    rt.redis = connect(
        url, decode_responses=False, socket_connect_timeout=5.0, socket_timeout=block_s + 10.0
    )
    try:
        await wait_until_reachable(rt.redis, url)
        rt.rate_limiter = RateLimiter.from_settings(rt.redis, settings)
        rt.storage = ModelStorage(
            rt.redis, settings.model_name, len(settings.classes), settings.idempotency_ttl_s
        )
        if learn:
            rt.learner = Learner(rt)
            await rt.learner.start()
            rt.tasks.append(asyncio.create_task(rt.learner.run(), name="learner"))
        else:
            await rt.load_checkpoint_into_runtime()
            rt.tasks.append(asyncio.create_task(VersionWatcher(rt).run(), name="version-watcher"))
        from service.status import run_history

        rt.tasks.append(asyncio.create_task(run_history(rt), name="status-history"))
        yield rt
    finally:
        await _close(rt)


async def _close(rt: Runtime) -> None:
    if rt.learner is not None:
        rt.learner.stop()
    for task in rt.tasks:
        if task.get_name() != "learner":
            task.cancel()
    for task in rt.tasks:
        try:
            await asyncio.wait_for(task, timeout=30.0)
        except (asyncio.CancelledError, TimeoutError):
            pass
    if rt.learner is not None:
        try:
            await rt.learner.finish()
        except Exception:
            log.exception("final checkpoint failed; pending entries will be replayed on restart")
    rt.waiters.fail_all("service: shutting down")
    try:
        await rt.redis.aclose()
    except Exception:  # pragma: no cover - closing a dead connection
        pass
    if rt.embedded is not None:
        await asyncio.to_thread(rt.embedded.stop)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with open_runtime(settings, app.state.metrics, learn=settings.role == "all") as rt:
        app.state.runtime = rt
        # Start-up objects live as long as the process: keep them out of GC passes.
        gc.collect()
        gc.freeze()
        log_event(log, "ready", "service ready", model_version=rt.model_version, role=settings.role)
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
        version="0.1.0",
        description=_DESCRIPTION,
        lifespan=_lifespan,
        default_response_class=ORJSONResponse,
    )
    metrics = ServiceMetrics()
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runtime = None
    metrics.attach_model(lambda: _view(app))
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware, http_metrics=metrics.http, excluded_paths=["/metrics"])
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _view(app: FastAPI) -> dict[str, Any] | None:
    rt: Runtime | None = app.state.runtime
    return None if rt is None else rt.model_view()


def _openapi(app: FastAPI) -> dict[str, Any]:
    """Routes read raw bodies (orjson, size limit), so their request schemas are added here."""
    if app.openapi_schema:
        return app.openapi_schema
    from service.http.schemas import LearnBatch, LearnEvent, PredictBatch

    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    _, defs = models_json_schema(
        [(LearnEvent, "validation"), (LearnBatch, "validation"), (PredictBatch, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    app.openapi_schema = schema
    return schema
