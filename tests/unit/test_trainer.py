"""StreamTrainer: config validation, test-then-train order, calibration, snapshots, wiring."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from models.calibration import prior_correct
from models.features import FeatureError
from models.frequency import ClassFrequencyEstimator
from models.rescaling import FactorSmoother
from models.snapshot import SnapshotError
from models.trainer import BatchReport, StreamTrainer, TrainerConfig

CLASSES = ["legit", "fraud"]


def make_stream(n: int, seed: int, p_fraud: float = 1 / 51) -> tuple[list[dict], list[int]]:
    """A separable imbalanced stream: fraud sits at x1 ~ 3, legit at x1 ~ -1 (plus noise)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < p_fraud).astype(int)
    x1 = np.where(y == 1, 3.0, -1.0) + rng.normal(0.0, 0.6, n)
    x2 = rng.normal(0.0, 1.0, n)
    shops = rng.integers(0, 20, n)
    features = [
        {"x1": float(a), "x2": float(b), "shop": f"s{s}", "card_present": bool(s % 2)}
        for a, b, s in zip(x1, x2, shops, strict=True)
    ]
    return features, y.tolist()


def train(trainer: StreamTrainer, features: list[dict], labels: list[int], batch: int = 200):
    reports = []
    for start in range(0, len(labels), batch):
        stop = start + batch
        reports.append(trainer.process(features[start:stop], labels[start:stop], now=1.0))
    return reports


# -- config ------------------------------------------------------------------------------


def test_config_defaults_are_the_benchmark_chosen_ones() -> None:
    # Chosen by `python -m bench.quality --realistic` (docs/benchmarks/realistic/quality.md);
    # the service's defaults match.
    from service.settings import Settings

    c = TrainerConfig(classes=CLASSES)
    assert (c.strategy, c.network, c.optimizer, c.lr) == ("logit_adjusted", "mlp", "adam", 0.003)
    assert c.hidden == (64,)
    assert (c.half_life, c.gamma, c.r_max, c.smoothing) == (10000.0, 1.0, 100.0, 0.05)
    assert c.numeric_bins == 0
    s = Settings().trainer_config()
    for name in ("strategy", "network", "hidden", "optimizer", "lr", "half_life", "gamma",
                 "r_max", "smoothing", "numeric_bins"):  # fmt: skip
        assert getattr(s, name) == getattr(c, name), name
    assert c.decision == "balanced" and c.time_half_life is None


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"classes": ["only"]}, "classes"),
        ({"classes": ["a", "a"]}, "classes"),
        ({"classes": "ab"}, "classes"),
        ({"network": "resnet"}, "network"),
        ({"hidden": [0]}, "hidden"),
        ({"n_bits": 0}, "n_bits"),
        ({"n_bits": 40}, "n_bits"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"lr": 0.0}, "lr"),
        ({"lr": math.inf}, "lr"),
        ({"strategy": "magic"}, "strategy"),
        ({"strategy": "focal", "strategy_params": {"tau": 1.0}}, "strategy_params"),
        ({"half_life": -5.0}, "half_life"),
        ({"time_half_life": 0.0}, "time_half_life"),
        ({"floor": 0.6}, "floor"),
        ({"gamma": -1.0}, "gamma"),
        ({"r_max": 0.5}, "r_max"),
        ({"smoothing": 1.5}, "smoothing"),
        ({"smoothing": 0.0}, "smoothing"),
        ({"max_rel_change": -0.1}, "max_rel_change"),
        ({"factor_scheme": "sqrt"}, "factor_scheme"),
        ({"max_event_loss": math.nan}, "max_event_loss"),
        ({"clip_norm": -1.0}, "clip_norm"),
        ({"decision": "vote"}, "decision"),
        ({"decision": "threshold"}, "decision"),
        ({"decision": "threshold", "thresholds": [0.5, 0.5, 0.5]}, "thresholds"),
        ({"decision": "cost", "cost_matrix": [[0, 1, 1], [1, 0, 1], [1, 1, 0]]}, "cost_matrix"),
        ({"seed": -1}, "seed"),
        ({"metrics_window": 0}, "metrics_window"),
        ({"max_features": 0}, "max_features"),
        ({"drift": {"psi_bins": 1}}, "drift"),
        ({"drift": {"no_such": 1}}, "drift"),
    ],
)
def test_bad_config_values_name_the_field(kwargs: dict, field_name: str) -> None:
    kwargs = {"classes": CLASSES, **kwargs}
    with pytest.raises(ValueError, match=f"^{field_name}"):
        TrainerConfig(**kwargs)


def test_config_dict_round_trip_is_plain_json() -> None:
    c = TrainerConfig(
        classes=["a", "b", "c"], network="mlp", hidden=(16, 8), strategy="focal",
        strategy_params={"gamma_focal": 1.5}, decision="cost",
        cost_matrix=[[0, 1, 1], [5, 0, 1], [5, 1, 0]], drift={"psi_window": 500},
    )  # fmt: skip
    d = json.loads(json.dumps(c.to_dict()))
    assert TrainerConfig.from_dict(d) == c
    assert d["hidden"] == [16, 8]
    with pytest.raises(ValueError, match="unknown TrainerConfig field 'learning_rate'"):
        TrainerConfig.from_dict({**d, "learning_rate": 0.1})


# -- the pipeline ------------------------------------------------------------------------


def test_process_is_test_then_train() -> None:
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, n_bits=12))
    features, labels = make_stream(600, seed=1)
    train(trainer, features[:400], labels[:400])
    before, decided = trainer.predict(features[400:])
    report = trainer.process(features[400:], labels[400:])
    assert isinstance(report, BatchReport) and report.n == 200
    np.testing.assert_array_equal(report.probs, before)  # predicted before learning
    np.testing.assert_array_equal(report.y_pred, decided)
    after, _ = trainer.predict(features[400:])
    assert not np.allclose(after, before)  # and then it learned
    assert trainer.metrics.events_seen == 600 and trainer.events_learned == 600
    assert trainer.learner.steps == 3 and trainer.batches == 3
    assert trainer.counts == [labels.count(0), labels.count(1)]


def test_frequencies_follow_the_estimator_and_drive_the_factors() -> None:
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, half_life=300.0, n_bits=12))
    features, labels = make_stream(1000, seed=2, p_fraud=0.1)
    reference = ClassFrequencyEstimator(2, half_life=300.0, floor=1e-4)
    smoother = FactorSmoother(2, gamma=1.0, r_max=10.0, alpha=0.05)
    for start in range(0, 1000, 250):
        report = trainer.process(features[start : start + 250], labels[start : start + 250])
        expected = reference.update(labels[start : start + 250])
        assert report.frequencies == expected  # the same arithmetic, bit for bit
        assert report.factors == smoother.update(expected)
    p, target = report.frequencies, trainer.smoother.last_target
    assert sum(pi * ri for pi, ri in zip(p, target, strict=True)) == pytest.approx(1.0)
    assert report.factors[1] > 1.0 > report.factors[0]
    assert trainer.state()["class_frequencies"] == dict(zip(CLASSES, p, strict=True))


def test_given_frequencies_win_and_the_gap_is_recorded() -> None:
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, smoothing=1.0, n_bits=12))
    features, labels = make_stream(200, seed=3)
    report = trainer.process(features, labels, frequencies=[0.8, 0.2])
    assert report.frequencies == [0.8, 0.2] and trainer.frequencies == [0.8, 0.2]
    assert report.factors == pytest.approx([0.625, 2.5])  # 1/(K p): sum p w = 1
    local = trainer.estimator.frequencies
    assert trainer.frequency_gap == pytest.approx(abs(0.8 - local[0]))
    assert trainer.estimator.count == 200  # the local EMA still applied the labels
    with pytest.raises(ValueError, match="frequencies"):
        trainer.process(features, labels, frequencies=[0.5, 0.6])
    with pytest.raises(ValueError, match="frequencies"):
        trainer.process(features, labels, frequencies=[1.0])


@pytest.mark.parametrize("strategy", ["rescaled", "none", "weighted", "oob"])
def test_predict_divides_out_the_strategy_weights(strategy: str) -> None:
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, strategy=strategy, n_bits=12))
    features, labels = make_stream(800, seed=4, p_fraud=0.1)
    train(trainer, features[:600], labels[:600])
    probs, decided = trainer.predict(features[600:])
    raw = trainer.learner.predict_proba(features[600:])
    weights = trainer.learner.calibration_factors(trainer.factors, trainer.frequencies)
    if strategy == "rescaled":
        assert weights == pytest.approx(trainer.factors)
    if strategy == "none":
        assert weights == [1.0, 1.0]
    np.testing.assert_allclose(probs, prior_correct(raw, weights))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    balanced = np.argmax(probs / np.asarray(trainer.frequencies), axis=1)
    np.testing.assert_array_equal(decided, balanced)


def test_logit_adjusted_prediction_is_logits_plus_tau_log_prior() -> None:
    trainer = StreamTrainer(
        TrainerConfig(
            classes=CLASSES, n_bits=12, strategy="logit_adjusted", strategy_params={"tau": 0.5}
        )
    )
    features, labels = make_stream(600, seed=5, p_fraud=0.1)
    train(trainer, features[:400], labels[:400])
    probs, _ = trainer.predict(features[400:])
    logits = trainer.learner.logits(features[400:]).to(torch.float64)
    prior = torch.tensor(trainer.frequencies, dtype=torch.float64)
    expected = torch.softmax(logits + 0.5 * torch.log(prior), dim=1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-6)


def test_learns_an_imbalanced_separable_stream() -> None:
    # Micro-batches are SGD steps: 120 steps of 50 at lr 0.2 (the default lr 0.05 with
    # batches of 200 needs several times more events for the same progress).
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, n_bits=12, seed=0, lr=0.2))
    features, labels = make_stream(6_000, seed=6)
    train(trainer, features, labels, batch=50)
    test_x, test_y = make_stream(5_000, seed=7)
    _, decided = trainer.predict(test_x)
    y = np.asarray(test_y)
    assert (decided[y == 1] == 1).mean() > 0.8  # minority recall at the default decision
    assert (decided[y == 0] == 0).mean() > 0.9
    report = trainer.metrics.report()
    assert report["recall"]["fraud"] > 0.8


def test_labels_by_name_and_bad_batches_change_nothing() -> None:
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, n_bits=12))
    features, labels = make_stream(100, seed=8)
    trainer.process(features, [CLASSES[y] for y in labels])
    snapshot = trainer.to_bytes()
    bad = copy.deepcopy(features)
    bad[37]["x2"] = math.nan
    with pytest.raises(FeatureError, match="x2"):
        trainer.process(bad, labels)
    with pytest.raises(ValueError, match="labels\\[1\\]"):
        trainer.process(features[:2], ["legit", "chargeback"])
    with pytest.raises(ValueError, match="labels\\[0\\]"):
        trainer.process(features[:1], [5])
    with pytest.raises(ValueError, match="features has 3 events"):
        trainer.process(features[:3], labels[:2])
    with pytest.raises(ValueError, match="timestamps must be finite"):
        trainer.process(features, labels, timestamps=[1.0] * 99 + [math.inf])
    assert trainer.to_bytes() == snapshot  # nothing was half applied
    assert trainer.events_learned == 100 and trainer.metrics.events_seen == 100


def test_process_does_not_mutate_its_inputs() -> None:
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, n_bits=12))
    features, labels = make_stream(300, seed=9)
    frozen_features, frozen_labels = copy.deepcopy(features), list(labels)
    train(trainer, features, labels)
    assert features == frozen_features and labels == frozen_labels


def test_empty_batch_is_a_no_op() -> None:
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, n_bits=12))
    report = trainer.process([], [])
    assert report.n == 0 and report.probs.shape == (0, 2) and report.new_drift == []
    assert trainer.events_learned == 0 and trainer.learner.steps == 0
    probs, decided = trainer.predict([])
    assert probs.shape == (0, 2) and decided.shape == (0,)


def test_state_is_json_ready_and_consistent() -> None:
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, n_bits=12))
    features, labels = make_stream(400, seed=10)
    train(trainer, features, labels)
    state = json.loads(json.dumps(trainer.state()))
    assert state["classes"] == CLASSES and state["strategy"] == "logit_adjusted"
    assert state["events_learned"] == 400 and state["steps"] == 2
    assert state["counts"] == {"legit": labels.count(0), "fraud": labels.count(1)}
    assert state["factors"] == dict(zip(CLASSES, trainer.factors, strict=True))
    assert state["metrics"]["events_seen"] == 400
    assert state["skipped_steps"] == 0 and state["drift_detected"] is False
    assert state["frequency_gap"] == 0.0  # no caller-supplied frequencies


def test_drift_monitor_is_fed_outcomes_features_and_steps() -> None:
    drift = {"prior_short_half_life": 100.0, "prior_long_half_life": 1000.0, "prior_grace": 300}
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, drift=drift, n_bits=12))
    features, labels = make_stream(3_000, seed=11, p_fraud=0.01)
    jump_x, jump_y = make_stream(1_000, seed=12, p_fraud=0.15)
    train(trainer, features, labels)
    new = [name for r in train(trainer, jump_x, jump_y) for name in r.new_drift]
    assert "prior:fraud" in new
    assert trainer.drift.tracked_features == ["x1", "x2"]  # numbers only: no str, no bool
    signals = {s["name"]: s for s in trainer.drift.signals()}
    assert signals["prior:fraud"]["last_detection_at"] == 1.0  # the `now` passed in
    assert 3_000 <= signals["prior:fraud"]["last_detection_event"] < 4_000
    assert signals["training_health"]["details"]["steps"] == 20


# -- snapshots ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"strategy": "oob"},
        {"strategy": "class_gradient"},
        {"strategy": "logit_adjusted", "decision": "argmax"},
        {"network": "mlp", "hidden": (8,), "optimizer": "adam", "lr": 0.01},
        {"strategy": "weighted", "time_half_life": 60.0},
    ],
)
def test_bytes_round_trip_gives_identical_predictions_and_next_step(overrides: dict) -> None:
    config = TrainerConfig(classes=CLASSES, n_bits=12, **overrides)
    original = StreamTrainer(config)
    features, labels = make_stream(1_000, seed=13, p_fraud=0.05)
    stamps = [1_000.0 + i for i in range(1_000)]
    for start in range(0, 800, 200):
        stop = start + 200
        original.process(features[start:stop], labels[start:stop], stamps[start:stop], now=1.0)
    restored = StreamTrainer.from_bytes(original.to_bytes())
    assert restored.config == config
    probe = features[800:]
    for a, b in zip(original.predict(probe), restored.predict(probe), strict=True):
        np.testing.assert_array_equal(a, b)
    ra = original.process(probe, labels[800:], stamps[800:], now=2.0)
    rb = restored.process(probe, labels[800:], stamps[800:], now=2.0)
    np.testing.assert_array_equal(ra.probs, rb.probs)
    assert (ra.frequencies, ra.factors, ra.step, ra.new_drift) == (
        rb.frequencies, rb.factors, rb.step, rb.new_drift,
    )  # fmt: skip
    for a, b in zip(original.predict(probe), restored.predict(probe), strict=True):
        np.testing.assert_array_equal(a, b)
    assert original.state() == restored.state()
    assert original.drift.signals() == restored.drift.signals()


def test_from_bytes_with_new_settings_and_guards() -> None:
    trainer = StreamTrainer(TrainerConfig(classes=CLASSES, n_bits=12))
    features, labels = make_stream(200, seed=14)
    trainer.process(features, labels)
    data = trainer.to_bytes()
    faster = StreamTrainer.from_bytes(data, TrainerConfig(classes=CLASSES, n_bits=12, lr=0.2))
    assert faster.config.lr == 0.2 and faster.events_learned == 200
    assert all(g["lr"] == 0.2 for g in faster.learner.optimizer.param_groups)
    with pytest.raises(ValueError, match="classes"):
        StreamTrainer.from_bytes(data, TrainerConfig(classes=["a", "b"], n_bits=12))
    with pytest.raises(ValueError, match="n_bits"):
        StreamTrainer.from_bytes(data, TrainerConfig(classes=CLASSES, n_bits=13))
    with pytest.raises(SnapshotError):
        StreamTrainer.from_bytes(b"\x80\x02 certainly not a snapshot")
