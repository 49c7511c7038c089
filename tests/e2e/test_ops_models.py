"""Shadow challengers, promotion and rollback: each changes what `/predict` serves, is
recorded, needs the API key and survives a restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.e2e.conftest import fraud_stream, learn_all, running

KEY = "test-key-0123456789"
AUTH = {"X-API-Key": KEY}
PROBE = {"events": [{"features": e["features"]} for e in fraud_stream(40, 0.2, seed=99)]}


async def _learn(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 100):
        response = await client.post(
            "/learn?wait=true", json={"events": events[start : start + 100]}, headers=AUTH
        )
        assert response.status_code == 200, response.text


async def _served(client: httpx.AsyncClient) -> list[list[float]]:
    response = await client.post("/predict", json=PROBE)
    assert response.status_code == 200, response.text
    return [list(p["probabilities"].values()) for p in response.json()["predictions"]]


async def _checkpointed(client: httpx.AsyncClient, events_learned: int) -> dict[str, Any]:
    """The newest kept version once it covers `events_learned` events."""
    deadline = time.monotonic() + 20
    while True:
        versions = (await client.get("/models")).json()["versions"]
        if versions and versions[0]["events_learned"] == events_learned:
            return versions[0]
        assert time.monotonic() < deadline, versions
        await asyncio.sleep(0.05)


async def test_shadows_learn_side_by_side_and_promotion_swaps_what_is_served(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.operations.model_control")
    settings = make_settings(  # a champion and two challengers, whatever the default is
        strategy="rescaled", shadows="weighted,logit_adjusted", api_key=KEY,
        checkpoint_every_steps=1,
    )  # fmt: skip
    events = fraud_stream(600, fraud_rate=0.05, seed=11)
    async with running(settings) as (_, client):
        await _learn(client, events)
        models = (await client.get("/models")).json()
        assert models["champion"]["strategy"] == "rescaled"
        assert [s["name"] for s in models["shadows"]] == ["weighted", "logit_adjusted"]
        for model in (models["champion"], *models["shadows"]):
            assert model["events_learned"] == len(events)
            assert model["prequential"]["n"] == len(events)
            assert set(model["prequential"]["recall"]) == {"legit", "fraud"}
        # The challengers are different models: their numbers differ from the champion's.
        assert models["shadows"][0]["prequential"] != models["champion"]["prequential"]

        before = await _served(client)
        refused = await client.post("/models/weighted/promote")
        assert refused.status_code == 401
        missing = await client.post("/models/focal/promote", headers=AUTH)
        assert missing.status_code == 404
        assert "focal" in missing.json()["detail"]
        same = await client.post("/models/rescaled/promote", headers=AUTH)
        assert same.status_code == 409

        response = await client.post("/models/weighted/promote", headers=AUTH)
        assert response.status_code == 200, response.text
        record = response.json()
        assert record["champion"] == "weighted" and record["previous"] == "rescaled"
        after = await _served(client)
        assert after != before
        state = (await client.get("/state")).json()
        assert state["strategy"] == "weighted"
        models = (await client.get("/models")).json()
        assert models["champion"]["strategy"] == "weighted"
        assert sorted(s["name"] for s in models["shadows"]) == ["logit_adjusted", "rescaled"]
        assert models["operations"][0]["action"] == "promotion"
        logged = [r for r in caplog.records if getattr(r, "event", None) == "promotion"]
        assert len(logged) == 1 and logged[0].champion == "weighted"  # type: ignore[attr-defined]
        assert models["versions"][0]["strategy"] == "weighted"

        # Everyone keeps learning; the old champion as a shadow.
        await _learn(client, fraud_stream(100, 0.05, seed=12))
        models = (await client.get("/models")).json()
        assert all(s["events_learned"] == 700 for s in models["shadows"])
        served_before_restart = await _served(client)

    async with running(settings) as (_, client):
        state = (await client.get("/state")).json()
        assert state["strategy"] == "weighted"
        assert state["events_learned"] == 700
        assert await _served(client) == served_before_restart
        models = (await client.get("/models")).json()
        assert sorted(s["name"] for s in models["shadows"]) == ["logit_adjusted", "rescaled"]
        assert all(s["events_learned"] == 700 for s in models["shadows"])


async def test_rollback_serves_an_earlier_version_and_learning_continues_from_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(api_key=KEY, checkpoint_every_steps=1, keep_versions=6)
    good = fraud_stream(500, fraud_rate=0.05, seed=21)
    async with running(settings) as (_, client):
        await _learn(client, good)
        kept = await _checkpointed(client, len(good))
        served_good = await _served(client)

        # A poisoning: the same traffic with every label flipped.
        poison = [
            {**e, "id": f"p-{i}", "label": "legit" if e["label"] == "fraud" else "fraud"}
            for i, e in enumerate(good[:300])
        ]
        await _learn(client, poison)
        await _checkpointed(client, len(good) + len(poison))
        assert await _served(client) != served_good

        keyless = await client.post("/models/rollback", json={"version": kept["version"]})
        assert keyless.status_code == 401
        bad = await client.post("/models/rollback", json={"version": "x"}, headers=AUTH)
        assert bad.status_code == 422
        gone = await client.post("/models/rollback", json={"version": 10_000}, headers=AUTH)
        assert gone.status_code == 404

        response = await client.post(
            "/models/rollback", json={"version": kept["version"]}, headers=AUTH
        )
        assert response.status_code == 200, response.text
        assert response.json()["to_version"] == kept["version"]
        assert await _served(client) == served_good
        state = (await client.get("/state")).json()
        assert state["events_learned"] == len(good)

        models = (await client.get("/models")).json()
        assert len(models["versions"]) == 6  # keep_versions: older ones were dropped
        assert models["versions"][-1]["version"] == models["versions"][0]["version"] - 5
        assert models["operations"][0]["action"] == "rollback"
        assert all("prequential" in v and "strategy" in v for v in models["versions"])

        # The learner continues from the restored version.
        more = fraud_stream(100, 0.05, seed=22)
        await _learn(client, more)
        state = (await client.get("/state")).json()
        assert state["events_learned"] == len(good) + len(more)
        served_after = await _served(client)

    async with running(settings) as (_, client):  # the rollback survived a restart
        state = (await client.get("/state")).json()
        assert state["events_learned"] == len(good) + len(more)
        assert await _served(client) == served_after


async def test_without_shadows_models_lists_only_the_champion(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(make_settings()) as (_, client):
        await learn_all(client, fraud_stream(50, 0.1, seed=3))
        models = (await client.get("/models")).json()
        assert models["shadows"] == []
        assert models["champion"]["events_learned"] == 50
