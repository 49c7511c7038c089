"""The learner lingers after a part-full step, so trickling events share one step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from service.settings import Settings
from tests.e2e.conftest import fraud_stream, running


async def test_events_trickling_in_during_the_linger_share_one_step(
    make_settings: Callable[..., Settings],
) -> None:
    events = fraud_stream(7, fraud_rate=0.3, seed=31)
    settings = make_settings(batch_linger_ms=300.0, batch_max_size=64)
    async with running(settings) as (app, client):
        rt = app.state.runtime
        started = time.perf_counter()
        first = await client.post("/learn?wait=true", json=events[0])
        idle_latency = time.perf_counter() - started
        version = first.json()["model_version"]
        # The learner now lingers 300 ms: these five arrive meanwhile.
        for event in events[1:6]:
            assert (await client.post("/learn", json=event)).status_code == 202
        last = await client.post("/learn?wait=true", json=events[6])
        assert last.status_code == 200
        assert rt.served.trainer.events_learned == 7
        # One step for the six that trickled in (the model version counts steps).
        assert last.json()["model_version"] == version + 1
        # An idle learner is blocked in its read, not lingering: the first event went at once.
        assert idle_latency < 0.25, idle_latency


async def test_without_linger_each_trickling_event_gets_its_own_step(
    make_settings: Callable[..., Settings],
) -> None:
    events = fraud_stream(4, fraud_rate=0.3, seed=32)
    async with running(make_settings(batch_linger_ms=0.0)) as (_, client):
        versions = []
        for event in events:
            response = await client.post("/learn?wait=true", json=event)
            versions.append(response.json()["model_version"])
            await asyncio.sleep(0.01)
    assert versions == list(range(versions[0], versions[0] + 4))
