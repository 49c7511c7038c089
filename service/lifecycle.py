"""Start-up and shutdown of one process: the composition root.

`open_runtime` builds every component of the model from the settings, gives each the
collaborators it uses, starts them in order and stops them in reverse; `streambalance serve`
(through the app's lifespan) and `streambalance worker` share it.

Start-up: an embedded Redis-protocol server when no `REDIS_URL` is set, the client and the
model's stores, the latest checkpoint (plus a replay of this learner's pending entries),
then the learner task (`learn=True`) or the checkpoint follower (an API-only replica), and
the status history sampler. Shutdown: the learner drains what is already in the stream,
writes a final checkpoint and hands its lease over; the embedded server is stopped last.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.ingest.rate_limit import RateLimiter
from service.learner.follower import CheckpointFollower
from service.learner.loop import LearnerLoop
from service.learner.waiters import AppliedWaiters
from service.observability.logs import log_startup
from service.observability.prometheus import ServiceMetrics
from service.operations.model_control import ModelControl, VersionArchive
from service.runtime import Runtime
from service.serving.checkpoint_loader import CheckpointLoader
from service.serving.history import History, run_history
from service.serving.production_scoring import ProductionScorer
from service.serving.served_model import ServedModel
from service.serving.shadows import Shadows
from service.serving.trainer_factory import TrainerFactory
from service.settings import Settings
from service.storage.client import connect, memory_info, wait_until_reachable
from service.storage.embedded_server import EmbeddedRedis
from service.storage.model_storage import ModelStorage

__all__ = ["assemble", "open_runtime"]

log = logging.getLogger(__name__)


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
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(
            data_dir=settings.data_dir / "redis",
            maxmemory=settings.redis_maxmemory,
            maxmemory_policy=settings.redis_maxmemory_policy,
        )
        # On this (main) thread: the child then gets SIGTERM if this process dies, even by kill -9.
        url = embedded.start()
        log.info("embedded Redis-protocol server at %s", url)
    block_s = settings.batch_max_wait_ms / 1000.0
    redis = connect(
        url, decode_responses=False, socket_connect_timeout=5.0, socket_timeout=block_s + 10.0
    )
    rt: Runtime | None = None
    try:
        await wait_until_reachable(redis, url)
        await _check_eviction_policy(redis)
        rt = assemble(settings, metrics, redis, embedded, learn=learn)
        await _start(rt)
        yield rt
    finally:
        await _close(rt, redis, embedded)


def assemble(
    settings: Settings,
    metrics: ServiceMetrics,
    redis: aioredis.Redis,
    embedded: EmbeddedRedis | None = None,
    *,
    learn: bool,
) -> Runtime:
    """The components of the model `settings` name, wired together (no I/O)."""
    classes = list(settings.classes)
    storage = ModelStorage(redis, settings.model_name, len(classes), settings.idempotency_ttl_s)
    factory = TrainerFactory(settings.trainer_config, settings.strategy)
    served = ServedModel(classes, settings.strategy)
    shadows = Shadows(factory, settings.shadows, storage.checkpoints.shadow_snapshot)
    production = ProductionScorer(classes, settings.metrics_window)
    loader = CheckpointLoader(
        storage.checkpoints, served, shadows, production, factory, settings.model_name
    )
    waiters = AppliedWaiters()
    learner = None
    if learn:
        archive = VersionArchive(storage.checkpoints, served, settings.keep_versions)
        learner = LearnerLoop(
            settings,
            storage,
            served,
            loader,
            shadows,
            production,
            waiters,
            metrics,
            after_checkpoint=[archive.save],
        )
    return Runtime(
        settings=settings,
        metrics=metrics,
        redis=redis,
        storage=storage,
        served=served,
        shadows=shadows,
        production=production,
        history=History(settings.history_size),
        loader=loader,
        waiters=waiters,
        control=ModelControl(served, shadows, storage.checkpoints, factory, learner),
        rate_limiter=RateLimiter.from_settings(redis, settings),
        learner=learner,
        embedded=embedded,
    )


async def _check_eviction_policy(redis: aioredis.Redis) -> None:
    """Warn when the server's policy could evict durable state at its memory limit."""
    try:
        memory = await memory_info(redis)
    except (RedisError, OSError):  # INFO refused (an ACL): nothing to check
        return
    if memory.may_evict_durable_keys:
        log.error(
            "Redis maxmemory-policy is %s: at its memory limit it may evict the event stream, "
            "the EMA or a checkpoint, losing acknowledged events; set volatile-lru (only keys "
            "with a TTL are evicted: stored predictions and idempotency keys)",
            memory.policy,
        )
    elif memory.maxmemory == 0:
        log.warning(
            "Redis has no maxmemory: stored predictions and idempotency keys can grow until "
            "the host runs out of memory; set maxmemory with maxmemory-policy volatile-lru"
        )


async def _start(rt: Runtime) -> None:
    if rt.learner is not None:
        await rt.learner.start()
        rt.tasks.append(asyncio.create_task(rt.learner.run(), name="learner"))
    else:
        await rt.loader.load_latest()
        follower = CheckpointFollower(rt.storage.checkpoints, rt.loader, rt.waiters, rt.metrics)
        rt.tasks.append(asyncio.create_task(follower.run(), name="checkpoint-follower"))
    history = run_history(rt.model_view, rt.history, rt.settings.history_interval_s)
    rt.tasks.append(asyncio.create_task(history, name="status-history"))


async def _close(rt: Runtime | None, redis: aioredis.Redis, embedded: EmbeddedRedis | None) -> None:
    if rt is not None:
        await _stop_components(rt)
    try:
        await redis.aclose()
    except Exception:  # pragma: no cover - closing a dead connection
        pass
    if embedded is not None:
        await asyncio.to_thread(embedded.stop)


async def _stop_components(rt: Runtime) -> None:
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
