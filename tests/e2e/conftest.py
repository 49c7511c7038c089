"""End-to-end helpers: the real app (real embedded Redis, real learner task) over ASGI.

`running(settings)` runs the app's lifespan (start-up: embedded server, checkpoint restore,
learner; shutdown: drain, final checkpoint, server stop) around an `httpx.AsyncClient`.
`fraud_stream` makes a deterministic, separable 1:100 card-transaction stream.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from service.http.app import create_app
from service.settings import Settings


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://sb"
        ) as client,
    ):
        yield app, client


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test app: embedded Redis in tmp_path unless redis_url is given."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "batch_max_wait_ms": 5,
            "redis_url": None,
        }
        values.update(overrides)
        return Settings(**values)

    return make


def transaction(rng: random.Random, fraud: bool) -> dict[str, Any]:
    """A card transaction; fraud is separable (large amounts, risky merchants, high ip risk)."""
    if fraud:
        return {
            "amount": round(rng.gauss(700.0, 120.0), 2),
            "mcc": rng.choice(["5732", "4829"]),
            "ip_risk": round(rng.uniform(0.6, 1.0), 3),
            "hour": rng.choice([1, 2, 3, 4]),
            "card_present": False,
        }
    return {
        "amount": round(abs(rng.gauss(40.0, 25.0)), 2),
        "mcc": rng.choice(["5411", "5812", "5541", "5912"]),
        "ip_risk": round(rng.uniform(0.0, 0.4), 3),
        "hour": rng.randint(7, 22),
        "card_present": rng.random() < 0.7,
    }


def fraud_stream(
    n: int, fraud_rate: float = 0.01, seed: int = 0, prefix: str = "tx"
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for i in range(n):
        fraud = rng.random() < fraud_rate
        events.append(
            {
                "id": f"{prefix}-{seed}-{i}",
                "features": transaction(rng, fraud),
                "label": "fraud" if fraud else "legit",
            }
        )
    return events


async def learn_all(
    client: httpx.AsyncClient, events: list[dict[str, Any]], batch: int = 250, wait: bool = True
) -> int:
    """POST events in batches; returns the last model version reported (0 without wait)."""
    version = 0
    for start in range(0, len(events), batch):
        response = await client.post(
            "/learn",
            params={"wait": "true"} if wait else None,
            json={"events": events[start : start + batch]},
        )
        assert response.status_code == (200 if wait else 202), response.text
        if wait:
            version = response.json()["model_version"]
    return version


def roc_auc(scores: list[float], positives: list[bool]) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    pos = [s for s, p in zip(scores, positives, strict=True) if p]
    neg = [s for s, p in zip(scores, positives, strict=True) if not p]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))
