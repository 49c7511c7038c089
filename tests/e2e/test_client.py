"""service.client against the real app (embedded Redis, learner task) through ASGI: learn with
client-side ids, predict, late labels, state; errors that carry the service's field message;
batches split on 413. Retries under faults are in tests/reliability/test_client_retries.py."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.client import (
    AsyncClient,
    InvalidRequest,
    PayloadTooLarge,
    Unauthorized,
    assign_ids,
)
from service.settings import Settings
from tests.e2e.conftest import fraud_stream, running

KEY = "client-test-key-0123"


def _client(app: FastAPI, **kwargs: Any) -> AsyncClient:
    """A client of the running app, in-process."""
    return AsyncClient("http://sb", transport=httpx.ASGITransport(app=app), backoff=0.01, **kwargs)


async def test_learn_assigns_ids_before_sending_and_resending_them_adds_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    events = fraud_stream(120, fraud_rate=0.1, seed=41)
    for event in events:
        del event["id"]
    async with running(make_settings()) as (app, _), _client(app, batch_size=50) as sb:
        first = await sb.learn(events, wait=True)
        assert (first.accepted, first.duplicates) == (120, 0)
        assert len(first.ids) == 120 and len(set(first.ids)) == 120
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in first.ids)
        assert first.model_version is not None and first.model_version >= 3  # 3 batches
        assert all("id" not in e for e in events)  # the caller's events are not modified

        resent = [{**e, "id": i} for e, i in zip(events, first.ids, strict=True)]
        again = await sb.learn(resent, wait=True)
        assert (again.accepted, again.duplicates, again.ids) == (0, 120, first.ids)

        state = await sb.state()
        frauds = sum(e["label"] == "fraud" for e in events)
        assert state["events_learned"] == 120
        assert state["counts"] == {"legit": 120 - frauds, "fraud": frauds}


async def test_predict_then_a_late_label_learns_the_served_features(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(make_settings()) as (app, _), _client(app) as sb:
        assert await sb.ready()
        await sb.learn(fraud_stream(400, fraud_rate=0.1, seed=42), wait=True)
        fraud = {"amount": 720.0, "mcc": "5732", "ip_risk": 0.9, "hour": 3, "card_present": False}
        legit = {"amount": 30.0, "mcc": "5411", "ip_risk": 0.1, "hour": 12, "card_present": True}
        one = await sb.predict(fraud)
        many = await sb.predict_many([legit, fraud, legit])
        assert one.label == "fraud" and [p.label for p in many] == ["legit", "fraud", "legit"]
        assert math.isclose(sum(one.probabilities.values()), 1.0, rel_tol=1e-6)
        assert one.prediction_id is not None and one.data["prediction_id"] == one.prediction_id
        before = (await sb.state())["counts"]["fraud"]

        labelled = await sb.label(one.prediction_id, "fraud", wait=True)
        assert (labelled.accepted, labelled.ids) == (1, [f"label:{one.prediction_id}"])
        state = await sb.state()
        assert state["counts"]["fraud"] == before + 1
        assert state["events_learned"] == 401
        drift = await sb.drift()
        assert isinstance(drift["drift_detected"], bool) and drift["signals"]


async def test_errors_name_the_field_and_are_not_retried(
    make_settings: Callable[..., Settings],
) -> None:
    bad = [
        {"features": {"amount": 1.0}, "label": "legit"},
        {"features": {"amount": math.nan}, "label": "fraud"},
    ]
    async with running(make_settings()) as (app, _), _client(app) as sb:
        with pytest.raises(InvalidRequest) as caught:
            await sb.learn(bad)
        error = caught.value
        assert error.status == 422 and error.attempts == 1
        assert error.field == "events[1].features.amount"
        assert error.detail == "events[1].features.amount: NaN is not allowed"
        assert str(error) == "HTTP 422: events[1].features.amount: NaN is not allowed"

        with pytest.raises(InvalidRequest) as caught:
            await sb.learn({"features": {"amount": 1.0}, "label": "chargeback"})
        assert caught.value.field == "events[0].label"
        assert "unknown label 'chargeback'" in caught.value.detail
        assert (await sb.state())["events_learned"] == 0  # nothing of either request stored


async def test_the_api_key_comes_from_the_environment(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    event = {"features": {"amount": 5.0}, "label": "legit"}
    async with running(make_settings(api_key=KEY)) as (app, _):
        monkeypatch.delenv("STREAMBALANCE_API_KEY", raising=False)
        async with _client(app) as anonymous:
            with pytest.raises(Unauthorized) as caught:
                await anonymous.learn(event)
            assert caught.value.status == 401 and caught.value.field == "X-API-Key"
        async with _client(app, api_key="wrong-key-0000") as wrong:
            with pytest.raises(Unauthorized, match="wrong key"):
                await wrong.learn(event)
        monkeypatch.setenv("STREAMBALANCE_API_KEY", KEY)
        async with _client(app) as keyed:
            assert (await keyed.learn(event)).accepted == 1
            assert KEY not in repr(keyed)


async def test_a_batch_over_the_body_limit_is_split_and_a_single_oversized_event_raises(
    make_settings: Callable[..., Settings],
) -> None:
    events = assign_ids(fraud_stream(300, fraud_rate=0.05, seed=43))
    one_event_bytes = len(httpx.Request("POST", "/", json={"events": events[:1]}).content)
    limit = 40 * one_event_bytes  # about 40 events per request
    async with (
        running(make_settings(max_body_bytes=limit)) as (app, _),
        _client(app, batch_size=300) as sb,
    ):
        result = await sb.learn(events, wait=True)
        assert (result.accepted, result.duplicates) == (300, 0)
        assert result.ids == [e["id"] for e in events]
        assert (await sb.state())["events_learned"] == 300

        huge = {"features": {f"f{i}": "x" * 40 for i in range(limit // 40)}, "label": "legit"}
        with pytest.raises(PayloadTooLarge) as caught:
            await sb.learn(huge)
        assert caught.value.status == 413


def test_bad_client_settings_are_refused_with_the_value() -> None:
    from service.client import Client

    with pytest.raises(ValueError, match="retries must be >= 0, got -1"):
        Client(retries=-1)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        Client(batch_size=0)
    with pytest.raises(ValueError, match="timeout must be > 0 seconds, got 0"):
        Client(timeout=0)
