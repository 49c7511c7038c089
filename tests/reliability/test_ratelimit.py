"""The /learn rate limiter: GCRA in one Lua script, against the real embedded server."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from starlette.requests import Request

from service.errors import RateLimited
from service.http.rate_limit import source_of
from service.ingest.rate_limit import RateLimiter, gcra
from service.settings import Settings
from tests.reliability.conftest import running


async def test_lua_reproduces_the_reference_decisions(redis_client: aioredis.Redis) -> None:
    limiter = RateLimiter(redis_client, "m", rate_per_s=40.0, burst=7)
    rng = random.Random(3)
    now_s, tat = 1_700_000_000.0, None
    interval_us = 1e6 / 40.0
    mismatches = []
    for step in range(400):
        now_s += rng.choice([0.0, 0.001, 0.01, 0.05, 0.2])
        cost = rng.randint(1, 9)
        decision = await limiter.acquire("src", cost, now_s=now_s)
        allowed, new_tat, retry_us = gcra(tat, now_s * 1e6, interval_us, 7, cost)
        if allowed:
            tat = new_tat
        if decision.allowed != allowed or not math.isclose(
            decision.retry_after_s, retry_us / 1e6, rel_tol=1e-9, abs_tol=1e-6
        ):
            mismatches.append((step, cost, decision, allowed, retry_us))
    assert not mismatches, f"Lua and gcra() disagree at {mismatches[:5]}"


async def test_burst_then_sustained_rate_on_the_server_clock(redis_client: aioredis.Redis) -> None:
    limiter = RateLimiter(redis_client, "m", rate_per_s=100.0, burst=20)
    allowed = denied = 0
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        decision = await limiter.acquire("client:10.0.0.1", 1)
        allowed += decision.allowed
        denied += not decision.allowed
        if not decision.allowed:
            assert 0 < decision.retry_after_s <= 0.0101, decision
        await asyncio.sleep(0.001)
    elapsed = time.monotonic() - started
    expected = 20 + 100 * elapsed
    assert denied > 0
    assert abs(allowed - expected) <= 0.15 * expected, (
        f"allowed {allowed} in {elapsed:.2f} s, expected about {expected:.0f} (20 burst + 100/s)"
    )


async def test_concurrent_requests_cannot_overspend(redis_url: str) -> None:
    # Many connections race for the last tokens: exactly `burst` events pass.
    clients = [aioredis.from_url(redis_url) for _ in range(8)]
    try:
        limiters = [RateLimiter(c, "m", rate_per_s=0.001, burst=25) for c in clients]
        results = await asyncio.gather(*(
            limiters[i % 8].acquire("k", 1, now_s=1000.0) for i in range(200)
        ))  # fmt: skip
    finally:
        for c in clients:
            await c.aclose()
    assert sum(d.allowed for d in results) == 25


async def test_sources_are_separate_and_never_stored_in_clear(redis_client: aioredis.Redis) -> None:
    limiter = RateLimiter(redis_client, "m", rate_per_s=1.0, burst=2)
    assert (await limiter.acquire("api_key:super-secret-key", 2, now_s=10.0)).allowed
    assert not (await limiter.acquire("api_key:super-secret-key", 1, now_s=10.0)).allowed
    assert (await limiter.acquire("api_key:other", 2, now_s=10.0)).allowed
    keys = [k.decode() for k in await redis_client.keys("*")]
    assert len(keys) == 2 and all(k.startswith("sb:{m}:rl:") for k in keys), keys
    assert not any("secret" in k for k in keys)
    ttl = await redis_client.pttl(limiter.key("api_key:other"))
    assert 0 < ttl <= 2001  # forgotten once the bucket is full again


async def test_batch_larger_than_burst_never_passes(redis_client: aioredis.Redis) -> None:
    limiter = RateLimiter(redis_client, "m", rate_per_s=5.0, burst=10)
    decision = await limiter.acquire("s", 11, now_s=5.0)
    assert not decision.allowed and math.isinf(decision.retry_after_s)
    assert (await limiter.acquire("s", 10, now_s=5.0)).allowed  # and it spent nothing


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_per_s": 0.0, "burst": 1}, "rate_per_s"),
        ({"rate_per_s": math.inf, "burst": 1}, "rate_per_s"),
        ({"rate_per_s": 1.0, "burst": 0}, "burst"),
    ],
)
async def test_bad_settings_are_refused(
    redis_client: aioredis.Redis, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter(redis_client, "m", **kwargs)


def test_rate_limited_carries_retry_after() -> None:
    exc = RateLimited("rate limit", 0.2)
    assert exc.status_code == 429 and exc.headers == {"Retry-After": "1"}
    assert RateLimited("too big", math.inf).headers == {}


def _request(**headers: str) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "headers": raw, "client": ("10.1.2.3", 5555)})


def test_source_is_the_trusted_header_then_a_checked_key_then_the_address() -> None:
    both = _request(**{"X-Client-Id": "acme", "X-API-Key": "k" * 12})
    assert source_of(both, "X-Client-Id", api_key_configured=True) == ("header", "acme")
    assert source_of(both, None, api_key_configured=True) == ("api_key", "k" * 12)
    # An unchecked key (none configured) is just a client-chosen string: not a source.
    assert source_of(both, None, api_key_configured=False) == ("client", "10.1.2.3")
    assert source_of(_request(), "X-Client-Id", api_key_configured=True) == ("client", "10.1.2.3")


# -- through the app ---------------------------------------------------------------------


def _event(i: int) -> dict:
    return {"id": f"e{i}", "features": {"x": float(i % 7)}, "label": i % 2}


async def test_learn_answers_429_with_retry_after_per_source(
    redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        redis_url=redis_url,
        rate_limit_per_s=2.0,
        rate_limit_burst=5,
        rate_limit_header="X-Client-Id",
    )
    async with running(settings) as (_, client):
        a = {"X-Client-Id": "partner-a"}
        first = await client.post(
            "/learn", json={"events": [_event(i) for i in range(5)]}, headers=a
        )
        assert first.status_code == 202, first.text
        over = await client.post("/learn", json=_event(99), headers=a)
        assert over.status_code == 429, over.text
        assert int(over.headers["Retry-After"]) >= 1
        assert "rate limit" in over.json()["detail"] and "partner-a" not in over.text
        other = await client.post("/learn", json=_event(100), headers={"X-Client-Id": "partner-b"})
        assert other.status_code == 202, other.text
        too_big = await client.post(
            "/learn",
            json={"events": [_event(200 + i) for i in range(6)]},
            headers={"X-Client-Id": "c"},
        )
        assert too_big.status_code == 429 and "burst" in too_big.json()["detail"], too_big.text
        metrics = (await client.get("/metrics")).text
        assert 'streambalance_events_rejected_total{reason="rate_limited"} 7.0' in metrics


async def test_a_rate_limited_late_label_can_be_retried(
    redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    # A 429 must not consume the stored prediction: the client's retry has to succeed.
    settings = make_settings(redis_url=redis_url, rate_limit_per_s=4.0, rate_limit_burst=2)
    async with running(settings) as (_, client):
        served = await client.get("/predict", params={"amount": 700.0, "mcc": "5732"})
        pid = served.json()["prediction_id"]
        spent = await client.post("/learn", json={"events": [_event(1), _event(2)]})
        assert spent.status_code == 202, spent.text
        refused = await client.post("/learn", json={"prediction_id": pid, "label": "fraud"})
        assert refused.status_code == 429, refused.text
        await asyncio.sleep(float(refused.headers["Retry-After"]))
        retried = await client.post("/learn", json={"prediction_id": pid, "label": "fraud"})
        assert retried.status_code == 202, (
            f"retry after a 429 gave {retried.status_code}: {retried.text}"
        )
