"""Per-source rate limit of `POST /learn`: GCRA (a token bucket in one timestamp) in Redis.

Each source (a trusted header set by a gateway, else the configured API key, else the client
address: `service.http.rate_limit.source_of`) has one key, `sb:{<model>}:rl:<digest>`, holding
its theoretical arrival time (TAT). One Lua script (`storage/lua/gcra.lua`) reads, decides and
writes it atomically, so every API replica shares one budget per source and two concurrent
requests cannot both spend the last token. The clock is the Redis server's (`TIME`), so
replicas with skewed clocks agree. The source is stored only as a digest: an API key never
becomes part of a Redis key name.

A request of n events costs n: the limit bounds a source's share of the *stream*, which is
what a poisoning source needs to grow. `rate_per_s` events per second are sustained and up to
`burst` events pass at once; a batch larger than `burst` can never pass and says so.

The arithmetic (`gcra`) is a pure function; the script reproduces it and the tests compare.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from service.errors import RateLimited
from service.storage.keys import Keys
from service.storage.scripts import load_lua

__all__ = ["Decision", "RateLimited", "RateLimiter", "gcra"]


def gcra(
    tat: float | None, now: float, interval: float, burst: int, cost: int
) -> tuple[bool, float, float]:
    """One GCRA decision: (allowed, new TAT, seconds until it would be allowed).

    Times in any one unit (the script uses microseconds). ``tat`` None means a fresh source.
    Retry is ``inf`` for a cost larger than ``burst`` (it can never pass).

    >>> gcra(None, 0.0, 1.0, burst=3, cost=3)        # a full burst at once
    (True, 3.0, 0.0)
    >>> gcra(3.0, 0.0, 1.0, burst=3, cost=1)         # one more must wait one interval
    (False, 3.0, 1.0)
    >>> gcra(3.0, 1.0, 1.0, burst=3, cost=1)
    (True, 4.0, 0.0)
    >>> gcra(None, 0.0, 1.0, burst=3, cost=4)
    (False, 0.0, inf)
    """
    start = now if tat is None else max(tat, now)
    new_tat = start + cost * interval
    allow_at = new_tat - interval * burst
    if allow_at > now:
        return False, start, math.inf if cost > burst else allow_at - now
    return True, new_tat, 0.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float  # 0 when allowed; inf when the cost exceeds the burst
    remaining: int  # events this source could still send right now


class RateLimiter:
    """GCRA limiter of one model; `rate_per_s` events per second, `burst` at once, per source.

    header: name of a trusted request header naming the source (None: API key or address).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        model: str,
        rate_per_s: float,
        burst: int,
        header: str | None = None,
    ) -> None:
        if not (
            isinstance(rate_per_s, int | float) and math.isfinite(rate_per_s) and rate_per_s > 0
        ):
            raise ValueError(f"rate_per_s must be a finite number > 0, got {rate_per_s!r}")
        if not (isinstance(burst, int) and burst >= 1):
            raise ValueError(f"burst must be an int >= 1, got {burst!r}")
        self.redis = redis
        self.model = model
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self.header = header
        self.keys = Keys(model)
        self._interval_us = 1e6 / self.rate_per_s
        self._script = redis.register_script(load_lua("gcra.lua"))

    @classmethod
    def from_settings(cls, redis: aioredis.Redis, settings: Any) -> RateLimiter | None:
        """The limiter the settings ask for, or None when `rate_limit_per_s` is unset or 0."""
        rate = getattr(settings, "rate_limit_per_s", None)
        if not rate:
            return None
        return cls(
            redis,
            settings.model_name,
            rate,
            int(getattr(settings, "rate_limit_burst", 1000)),
            getattr(settings, "rate_limit_header", None),
        )

    def key(self, source: str) -> str:
        """The TAT key of `source`; a digest, so a key or address never appears in Redis."""
        return self.keys.rate(hashlib.blake2b(source.encode(), digest_size=12).hexdigest())

    async def acquire(self, source: str, cost: int = 1, now_s: float | None = None) -> Decision:
        """Spend `cost` events of `source`'s budget if it has them (one round trip).

        now_s: a simulated clock in seconds (tests, replays); None uses the Redis server's.
        """
        if not (isinstance(cost, int) and cost >= 1):
            raise ValueError(f"cost must be an int >= 1, got {cost!r}")
        now = "" if now_s is None else repr(now_s * 1e6)
        allowed, retry_us, remaining = await self._script(
            keys=[self.key(source)], args=[repr(self._interval_us), self.burst, cost, now]
        )
        retry = float(retry_us)
        return Decision(
            bool(int(allowed)), math.inf if retry < 0 else retry / 1e6, max(0, int(remaining))
        )

    async def check(self, kind: str, identity: str, cost: int) -> None:
        """Raise `RateLimited` (429 + Retry-After) when source `kind:identity` is over budget.

        The message names the kind of source, never its value (it may be the API key)."""
        decision = await self.acquire(f"{kind}:{identity}", cost)
        if decision.allowed:
            return
        if math.isinf(decision.retry_after_s):
            raise RateLimited(
                f"rate limit: a batch of {cost} events exceeds the burst of {self.burst} "
                f"events per {kind}; send smaller batches",
                decision.retry_after_s,
            )
        raise RateLimited(
            f"rate limit: this {kind} may send {self.rate_per_s:g} events/s "
            f"(burst {self.burst}); retry after {decision.retry_after_s:.2f} s",
            decision.retry_after_s,
        )
