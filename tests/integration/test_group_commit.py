"""Group commit on the real embedded server: concurrent appends and prediction saves share
round trips, yet every caller gets exactly its own result (and its own errors)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from service.storage.group_commit import GroupCommit
from service.storage.model_storage import ModelStorage


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> ModelStorage:
    store = ModelStorage(redis_client, "fraud", 2, idempotency_ttl_s=60)
    await store.stream.ensure_group()
    return store


class _CountingGroup(GroupCommit):
    """Counts round trips (flushes) and the commands each carried."""

    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__(redis)
        self.sizes: list[int] = []

    async def _send(self, commands: list) -> list:
        self.sizes.append(len(commands))
        return await super()._send(commands)


def _event(i: int, label: int = 0, with_id: bool = True) -> dict:
    event: dict = {"features": {"amount": float(i)}, "label": label}
    if with_id:
        event["id"] = f"tx-{i}"
    return event


async def test_concurrent_appends_share_round_trips_and_keep_their_own_results(
    store: ModelStorage, redis_client: aioredis.Redis
) -> None:
    group = store.scripts.group = _CountingGroup(redis_client)
    # 20 concurrent requests: ids 0..9 twice (the second of each pair is a duplicate,
    # whichever runs second), plus one request with an id-less event.
    requests = [[_event(i % 10)] for i in range(20)] + [[_event(99, 1, with_id=False)]]
    results = await asyncio.gather(*(store.stream.append(r) for r in requests))
    assert len(group.sizes) < len(requests)  # batched: fewer round trips than requests
    assert sum(group.sizes) == len(requests)  # every request sent once
    assert sum(r.accepted for r in results) == 11
    assert sum(r.duplicates for r in results) == 10
    for i in range(10):  # of each pair exactly one was stored
        pair = [results[i], results[i + 10]]
        assert sorted((r.accepted, r.duplicates) for r in pair) == [(0, 1), (1, 0)]
    stored = await redis_client.xrange(store.keys.events)
    entry_ids = [e.decode() for e, _ in stored]
    assert sorted(r.entry_id for r in results if r.entry_id) == sorted(entry_ids)
    assert len(set(entry_ids)) == 11
    payloads = {e.decode(): orjson.loads(f[b"e"]) for e, f in stored}
    for request, result in zip(requests, results, strict=True):
        if result.entry_id is not None:
            assert payloads[result.entry_id] == request


async def test_append_loads_the_script_when_the_server_lost_it(
    store: ModelStorage, redis_client: aioredis.Redis
) -> None:
    await store.stream.append([_event(1)])
    await redis_client.script_flush()
    results = await asyncio.gather(
        store.stream.append([_event(2)]), store.stream.append([_event(3)])
    )
    assert [r.accepted for r in results] == [1, 1]
    assert await redis_client.xlen(store.keys.events) == 3


async def test_one_callers_error_does_not_fail_the_others(redis_client: aioredis.Redis) -> None:
    group = _CountingGroup(redis_client)
    await redis_client.set("sb:test:str", b"x")
    good_a = group.execute([("SET", "sb:test:a", b"1"), ("GET", "sb:test:a")])
    bad = group.execute([("LPUSH", "sb:test:str", b"y")])  # WRONGTYPE
    good_b = group.execute([("INCR", "sb:test:n")])
    a, b, c = await asyncio.gather(good_a, bad, good_b, return_exceptions=True)
    assert group.sizes == [4]
    assert a == [True, b"1"]
    assert isinstance(b, ResponseError) and "WRONGTYPE" in str(b)
    assert c == [1]
    # alone (no pipeline), a command error is still raised to its caller
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await group.execute([("LPUSH", "sb:test:str", b"y")])


async def test_concurrent_prediction_saves_are_one_round_trip(
    store: ModelStorage, redis_client: aioredis.Redis
) -> None:
    group = store.scripts.group = _CountingGroup(redis_client)
    await asyncio.gather(
        *(store.predictions.save_many([(f"p{i}", {"amount": i})], ttl_s=30) for i in range(8))
    )
    assert group.sizes == [8]
    assert 0 < await redis_client.ttl(store.keys.pred("p0")) <= 30
    for i in range(8):
        assert await store.predictions.take(f"p{i}") == {"amount": i}
        assert await store.predictions.take(f"p{i}") is None


async def test_a_cancelled_caller_does_not_stop_the_others(redis_client: aioredis.Redis) -> None:
    group = GroupCommit(redis_client)
    first = asyncio.ensure_future(group.execute([("INCR", "sb:test:c")]))
    second = asyncio.ensure_future(group.execute([("INCR", "sb:test:c")]))
    await asyncio.sleep(0)  # both queued, the flush scheduled but not run yet
    assert len(group._queue) == 2
    first.cancel()
    assert await second == [1]  # the cancelled request's command was never sent
    assert await group.execute([("GET", "sb:test:c")]) == [b"1"]
    assert group._flusher is None  # idle again: the next caller starts a new flush


async def test_a_batch_of_predictions_is_one_command_even_after_a_script_flush(
    store: ModelStorage, redis_client: aioredis.Redis
) -> None:
    """100 predictions with what was served: one script call, not 200 SETs (redis-py's
    per-command cost dominated POST /predict); a server that lost its scripts still works."""
    group = store.scripts.group = _CountingGroup(redis_client)
    items = [(f"q{i}", {"amount": float(i)}) for i in range(100)]
    served = [{"label": 0, "t": 1.0, "i": i} for i in range(100)]
    await store.predictions.save_many(items, ttl_s=30, served=served)
    assert group.sizes == [1]
    await redis_client.script_flush()
    await store.predictions.save_many([("late", {"amount": -1.0})], ttl_s=30, served=[{"i": -1}])
    for i in (0, 99):
        assert 0 < await redis_client.ttl(store.keys.served(f"q{i}")) <= 30
        assert await store.predictions.take_with_served(f"q{i}") == (
            {"amount": float(i)},
            served[i],
        )
    assert await store.predictions.take_with_served("late") == ({"amount": -1.0}, {"i": -1})
