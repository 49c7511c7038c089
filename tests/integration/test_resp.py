"""service.storage.client: the service's client packs commands with hiredis; the server must
see the same commands redis-py's own packer would send, and bad arguments fail the same way."""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import DataError

from service.storage import client as resp
from service.storage.model_storage import ModelStorage


def test_hiredis_packing_writes_redis_py_bytes() -> None:
    fast, plain = resp.hiredis_packing(Connection)(), Connection()
    commands = [
        ("SET", "k", b"\x00bytes\xff", 7, 1.5, 1e20, -0.0, "ünï"),
        ("CONFIG GET", "maxmemory"),  # a multi-word command name is split, as redis-py does
        (b"CLIENT SETNAME", b"x"),
        ("EVALSHA", "a" * 40, 2, "k1", "k2", *[orjson.dumps({"x": i}) for i in range(300)]),
        ("SET", bytearray(b"ba"), memoryview(b"mv")),
    ]
    for command in commands:
        assert b"".join(fast.pack_command(*command)) == b"".join(plain.pack_command(*command))
    for bad in (None, True, [1]):
        with pytest.raises(DataError):
            fast.pack_command("SET", "k", bad)
        with pytest.raises(DataError):
            plain.pack_command("SET", "k", bad)


async def test_service_client_talks_to_the_real_server_through_hiredis(redis_url: str) -> None:
    client = resp.connect(redis_url, decode_responses=False)
    try:
        pool_class = client.connection_pool.connection_class
        assert issubclass(pool_class, UnixDomainSocketConnection)  # the embedded server's
        assert pool_class.pack_command is resp._HiredisPacking.pack_command
        assert await client.set("resp:k", "ünï") and await client.get("resp:k") == "ünï".encode()
        assert "maxmemory" in await client.config_get("maxmemory")
        store = ModelStorage(client, "resp", 2, idempotency_ttl_s=60)
        await store.stream.ensure_group()
        events = [{"features": {"x": float(i)}, "label": i % 2, "id": f"e{i}"} for i in range(500)]
        result = await store.stream.append(events)  # ~1,000 arguments in one EVALSHA
        assert (result.accepted, result.duplicates) == (500, 0)
        again = await store.stream.append(events[:10])
        assert (again.accepted, again.duplicates) == (0, 10)
        (entry,) = await store.stream.read_batch("c1", count=10, block_ms=0)
        assert entry[1] == events
    finally:
        await client.aclose()
