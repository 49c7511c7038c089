"""Model state is bounded by the configuration, not by the traffic (issue 16, audit finding 2).

A client that sends ids as feature names sends names that never repeat. Issue 16's probe
(500,000 such names) grew the service by 534 MiB and its checkpoint to 24 MB; here the same
traffic, scaled down, must leave the featurizer's structures, the process's traced memory
and the snapshot within bounds computed from the configuration. ``python -m
bench.cardinality`` runs the full-size probe.
"""

from __future__ import annotations

import json
import math
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from models import features, snapshot
from models.features import HashingFeaturizer, stable_hash
from models.sketch import DistinctCounter
from models.trainer import StreamTrainer, TrainerConfig

DATA = Path(__file__).parent / "data"
CLASSES = ["legit", "fraud"]


def one_off_names(trainer: StreamTrainer, n_names: int, seed: int, per_event: int = 50) -> None:
    """Learn ``n_names`` numeric names that never repeat, 50 per event, batches of 64."""
    rng = random.Random(seed)
    n_events = n_names // per_event
    for start in range(0, n_events, 64):
        rows = range(start, min(start + 64, n_events))
        feats = [{f"s{seed}_{i}_{k}": rng.gauss(0.0, 1.0) for k in range(per_event)} for i in rows]
        trainer.process(feats, [int(rng.random() < 0.05) for _ in rows], now=1.0)


def normal_events(n: int, seed: int) -> tuple[list[dict], list[int]]:
    rng = random.Random(seed)
    events, labels = [], []
    for _ in range(n):
        fraud = rng.random() < 0.05
        events.append(
            {"amount": rng.lognormvariate(3.0 + fraud, 1.0), "v": rng.gauss(fraud, 1.0),
             "mcc": rng.choice(["5411", "5732"])}
        )  # fmt: skip
        labels.append(int(fraud))
    return events, labels


def test_never_repeating_feature_names_leave_the_state_bounded() -> None:
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, n_bits=12, numeric_bins=16))
    events, labels = normal_events(1_000, seed=0)
    for start in range(0, 1_000, 64):
        trainer.process(events[start : start + 64], labels[start : start + 64], now=1.0)
    normal = trainer.learner.featurizer.state_dict()
    one_off_names(trainer, 60_000, seed=1)
    first = len(trainer.to_bytes())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        one_off_names(trainer, 60_000, seed=2)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    data = trainer.to_bytes()
    f = trainer.learner.featurizer
    # The featurizer's structures: a fixed table, caches within their limits.
    assert f._table.nbytes == 24 << f.stats_bits == 24 * 4096
    assert f.stats_rows_used <= f.max_state_rows == 4096
    assert len(f._slots) <= features._CACHE_LIMIT
    assert len(f._bin_slots) <= features._BIN_CACHE_LIMIT
    assert len(f._noted) <= features._CACHE_LIMIT
    # Per-name state grew by ~200 bytes a name (45 MB here); the caches now hold at most
    # their limit of the test's own name strings.
    assert grown < 16 * 2**20, f"{grown / 2**20:.1f} MiB for 60,000 more names"
    # The featurizer's snapshot: at most every statistics row (32 bytes with its index) and
    # a full name sketch (5 bytes a register), plus the container's overhead; a normal
    # stream's is a few rows. The whole snapshot stops growing (the rest of it, metric
    # windows and detector replays, is bounded by its own settings).
    featurizer = len(snapshot.dumps(f.state_dict()))
    assert featurizer <= f.max_state_rows * 32 + (1 << 12) * 5 + 8_192
    assert len(snapshot.dumps(normal)) < 4_096 and len(normal["rows"]) == 2
    assert trainer.snapshot_bytes == len(data) <= first + 16_384
    # The names were counted, within the sketch's error, without being kept.
    assert f.distinct_names == pytest.approx(120_000 + 3, rel=0.05)
    # The restored trainer predicts as the one that wrote it.
    restored = StreamTrainer.from_bytes(data)
    probe = events[:50]
    np.testing.assert_array_equal(restored.predict(probe)[0], trainer.predict(probe)[0])
    assert restored.learner.featurizer.distinct_names == f.distinct_names


def test_statistics_live_per_slot_and_round_trip_bit_for_bit() -> None:
    f = HashingFeaturizer(n_bits=10, numeric_bins=4)
    f.transform([{"x": float(i), "y": i * 0.5, "s": "a"} for i in range(60)], update=True)
    state = f.state_dict()
    mask = (1 << f.stats_bits) - 1
    assert sorted(state["rows"].tolist()) == sorted(
        {stable_hash("x", 10) & mask, stable_hash("y", 10) & mask}
    )
    g = HashingFeaturizer(n_bits=10, numeric_bins=4)
    g.load_state_dict(state)
    assert np.array_equal(g._table, f._table)
    probe = [{"x": 3.3, "y": -1.0, "s": "a"}] * 30  # the column path
    assert torch.equal(f.transform(probe).weights, g.transform(probe).weights)
    with pytest.raises(ValueError, match="statistics rows"):
        g.load_state_dict({**state, "rows": torch.tensor([1 << 10])})


def test_names_that_share_a_slot_share_its_statistics_in_event_order() -> None:
    """Two names in one slot (their weight is shared anyway) fold into one row, in the order
    the values arrive: the column path must interleave them exactly as the scalar path."""
    n_bits = 4
    names = [f"n{i}" for i in range(64)]
    by_slot: dict[int, list[str]] = {}
    for name in names:
        by_slot.setdefault(stable_hash(name, n_bits), []).append(name)
    a, b = next(group for group in by_slot.values() if len(group) >= 2)[:2]
    rng = np.random.default_rng(0)
    events = [{a: float(rng.normal(0, 1)), b: float(rng.normal(50, 3))} for _ in range(40)]
    columns, scalar = HashingFeaturizer(n_bits=n_bits), HashingFeaturizer(n_bits=n_bits)
    by_columns = columns._encode_columns(events, update=True)
    by_scalar = scalar.encode(events, update=True)
    assert by_columns is not None
    np.testing.assert_allclose(by_columns[2], by_scalar[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(columns._table, scalar._table, rtol=1e-9, atol=1e-9)
    values = [v for e in events for v in e.values()]
    count, mean, m2 = scalar._table[stable_hash(a, n_bits)].tolist()
    assert count == 80 and mean == pytest.approx(np.mean(values))
    assert m2 == pytest.approx(np.var(values) * 80)


def test_old_per_name_snapshots_load_and_predict_as_before() -> None:
    """A snapshot written before statistics were per slot (per-name stats, by the code of
    commit 80646a5; tests/unit/data) loads, and predicts what that code predicted."""
    data = (DATA / "snapshot_per_name_stats.bin").read_bytes()
    expected = json.loads((DATA / "snapshot_per_name_stats.json").read_text())
    trainer = StreamTrainer.from_bytes(data)
    f = trainer.learner.featurizer
    for name, (count, mean, m2) in zip(expected["names"], expected["stats"], strict=True):
        row = f._table[stable_hash(name, f.n_bits) & ((1 << f.stats_bits) - 1)].tolist()
        assert row == [count, mean, m2]  # no two of these names share a slot at 10 bits
    probs, labels = trainer.predict(expected["probe"])
    np.testing.assert_allclose(probs, expected["probs"], rtol=0, atol=1e-6)
    assert labels.tolist() == expected["labels"]
    assert round(f.distinct_names) == len(expected["names"])
    again = StreamTrainer.from_bytes(trainer.to_bytes())  # and it saves in the new form
    assert "names" not in again.state_dict()["learner"]["featurizer"]
    np.testing.assert_array_equal(again.predict(expected["probe"])[0], probs)


def test_old_per_name_statistics_of_one_slot_are_merged() -> None:
    names = [f"n{i}" for i in range(40)]
    rng = np.random.default_rng(1)
    values = {name: rng.normal(i, 1.0 + i % 3, size=5 + i) for i, name in enumerate(names)}
    old = {
        "n_bits": 3,
        "max_features": 1000,
        "numeric_bins": 0,
        "names": names,
        "stats": torch.tensor(
            [[len(v), v.mean(), ((v - v.mean()) ** 2).sum()] for v in values.values()],
            dtype=torch.float64,
        ),
    }
    f = HashingFeaturizer(n_bits=3)
    f.load_state_dict(old)
    for slot in range(8):
        together = np.concatenate([values[n] for n in names if stable_hash(n, 3) == slot])
        count, mean, m2 = f._table[slot].tolist()
        assert count == len(together)
        assert mean == pytest.approx(together.mean())
        assert m2 == pytest.approx(((together - together.mean()) ** 2).sum())


def test_distinct_counter_estimates_and_round_trips() -> None:
    counter = DistinctCounter()
    for i in range(50_000):
        counter.add(f"k{i}")
        counter.add(f"k{i // 2}")  # repeats change nothing
    assert counter.estimate() == pytest.approx(50_000, rel=0.05)
    restored = DistinctCounter()
    restored.load_state_dict(counter.state_dict())
    assert restored.estimate() == counter.estimate()
    small = DistinctCounter()
    for i in range(10):
        small.add(str(i))
    assert round(small.estimate()) == 10  # linear counting: exact for a few names
    assert small.state_dict()["index"].numel() == 10  # a few bytes, not 4 KiB
    small.merge(counter)
    assert small.estimate() == pytest.approx(counter.estimate(), rel=1e-3)
    with pytest.raises(ValueError, match="precision"):
        DistinctCounter(precision=3)
    with pytest.raises(ValueError, match="impossible rank"):
        restored.load_state_dict(
            {"precision": 12, "index": torch.tensor([0]), "rank": torch.tensor([99])}
        )


def test_names_counted_only_when_learning_and_not_from_a_failed_batch() -> None:
    f = HashingFeaturizer(n_bits=8)
    f.transform([{"a": 1.0, "b": "x", "c": True, "d": None}], update=True)
    assert round(f.distinct_names) == 3  # d was None: absent
    f.transform([{"p": 1.0}] * 30)  # prediction: no
    with pytest.raises(features.FeatureError):
        f.transform([{"q": 1.0}, {"r": math.nan}], update=True)  # rejected batch: no
    assert round(f.distinct_names) == 3
    f.transform([{"e": 1.0, "f": "y"}] * 30, update=True)  # the column path
    assert round(f.distinct_names) == 5


def test_hash_caches_are_bounded_and_keep_no_long_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "_CACHE_LIMIT", 100)
    f = HashingFeaturizer(n_bits=8)
    f.transform([{"id": f"user-{i}"} for i in range(1_000)])
    assert len(f._slots) <= 100
    long_name = "n" * 10_000
    before = f.transform([{long_name: 1.0}]).indices.tolist()
    assert long_name not in f._slots and before == [stable_hash(long_name, 8)]
