"""The mission path through the real app: a 1:100 stream is learned, ranked and tracked."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from service.settings import Settings
from tests.e2e.conftest import fraud_stream, learn_all, roc_auc, running


@pytest.mark.slow
async def test_learns_a_1_in_100_stream_and_ranks_fraud_first(
    make_settings: Callable[..., Settings],
) -> None:
    train = fraud_stream(8000, fraud_rate=0.01, seed=1)
    holdout = fraud_stream(1500, fraud_rate=0.0, seed=2, prefix="legit") + fraud_stream(
        40, fraud_rate=1.0, seed=3, prefix="fraud"
    )
    async with running(make_settings(max_batch_events=2000)) as (_, client):
        version = await learn_all(client, train)
        assert version > 0

        response = await client.post(
            "/predict", json={"events": [{"features": e["features"]} for e in holdout]}
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert len(predictions) == len(holdout)
        assert {p["model_version"] for p in predictions} == {version}
        scores = [p["probabilities"]["fraud"] for p in predictions]
        is_fraud = [e["label"] == "fraud" for e in holdout]
        auc = roc_auc(scores, is_fraud)
        assert auc > 0.9, auc
        for p in predictions[:5]:
            assert math.isclose(sum(p["probabilities"].values()), 1.0, rel_tol=1e-6)

        state = (await client.get("/state")).json()
        frauds = sum(e["label"] == "fraud" for e in train)
        assert state["events_learned"] == len(train)
        assert state["counts"] == {"legit": len(train) - frauds, "fraud": frauds}
        p = state["class_frequencies"]
        assert abs(p["fraud"] - 0.01) < 0.006, p
        assert math.isclose(p["legit"] + p["fraud"], 1.0, rel_tol=1e-9)
        w = state["factors"]
        assert w["fraud"] > w["legit"]
        assert abs(p["legit"] * w["legit"] + p["fraud"] * w["fraud"] - 1.0) < 0.05, (p, w)
        assert state["model_version"] == version and state["stream_lag"] == 0


@pytest.mark.slow
async def test_drift_flags_an_abrupt_prior_shift(make_settings: Callable[..., Settings]) -> None:
    async with running(make_settings()) as (_, client):
        await learn_all(client, fraud_stream(4000, fraud_rate=0.01, seed=4))
        before = (await client.get("/drift")).json()
        prior = {s["name"]: s for s in before["signals"]}["prior:fraud"]
        assert prior["state"] != "drift", before

        await learn_all(client, fraud_stream(2500, fraud_rate=0.25, seed=5, prefix="shift"))
        after = (await client.get("/drift")).json()
        signals = {s["name"]: s for s in after["signals"]}
        assert after["drift_detected"] is True, after
        assert signals["prior:fraud"]["detections"] >= 1, signals["prior:fraud"]
        assert signals["prior:fraud"]["last_detection_at"] is not None
        for signal in after["signals"]:
            assert {
                "name",
                "detector",
                "state",
                "value",
                "detections",
                "last_detection_at",
            } <= signal.keys()
