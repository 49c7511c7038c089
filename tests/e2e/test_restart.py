"""Restart: a new app on the same Redis serves the identical model; nothing lost or doubled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from service.settings import Settings
from tests.e2e.conftest import fraud_stream, learn_all, running

PROBES = [
    {"features": e["features"]} for e in fraud_stream(30, fraud_rate=0.3, seed=99, prefix="p")
]


def _comparable(predictions: list[dict[str, Any]]) -> list[tuple]:
    return [(p["label"], p["probabilities"], p["model_version"]) for p in predictions]


@pytest.mark.slow
async def test_restart_restores_identical_state_and_predictions(
    make_settings: Callable[..., Settings],
) -> None:
    events = fraud_stream(2000, fraud_rate=0.05, seed=7)
    settings = make_settings(checkpoint_every_steps=3)
    async with running(settings) as (_, client):
        await learn_all(client, events, batch=150)
        state1 = (await client.get("/state")).json()
        predictions1 = (await client.post("/predict", json={"events": PROBES})).json()[
            "predictions"
        ]

    async with running(settings) as (_, client):
        state2 = (await client.get("/state")).json()
        predictions2 = (await client.post("/predict", json={"events": PROBES})).json()[
            "predictions"
        ]
        # Only the checkpoint bookkeeping moves: shutdown wrote the final checkpoint (and a
        # background checkpoint may have been in flight when state1 was read); its size is
        # that of the snapshot last written or loaded, which is bookkeeping too.
        bookkeeping = ("checkpoint_version", "checkpoint_time", "checkpoint_bytes")
        assert state2["checkpoint_version"] in (
            state1["checkpoint_version"] + 1,
            state1["checkpoint_version"] + 2,
        )
        assert {k: v for k, v in state2.items() if k not in bookkeeping} == {
            k: v for k, v in state1.items() if k not in bookkeeping
        }
        assert state2["events_learned"] == len(events)
        assert _comparable(predictions2) == _comparable(predictions1)
        # Sending the same events again learns nothing: the ids are remembered across restarts.
        response = await client.post("/learn?wait=true", json={"events": events[:300]})
        assert response.json()["accepted"] == 0 and response.json()["duplicates"] == 300
        assert (await client.get("/state")).json()["events_learned"] == len(events)


@pytest.mark.slow
async def test_events_accepted_before_shutdown_are_learned_exactly_once(
    make_settings: Callable[..., Settings],
) -> None:
    events = fraud_stream(3000, fraud_rate=0.05, seed=8)
    frauds = sum(e["label"] == "fraud" for e in events)
    # No wait and rare checkpoints: shutdown must drain the stream and checkpoint it.
    settings = make_settings(checkpoint_every_steps=10_000, checkpoint_every_seconds=3600)
    async with running(settings) as (_, client):
        await learn_all(client, events, batch=500, wait=False)

    async with running(settings) as (_, client):
        state = (await client.get("/state")).json()
        assert state["events_learned"] == len(events)
        assert state["counts"] == {"legit": len(events) - frauds, "fraud": frauds}
        assert state["stream_lag"] == 0


@pytest.mark.slow
async def test_learning_goes_on_during_a_checkpoint_and_every_entry_is_acked_once(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's checkpoints run in the background: the learner keeps applying entries while
    one is in flight, those entries go into a later checkpoint, and a restart finds nothing
    to replay and nothing missing."""

    from service.operations.model_control import VersionArchive

    slow_archive_calls: list[int] = []
    real_archive = VersionArchive.save

    async def slow_archive(self, version, data, meta):  # type: ignore[no-untyped-def]
        slow_archive_calls.append(self.served.model_version)
        await asyncio.sleep(0.3)  # hold the checkpoint's I/O in flight
        slow_archive_calls.append(self.served.model_version)
        await real_archive(self, version, data, meta)

    monkeypatch.setattr(VersionArchive, "save", slow_archive)
    events = fraud_stream(2400, fraud_rate=0.05, seed=9)
    settings = make_settings(checkpoint_every_steps=2, batch_max_size=50)
    async with running(settings) as (app, client):
        for start in range(0, len(events) - 50, 50):
            response = await client.post("/learn", json={"events": events[start : start + 50]})
            assert response.status_code == 202
            await asyncio.sleep(0.01)
        await learn_all(client, events[-50:], batch=50)  # wait=true: all applied, in order
        state1 = (await client.get("/state")).json()
    # Some checkpoint saw the model move on while its I/O was in flight.
    moved = [b - a for a, b in zip(slow_archive_calls[::2], slow_archive_calls[1::2], strict=False)]
    assert any(m > 0 for m in moved), moved

    async with running(settings) as (_, client):
        state2 = (await client.get("/state")).json()
        assert state2["events_learned"] == state1["events_learned"] == len(events)
        assert state2["stream_lag"] == 0
        assert state2["model_version"] == state1["model_version"]


@pytest.mark.slow
async def test_a_failed_background_checkpoint_is_retried_and_loses_nothing(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from service.storage.checkpoint_store import CheckpointStore

    real_save = CheckpointStore.save
    failures: list[int] = []

    async def flaky_save(self, data, meta, ack_ids, **kw):  # type: ignore[no-untyped-def]
        if not failures:
            failures.append(len(ack_ids))
            raise RedisConnectionError("injected: connection lost during a checkpoint")
        return await real_save(self, data, meta, ack_ids, **kw)

    monkeypatch.setattr(CheckpointStore, "save", flaky_save)
    events = fraud_stream(600, fraud_rate=0.05, seed=10)
    settings = make_settings(checkpoint_every_steps=2, batch_max_size=50)
    async with running(settings) as (app, client):
        await learn_all(client, events, batch=50)
        rt = app.state.runtime
        for _ in range(100):  # the retry comes after a short back-off
            if rt.served.checkpoint_version >= 1:
                break
            await asyncio.sleep(0.05)
        errors = rt.metrics.registry.get_sample_value(
            "streambalance_learner_errors_total", {"stage": "redis"}
        )
        assert failures and failures[0] > 0
        assert errors is not None and errors >= 1
        assert rt.served.checkpoint_version >= 1  # a later checkpoint went through
    async with running(settings) as (_, client):
        state = (await client.get("/state")).json()
        assert state["events_learned"] == len(events) and state["stream_lag"] == 0
