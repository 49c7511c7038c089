"""One learner step on one micro-batch: the class-frequency EMA in Redis, then test-then-train.

The EMA Lua script applies the labels in order and returns the frequencies;
`StreamTrainer.process` predicts first (prequential metrics, drift), moves the factors and
takes the gradient step. Then the shadow challengers learn the same batch with the same
frequencies, late labels score what was served, and the model version moves on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.learner.ledger import Position
from service.observability.logs import log_event
from service.observability.prometheus import ServiceMetrics
from service.serving.production_scoring import ProductionScorer
from service.serving.served_model import ServedModel
from service.serving.shadows import Shadows
from service.settings import Settings
from service.storage.frequency_store import FrequencyStore
from service.storage.redis_errors import SERVER_STATE_ERRORS, describe_redis_error

__all__ = ["LearnerStep"]

log = logging.getLogger(__name__)
T = TypeVar("T")
# Waited out, never counted against the batch: Redis unreachable, or refusing work in a state
# that passes (out of memory, a read-only replica, a moved slot, loading). Counting them as a
# failed batch would send acknowledged entries to the dead letters once the state lasts
# longer than CLAIM_IDLE_MS x MAX_DELIVERIES.
_WAIT_OUT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    *SERVER_STATE_ERRORS,
)


class LearnerStep:
    """Learns one micro-batch at a time; `await step(events)` is False if the batch failed.

    position: its EMA state is updated after every EMA call (a checkpoint records it);
    stopping: true once the learner is shutting down (Redis errors are then not retried).
    """

    def __init__(
        self,
        settings: Settings,
        frequencies: FrequencyStore,
        served: ServedModel,
        shadows: Shadows,
        production: ProductionScorer,
        metrics: ServiceMetrics,
        position: Position,
        stopping: Callable[[], bool],
    ) -> None:
        self.frequencies = frequencies
        self.served = served
        self.shadows = shadows
        self.production = production
        self.metrics = metrics
        self.position = position
        self.stopping = stopping
        self.decay = 2.0 ** (-1.0 / settings.half_life)
        self.time_half_life = settings.time_half_life
        self.floor = settings.floor
        self.max_skew_s = settings.timestamp_max_skew_s

    async def __call__(self, chunk: list[dict[str, Any]]) -> bool:
        """One micro-batch: EMA in Redis, then test-then-train. False if it failed."""
        if not chunk:
            return True
        features = [e["features"] for e in chunk]
        labels = [int(e["label"]) for e in chunk]
        # The API refuses timestamps ahead of the clock; an entry written by another producer
        # (or before that check) is clamped, so the time-decayed EMA's last_time never moves
        # beyond now + skew (past it every later event would decay nothing, for good).
        ceiling = time.time() + self.max_skew_s
        timestamps = [min(float(e["timestamp"]), ceiling) for e in chunk]
        started = time.perf_counter()
        try:
            frequencies, state = await self._redis_retry(
                lambda: self.frequencies.update(
                    labels, timestamps, self.decay, self.time_half_life, self.floor
                )
            )
        except _WAIT_OUT:
            raise  # only while stopping: the entries stay pending and are replayed
        except RedisError:
            self.metrics.learner_errors.labels("redis").inc()
            log.exception("learner: the EMA update failed for %d events", len(chunk))
            return False
        self.position.ema_state = state
        served = self.served
        served.require_trainer()
        try:
            # On the event loop, not a thread: the step is mostly GIL-holding Python (metrics,
            # drift), so a thread only adds switch-interval stalls to every request.
            report = served.learn(features, labels, timestamps, frequencies)
        except Exception:
            # A poison batch (a bug: the API validated these events). The EMA already
            # counted its labels; the entries stay pending for a retry, then the dead letters.
            self.metrics.learner_errors.labels("process").inc()
            log.exception("learner: a micro-batch of %d events failed", len(chunk))
            return False
        self.metrics.learner_step.observe(time.perf_counter() - started)
        self.metrics.learner_batch.observe(len(chunk))
        # Operations: challengers learn the same batch; late labels score what was served.
        self.shadows.process(features, labels, timestamps, frequencies)
        self.production.observe(chunk)
        served.record_step(report)
        if report.new_drift:
            log_event(
                log,
                "drift",
                "drift detected: " + ", ".join(report.new_drift),
                signals=report.new_drift,
                model_version=served.model_version,
            )
        return True

    async def _redis_retry(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry while Redis is unreachable or refusing work: a batch must not be half applied."""
        backoff = 0.1
        while True:
            try:
                return await call()
            except _WAIT_OUT as exc:
                if self.stopping():
                    raise
                self.metrics.learner_errors.labels("redis").inc()
                log.warning(
                    "learner: %s; retrying in %.1f s", describe_redis_error(exc)[1], backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
