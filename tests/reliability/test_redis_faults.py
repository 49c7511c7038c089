"""Issue 6 §3 and §4: Redis goes away mid-stream and comes back; Redis is killed (-9) with
AOF `appendfsync everysec` and restarted. The service is never restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from service.settings import Settings
from service.storage.embedded_server import EmbeddedRedis
from tests.reliability.conftest import running
from tests.reliability.helpers import make_events, redis_ema


async def _wait_status(client: httpx.AsyncClient, path: str, status: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if (await client.get(path)).status_code == status:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} did not answer {status} within {timeout} s")


async def _wait_learned(client: httpx.AsyncClient, expected: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = (await client.get("/state")).json()
        if body["events_learned"] >= expected:
            await asyncio.sleep(1.0)
            return (await client.get("/state")).json()
        await asyncio.sleep(0.2)
    return body


@pytest.mark.slow
async def test_redis_outage_503_then_recovery_without_restart(
    redis_factory: Callable[..., EmbeddedRedis], make_settings: Callable[..., Settings], tmp_path
) -> None:
    server = redis_factory(data_dir=tmp_path / "redis")
    events = make_events(3000, seed=11)
    batches = [events[i : i + 10] for i in range(0, len(events), 10)]
    settings = make_settings(redis_url=server.url, checkpoint_every_seconds=0.5)
    statuses: dict[int, int] = {}
    acked: set[int] = set()
    outage: dict[str, object] = {}
    async with running(settings) as (_, client):
        ok = await client.post("/learn?wait=true", json={"events": batches[0]})
        assert ok.status_code == 200, ok.text
        acked.add(0)
        stop_sending = asyncio.Event()

        async def sender() -> None:
            for index in range(1, len(batches)):
                if stop_sending.is_set():
                    return
                response = await client.post("/learn", json={"events": batches[index]})
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 202:
                    acked.add(index)
                elif response.status_code == 503:
                    outage.setdefault("learn_503", response.json()["detail"])
                await asyncio.sleep(0.005)

        task = asyncio.create_task(sender())
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.stop)  # Redis goes away mid-stream
        stopped_at = time.monotonic()
        await asyncio.sleep(1.0)
        outage["readyz"] = (await client.get("/readyz")).status_code
        outage["healthz"] = (await client.get("/healthz")).status_code
        predict = await client.get(
            "/predict", params={"amount": 650.0, "mcc": "5732", "ip_risk": 0.9}
        )
        outage["predict"] = predict.status_code
        learn = await client.post(
            "/learn", json={"events": [{"id": "during", "features": {"x": 1.0}, "label": 0}]}
        )
        outage["learn"] = learn.status_code
        outage["learn_detail"] = learn.json().get("detail")
        await asyncio.to_thread(server.start)  # same data dir, same socket: the AOF is reloaded
        recovered_after = await _wait_status(client, "/readyz", 200, timeout=20.0)
        outage["down_s"] = round(time.monotonic() - stopped_at, 2)
        await asyncio.sleep(0.5)
        stop_sending.set()
        await task
        # The client retries everything that was not acknowledged.
        for index in range(len(batches)):
            if index not in acked:
                response = await client.post("/learn", json={"events": batches[index]})
                assert response.status_code == 202, response.text
        final = await _wait_learned(client, len(events))
    outcome = (
        f"during the outage {outage}; statuses while streaming {statuses}; recovered "
        f"{recovered_after:.1f} s after restart; acknowledged {len(acked) * 10} before resending; "
        f"applied {final['events_learned']} of {len(events)}"
    )
    print(outcome)
    assert 500 not in statuses and statuses.get(503, 0) > 0, outcome
    assert outage["learn"] == 503 and "Redis" in str(outage["learn_detail"]), outcome
    assert outage["readyz"] == 503 and outage["healthz"] == 200, outcome
    assert outage["predict"] == 200, outcome
    assert final["events_learned"] == len(events), outcome


@pytest.mark.slow
async def test_state_survives_kill_9_of_redis_with_aof_everysec(
    redis_factory: Callable[..., EmbeddedRedis], make_settings: Callable[..., Settings], tmp_path
) -> None:
    server = redis_factory(data_dir=tmp_path / "redis")
    assert server.appendfsync == "everysec"
    events = make_events(400, seed=5)
    settings = make_settings(redis_url=server.url, checkpoint_every_seconds=0.2)
    sync = redis.Redis.from_url(server.url)
    async with running(settings) as (_, client):
        for i in range(0, 300, 50):
            response = await client.post("/learn?wait=true", json={"events": events[i : i + 50]})
            assert response.status_code == 200, response.text
        await asyncio.sleep(0.6)  # a checkpoint covers them
        before = (await client.get("/state")).json()
        ema_before = redis_ema(sync, "default")
        assert before["checkpoint_version"] >= 1 and before["events_learned"] == 300
        await asyncio.sleep(1.5)  # > 1 s: everysec has fsynced everything above
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)
        await _wait_status(client, "/readyz", 200, timeout=20.0)
        ema_after = redis_ema(sync, "default")
        replay = await client.post("/learn", json={"events": events[:300]})
        fresh = await client.post("/learn", json={"events": events[300:]})
        final = await _wait_learned(client, 400)
        meta = {k.decode(): v for k, v in sync.hgetall("sb:{default}:ckpt:meta").items()}
    sync.close()
    outcome = (
        f"before kill: events_learned {before['events_learned']}, EMA count {ema_before['count']}; "
        f"after restart: EMA {ema_after}, resend of 300 old ids -> {replay.json()}, 100 new -> "
        f"{fresh.json()}, applied {final['events_learned']}, "
        f"checkpoint version {meta.get('version')}"
    )
    print(outcome)
    assert ema_after == ema_before, outcome
    assert replay.json() == {"accepted": 0, "duplicates": 300}, outcome
    assert fresh.json()["accepted"] == 100, outcome
    assert final["events_learned"] == 400, outcome
    assert redis_ema(redis.Redis.from_url(server.url), "default")["count"] == 400, outcome
