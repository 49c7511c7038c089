"""The service's Redis client: the one place a connection is made.

`connect(url)` returns redis-py's asyncio client with commands packed by hiredis;
`wait_until_reachable` is the start-up retry. A cluster client chosen by URL belongs here too.

redis-py's synchronous client packs commands with hiredis when it is installed; its asyncio
connections always use the pure-Python packer, which encodes every argument in Python. The
hot commands carry hundreds of arguments (a 500-event `POST /learn`, a 100-event
`POST /predict` with two keys and two values per prediction), and packing them took longer
than everything Redis did with them. `hiredis.pack_command` writes the same bytes in C.

`connect` swaps the pool's connection class for a subclass that packs with hiredis (the
logic of redis-py's own `HiredisRespSerializer`); replies are parsed as before. Without
hiredis the client is redis-py's, unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import DataError, RedisError

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis])
    hiredis = None  # type: ignore[assignment]

__all__ = [
    "RedisMemory",
    "connect",
    "decode_text",
    "hiredis_packing",
    "memory_info",
    "ping",
    "wait_until_reachable",
]

log = logging.getLogger(__name__)


class _HiredisPacking:
    """Mixin for a redis-py asyncio connection: `pack_command` through hiredis."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py: a command name with spaces ("CONFIG GET") is several arguments.
        first = args[0]
        if isinstance(first, str):
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            pass
        # Rare: hiredis takes no bytearray, which redis-py does; bool and None both refuse.
        args = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise DataError(f"{exc} Got: {[type(a).__name__ for a in args]}") from None


@cache
def hiredis_packing(connection_class: type) -> type:
    """`connection_class` with commands packed by hiredis (one class per base, cached).

    >>> from redis.asyncio.connection import Connection
    >>> fast = hiredis_packing(Connection)
    >>> b"".join(fast().pack_command("SET", "k", 1.5)) == b"".join(
    ...     Connection().pack_command("SET", "k", 1.5))
    True
    """
    return type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), {})


def connect(url: str, **kwargs: Any) -> aioredis.Redis:
    """`redis.asyncio.from_url(url, **kwargs)` whose connections pack with hiredis."""
    client = aioredis.from_url(url, **kwargs)
    if hiredis is not None:
        pool = client.connection_pool
        # A class is hashable; mypy reads AbstractConnection's __hash__ as unhashable.
        pool.connection_class = hiredis_packing(pool.connection_class)  # type: ignore[arg-type]
    return client


async def wait_until_reachable(
    client: aioredis.Redis, url: str, attempts: int = 10, delay_s: float = 0.5
) -> None:
    """Bounded retries at start-up, each failure logged with how many remain; then re-raise."""
    for left in range(attempts - 1, -1, -1):
        try:
            await client.ping()
            return
        except (RedisError, OSError) as exc:
            if left == 0:
                raise ConnectionError(f"REDIS_URL: cannot reach Redis at {url}: {exc}") from exc
            log.warning("Redis at %s not reachable (%s); %d attempts left", url, exc, left)
            await asyncio.sleep(delay_s)


async def ping(client: aioredis.Redis) -> bool:
    """True when Redis answers; False on any connection or server error."""
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False


@dataclass(frozen=True)
class RedisMemory:
    """The server's memory as `INFO memory stats` reports it.

    used_memory: bytes allocated; maxmemory: the budget (0: none); policy: what happens at the
    budget; evicted_keys: keys evicted since the server started."""

    used_memory: int
    maxmemory: int
    policy: str
    evicted_keys: int

    @property
    def may_evict_durable_keys(self) -> bool:
        """An `allkeys-*` policy can evict the stream, the EMA or a checkpoint.

        >>> RedisMemory(0, 1 << 30, "allkeys-lru", 0).may_evict_durable_keys
        True
        """
        return self.policy.startswith("allkeys")


async def memory_info(client: aioredis.Redis) -> RedisMemory:
    """The server's memory and evictions, in one round trip (INFO works on managed Redis
    services that disable CONFIG)."""
    info = await client.info("memory", "stats")
    policy = info.get("maxmemory_policy", "")
    return RedisMemory(
        used_memory=int(info.get("used_memory", 0)),
        maxmemory=int(info.get("maxmemory", 0)),
        policy=decode_text(policy) if isinstance(policy, bytes | str) else str(policy),
        evicted_keys=int(info.get("evicted_keys", 0)),
    )


def decode_text(value: bytes | str) -> str:
    """A reply as text: the service's clients run with decode_responses=False (payloads are
    orjson bytes), so ids and names come back as bytes.

    >>> decode_text(b"1-0"), decode_text("1-0")
    ('1-0', '1-0')
    """
    return value.decode() if isinstance(value, bytes) else value
