"""Scaled out: two API-only replicas and one learner (the `streambalance worker` runtime) on
one Redis. Replicas append, the worker learns, replicas hot-reload each published checkpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.lifecycle import open_runtime
from service.observability.prometheus import ServiceMetrics
from service.settings import Settings
from tests.e2e.conftest import fraud_stream, running


async def test_api_replicas_follow_the_worker(
    redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    api = make_settings(redis_url=redis_url, role="api")
    worker = make_settings(redis_url=redis_url, checkpoint_every_steps=1)
    events = fraud_stream(600, fraud_rate=0.1, seed=31)
    probe = {"events": [{"features": e["features"]} for e in events[:10]]}

    async with running(api) as (_, replica_a), running(api) as (_, replica_b):
        cold = (await replica_b.post("/predict", json=probe)).json()["predictions"]
        assert {p["model_version"] for p in cold} == {0}
        async with open_runtime(worker, ServiceMetrics(), learn=True) as learner:
            for start in range(0, len(events), 200):
                response = await replica_a.post(
                    "/learn?wait=true", json={"events": events[start : start + 200]}
                )
                assert response.status_code == 200, response.text
            version = response.json()["model_version"]
            assert version == learner.served.model_version and version >= 3

            # Replica b never saw a /learn, yet serves the same model once it reloads.
            for _ in range(100):
                state = (await replica_b.get("/state")).json()
                if state["model_version"] == version:
                    break
                await asyncio.sleep(0.05)
            assert state["events_learned"] == len(events)
            assert state["role"] == "api"
            a = (await replica_a.post("/predict", json=probe)).json()["predictions"]
            b = (await replica_b.post("/predict", json=probe)).json()["predictions"]
            direct_probs, _ = learner.served.require_trainer().predict(
                [e["features"] for e in probe["events"]]
            )
        assert [p["probabilities"] for p in a] == [p["probabilities"] for p in b]
        assert [p["model_version"] for p in b] == [version] * 10
        assert [p["probabilities"]["fraud"] for p in b] == direct_probs[:, 1].tolist()


async def test_one_learner_leads_and_a_standby_takes_over(
    redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    api = make_settings(redis_url=redis_url, role="api")
    first = make_settings(
        redis_url=redis_url, consumer="worker-a", lease_ttl_s=2, checkpoint_every_steps=1
    )
    second = make_settings(
        redis_url=redis_url, consumer="worker-b", lease_ttl_s=2, checkpoint_every_steps=1
    )
    events = fraud_stream(900, fraud_rate=0.1, seed=32)

    async with running(api) as (_, client), open_runtime(second, ServiceMetrics(), learn=True) as b:
        async with open_runtime(first, ServiceMetrics(), learn=True) as a:
            assert b.learner is not None and a.learner is not None
            assert b.learner.leader and not a.learner.leader  # b started first
            for start in range(0, 600, 200):
                response = await client.post(
                    "/learn?wait=true", json={"events": events[start : start + 200]}
                )
                assert response.status_code == 200, response.text
            assert b.served.require_trainer().events_learned == 600
            await b.learner.finish()  # b shuts down gracefully: final checkpoint, lease released
            b.learner.stop()
            for _ in range(100):  # a takes over within a lease tick
                if a.learner.leader:
                    break
                await asyncio.sleep(0.05)
            assert a.learner.leader
            response = await client.post("/learn?wait=true", json={"events": events[600:]})
            assert response.status_code == 200, response.text
            # a continued from b's checkpoint: every event learned exactly once.
            assert a.served.require_trainer().events_learned == len(events)
            frauds = sum(e["label"] == "fraud" for e in events)
            assert a.served.require_trainer().counts == [len(events) - frauds, frauds]
