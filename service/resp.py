"""The service's Redis client: redis-py's asyncio client, with commands packed by hiredis.

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

from functools import cache
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import DataError

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis])
    hiredis = None

__all__ = ["connect", "hiredis_packing"]


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
        pool.connection_class = hiredis_packing(pool.connection_class)
    return client
