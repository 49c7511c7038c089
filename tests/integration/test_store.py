"""Model storage on the real embedded server: stream, dedupe, PEL recovery, checkpoints,
predictions."""

from __future__ import annotations

import asyncio
import random
import time

import orjson
import pytest
import redis.asyncio as aioredis

from service.storage.event_stream import AppendResult
from service.storage.keys import GROUP, Keys
from service.storage.model_storage import ModelStorage


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> ModelStorage:
    store = ModelStorage(redis_client, "fraud", 2, idempotency_ttl_s=60)
    await store.stream.ensure_group()
    return store


def _event(i: int | None, label: int = 0) -> dict:
    event: dict = {"features": {"amount": float(i or 0), "mcc": "5411"}, "label": label}
    if i is not None:
        event["id"] = f"tx-{i}"
    return event


async def _all_events(redis_client: aioredis.Redis, keys: Keys) -> list[dict]:
    entries = await redis_client.xrange(keys.events)
    return [event for _, fields in entries for event in orjson.loads(fields[b"e"])]


async def test_append_stores_one_entry_and_drops_duplicate_ids(
    store: ModelStorage, redis_client: aioredis.Redis
) -> None:
    first = await store.stream.append(
        [_event(1), _event(2, 1), _event(1), _event(None), _event(None)]
    )
    assert (first.accepted, first.duplicates) == (4, 1)
    assert first.entry_id is not None
    again = await store.stream.append([_event(2), _event(3), _event(None)])
    assert (again.accepted, again.duplicates) == (2, 1)
    only_dupes = await store.stream.append([_event(1), _event(3)])
    assert only_dupes == AppendResult(0, 2, None)
    assert await store.stream.append([]) == AppendResult(0, 0, None)
    numeric = await store.stream.append([{"id": 7, "label": 0}, {"id": "7", "label": 1}])
    assert (numeric.accepted, numeric.duplicates) == (1, 1)

    entries = await redis_client.xrange(store.keys.events)
    assert [entry_id.decode() for entry_id, _ in entries] == [
        first.entry_id,
        again.entry_id,
        numeric.entry_id,
    ]
    ids = [e.get("id") for e in await _all_events(redis_client, store.keys)]
    assert ids == ["tx-1", "tx-2", None, None, "tx-3", None, 7]
    # the idempotency key names the entry that holds the event and expires with the TTL
    assert await redis_client.get(store.keys.idem("tx-1")) == first.entry_id.encode()
    assert 0 < await redis_client.ttl(store.keys.idem("tx-1")) <= 60


async def test_concurrent_appends_of_the_same_ids_store_each_once(
    store: ModelStorage, redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = list(range(200))
    clients = [aioredis.from_url(redis_url) for _ in range(8)]
    try:

        async def send(client: aioredis.Redis, seed: int) -> AppendResult:
            own = ModelStorage(client, "fraud", 2, idempotency_ttl_s=60)
            order = ids[:]
            random.Random(seed).shuffle(order)
            results = [
                await own.stream.append([_event(i) for i in order[j : j + 25]])
                for j in range(0, 200, 25)
            ]
            return AppendResult(
                sum(r.accepted for r in results), sum(r.duplicates for r in results), None
            )

        results = await asyncio.gather(*(send(c, s) for s, c in enumerate(clients)))
    finally:
        for client in clients:
            await client.aclose()
    assert sum(r.accepted for r in results) == 200
    assert sum(r.duplicates for r in results) == 7 * 200
    stored = sorted(int(e["id"][3:]) for e in await _all_events(redis_client, store.keys))
    assert stored == ids


async def test_read_pending_ack_and_lag(store: ModelStorage) -> None:
    a = await store.stream.append([_event(1), _event(2, 1)])
    b = await store.stream.append([_event(3)])
    c = await store.stream.append([_event(4)])
    assert await store.stream.lag() == 3
    batch = await store.stream.read_batch("learner-1", count=2, block_ms=0)
    assert [entry_id for entry_id, _ in batch] == [a.entry_id, b.entry_id]
    assert [e["id"] for e in batch[0][1]] == ["tx-1", "tx-2"]
    assert batch[0][1][1]["features"] == {"amount": 2.0, "mcc": "5411"}
    assert await store.stream.lag() == 3  # delivered but not acknowledged still counts
    assert await store.stream.pending("learner-1") == batch
    assert await store.stream.pending("learner-2") == []

    await store.checkpoints.save(b"ckpt", {"stream_id": a.entry_id}, [a.entry_id])
    assert [entry_id for entry_id, _ in await store.stream.pending("learner-1")] == [b.entry_id]
    assert await store.stream.lag() == 2
    rest = await store.stream.read_batch("learner-1", count=10, block_ms=0)
    assert [entry_id for entry_id, _ in rest] == [c.entry_id]
    assert await store.stream.read_batch("learner-1", count=10, block_ms=0) == []


async def test_read_batch_blocks_at_most_block_ms(store: ModelStorage) -> None:
    began = time.perf_counter()
    assert await store.stream.read_batch("learner-1", count=10, block_ms=100) == []
    assert 0.08 <= time.perf_counter() - began < 2.0


async def test_group_created_late_still_delivers_earlier_entries(
    redis_client: aioredis.Redis,
) -> None:
    store = ModelStorage(redis_client, "late", 2)
    early = await store.stream.append([_event(1)])
    await store.stream.ensure_group()
    await store.stream.ensure_group()  # idempotent
    assert [entry_id for entry_id, _ in await store.stream.read_batch("w", 10, 0)] == [
        early.entry_id
    ]


async def test_claim_stale_takes_over_then_dead_letters(store: ModelStorage) -> None:
    entries = [(await store.stream.append([_event(i)])).entry_id for i in range(3)]
    await store.stream.read_batch("dead-worker", count=10, block_ms=0)  # delivery 1
    assert await store.stream.claim_stale("standby", min_idle_ms=60_000, max_deliveries=2) == []

    claimed = await store.stream.claim_stale(
        "standby", min_idle_ms=0, max_deliveries=2
    )  # delivery 2
    assert [entry_id for entry_id, _ in claimed] == entries
    assert claimed[0][1][0]["id"] == "tx-0"
    assert await store.stream.pending("dead-worker") == []
    assert [entry_id for entry_id, _ in await store.stream.pending("standby")] == entries

    # reading one's own PEL (a restart replay) is a delivery too: 3 so far. The standby dies:
    # delivery 4 exceeds max_deliveries=2, so the entries become dead letters
    assert await store.stream.claim_stale("third", min_idle_ms=0, max_deliveries=2) == []
    assert await store.stream.dead_letters() == 3
    assert await store.stream.pending("standby") == [] and await store.stream.pending("third") == []
    assert await store.stream.lag() == 0
    dead = await store.redis.xrange(store.keys.dead)
    assert [fields[b"entry"].decode() for _, fields in dead] == entries
    assert dead[0][1][b"deliveries"] == b"4"
    assert orjson.loads(dead[0][1][b"e"])[0]["id"] == "tx-0"
    with pytest.raises(ValueError, match="max_deliveries must be >= 1, got 0"):
        await store.stream.claim_stale("x", 0, 0)


async def test_checkpoint_is_one_transaction_and_published(
    store: ModelStorage, redis_client: aioredis.Redis
) -> None:
    assert await store.checkpoints.load() is None
    assert await store.checkpoints.latest_version() == 0
    a = await store.stream.append([_event(1)])
    b = await store.stream.append([_event(2)])
    await store.stream.read_batch("w", 10, 0)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(store.keys.channel)
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation

    ema = {"m": [0.25, 0.5], "norm": 0.75, "count": 2, "last_time": None}
    meta = {"stream_id": b.entry_id, "events_learned": 2, "time": 1.5, "ema": ema}
    assert await store.checkpoints.save(b"\x00model-1", meta, [a.entry_id, b.entry_id]) == 1
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
    assert message is not None and message["data"] == b"1"
    await pubsub.aclose()

    data, loaded = await store.checkpoints.load()
    assert data == b"\x00model-1"
    assert loaded == {**meta, "version": 1}
    assert await store.stream.pending("w") == []
    assert await store.checkpoints.latest_version() == 1
    with pytest.raises(ValueError, match="must not set 'version'"):
        await store.checkpoints.save(b"x", {"version": 7}, [])
    assert await store.checkpoints.latest_version() == 1


async def test_checkpoint_readers_never_see_a_half_written_one(store: ModelStorage) -> None:
    # a reader racing the writer always sees bytes and meta of the same checkpoint
    seen: list[tuple[bytes, dict]] = []
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            loaded = await store.checkpoints.load()
            if loaded is not None:
                seen.append(loaded)

    task = asyncio.create_task(reader())
    for n in range(1, 101):
        version = await store.checkpoints.save(f"model-{n}".encode(), {"n": n}, [])
        assert version == n
        await asyncio.sleep(0)
    stop.set()
    await task
    assert seen
    for data, meta in seen:
        assert data == f"model-{meta['n']}".encode()
        assert meta["version"] == meta["n"]


async def test_checkpoint_trims_only_acknowledged_entries(
    store: ModelStorage, redis_client: aioredis.Redis
) -> None:
    ids = [(await store.stream.append([_event(i)])).entry_id for i in range(5)]
    await store.stream.read_batch("w", count=3, block_ms=0)  # ids 0..2 delivered
    await store.checkpoints.save(b"c1", {}, ids[:2])  # 0,1 acknowledged; 2 pending; 3,4 new
    remaining = [entry_id.decode() for entry_id, _ in await redis_client.xrange(store.keys.events)]
    assert remaining == ids[2:]
    assert await store.stream.lag() == 3
    assert [entry_id for entry_id, _ in await store.stream.pending("w")] == [ids[2]]
    await store.stream.read_batch("w", count=10, block_ms=0)
    await store.checkpoints.save(b"c2", {}, ids[2:])
    remaining = [entry_id.decode() for entry_id, _ in await redis_client.xrange(store.keys.events)]
    assert remaining == ids[4:]  # the last delivered entry is kept (conservative bound)
    assert await store.stream.lag() == 0
    after = await store.stream.append([_event(9)])
    assert [e for e, _ in await store.stream.read_batch("w", 10, 0)] == [after.entry_id]


async def test_predictions_are_taken_once_and_expire(
    store: ModelStorage, redis_client: aioredis.Redis
) -> None:
    await store.predictions.save_many([("p1", {"amount": 1.0}), ("p2", {"mcc": "5411"})], ttl_s=1)
    await store.predictions.save("p3", {"amount": 3.0}, ttl_s=60)
    assert 0 < await redis_client.pttl(store.keys.pred("p1")) <= 1000
    assert await store.predictions.take("p2") == {"mcc": "5411"}
    assert await store.predictions.take("p2") is None  # one label per prediction
    await asyncio.sleep(1.2)
    assert await store.predictions.take("p1") is None  # expired
    assert await store.predictions.take("p3") == {"amount": 3.0}


async def test_ema_state_round_trip_and_ping(store: ModelStorage) -> None:
    assert await store.ping() is True
    assert await store.frequencies.state() is None
    state = {"m": [0.1, 0.2], "norm": 0.30000000000000004, "count": 7, "last_time": 12.5}
    await store.frequencies.set_state(state)
    assert await store.frequencies.state() == state
    await store.frequencies.set_state({**state, "last_time": None})
    assert (await store.frequencies.state())["last_time"] is None
    with pytest.raises(ValueError, match="EMA state has 3 classes, store has 2"):
        await store.frequencies.set_state({**state, "m": [0.1, 0.2, 0.3]})


async def test_ping_is_false_when_redis_is_gone(redis_factory) -> None:
    server = redis_factory()
    client = aioredis.from_url(server.url)
    store = ModelStorage(client, "gone", 2)
    assert await store.ping() is True
    server.stop()
    assert await store.ping() is False
    await client.aclose()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "a{b}"}, "must not contain braces"),
        ({"model": ""}, "model name must be a non-empty string"),
        ({"n_classes": 1}, "n_classes must be an int >= 2, got 1"),
        ({"idempotency_ttl_s": 0}, "idempotency_ttl_s must be an int > 0, got 0"),
    ],
)
def test_bad_settings_are_rejected(
    redis_client: aioredis.Redis, kwargs: dict, message: str
) -> None:
    args = {"model": "m", "n_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        ModelStorage(redis_client, **args)


def test_every_key_shares_the_model_hash_tag() -> None:
    keys = Keys("fraud")
    names = [keys.ema, keys.events, keys.dead, keys.ckpt, keys.ckpt_meta, keys.channel]
    names += [keys.idem("{x}"), keys.pred("p-1"), keys.served("p-1"), keys.rate("ab12")]
    names += [keys.leader, keys.versions, keys.ops, keys.archived(3), keys.shadow("weighted")]
    assert all(name.startswith("sb:{fraud}:") for name in names)
    assert GROUP == "learners"


async def test_store_carries_on_after_a_redis_restart(redis_factory, tmp_path) -> None:
    # AOF brings the data back; the same client reconnects; the script cache is empty after
    # the restart, so EVALSHA answers NOSCRIPT and the script is loaded again
    server = redis_factory(data_dir=tmp_path)
    client = aioredis.from_url(server.url)
    store = ModelStorage(client, "restart", 2)
    await store.stream.ensure_group()
    first = await store.stream.append([_event(1)])
    await store.frequencies.update([1, 0], None, 0.5, None, 1e-4)
    server.stop()
    assert await store.ping() is False
    redis_factory(data_dir=tmp_path)
    assert await store.ping() is True
    assert (await store.stream.append([_event(1), _event(2)])).duplicates == 1
    _, state = await store.frequencies.update([1], None, 0.5, None, 1e-4)
    assert state["count"] == 3
    assert [e for e, _ in await store.stream.read_batch("w", 10, 0)][0] == first.entry_id
    await client.aclose()
