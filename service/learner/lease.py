"""One active learner per model: a lease in Redis (redis-py's `Lock`: SET NX PX, a token).

The holder renews it every `ttl_s / 3` and before every checkpoint; a renewal that finds the
lease taken by another learner calls `on_lost` (the learner then stands by and writes
nothing). Released on a graceful shutdown, so a standby or a restart takes over at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import LockError

from service.observability.logs import log_event

__all__ = ["LearnerLease"]

log = logging.getLogger(__name__)


class LearnerLease:
    """The lease of one model's learner.

    key: the lease's Redis key; ttl_s: its time to live; consumer: this learner's name (for
    the logs); on_lost: called once each time a renewal finds the lease gone.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        key: str,
        ttl_s: float,
        consumer: str,
        on_lost: Callable[[], None],
    ) -> None:
        self.ttl_s = ttl_s
        self.consumer = consumer
        self.on_lost = on_lost
        self.held = False
        self._lock = redis.lock(key, timeout=ttl_s, blocking=False, thread_local=False)
        self._last_renew = 0.0

    async def try_acquire(self) -> bool:
        """Take the lease if it is free; True if this learner now leads."""
        if not await self._lock.acquire(blocking=False):
            return False
        self.held = True
        self._last_renew = time.monotonic()
        log_event(log, "leader", "this process is the model's learner", consumer=self.consumer)
        return True

    async def renew(self, force: bool = False) -> bool:
        """Keep the lease; False (after `on_lost`) if another learner took it."""
        if not force and time.monotonic() - self._last_renew < self.ttl_s / 3:
            return True
        try:
            await self._lock.reacquire()
        except LockError:
            # Expired while we were busy: if nobody took it meanwhile, nobody else learned
            # anything, so taking it back with the same token is safe.
            token = self._lock.local.token
            if token is None or not await self._lock.acquire(blocking=False, token=token):
                self.held = False
                self.on_lost()
                return False
        self._last_renew = time.monotonic()
        return True

    async def release(self) -> None:
        """Give the lease up (nothing happens if it is already gone)."""
        self.held = False
        try:
            await self._lock.release()
        except LockError:
            pass
