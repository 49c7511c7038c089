"""Issue 16 item 2: a memory budget for Redis that can only drop what may be dropped.

The embedded server runs with `maxmemory` and `volatile-lru`, which evicts only keys with a
TTL. That is safe only if no durable key has one: the first test runs every feature that
writes to Redis and checks the TTL of every key it leaves. The second fills a small budget
with stored predictions: the server evicts them, the stream, the EMA and the checkpoints stay,
`/learn` keeps answering 202, and /metrics shows the memory and the evictions."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from service.settings import Settings
from service.storage.keys import Keys
from tests.e2e.conftest import fraud_stream
from tests.reliability.conftest import running

KEY = "sb-memory-test-key"
AUTH = {"X-API-Key": KEY}
# Key families that carry a TTL, and why each may go: a stored prediction (a late label for it
# becomes a 422), an idempotency key (a resend after its eviction is learned again), a rate
# limiter's state (the source's budget starts afresh), the readiness probe's key, and the
# learner lease (renewed every LEASE_TTL_S/3, so LRU takes it last; losing it is a failover).
DISPOSABLE = {"idem", "pred", "served", "rl", "ready", "leader"}
DURABLE = {"events", "ema", "ckpt", "ckpt:meta", "ckpt:v", "versions", "ops", "shadow"}
DEAD_LETTERS = "dead"  # durable too, but only written when an entry fails too often


def _family(key: str, model: str) -> str:
    """'sb:{default}:ckpt:v:3' -> 'ckpt:v'; 'sb:{default}:idem:tx-1' -> 'idem'."""
    rest = key.removeprefix(Keys(model).base)
    for family in sorted(DURABLE | DISPOSABLE | {DEAD_LETTERS}, key=len, reverse=True):
        if rest == family or rest.startswith(family + ":"):
            return family
    return rest


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _ttls(client: aioredis.Redis) -> dict[str, int]:
    return {key.decode(): await client.pttl(key) async for key in client.scan_iter(count=1000)}


async def test_only_disposable_keys_carry_a_ttl(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        api_key=KEY,
        checkpoint_every_steps=1,
        keep_versions=3,
        shadows=["weighted"],
        # A slow rate and a deep burst: the limiter's key lives for minutes (its TTL runs
        # until the source's budget has refilled), long enough to be seen below.
        rate_limit_per_s=1.0,
        rate_limit_burst=100_000,
    )
    events = fraud_stream(300, fraud_rate=0.05, seed=5)
    async with running(settings) as (app, client):
        for i in range(0, 200, 50):
            response = await client.post(
                "/learn?wait=true", json={"events": events[i : i + 50]}, headers=AUTH
            )
            assert response.status_code == 200, response.text
        served = await client.post(
            "/predict", json={"events": [{"features": e["features"]} for e in events[200:300]]}
        )
        first_id = served.json()["predictions"][0]["prediction_id"]
        late = await client.post(
            "/learn?wait=true",
            json={"prediction_id": first_id, "label": events[200]["label"]},
            headers=AUTH,
        )
        assert late.status_code == 200, late.text
        versions = (await client.get("/models")).json()["versions"]
        rollback = await client.post(
            "/models/rollback", json={"version": versions[-1]["version"]}, headers=AUTH
        )
        assert rollback.status_code == 200, rollback.text
        assert (await client.get("/readyz")).status_code == 200
        ttls = await _ttls(app.state.runtime.redis)
    families: dict[str, set[str]] = {}
    for key, ttl in ttls.items():
        families.setdefault(_family(key, settings.model_name), set()).add(
            "ttl" if ttl > 0 else "none"
        )
    unknown = set(families) - DURABLE - DISPOSABLE - {DEAD_LETTERS}
    durable_with_ttl = {f for f in DURABLE | {DEAD_LETTERS} if "ttl" in families.get(f, set())}
    disposable_without = {f for f in DISPOSABLE if "none" in families.get(f, set())}
    outcome = f"{len(ttls)} keys; families and TTLs: {families}"
    print(outcome)
    assert not unknown, f"key families this test does not classify: {unknown}; {outcome}"
    assert not durable_with_ttl, f"durable keys with a TTL: {durable_with_ttl}; {outcome}"
    assert not disposable_without, f"keys without the TTL they need: {disposable_without}"
    missing = DURABLE - set(families)
    assert not missing, f"the workload did not write {missing}; {outcome}"
    assert {"idem", "pred", "served", "rl", "ready", "leader"} <= set(families), outcome


@pytest.mark.slow
async def test_a_full_budget_evicts_stored_predictions_and_keeps_learning(
    make_settings: Callable[..., Settings],
) -> None:
    budget = 24 * 2**20
    settings = make_settings(redis_maxmemory="24mb", checkpoint_every_seconds=0.5)
    events = fraud_stream(2000, fraud_rate=0.05, seed=9)
    learned_statuses: list[int] = []
    async with running(settings) as (app, client):
        runtime = app.state.runtime
        keys = Keys(settings.model_name)
        config = {
            _text(k): _text(v) for k, v in (await runtime.redis.config_get("maxmemory*")).items()
        }
        assert config["maxmemory"] == str(budget), config
        assert config["maxmemory-policy"] == "volatile-lru", config
        # Each prediction keeps ~1 KB of features: 60 x 1000 predictions ask for ~70 MB.
        for i in range(60):
            batch = [
                {"features": {"note": f"{i}-{j}-" + "x" * 900, "amount": float(j)}}
                for j in range(1000)
            ]
            served = await client.post("/predict", json={"events": batch})
            assert served.status_code == 200, served.text
            if i % 3 == 0:
                chunk = events[(i // 3) * 100 : (i // 3 + 1) * 100]
                response = await client.post("/learn", json={"events": chunk})
                learned_statuses.append(response.status_code)
        deadline = time.monotonic() + 30
        state = (await client.get("/state")).json()
        while state["events_learned"] < 2000 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            state = (await client.get("/state")).json()
        metrics = (await client.get("/metrics")).text
        info = await runtime.redis.info("memory", "stats")
        durable = {
            "ema count": int(await runtime.redis.hget(keys.ema, "count") or 0),
            "checkpoint bytes": await runtime.redis.strlen(keys.ckpt),
            "stream type": (await runtime.redis.type(keys.events)).decode(),
        }
    gauges = {
        name: float(value)
        for name, value in re.findall(r"^(streambalance_redis_\w+) (\S+)$", metrics, re.M)
    }
    outcome = (
        f"learn statuses {sorted(set(learned_statuses))}; learned {state['events_learned']} of "
        f"2000; used_memory {info['used_memory'] / 2**20:.1f} MiB of "
        f"{info['maxmemory'] / 2**20:.0f} MiB, evicted {info['evicted_keys']}; durable "
        f"{durable}; metrics {gauges}"
    )
    print(outcome)
    assert set(learned_statuses) == {202}, outcome
    assert state["events_learned"] == 2000 and durable["ema count"] == 2000, outcome
    assert durable["checkpoint bytes"] > 0 and durable["stream type"] == "stream", outcome
    assert info["evicted_keys"] > 0 and info["used_memory"] <= budget * 1.05, outcome
    assert gauges["streambalance_redis_maxmemory_bytes"] == budget, outcome
    assert gauges["streambalance_redis_evicted_keys_total"] > 0, outcome
    assert 0 < gauges["streambalance_redis_used_memory_bytes"] <= budget * 1.05, outcome
