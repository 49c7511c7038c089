"""Shared pieces of the fault tests: event streams, senders, waiting for the learner, the
EMA reference computed from the order the events reached the stream."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import httpx
import redis

from models.frequency import decay_for_half_life, ema_update, estimates
from service.learner.entries import parse_entry_id
from service.storage.keys import Keys

CLASSES = ["legit", "fraud"]


def make_events(
    n: int, seed: int = 0, fraud_rate: float = 0.05, prefix: str = "ev"
) -> list[dict[str, Any]]:
    """n labeled card-like events with ids `<prefix>-<i>`; fraud is learnable."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fraud = rng.random() < fraud_rate
        out.append({
            "id": f"{prefix}-{i}",
            "features": {
                "amount": round(rng.gauss(700.0 if fraud else 40.0, 60.0 if fraud else 20.0), 2),
                "mcc": rng.choice(["5732", "4829"] if fraud else ["5411", "5812", "5541"]),
                "ip_risk": round(rng.uniform(0.5, 1.0) if fraud else rng.uniform(0.0, 0.5), 3),
            },
            "label": "fraud" if fraud else "legit",
        })  # fmt: skip
    return out


def state(url: str, **headers: str) -> dict[str, Any]:
    response = httpx.get(url + "/state", headers=headers, timeout=10.0)
    response.raise_for_status()
    return response.json()


def wait_learned(
    url: str, expected: int, timeout: float = 90.0, settle: float = 1.0, **headers: str
) -> dict[str, Any]:
    """Poll /state until events_learned reaches `expected` (then `settle` s more, to catch a
    double count arriving late) or the timeout passes; returns the last state."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = state(url, **headers)
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if last["events_learned"] >= expected:
            time.sleep(settle)
            return state(url, **headers)
        time.sleep(0.2)
    return last


def stream_order(
    client: redis.Redis, model: str, events: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The stored events in the order the learner applies them: by the stream entry each id
    went to (the idempotency key holds it), then by position in the request that stored it.
    Events whose id was never stored are left out."""
    keys = Keys(model)
    entry_ids = client.mget([keys.idem(e["id"]) for e in events])
    stored = [
        (parse_entry_id(raw.decode()), i) for i, raw in enumerate(entry_ids) if raw is not None
    ]
    stored.sort()
    return [events[i] for _, i in stored]


def ema_reference(
    ordered: Sequence[dict[str, Any]], half_life: float | None = None, floor: float | None = None
) -> tuple[list[float], float, list[float]]:
    """(m, norm, frequencies) that models.frequency computes for these labels in this order
    (with the service's default half-life and floor unless given)."""
    from service.settings import Settings

    defaults = Settings.model_fields
    half_life = defaults["half_life"].default if half_life is None else half_life
    floor = defaults["floor"].default if floor is None else floor
    labels = [
        CLASSES.index(e["label"]) if isinstance(e["label"], str) else e["label"] for e in ordered
    ]
    m, norm = ema_update([0.0] * len(CLASSES), 0.0, labels, decay_for_half_life(half_life))
    return m, norm, estimates(m, norm, floor)


def redis_ema(client: redis.Redis, model: str) -> dict[str, float]:
    raw = client.hgetall(Keys(model).ema)
    return {k.decode(): float(v) for k, v in raw.items() if k != b"last_time"}
