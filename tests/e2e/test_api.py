"""The rest of the HTTP contract: health, readiness, OpenAPI, GET /predict, late labels, 503."""

from __future__ import annotations

from collections.abc import Callable

from service.settings import Settings
from service.storage.embedded_server import EmbeddedRedis
from tests.e2e.conftest import fraud_stream, learn_all, running


async def test_health_readiness_and_docs(make_settings: Callable[..., Settings]) -> None:
    async with running(make_settings()) as (_, client):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert (await client.get("/docs")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
        learn = spec["paths"]["/learn"]["post"]["requestBody"]["content"]["application/json"]
        assert learn["examples"]["single"]["value"]["features"]["mcc"] == "5732"
        for name in ("LearnEvent", "LearnBatch", "PredictBatch"):
            assert name in spec["components"]["schemas"], name
        assert {
            "/learn",
            "/predict",
            "/drift",
            "/state",
            "/metrics",
            "/healthz",
            "/readyz",
        } <= spec["paths"].keys()


async def test_get_predict_reads_query_parameters_and_late_label_learns_them(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(make_settings()) as (app, client):
        await learn_all(client, fraud_stream(400, fraud_rate=0.1, seed=12))
        response = await client.get("/predict?amount=812.5&mcc=5732&ip_risk=0.9&hour=3&zip=0042")
        assert response.status_code == 200, response.text
        prediction = response.json()
        assert set(prediction) == {"label", "probabilities", "prediction_id", "model_version"}
        assert prediction["label"] in ("legit", "fraud")
        stored = await app.state.runtime.storage.predictions.take(prediction["prediction_id"])
        assert stored == {"amount": 812.5, "mcc": 5732, "ip_risk": 0.9, "hour": 3, "zip": "0042"}
        await app.state.runtime.storage.predictions.save(prediction["prediction_id"], stored, 60)

        before = (await client.get("/state")).json()["counts"]
        late = {"prediction_id": prediction["prediction_id"], "label": "fraud"}
        response = await client.post("/learn?wait=true", json=late)
        assert response.status_code == 200 and response.json()["accepted"] == 1, response.text
        after = (await client.get("/state")).json()["counts"]
        assert after["fraud"] == before["fraud"] + 1 and after["legit"] == before["legit"]
        again = await client.post("/learn", json=late)  # one label per prediction
        assert (
            again.status_code == 422 and "unknown or expired prediction" in again.json()["detail"]
        )


async def test_redis_down_gives_503_not_a_silent_drop(
    make_settings: Callable[..., Settings], tmp_path
) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "external")
    url = server.start()
    try:
        async with running(make_settings(redis_url=url)) as (_, client):
            assert (
                await client.post("/learn?wait=true", json={"features": {"a": 1}, "label": 0})
            ).status_code == 200
            server.stop()
            response = await client.post("/learn", json={"features": {"a": 1}, "label": 0})
            assert response.status_code == 503, response.text
            assert "Redis is unreachable" in response.json()["detail"]
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and "redis" in ready.json()["detail"]
            assert (await client.get("/healthz")).status_code == 200
    finally:
        if server.running:
            server.stop()


async def test_learn_costs_one_redis_command(
    redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    """The hot path: validation in-process, then one Lua call (dedup + XADD) per request."""
    async with running(make_settings(redis_url=redis_url, role="api")) as (app, client):
        redis = app.state.runtime.redis
        body = {"events": [{"id": "warm-up", "features": {"amount": 1.0}, "label": 0}]}
        assert (await client.post("/learn", json=body)).status_code == 202  # loads the script

        async def calls() -> dict[str, int]:
            stats = await redis.info("commandstats")
            return {name: int(v["calls"]) for name, v in stats.items()}

        before = await calls()
        for i in range(40):
            event = {
                "id": f"tx-{i}",
                "features": {"amount": float(i), "mcc": "5411"},
                "label": i % 2,
            }
            assert (await client.post("/learn", json={"events": [event] * 3})).status_code == 202
        after = await calls()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta.pop("cmdstat_info", None)
    delta.pop("cmdstat_hget", None)  # the replica's checkpoint-version poll
    called = {k for k, v in delta.items() if v}
    assert delta["cmdstat_evalsha"] == 40
    # Everything else ran inside the script (commandstats counts those too).
    assert called <= {"cmdstat_evalsha", "cmdstat_exists", "cmdstat_set", "cmdstat_xadd"}, delta


async def test_batch_predict_costs_one_redis_command_and_gives_distinct_ids(
    redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    """POST /predict stores each prediction's features and what was served for late labels:
    one script call per request, whatever the batch size."""
    async with running(make_settings(redis_url=redis_url, role="api")) as (app, client):
        redis = app.state.runtime.redis
        batch = {"events": [{"features": {"amount": float(i), "mcc": "5411"}} for i in range(50)]}
        assert (await client.post("/predict", json=batch)).status_code == 200  # loads the script

        async def calls() -> dict[str, int]:
            stats = await redis.info("commandstats")
            return {name: int(v["calls"]) for name, v in stats.items()}

        before = await calls()
        ids: list[str] = []
        for _ in range(4):
            response = await client.post("/predict", json=batch)
            assert response.status_code == 200
            ids += [p["prediction_id"] for p in response.json()["predictions"]]
        after = await calls()
        stored = await app.state.runtime.storage.predictions.take_with_served(ids[-1])
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta["cmdstat_evalsha"] == 4
    assert delta["cmdstat_set"] == 4 * 2 * 50  # features + served, inside the scripts
    assert len(set(ids)) == len(ids) == 200
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert stored[0] == {"amount": 49.0, "mcc": "5411"} and stored[1]["y"] in (0, 1)
