"""Bad requests get the right status and a message naming the field; none reaches the model."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from service.settings import Settings
from tests.e2e.conftest import running

GOOD = {"features": {"amount": 12.5, "mcc": "5411"}, "label": "legit"}


def _batch(*events: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(events)}


def _bad_feature(value: str) -> bytes:
    good = '{"features": {"amount": 1.0}, "label": "legit"}'
    bad = '{"features": {"amount": VALUE, "mcc": "5411"}, "label": "fraud"}'.replace("VALUE", value)
    return ('{"events": [' + ", ".join([good, good, good, bad]) + "]}").encode()


# (case, request body (dict = JSON, bytes = raw), status, regex the "detail" must match)
CASES: list[tuple[str, Any, int, str]] = [
    ("nan", _bad_feature("NaN"), 422, r"^events\[3\]\.features\.amount: NaN is not allowed$"),
    (
        "infinity",
        _bad_feature("Infinity"),
        422,
        r"^events\[3\]\.features\.amount: infinity is not allowed$",
    ),
    (
        "overflow",
        _bad_feature("1e999"),
        422,
        r"^events\[3\]\.features\.amount: infinity is not allowed$",
    ),
    ("-infinity", _bad_feature("-Infinity"), 422, r"^events\[3\]\.features\.amount: infinity"),
    (
        "unknown label",
        _batch(GOOD, {**GOOD, "label": "frod"}),
        422,
        r"^events\[1\]\.label: unknown label 'frod'; expected one of legit, fraud",
    ),
    (
        "label index out of range",
        {**GOOD, "label": 7},
        422,
        r"^label: label index 7 out of range 0\.\.1",
    ),
    (
        "label wrong type",
        {**GOOD, "label": 1.5},
        422,
        r"^label: label must be a class name or an integer",
    ),
    ("missing label", {"features": {"a": 1}}, 422, r"^label: Field required"),
    (
        "features not an object",
        {"features": [1, 2], "label": 0},
        422,
        r"^features: Input should be a valid dict",
    ),
    (
        "nested feature",
        _batch({"features": {"card": {"bin": 4111}}, "label": 0}),
        422,
        r"^events\[0\]\.features\.card: nested objects and arrays are not allowed",
    ),
    ("list feature", {"features": {"tags": ["a"]}, "label": 0}, 422, r"^features\.tags: nested"),
    (
        "typo in field",
        {"featurs": {"a": 1}, "label": 0},
        422,
        r"featurs: Extra inputs are not permitted",
    ),
    (
        "bad timestamp",
        {**GOOD, "timestamp": "last tuesday"},
        422,
        r"^timestamp: timestamp 'last tuesday' is not RFC 3339",
    ),
    ("empty batch", {"events": []}, 422, r"^events: empty batch"),
    ("events not a list", {"events": {"a": 1}}, 422, r"^events: Input should be a valid list"),
    (
        "too many events",
        {"events": [GOOD] * 11},
        422,
        r"^events: 11 events, at most 10 per request",
    ),
    (
        "too many features",
        {"features": {f"f{i}": i for i in range(21)}, "label": 0},
        422,
        r"^features: 21 features, at most 20 allowed",
    ),
    ("not an object", [GOOD], 422, r"^body: expected a JSON object"),
    ("invalid json", b'{"features": {"amount": 1.0,}', 422, r"^body: invalid JSON"),
    (
        "both features and prediction_id",
        {**GOOD, "prediction_id": "abc"},
        422,
        r"either features or prediction_id",
    ),
    (
        "unknown prediction",
        {"prediction_id": "nope", "label": "fraud"},
        422,
        r"^prediction_id: unknown or expired prediction 'nope'",
    ),
    (
        "oversized body",
        {"events": [{"features": {"note": "x" * 5000}, "label": 0}]},
        413,
        r"^body: \d+ bytes, at most 4096 allowed",
    ),
]


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(max_body_bytes=4096, max_batch_events=10, max_features=20)


async def test_bad_requests_are_rejected_and_never_learned(settings: Settings) -> None:
    async with running(settings) as (app, client):
        for case, body, status, message in CASES:
            if isinstance(body, bytes):
                response = await client.post(
                    "/learn?wait=true", content=body, headers={"content-type": "application/json"}
                )
            else:
                response = await client.post("/learn?wait=true", json=body)
            assert response.status_code == status, (case, response.text)
            detail = response.json()["detail"]
            assert re.search(message, detail), (case, detail)

        state = (await client.get("/state")).json()
        assert state["events_learned"] == 0
        assert state["stream_lag"] == 0
        assert await app.state.runtime.redis.xlen(app.state.runtime.storage.keys.events) == 0

        # The same route still learns a good event afterwards.
        response = await client.post("/learn?wait=true", json=GOOD)
        assert response.status_code == 200, response.text
        assert (await client.get("/state")).json()["events_learned"] == 1


async def test_streamed_body_over_the_limit_is_refused(settings: Settings) -> None:
    async def chunks():  # no Content-Length: the streamed size is what counts
        for _ in range(10):
            yield b" " * 1000

    async with running(settings) as (_, client):
        response = await client.post(
            "/learn", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert response.json()["detail"].startswith("body: more than 4096 bytes")


async def test_bad_predict_queries(settings: Settings) -> None:
    async with running(settings) as (_, client):
        response = await client.get("/predict?amount=1&amount=2")
        assert response.status_code == 422 and response.json()["detail"].startswith(
            "query.amount: given more than once"
        )
        response = await client.get("/predict?amount=1e999")
        assert (
            response.status_code == 422
            and response.json()["detail"] == "query.amount: infinity is not allowed"
        )
        response = await client.post("/predict", json={"events": [{"features": {"x": {"y": 1}}}]})
        assert response.status_code == 422 and response.json()["detail"].startswith(
            "events[0].features.x: nested"
        )
        response = await client.post("/predict", json={"features": {"x": 1}})
        assert response.status_code == 422 and response.json()["detail"].startswith(
            "events: required"
        )


async def test_api_key_guards_write_routes(make_settings: Callable[..., Settings]) -> None:
    async with running(make_settings(api_key="correct-horse-battery")) as (_, client):
        response = await client.post("/learn", json=GOOD)
        assert response.status_code == 401 and "X-API-Key" in response.json()["detail"]
        response = await client.post("/learn", json=GOOD, headers={"X-API-Key": "wrong-key-1234"})
        assert response.status_code == 401 and response.json()["detail"] == "X-API-Key: wrong key"
        response = await client.post(
            "/learn?wait=true", json=GOOD, headers={"X-API-Key": "correct-horse-battery"}
        )
        assert response.status_code == 200, response.text
        # Reads stay open.
        assert (await client.get("/predict?amount=3")).status_code == 200
        assert (await client.get("/state")).json()["events_learned"] == 1
