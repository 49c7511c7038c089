"""DriftMonitor: each signal fires on its synthetic change, stays quiet without one, round-trips."""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from models.drift import DRIFT, OK, WARNING, DriftMonitor, ema_difference_std, psi

CLASSES = ["legit", "fraud"]


@dataclass
class Step:
    """The StepStats fields the monitor reads (the learner's real dataclass has the same)."""

    grad_norm: float = 1.0
    clipped: bool = False
    skipped: bool = False
    per_class_grad_norm: list[float] = field(default_factory=lambda: [0.5, 1.0])


@dataclass
class Scenario:
    """A synthetic prequential stream; every knob may change at event ``change_at``."""

    seed: int = 0
    n: int = 20_000
    batch: int = 200
    change_at: int | None = None
    p_fraud: tuple[float, float] = (0.01, 0.01)
    error_legit: tuple[float, float] = (0.1, 0.1)
    error_fraud: tuple[float, float] = (0.2, 0.2)
    score_a: tuple[float, float] = (2.0, 2.0)  # beta(a, 8) legit score before/after
    amount_mean: tuple[float, float] = (100.0, 100.0)

    def batches(self):
        rng = np.random.default_rng(self.seed)
        for start in range(0, self.n, self.batch):
            j = int(self.change_at is not None and start >= self.change_at)
            y = (rng.random(self.batch) < self.p_fraud[j]).astype(int)
            err = np.where(y == 1, self.error_fraud[j], self.error_legit[j])
            y_pred = np.where(rng.random(self.batch) < err, 1 - y, y)
            score = rng.beta(self.score_a[j], 8.0, self.batch)
            score = np.where(y == 1, np.clip(score + 0.5, 0.0, 1.0), score)
            probs = np.stack([1.0 - score, score], axis=1)
            feats = {
                "amount": (rng.normal(self.amount_mean[j], 10.0, self.batch)).tolist(),
                "age": rng.normal(40.0, 5.0, self.batch).tolist(),
            }
            yield start, y.tolist(), y_pred.tolist(), probs, feats


def run(monitor: DriftMonitor, scenario: Scenario, step: Step | None = None):
    """Feed the scenario; return [(batch_start, signal_name)] of every detection."""
    fired = []
    for start, y, y_pred, probs, feats in scenario.batches():
        for name in monitor.update(y, y_pred, probs, feats, step, time=1_000.0 + start):
            fired.append((start, name))
    return fired


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stationary_stream_raises_no_detection(seed: int) -> None:
    monitor = DriftMonitor(CLASSES, seed=seed)
    assert run(monitor, Scenario(seed=seed, n=30_000), Step()) == []
    assert not monitor.drift_detected
    assert all(s["state"] in (OK, WARNING) for s in monitor.signals())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adwin_error_detects_abrupt_change_within_bound(seed: int) -> None:
    monitor = DriftMonitor(CLASSES, seed=seed)
    scenario = Scenario(seed=seed, n=6_000, change_at=5_000, error_legit=(0.1, 0.4))
    fired = run(monitor, scenario)
    error_hits = [start for start, name in fired if name == "error"]
    assert error_hits and 5_000 <= error_hits[0] <= 5_400
    signal = next(s for s in monitor.signals() if s["name"] == "error")
    assert 5_000 <= signal["last_detection_event"] < 5_600
    assert signal["detector"] == "ADWIN" and signal["detections"] >= 1
    assert signal["last_detection_at"] == pytest.approx(1_000.0 + error_hits[-1])
    assert signal["state"] == DRIFT  # within `hold` events of the detection
    assert signal["details"]["direction"] == "up"  # the error rose
    assert signal["value"] == pytest.approx(0.4, abs=0.08)  # ADWIN's window mean after the cut
    assert monitor.drift_detected


def test_class_error_signal_catches_a_minority_recall_collapse() -> None:
    monitor = DriftMonitor(CLASSES, seed=3)
    scenario = Scenario(
        seed=3, n=12_000, change_at=6_000, p_fraud=(0.1, 0.1), error_fraud=(0.1, 0.9)
    )
    names = {name for start, name in run(monitor, scenario) if start >= 6_000}
    assert "error:fraud" in names
    assert "error:legit" not in names
    # and back: the recovery is a change too, reported as going down
    recovery = Scenario(seed=4, n=4_000, p_fraud=(0.1, 0.1), error_fraud=(0.1, 0.1))
    assert "error:fraud" in {name for _, name in run(monitor, recovery)}
    fraud = next(s for s in monitor.signals() if s["name"] == "error:fraud")
    assert fraud["details"]["direction"] == "down"


def test_prior_signal_flags_jump_from_1_to_10_percent() -> None:
    monitor = DriftMonitor(CLASSES, seed=4)
    scenario = Scenario(seed=4, n=14_000, change_at=10_000, p_fraud=(0.01, 0.10))
    hits = [start for start, name in run(monitor, scenario) if name == "prior:fraud"]
    assert hits and 10_000 <= hits[0] <= 10_400
    assert len(hits) == 1  # hysteresis: one move, one detection
    prior = next(s for s in monitor.signals() if s["name"] == "prior:fraud")
    assert prior["state"] == DRIFT and prior["value"] > 1.5  # short/long ratio


def test_psi_flags_a_score_shift_and_not_before() -> None:
    monitor = DriftMonitor(CLASSES, seed=5)
    before = Scenario(seed=5, n=6_000)
    assert [n for _, n in run(monitor, before) if n == "score_psi"] == []
    psi_signal = next(s for s in monitor.signals() if s["name"] == "score_psi")
    assert psi_signal["value"] is not None and psi_signal["value"] < 0.1
    shifted = Scenario(seed=6, n=1_000, score_a=(5.0, 5.0))
    assert [n for _, n in run(monitor, shifted) if n == "score_psi"] == ["score_psi"]
    psi_signal = next(s for s in monitor.signals() if s["name"] == "score_psi")
    assert psi_signal["value"] >= 0.25 and psi_signal["state"] == DRIFT
    # a full window after the detection, the shifted scores become the new reference
    assert [n for _, n in run(monitor, Scenario(seed=7, n=1_000, score_a=(5.0, 5.0)))] == []
    psi_signal = next(s for s in monitor.signals() if s["name"] == "score_psi")
    assert psi_signal["value"] < 0.1 and psi_signal["state"] == OK
    assert psi_signal["detections"] == 1


def test_feature_signal_flags_a_mean_shift_of_a_numeric_feature() -> None:
    monitor = DriftMonitor(CLASSES, seed=7)
    scenario = Scenario(seed=7, n=12_000, change_at=8_000, amount_mean=(100.0, 130.0))
    fired = run(monitor, scenario)
    hits = [start for start, name in fired if name == "feature:amount"]
    assert hits and 8_000 <= hits[0] <= 9_500
    assert not [name for _, name in fired if name == "feature:age"]
    assert monitor.tracked_features == ["age", "amount"]


def test_feature_tracking_is_bounded() -> None:
    monitor = DriftMonitor(CLASSES, feature_max=3, feature_sample=1.0)
    feats = {f"f{i}": [float(i)] * 4 for i in range(10)}
    monitor.update([0, 0, 1, 0], [0, 0, 0, 0], np.full((4, 2), 0.5), feats)
    assert len(monitor.tracked_features) == 3
    assert monitor.wants_feature("f0") and not monitor.wants_feature("f9")


def _junk_flood_batch(rng: np.random.Generator, start: int, n: int, junk: int) -> dict:
    """Columns for n events: amount and age in every event, plus `junk` names per event
    that never repeat (an id sent as a feature name), absent elsewhere."""
    feats: dict[str, list] = {
        "amount": rng.normal(100.0, 10.0, n).tolist(),
        "age": rng.normal(40.0, 5.0, n).tolist(),
    }
    for i in range(n):
        for k in range(junk):
            column = [None] * n
            column[i] = float(rng.normal())
            feats[f"id_{start + i}_{k}"] = column
    return feats


def test_names_that_never_repeat_never_take_a_feature_slot() -> None:
    """Audit finding 17: the first feature_max names seen took the slots for good, so a
    burst of one-off names (sorted first, "a_...") blinded feature drift on amount."""
    monitor = DriftMonitor(CLASSES, feature_max=3, feature_sample=1.0)
    rng = np.random.default_rng(0)
    for start in range(0, 400, 20):
        feats = _junk_flood_batch(rng, start, 20, junk=5)
        feats = {("a_" + k if k.startswith("id_") else k): v for k, v in feats.items()}
        monitor.update([0] * 20, [0] * 20, np.full((20, 2), 0.5), feats)
    assert monitor.tracked_features == ["age", "amount"]


def test_a_single_event_batch_stream_tracks_its_real_features() -> None:
    monitor = DriftMonitor(CLASSES, feature_max=2, feature_sample=1.0)
    rng = np.random.default_rng(1)
    for start in range(50):  # one event per batch: a name needs a sighting in an earlier one
        monitor.update([0], [0], np.full((1, 2), 0.5), _junk_flood_batch(rng, start, 1, junk=4))
    assert monitor.tracked_features == ["age", "amount"]


def test_slots_of_features_that_go_unseen_are_released() -> None:
    monitor = DriftMonitor(CLASSES, feature_max=3, feature_sample=1.0, feature_idle=500)
    probs = np.full((50, 2), 0.5)
    old = {name: [1.0] * 50 for name in ("f0", "f1", "f2")}
    for _ in range(4):
        monitor.update([0] * 50, [0] * 50, probs, old)
    assert monitor.tracked_features == ["f0", "f1", "f2"]
    assert not monitor.wants_feature("g0")
    new = {"g0": [2.0] * 50, "g1": [3.0] * 50, "f2": [1.0] * 50}  # f2 stays in use
    for _ in range(10):  # 500 events: f0 and f1 are idle only after them
        monitor.update([0] * 50, [0] * 50, probs, new)
    assert monitor.tracked_features == ["f0", "f1", "f2"]
    assert monitor.wants_feature("g0")
    monitor.update([0] * 50, [0] * 50, probs, new)
    assert sorted(monitor.tracked_features) == ["f2", "g0", "g1"]
    # released slots and their last sightings survive a snapshot
    restored = DriftMonitor(CLASSES, feature_max=3, feature_sample=1.0, feature_idle=500)
    restored.load_state_dict(_through_torch(monitor.state_dict()))
    assert _plain(restored.state_dict()) == _plain(monitor.state_dict())


def test_feature_slots_of_an_old_snapshot_count_as_seen_at_load() -> None:
    monitor = DriftMonitor(CLASSES, feature_max=2, feature_sample=1.0, feature_idle=100)
    monitor.update([0] * 10, [0] * 10, np.full((10, 2), 0.5), {"junk": [1.0] * 10})
    monitor.update([0] * 990, [0] * 990, np.full((990, 2), 0.5))
    state = _through_torch(monitor.state_dict())
    del state["features"]["junk"]["last_seen"]  # as written before slots were released
    restored = DriftMonitor(CLASSES, feature_max=2, feature_sample=1.0, feature_idle=100)
    restored.load_state_dict(state)
    assert restored.events == 1000 and restored.tracked_features == ["junk"]
    amount = {"amount": [5.0] * 10}
    restored.update([0] * 10, [0] * 10, np.full((10, 2), 0.5), amount)
    assert restored.tracked_features == ["junk", "amount"]  # idle counted from the load
    for _ in range(11):  # idle for more than 100 events after the load
        restored.update([0] * 10, [0] * 10, np.full((10, 2), 0.5), amount)
    assert restored.tracked_features == ["amount"]


def test_training_health_reports_skips_and_exploding_gradients() -> None:
    monitor = DriftMonitor(CLASSES)
    y, probs = [0, 1], np.full((2, 2), 0.5)
    for _ in range(500):
        monitor.update(y, [0, 1], probs, step=Step(grad_norm=1.0))
    health = next(s for s in monitor.signals() if s["name"] == "training_health")
    assert health["state"] == OK and health["value"] == pytest.approx(1.0)
    monitor.update(y, [0, 1], probs, step=Step(grad_norm=math.nan, skipped=True))
    health = next(s for s in monitor.signals() if s["name"] == "training_health")
    assert health["state"] == WARNING and health["details"]["skipped_steps"] == 1
    assert math.isfinite(health["details"]["grad_norm_ema"])  # the NaN step did not poison it
    new = []
    for _ in range(30):
        new += monitor.update(y, [0, 1], probs, step=Step(grad_norm=200.0, clipped=True))
    assert new == ["training_health"]
    health = next(s for s in monitor.signals() if s["name"] == "training_health")
    assert health["state"] == DRIFT and health["value"] > 10.0
    assert health["details"]["clipped_steps"] == 30 and health["details"]["clip_rate"] > 0.3


def _through_torch(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def test_state_round_trip_continues_identically() -> None:
    scenario = Scenario(
        seed=8, n=16_000, change_at=11_000, error_legit=(0.1, 0.35), p_fraud=(0.01, 0.08),
        score_a=(2.0, 4.0), amount_mean=(100.0, 125.0),
    )  # fmt: skip
    batches = list(scenario.batches())
    original = DriftMonitor(CLASSES, seed=8)
    for start, y, y_pred, probs, feats in batches[:40]:
        original.update(y, y_pred, probs, feats, Step(), time=float(start))
    restored = DriftMonitor(CLASSES, seed=8)
    restored.load_state_dict(_through_torch(original.state_dict()))
    assert restored.signals() == original.signals()
    fired_a, fired_b = [], []
    for start, y, y_pred, probs, feats in batches[40:]:
        fired_a += original.update(y, y_pred, probs, feats, Step(), time=float(start))
        fired_b += restored.update(y, y_pred, probs, feats, Step(), time=float(start))
    assert fired_a == fired_b
    assert {"error", "prior:fraud", "score_psi", "feature:amount"} <= set(fired_a)
    assert restored.signals() == original.signals()
    assert _plain(restored.state_dict()) == _plain(original.state_dict())


def test_load_rejects_other_classes() -> None:
    state = DriftMonitor(CLASSES).state_dict()
    with pytest.raises(ValueError, match="classes"):
        DriftMonitor(["a", "b", "c"]).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"adwin_delta": 0.0}, "adwin_delta"),
        ({"adwin_delta": 1.5}, "adwin_delta"),
        ({"prior_long_half_life": 100.0}, "prior_long_half_life"),
        ({"prior_min_ratio": 1.0}, "prior_min_ratio"),
        ({"feature_sample": 2.0}, "feature_sample"),
        ({"feature_idle": 0}, "feature_idle"),
        ({"psi_bins": 1}, "psi_bins"),
        ({"psi_drift": 0.05}, "psi_drift"),
        ({"replay": -1}, "replay"),
        ({"hold": math.nan}, "hold"),
    ],
)
def test_bad_settings_name_the_setting(kwargs: dict, field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        DriftMonitor(CLASSES, **kwargs)


def test_bad_inputs_are_rejected() -> None:
    monitor = DriftMonitor(CLASSES)
    with pytest.raises(ValueError, match="shape"):
        monitor.update([0, 1], [0, 1], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="class index"):
        monitor.update([0, 2], [0, 1], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="amount"):
        monitor.update([0, 1], [0, 1], np.zeros((2, 2)), {"amount": [1.0]})
    with pytest.raises(ValueError, match="classes"):
        DriftMonitor(["only"])


def test_psi_and_ema_std_math() -> None:
    rng = np.random.default_rng(0)
    same = psi(rng.normal(size=2_000), rng.normal(size=2_000))
    moved = psi(rng.normal(size=2_000), rng.normal(0.5, 1.0, size=2_000))
    assert same < 0.05 < 0.1 < moved
    # the closed form matches a simulated stream of two EMAs of a Bernoulli(0.05)
    bs, bl = 2.0 ** (-1 / 50), 2.0 ** (-1 / 500)
    x = (rng.random(200_000) < 0.05).astype(float)
    s = lo = 0.05
    diffs = []
    for t, v in enumerate(x):
        s, lo = bs * s + (1 - bs) * v, bl * lo + (1 - bl) * v
        if t > 5_000:
            diffs.append(s - lo)
    assert np.std(diffs) == pytest.approx(ema_difference_std(0.05, bs, bl), rel=0.1)


def test_update_is_cheap_for_a_few_hundred_events() -> None:
    monitor = DriftMonitor(CLASSES)
    batches = list(Scenario(seed=9, n=30 * 300, batch=300).batches())
    started = time.perf_counter()
    for _, y, y_pred, probs, feats in batches:
        monitor.update(y, y_pred, probs, feats, Step())
    per_batch = (time.perf_counter() - started) / len(batches)
    assert per_batch < 0.05  # measured ~1.5 ms on one shared core


def _sequential_prior(x: list[float], bs: float, bl: float, mon: DriftMonitor):
    """Event-by-event reference for the vectorized prior signal: (ratios, states, detections)."""
    m = [0.0, 0.0, 0.0, 0.0]
    state, ratios, states, hits = OK, [], [], []
    for t, v in enumerate(x, start=1):
        m = [bs * m[0] + (1 - bs) * v, bs * m[1] + (1 - bs), bl * m[2] + (1 - bl) * v,
             bl * m[3] + (1 - bl)]  # fmt: skip
        short, long = m[0] / m[1], max(m[2] / m[3], mon.prior_floor)
        ratio = short / long
        ratios.append(ratio)
        if t >= mon.prior_grace:
            z = abs(short - long) / ema_difference_std(min(long, 1 - mon.prior_floor), bs, bl)
            moved = ratio >= mon.prior_min_ratio or ratio <= 1 / mon.prior_min_ratio
            if moved and z >= mon.prior_z_drift:
                if state != DRIFT:
                    hits.append(t - 1)
                state = DRIFT
            elif not (state == DRIFT and z >= mon.prior_z_warning):
                state = WARNING if moved and z >= mon.prior_z_warning else OK
        states.append(state)
    return ratios, states, hits


def test_vectorized_prior_signal_matches_event_by_event_reference() -> None:
    monitor = DriftMonitor(CLASSES, prior_short_half_life=50.0, prior_long_half_life=400.0,
                           prior_grace=100, prior_z_warning=2.0, prior_z_drift=3.0)  # fmt: skip
    rng = np.random.default_rng(11)
    p = np.r_[np.full(1500, 0.02), np.full(700, 0.2), np.full(1500, 0.02), np.full(800, 0.3)]
    y = (rng.random(p.size) < p).astype(int)
    bs, bl = 2.0 ** (-1 / 50), 2.0 ** (-1 / 400)
    ratios, states, hits = _sequential_prior(y.astype(float).tolist(), bs, bl, monitor)
    assert len(hits) >= 2  # the scenario does leave drift and re-enter it
    seen_states, seen_hits = [], []
    for start in range(0, y.size, 90):  # batches straddle the changes
        chunk = y[start : start + 90].tolist()
        new = monitor.update(chunk, chunk, np.full((len(chunk), 2), 0.5), time=0.0)
        prior = next(s for s in monitor.signals() if s["name"] == "prior:fraud")
        seen_states.append(prior["state"])
        assert prior["value"] == pytest.approx(ratios[start + len(chunk) - 1], rel=1e-9)
        if "prior:fraud" in new:
            seen_hits.append(prior["last_detection_event"])
    assert seen_states == [states[min(s + 89, y.size - 1)] for s in range(0, y.size, 90)]
    prior = next(s for s in monitor.signals() if s["name"] == "prior:fraud")
    assert prior["detections"] == len(hits) and prior["last_detection_event"] == hits[-1]
    assert set(seen_hits) <= set(hits)


def test_feature_signals_read_from_events_match_full_columns() -> None:
    """The trainer hands the batch's dicts (only sampled rows are read); the signals must
    be the same as with full columns."""
    scenario = Scenario(seed=5, n=12_000, change_at=6_000, amount_mean=(100.0, 140.0))
    by_columns, by_events = DriftMonitor(CLASSES, seed=5), DriftMonitor(CLASSES, seed=5)
    fired_columns, fired_events = [], []
    for start, y, y_pred, probs, feats in scenario.batches():
        events = [
            {"amount": a, "age": b, "mcc": "5411", "flag": True}
            for a, b in zip(feats["amount"], feats["age"], strict=True)
        ]
        fired_columns += by_columns.update(y, y_pred, probs, feats, time=float(start))
        fired_events += by_events.update(y, y_pred, probs, events=events, time=float(start))
    assert "feature:amount" in fired_events
    assert fired_events == fired_columns
    assert by_events.signals() == by_columns.signals()
    with pytest.raises(ValueError, match="events has 1 entries for 2 labels"):
        by_events.update([0, 1], [0, 1], np.full((2, 2), 0.5), events=[{}])
