"""Late labels: `{prediction_id, label}` joins the served prediction, once, within its TTL; the
label delay is a histogram and the served predictions are scored (production performance)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from tests.e2e.conftest import fraud_stream, learn_all, running


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_late_label_is_learned_once_and_scored(
    make_settings: Callable[..., Settings],
) -> None:
    events = fraud_stream(400, fraud_rate=0.1, seed=5)
    async with running(make_settings()) as (_, client):
        await learn_all(client, events[:300], batch=100)
        held_out = events[300:]
        response = await client.post(
            "/predict", json={"events": [{"features": e["features"]} for e in held_out]}
        )
        assert response.status_code == 200, response.text
        served = response.json()["predictions"]
        before = (await client.get("/state")).json()["events_learned"]

        await asyncio.sleep(0.3)  # a measurable label delay
        labels = [{"prediction_id": p["prediction_id"], "label": e["label"]}
                  for p, e in zip(served, held_out, strict=True)]  # fmt: skip
        response = await client.post("/learn?wait=true", json={"events": labels})
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(labels)
        state = (await client.get("/state")).json()
        assert state["events_learned"] == before + len(labels)

        # The same labels again: every id was consumed, nothing is learned twice.
        again = await client.post("/learn?wait=true", json={"events": labels[:1]})
        assert again.status_code == 422, again.text
        assert "unknown or expired prediction" in again.json()["detail"]
        assert "prediction_id" in again.json()["detail"]
        assert (await client.get("/state")).json()["events_learned"] == before + len(labels)

        # Production performance = the served labels against the true ones.
        production = state["production"]
        assert production["scored"] == len(labels)
        classes = ["legit", "fraud"]
        pairs = list(zip(served, held_out, strict=True))
        for c in classes:
            tp = sum(p["label"] == c and e["label"] == c for p, e in pairs)
            actual = sum(e["label"] == c for e in held_out)
            predicted = sum(p["label"] == c for p in served)
            assert production["recall"][c] == tp / actual
            assert production["precision"][c] == (tp / predicted if predicted else None)
        # ... a different number from the learner's own prequential window.
        assert state["prequential"]["n"] == before + len(labels)

        metrics = _samples((await client.get("/metrics")).text)
        assert metrics[("streambalance_production_scored_total", ())] == len(labels)
        assert (
            metrics[("streambalance_production_recall", (("class", "fraud"),))]
            == production["recall"]["fraud"]
        )
        assert metrics[("streambalance_label_delay_seconds_count", ())] == len(labels)
        delay_sum = metrics[("streambalance_label_delay_seconds_sum", ())]
        assert 0.3 * len(labels) <= delay_sum < 30.0 * len(labels)
        assert metrics[("streambalance_label_delay_seconds_bucket", (("le", "1.0"),))] == len(
            labels
        )


async def test_unknown_and_expired_prediction_ids_are_refused(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(make_settings(prediction_ttl_s=1)) as (_, client):
        unknown = await client.post("/learn", json={"prediction_id": "nope", "label": "fraud"})
        assert unknown.status_code == 422
        assert unknown.json()["detail"] == "prediction_id: unknown or expired prediction 'nope'"

        response = await client.get("/predict", params={"amount": 10.0})
        pid = response.json()["prediction_id"]
        await asyncio.sleep(2.1)  # past the 1 s TTL: Redis expired the features
        expired = await client.post("/learn", json={"prediction_id": pid, "label": "legit"})
        assert expired.status_code == 422
        assert pid in expired.json()["detail"]

        # A fresh prediction within its TTL joins; a batch with one bad id learns nothing
        # and gives back the ids it consumed.
        fresh = (await client.get("/predict", params={"amount": 11.0})).json()["prediction_id"]
        batch = {"events": [{"prediction_id": fresh, "label": "legit"},
                            {"prediction_id": "gone", "label": "legit"}]}  # fmt: skip
        response = await client.post("/learn", json=batch)
        assert response.status_code == 422
        assert response.json()["detail"].startswith("events[1].prediction_id")
        ok = await client.post("/learn?wait=true", json={"prediction_id": fresh, "label": "legit"})
        assert ok.status_code == 200, ok.text
        state = (await client.get("/state")).json()
        assert state["events_learned"] == 1
        assert state["production"]["scored"] == 1  # the served record came back with it
        metrics = (await client.get("/metrics")).text
        # unknown + expired + the refused batch of 2
        assert 'streambalance_events_rejected_total{reason="unknown_prediction"} 4.0' in metrics
