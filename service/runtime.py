"""`Runtime`: the live components of one model in one process (the API app or the worker).

A container, built and torn down only by `service.lifecycle.open_runtime` (the composition
root) and read by the HTTP layer. Nothing below the HTTP layer imports it: each component was
given the collaborators it uses when it was built. One `Runtime` per model, no module state,
so a process could hold several.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from service.storage.client import memory_info

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from service.ingest.rate_limit import RateLimiter
    from service.learner.loop import LearnerLoop
    from service.learner.waiters import AppliedWaiters
    from service.observability.prometheus import ServiceMetrics
    from service.operations.model_control import ModelControl
    from service.serving.checkpoint_loader import CheckpointLoader
    from service.serving.history import History
    from service.serving.production_scoring import ProductionScorer
    from service.serving.served_model import ServedModel
    from service.serving.shadows import Shadows
    from service.settings import Settings
    from service.storage.embedded_server import EmbeddedRedis
    from service.storage.model_storage import ModelStorage

__all__ = ["Runtime"]


@dataclass(eq=False)
class Runtime:
    """Everything live for one model: settings, Redis, the stores, the served model and its
    companions, the learner (None on an API-only replica) and the background tasks."""

    settings: Settings
    metrics: ServiceMetrics
    redis: aioredis.Redis
    storage: ModelStorage
    served: ServedModel
    shadows: Shadows
    production: ProductionScorer
    history: History
    loader: CheckpointLoader
    waiters: AppliedWaiters
    control: ModelControl
    rate_limiter: RateLimiter | None = None
    learner: LearnerLoop | None = None
    embedded: EmbeddedRedis | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def model_view(self) -> dict[str, Any] | None:
        """The served model's numbers (see `ServedModel.view`), production scores included."""
        return self.served.view(self.production)

    async def refresh_gauges(self) -> None:
        """Read the numbers /metrics shows that live in Redis: stream lag, dead letters, the
        server's memory and evictions. A failed read leaves the last values (a scrape still
        answers with what the process knows)."""
        metrics = self.metrics
        try:
            metrics.stream_lag.set(await self.stream_lag())
            metrics.dead_letters = await self.storage.stream.dead_letters()
        except (RedisError, OSError):
            pass
        try:
            memory = await memory_info(self.redis)
        except (RedisError, OSError):  # e.g. INFO refused by a managed service's ACL
            return
        metrics.redis_memory = {
            "used_memory": memory.used_memory,
            "maxmemory": memory.maxmemory,
            "evicted_keys": memory.evicted_keys,
        }

    async def stream_lag(self) -> int:
        """Stream entries the model has not applied yet. The store counts every entry not yet
        acknowledged; entries this process applied but has not checkpointed are not lag."""
        unacked = await self.storage.stream.lag()
        if self.learner is not None:
            unacked -= self.learner.applied_unacked
        return max(0, unacked)
