"""The Redis Lua EMA equals models.frequency bit for bit (compared with == on floats)."""

from __future__ import annotations

import random

import pytest
import redis.asyncio as aioredis

from models.frequency import (
    ClassFrequencyEstimator,
    decay_for_half_life,
    ema_update,
    estimates,
)
from service.storage.model_storage import ModelStorage


def _random_labels(rng: random.Random, k: int, n: int) -> list[int]:
    # a skewed prior, as in the service's use: one class far rarer than the others
    weights = [rng.random() + 0.05 for _ in range(k)]
    weights[rng.randrange(k)] = 0.01
    return rng.choices(range(k), weights=weights, k=n)


def _random_times(rng: random.Random, n: int) -> list[float]:
    # irregular gaps, some repeated and some out of order (negative gaps decay nothing)
    t = 1_700_000_000.0 + rng.random() * 1000.0
    out = []
    for _ in range(n):
        t += rng.choice([0.0, rng.expovariate(1.0), rng.expovariate(0.01), -rng.random() * 5])
        out.append(t)
    return out


def _batches(rng: random.Random, n: int) -> list[tuple[int, int]]:
    bounds, start = [], 0
    while start < n:
        size = rng.choice([1, 1, 2, 7, 64, 500])
        bounds.append((start, min(n, start + size)))
        start += size
    return bounds


@pytest.mark.parametrize(
    ("k", "half_life", "time_half_life", "floor", "seed"),
    [
        (2, 2000.0, None, 1e-4, 0),
        (2, 7.5, None, 0.0, 1),
        (3, 100.0, None, 1e-3, 2),
        (5, 33.3, None, 1e-4, 3),
        (10, 1.0, None, 0.01, 4),
        (2, 2000.0, 60.0, 1e-4, 5),
        (3, 50.0, 0.37, 1e-4, 6),
        (4, 300.0, 3600.0, 1e-5, 7),
    ],
)
async def test_lua_ema_equals_python_bit_for_bit(
    redis_client: aioredis.Redis,
    k: int,
    half_life: float,
    time_half_life: float | None,
    floor: float,
    seed: int,
) -> None:
    rng = random.Random(seed)
    n = 3000
    labels = _random_labels(rng, k, n)
    times = _random_times(rng, n)
    store = ModelStorage(redis_client, f"ema{seed}", k)
    reference = ClassFrequencyEstimator(k, half_life, floor, time_half_life)
    decay = decay_for_half_life(half_life)
    for start, stop in _batches(rng, n):
        batch_times = times[start:stop] if time_half_life is not None else None
        expected = reference.update(labels[start:stop], batch_times)
        got, state = await store.frequencies.update(
            labels[start:stop], batch_times, decay, time_half_life, floor
        )
        assert got == expected
        assert state == reference.state_dict()
    assert state["count"] == n
    assert await store.frequencies.state() == reference.state_dict()


async def test_timestamps_without_time_half_life_use_event_decay(
    redis_client: aioredis.Redis,
) -> None:
    rng = random.Random(11)
    labels = _random_labels(rng, 3, 400)
    times = _random_times(rng, 400)
    decay = decay_for_half_life(20.0)
    store = ModelStorage(redis_client, "untimed", 3)
    got, state = await store.frequencies.update(labels, times, decay, None, 1e-4)
    m, norm = ema_update([0.0] * 3, 0.0, labels, decay)
    assert got == estimates(m, norm, 1e-4)
    assert state == {"m": m, "norm": norm, "count": 400, "last_time": None}


async def test_time_mode_without_timestamps_counts_each_event_once(
    redis_client: aioredis.Redis,
) -> None:
    rng = random.Random(13)
    labels = _random_labels(rng, 3, 300)
    times = _random_times(rng, 300)
    decay = decay_for_half_life(25.0)
    reference = ClassFrequencyEstimator(3, 25.0, 1e-4, 15.0)
    store = ModelStorage(redis_client, "mixed", 3)
    # timed, untimed, timed again: the gain stays 1 in time mode throughout
    for start, stop, timed in ((0, 100, True), (100, 200, False), (200, 300, True)):
        batch_times = times[start:stop] if timed else None
        expected = reference.update(labels[start:stop], batch_times)
        got, state = await store.frequencies.update(
            labels[start:stop], batch_times, decay, 15.0, 1e-4
        )
        assert got == expected
        assert state == reference.state_dict()


async def test_restored_state_continues_identically(redis_client: aioredis.Redis) -> None:
    rng = random.Random(12)
    labels = _random_labels(rng, 2, 600)
    times = _random_times(rng, 600)
    decay = decay_for_half_life(40.0)
    reference = ClassFrequencyEstimator(2, 40.0, 1e-4, 30.0)
    reference.update(labels[:300], times[:300])
    store = ModelStorage(redis_client, "restored", 2)
    await store.frequencies.set_state(reference.state_dict())
    assert await store.frequencies.state() == reference.state_dict()
    got, state = await store.frequencies.update(labels[300:], times[300:], decay, 30.0, 1e-4)
    assert got == reference.update(labels[300:], times[300:])
    assert state == reference.state_dict()


async def test_empty_state_gives_uniform_and_bad_labels_are_rejected(
    redis_client: aioredis.Redis,
) -> None:
    store = ModelStorage(redis_client, "empty", 4)
    got, state = await store.frequencies.update([], None, 0.5, None, 1e-4)
    assert got == [0.25] * 4
    assert state == {"m": [0.0] * 4, "norm": 0.0, "count": 0, "last_time": None}
    with pytest.raises(ValueError, match="label 4 out of range"):
        await store.frequencies.update([0, 4], None, 0.5, None, 1e-4)
    with pytest.raises(ValueError, match="timestamps has 1 entries for 2 labels"):
        await store.frequencies.update([0, 1], [1.0], 0.5, 10.0, 1e-4)
