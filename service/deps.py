"""What routes depend on: the per-app `Runtime` and `Annotated` aliases to inject it.

`Runtime` holds the live objects of one app or worker: settings, Redis client and `ModelStorage`,
the served `StreamTrainer` (swapped whole on a hot reload), the version counters, the
learner and the waiters of `POST /learn?wait=true`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from typing import TYPE_CHECKING, Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, Header, Request

from service.errors import NotReady, PayloadTooLarge, Unauthorized
from service.http.schemas import ValidationContext
from service.learner_loop import AppliedWaiters
from service.observability.prometheus import ServiceMetrics
from service.settings import Settings
from service.storage.model_storage import ModelStorage

if TYPE_CHECKING:
    from models.trainer import StreamTrainer
    from service.learner_loop import Learner
    from service.ratelimit import RateLimiter
    from service.storage.embedded_server import EmbeddedRedis

__all__ = [
    "API_KEY_PARAMETER",
    "ApiKey",
    "ReadKey",
    "Rt",
    "Runtime",
    "check_key",
    "read_body",
    "require_api_key",
    "require_read_key",
    "runtime_of",
]

log = logging.getLogger(__name__)


class Runtime:
    """Live state of one app (or worker); built and torn down by `service.app.open_runtime`."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.classes = list(settings.classes)
        self.ctx = ValidationContext(self.classes, settings.max_features, settings.max_batch_events)
        self.waiters = AppliedWaiters()
        self.embedded: EmbeddedRedis | None = None
        self.redis: aioredis.Redis
        self.storage: ModelStorage
        self.trainer: StreamTrainer | None = None
        self.learner: Learner | None = None
        self.rate_limiter: RateLimiter | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        # The learner steps in a worker thread (the event loop keeps serving meanwhile);
        # everything that reads or writes the model holds this lock.
        self.model_lock = threading.Lock()
        self.model_version = 0  # learner updates applied to the served model
        self.checkpoint_version = 0  # checkpoints written (the store's counter)
        self.checkpoint_time: float | None = None
        self.last_step: Any = None
        # Operations (service/shadows.py, production.py, status.py, versions.py).
        from service.production import ProductionScorer
        from service.shadows import Shadows
        from service.status import History

        self.champion_strategy: str = settings.strategy  # a promotion or rollback changes it
        self.shadows = Shadows(self)
        self.production = ProductionScorer(self.classes, settings.metrics_window)
        self.history = History(settings.history_size)

    def require_trainer(self) -> StreamTrainer:
        if self.trainer is None:
            raise NotReady("model: not loaded yet")
        return self.trainer

    def predict(self, features: list[dict[str, Any]]) -> tuple[Any, Any, int]:
        """(calibrated probabilities, labels, model version) from the served model."""
        trainer = self.require_trainer()
        with self.model_lock:
            probs, labels = trainer.predict(features)
            return probs, labels, self.model_version

    def trainer_config(self, strategy: str | None = None) -> Any:
        """The settings' TrainerConfig with `strategy` (default: the serving one)."""
        from service.shadows import config_for

        name = strategy or self.champion_strategy
        return config_for(self.settings.trainer_config(), self.settings.strategy, name)

    def new_trainer(self) -> StreamTrainer:
        from models.trainer import StreamTrainer

        return StreamTrainer(self.trainer_config())

    async def load_checkpoint_into_runtime(self) -> dict[str, Any] | None:
        """Serve the latest checkpoint (or a fresh model if none); returns its meta or None."""
        from models.trainer import StreamTrainer

        loaded = await self.storage.checkpoints.load()
        if loaded is None:
            if self.trainer is None:
                self.trainer = self.new_trainer()
                await self.shadows.load(self.champion_strategy)
            return None
        data, meta = loaded
        self.champion_strategy = str(meta.get("strategy") or self.settings.strategy)
        try:
            trainer = StreamTrainer.from_bytes(data, self.trainer_config())
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ValueError(
                f"invalid setting: the checkpoint of model {self.settings.model_name!r} does not "
                f"fit the current settings (classes, network, hidden, hash_bits must not change; "
                f"use another STREAMBALANCE_MODEL_NAME): {exc}"
            ) from exc
        self.trainer = trainer
        if meta.get("production"):
            self.production.load_state_dict(meta["production"])
        await self.shadows.load(self.champion_strategy)
        self.model_version = int(meta.get("model_version", 0))
        self.checkpoint_version = int(meta.get("version", 0))
        self.checkpoint_time = meta.get("time")
        return meta

    async def stream_lag(self) -> int:
        """Stream entries the model has not applied yet. The store counts every entry not yet
        acknowledged; entries this process applied but has not checkpointed are not lag."""
        unacked = await self.storage.stream.lag()
        if self.learner is not None:
            unacked -= self.learner.applied_unacked
        return max(0, unacked)

    def model_view(self) -> dict[str, Any] | None:
        """The served model's numbers, for /state and the Prometheus collector."""
        trainer = self.trainer
        if trainer is None:
            return None
        with self.model_lock:
            return self._model_view(trainer)

    def _model_view(self, trainer: StreamTrainer) -> dict[str, Any]:
        learner = trainer.learner
        step = self.last_step
        return {
            "classes": self.classes,
            "counts": list(trainer.counts),
            "events_learned": int(trainer.events_learned),
            "frequencies": list(trainer.frequencies),
            "factors": list(trainer.factors),
            "grad_norms": None if step is None else list(step.per_class_grad_norm),
            "steps": int(learner.steps),
            "skipped_steps": int(learner.skipped_steps),
            "clipped_steps": int(learner.clipped_steps),
            "quality": trainer.metrics.report(),
            "signals": trainer.drift.signals(),
            "model_version": self.model_version,
            "checkpoint_version": self.checkpoint_version,
            "checkpoint_time": self.checkpoint_time,
            "strategy": self.champion_strategy,
            "production": self.production.report() if self.production.scored else None,
        }


# The hot routes (/learn, /predict) call `runtime_of` and `check_key` themselves instead of
# declaring them as dependencies: FastAPI's dependency solver cost about 35 µs of a
# ~450 µs GET /predict (py-spy, cProfile), more than the check itself. They declare the
# header in OpenAPI with `API_KEY_PARAMETER`. The other routes use the `Depends` forms.
API_KEY_PARAMETER: dict[str, Any] = {
    "name": "X-API-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "the API key, when STREAMBALANCE_API_KEY is set",
}


def runtime_of(request: Request) -> Runtime:
    """The app's live `Runtime`; 503 while the service is starting up."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReady("service: starting up")
    return runtime


def check_key(request: Request, *, read: bool) -> None:
    """When an API key is configured, X-API-Key must match (constant time). Read routes need
    it only when STREAMBALANCE_AUTH_READ_ROUTES is on."""
    settings = request.app.state.settings
    expected = settings.api_key
    if expected is None or (read and not settings.auth_read_routes):
        return
    given = request.headers.get("x-api-key")
    if given is None:
        request.app.state.metrics.events_rejected.labels("unauthorized").inc()
        raise Unauthorized("X-API-Key: header missing (this route needs the API key)")
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        request.app.state.metrics.events_rejected.labels("unauthorized").inc()
        raise Unauthorized("X-API-Key: wrong key")


# Dependencies are `async def`: FastAPI runs plain `def` ones in a worker thread, a thread
# hop (and GIL hand-off) per dependency per request for a few attribute reads.
async def _runtime(request: Request) -> Runtime:
    return runtime_of(request)


Rt = Annotated[Runtime, Depends(_runtime)]


async def require_api_key(
    request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> None:
    """Write routes: when an API key is configured, X-API-Key must match (constant time).

    `x_api_key` is declared so that OpenAPI documents the header; `check_key` reads it."""
    check_key(request, read=False)


ApiKey = Depends(require_api_key)


async def require_read_key(
    request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> None:
    """Read routes: need the key only when STREAMBALANCE_AUTH_READ_ROUTES is on."""
    check_key(request, read=True)


ReadKey = Depends(require_read_key)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (declared or actually streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body: {declared} bytes, at most {limit} allowed")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body: more than {limit} bytes, at most {limit} allowed")
        chunks.append(chunk)
    return b"".join(chunks)
