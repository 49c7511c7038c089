"""The whole per-batch pipeline, shared by the service, the benchmarks and the tests.

``StreamTrainer.process`` runs one labeled micro-batch, test-then-train:

1. predict with the current model (calibrated to the current prior, label by the decision
   rule) and feed those pre-learning outcomes to the prequential metrics;
2. update the class-frequency EMA (or take the frequencies the service computed in Redis
   with the same arithmetic);
3. move the smoothed rescaling factors toward the new frequencies;
4. take one guarded learner step with those factors;
5. feed outcomes, numeric features and the step's stats to the drift monitor.

``predict`` is the serving path: raw softmax divided by the weights the strategy trained in
(``OnlineLearner.calibration_factors``: the factors for ``rescaled``, ``prior^-tau`` for
``logit_adjusted``, ...), renormalized, then the decision rule.
"""

from __future__ import annotations

import math
import operator
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from models import snapshot
from models.calibration import RULES, DecisionRule, prior_correct
from models.drift import DriftMonitor
from models.frequency import ClassFrequencyEstimator
from models.learner import OPTIMIZERS, Events, OnlineLearner, StepStats
from models.metrics import PrequentialMetrics
from models.networks import NETWORKS
from models.rescaling import SCHEMES, FactorSmoother
from models.strategies import STRATEGIES, build_strategy

__all__ = ["BatchReport", "StreamTrainer", "TrainerConfig"]

# Tolerance for frequencies handed in by the caller: they must be a distribution.
_SUM_TOL = 1e-6


@dataclass
class TrainerConfig:
    """Every setting of a StreamTrainer; validated on construction (ValueError names the field).

    ``smoothing`` is the factor EMA's alpha; ``factor_scheme`` is ``inverse`` (p^-gamma) or
    ``effective_number`` (Cui et al.); ``decision`` is a DecisionRule rule with its
    ``thresholds`` / ``cost_matrix``; ``drift`` holds DriftMonitor keyword arguments.

    >>> TrainerConfig(classes=["legit", "fraud"]).strategy
    'rescaled'
    >>> TrainerConfig(lr=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a finite number > 0, got -1.0
    """

    classes: list[str] = field(default_factory=lambda: ["legit", "fraud"])
    network: str = "logreg"
    hidden: tuple[int, ...] = (64,)
    n_bits: int = 18
    optimizer: str = "sgd"
    lr: float = 0.2
    strategy: str = "rescaled"
    strategy_params: dict[str, Any] = field(default_factory=dict)
    half_life: float = 10000.0
    time_half_life: float | None = None
    floor: float = 1e-4
    gamma: float = 1.0
    r_max: float = 100.0
    smoothing: float = 0.05
    max_rel_change: float | None = None
    factor_scheme: str = "inverse"
    max_event_loss: float | None = 10.0
    clip_norm: float | None = None
    max_features: int = 1000
    numeric_bins: int = 16
    decision: str = "balanced"
    thresholds: list[float] | None = None
    cost_matrix: list[list[float]] | None = None
    seed: int = 0
    metrics_window: int = 2000
    drift: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes = _check_classes(self.classes)
        k = len(self.classes)
        _check_choice("network", self.network, NETWORKS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("factor_scheme", self.factor_scheme, SCHEMES)
        _check_choice("decision", self.decision, RULES)
        self.hidden = _check_hidden(self.hidden)
        _check_int("n_bits", self.n_bits, 1, 30)
        _check_int("max_features", self.max_features, 1)
        _check_int("numeric_bins", self.numeric_bins, 0, 1000)
        _check_int("metrics_window", self.metrics_window, 1)
        _check_int("seed", self.seed, 0)
        _check_number("lr", self.lr, positive=True)
        _check_number("half_life", self.half_life, positive=True)
        _check_number("time_half_life", self.time_half_life, positive=True, optional=True)
        _check_number("gamma", self.gamma)
        _check_number("r_max", self.r_max)
        _check_number("max_rel_change", self.max_rel_change, positive=True, optional=True)
        _check_number("max_event_loss", self.max_event_loss, positive=True, optional=True)
        _check_number("clip_norm", self.clip_norm, positive=True, optional=True)
        _check_number("floor", self.floor)
        if not 0.0 <= self.floor < 1.0 / k:
            raise ValueError(f"floor must be in [0, 1/{k}) for {k} classes, got {self.floor!r}")
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma!r}")
        if self.r_max < 1:
            raise ValueError(f"r_max must be >= 1, got {self.r_max!r}")
        _check_number("smoothing", self.smoothing, positive=True)
        if self.smoothing > 1:
            raise ValueError(f"smoothing must be in (0, 1], got {self.smoothing!r}")
        self.strategy_params = _check_mapping("strategy_params", self.strategy_params)
        try:
            build_strategy(self.strategy, **self.strategy_params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"strategy_params: {exc}") from None
        self.drift = _check_mapping("drift", self.drift)
        try:
            DriftMonitor(self.classes, seed=self.seed, **self.drift)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"drift: {exc}") from None
        try:
            DecisionRule(self.decision, self.thresholds, self.cost_matrix)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"decision: {exc}") from None
        if self.thresholds is not None:
            self.thresholds = [float(v) for v in self.thresholds]
            if len(self.thresholds) != k:
                raise ValueError(f"thresholds must have {k} entries, got {len(self.thresholds)}")
        if self.cost_matrix is not None:
            self.cost_matrix = [[float(v) for v in row] for row in self.cost_matrix]
            if len(self.cost_matrix) != k:
                raise ValueError(f"cost_matrix must be {k} x {k}, got {len(self.cost_matrix)} rows")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainerConfig:
        """Build from plain values (e.g. settings or a snapshot); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"unknown TrainerConfig field {key!r}")
        data = dict(values)
        if "hidden" in data and data["hidden"] is not None:
            data["hidden"] = tuple(data["hidden"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples), so it survives JSON and safe torch.load."""
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


@dataclass
class BatchReport:
    """What ``process`` did with one batch.

    ``probs`` are the calibrated probabilities predicted before learning and ``y_pred`` the
    labels decided from them; ``frequencies`` and ``factors`` are the ones the step used.
    """

    n: int
    probs: np.ndarray
    y_pred: np.ndarray
    frequencies: list[float]
    factors: list[float]
    step: StepStats
    new_drift: list[str]


class StreamTrainer:
    """Learner + class-frequency EMA + factor smoother + calibration + metrics + drift."""

    def __init__(self, config: TrainerConfig) -> None:
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig, got {type(config).__name__}")
        self.config = config
        c = config
        k = len(c.classes)
        self.classes = list(c.classes)
        self.learner = OnlineLearner(
            k, network=c.network, hidden=c.hidden, n_bits=c.n_bits, optimizer=c.optimizer,
            lr=c.lr, strategy=c.strategy, strategy_params=c.strategy_params,
            max_event_loss=c.max_event_loss, clip_norm=c.clip_norm, seed=c.seed,
            max_features=c.max_features, numeric_bins=c.numeric_bins,
        )  # fmt: skip
        self.estimator = ClassFrequencyEstimator(k, c.half_life, c.floor, c.time_half_life)
        self.smoother = FactorSmoother(
            k, gamma=c.gamma, r_max=c.r_max, alpha=c.smoothing,
            max_rel_change=c.max_rel_change, scheme=c.factor_scheme,
        )  # fmt: skip
        self.decision = DecisionRule(c.decision, c.thresholds, c.cost_matrix)
        self._index = {name: i for i, name in enumerate(self.classes)}
        # Size of the last snapshot written or read (0: none yet).
        self.snapshot_bytes = 0
        self._reset()

    def _reset(self) -> None:
        c = self.config
        self.metrics = PrequentialMetrics(self.classes, window=c.metrics_window)
        self.drift = DriftMonitor(self.classes, seed=c.seed, **c.drift)
        self.events_learned = 0
        self.batches = 0
        self.counts = [0] * len(self.classes)
        # Frequencies in force: the estimator's, or the last ones the caller handed in.
        self._frequencies = self.estimator.frequencies
        # Largest |caller frequency - local estimator| seen: the Lua/Python parity check.
        self.frequency_gap = 0.0

    # -- serving -----------------------------------------------------------------------
    @property
    def frequencies(self) -> list[float]:
        """Class frequencies currently used for factors, calibration and decisions."""
        return list(self._frequencies)

    @property
    def factors(self) -> list[float]:
        """Current smoothed rescaling factors (all ones before the first batch)."""
        return self.smoother.factors

    def predict(self, features: Events) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities [B, K] under the current prior and decided labels [B]
        (``features``: feature dicts, or their FeatureBatch encoded without update)."""
        k = len(self.classes)
        if len(features) == 0:
            return np.zeros((0, k)), np.zeros(0, dtype=np.int64)
        raw = self.learner.predict_proba(features)
        weights = self.learner.calibration_factors(self.smoother.factors, self._frequencies)
        if len(features) == 1 and k < 8 and self.decision.rule in ("balanced", "argmax"):
            return self._calibrate_one(raw[0].tolist(), weights)
        probs = prior_correct(raw, weights)
        return probs, self.decision.decide(probs, self._frequencies)

    def _calibrate_one(
        self, raw: list[float], weights: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``prior_correct`` and ``decide`` for one event, in plain floats.

        At one event numpy's per-call overhead was most of the work (13% of a
        ``GET /predict``'s samples). The same IEEE operations in the same order: numpy sums
        fewer than 8 values left to right, and ``argmax`` takes the first maximum, so the
        result is bit-identical (tests/unit/test_fast_predict.py). The raw row comes from
        the model's own softmax, so the input checks of the public functions are skipped.
        """
        k = len(raw)
        scaled = [p / w for p, w in zip(raw, weights, strict=True)]
        total = 0.0
        for v in scaled:
            total += v
        probs = [v / total for v in scaled] if total > 0.0 else [1.0 / k] * k
        if self.decision.rule == "balanced":
            scores = [p / prior for p, prior in zip(probs, self._frequencies, strict=True)]
        else:
            scores = probs
        label = max(range(k), key=scores.__getitem__)
        return np.array([probs], dtype=np.float64), np.array([label], dtype=np.int64)

    # -- learning ----------------------------------------------------------------------
    def process(
        self,
        features: Sequence[Mapping[str, object]],
        labels: Sequence[int | str],
        timestamps: Sequence[float] | None = None,
        frequencies: Sequence[float] | None = None,
        *,
        now: float | None = None,
    ) -> BatchReport:
        """Test-then-train on one labeled batch (labels: class indices or class names).

        ``frequencies``, when given, are the class frequencies after this batch as computed
        elsewhere (the service's Redis script); the local estimator still applies the labels,
        so snapshots carry the EMA state, and ``frequency_gap`` records any disagreement.
        ``now`` is the unix time stamped on drift detections (default: the clock).
        """
        y = self._labels(labels)
        n = len(y)
        if len(features) != n:
            raise ValueError(f"features has {len(features)} events but labels has {n}")
        if timestamps is not None:
            if len(timestamps) != n:
                raise ValueError(f"timestamps has {len(timestamps)} entries for {n} labels")
            # checked here, not only by the estimator: nothing may move before a bad batch fails
            if not all(map(math.isfinite, timestamps)):
                raise ValueError("timestamps must be finite")
        given = None if frequencies is None else self._check_frequencies(frequencies)
        k = len(self.classes)
        if n == 0:
            empty = StepStats(0.0, [0.0] * k, [0.0] * k, 0.0, False, False, 0)
            probs, y_pred = self.predict(features)
            return BatchReport(0, probs, y_pred, self.frequencies, self.factors, empty, [])
        # Both encodings at once (the featurizer reads the batch once); a bad event raises
        # here, before any update.
        before, after = self.learner.featurizer.transform_pair(features)
        probs, y_pred = self.predict(before)
        self.metrics.update(y, probs, y_pred.tolist())
        local = self.estimator.update(y, timestamps)
        if given is not None:
            gap = max(abs(a - b) for a, b in zip(given, local, strict=True))
            self.frequency_gap = max(self.frequency_gap, gap)
        self._frequencies = given if given is not None else local
        for label in y:
            self.counts[label] += 1
        factors = self.smoother.update(self._frequencies, counts=self.counts)
        step = self.learner.learn(after, y, factors, self._frequencies)
        self.events_learned += n
        self.batches += 1
        new_drift = self.drift.update(
            y, y_pred.tolist(), probs, step=step, events=features,
            time=_time.time() if now is None else now,
        )  # fmt: skip
        return BatchReport(n, probs, y_pred, self.frequencies, list(factors), step, new_drift)

    def _labels(self, labels: Sequence[int | str]) -> list[int]:
        out = []
        k = len(self.classes)
        for i, label in enumerate(labels):
            if isinstance(label, str):
                if label not in self._index:
                    raise ValueError(f"labels[{i}]={label!r} is not one of {self.classes}")
                out.append(self._index[label])
                continue
            if isinstance(label, bool):
                raise ValueError(f"labels[{i}] must be a class index or name, got {label!r}")
            try:
                c = operator.index(label)
            except TypeError:
                raise ValueError(
                    f"labels[{i}] must be a class index or name, got {label!r}"
                ) from None
            if not 0 <= c < k:
                raise ValueError(f"labels[{i}]={c} is outside [0, {k})")
            out.append(c)
        return out

    def _check_frequencies(self, frequencies: Sequence[float]) -> list[float]:
        p = [float(v) for v in frequencies]
        if len(p) != len(self.classes):
            raise ValueError(f"frequencies must have {len(self.classes)} values, got {len(p)}")
        if not all(math.isfinite(v) and v > 0 for v in p) or abs(math.fsum(p) - 1.0) > _SUM_TOL:
            raise ValueError(f"frequencies must be positive and sum to 1, got {p!r}")
        return p

    # -- reporting ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The ``GET /state`` body (minus what only the service knows: model name, version)."""
        names = self.classes
        learner = self.learner
        return {
            "classes": list(names),
            "strategy": self.config.strategy,
            "network": self.config.network,
            "events_learned": self.events_learned,
            "batches": self.batches,
            "class_frequencies": dict(zip(names, self.frequencies, strict=True)),
            "factors": dict(zip(names, self.factors, strict=True)),
            "counts": dict(zip(names, self.counts, strict=True)),
            "steps": learner.steps,
            "skipped_steps": learner.skipped_steps,
            "clipped_steps": learner.clipped_steps,
            "frequency_gap": self.frequency_gap,
            "drift_detected": self.drift.drift_detected,
            "metrics": self.metrics.report(),
        }

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"config": TrainerConfig.to_dict(), "learner", "estimator", "smoother",
        "metrics", "drift": component state dicts, "counts": list[int], "events_learned",
        "batches": int, "frequencies": list[float], "frequency_gap": float}``."""
        return {
            "config": self.config.to_dict(),
            "learner": self.learner.state_dict(),
            "estimator": self.estimator.state_dict(),
            "smoother": self.smoother.state_dict(),
            "metrics": self.metrics.state_dict(),
            "drift": self.drift.state_dict(),
            "counts": list(self.counts),
            "events_learned": self.events_learned,
            "batches": self.batches,
            "frequencies": list(self._frequencies),
            "frequency_gap": self.frequency_gap,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from ``state_dict()``. The classes must match; this trainer's own settings
        (learning rate, thresholds, ...) win over the snapshot's."""
        theirs = list(state["config"]["classes"])
        if theirs != self.classes:
            raise ValueError(f"snapshot classes {theirs!r} do not match {self.classes!r}")
        self.learner.load_state_dict(state["learner"])
        self.estimator.load_state_dict(state["estimator"])
        self.smoother.load_state_dict(state["smoother"])
        self.metrics.load_state_dict(state["metrics"])
        self.drift.load_state_dict(state["drift"])
        self.counts = [int(v) for v in state["counts"]]
        self.events_learned = int(state["events_learned"])
        self.batches = int(state.get("batches", 0))
        self._frequencies = [float(v) for v in state.get("frequencies", self.estimator.frequencies)]
        self.frequency_gap = float(state.get("frequency_gap", 0.0))

    def to_bytes(self) -> bytes:
        """The whole trainer as snapshot bytes (``models.snapshot``, format-versioned); their
        size is kept in ``snapshot_bytes`` (for a checkpoint-size metric)."""
        data = snapshot.dumps(self.state_dict())
        self.snapshot_bytes = len(data)
        return data

    @classmethod
    def from_bytes(cls, data: bytes, config: TrainerConfig | None = None) -> StreamTrainer:
        """A trainer restored from ``to_bytes`` output, safe on untrusted bytes.

        With ``config`` the trainer is built from it (settings may change across a restart;
        the model's shape must not), else from the snapshot's own config.
        """
        state = snapshot.loads(data)
        trainer = cls(config if config is not None else TrainerConfig.from_dict(state["config"]))
        trainer.load_state_dict(state)
        trainer.snapshot_bytes = len(data)
        return trainer


def _check_classes(classes: object) -> list[str]:
    if isinstance(classes, str | bytes) or not isinstance(classes, Sequence):
        raise ValueError(f"classes must be a list of names, got {classes!r}")
    names = list(classes)
    if len(names) < 2 or not all(isinstance(c, str) and c for c in names):
        raise ValueError(f"classes must be >= 2 non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"classes must be distinct, got {names!r}")
    return names


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):  # type: ignore[operator]
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")


def _check_number(name: str, value: object, positive: bool = False, optional: bool = False) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):  # type: ignore[operator]
        need = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name} must be {need}{' or None' if optional else ''}, got {value!r}")


def _check_hidden(hidden: object) -> tuple[int, ...]:
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if isinstance(hidden, str) or not isinstance(hidden, Sequence) or not hidden:
        raise ValueError(f"hidden must be a non-empty list of positive ints, got {hidden!r}")
    for h in hidden:
        if not isinstance(h, int) or isinstance(h, bool) or h < 1:
            raise ValueError(f"hidden must be a non-empty list of positive ints, got {hidden!r}")
    return tuple(hidden)


def _check_mapping(name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{name} must be a dict of keyword arguments, got {value!r}")
    return dict(value)
