"""Benchmark contenders: the `models/` pipeline per strategy and network, and river's learners.

A contender is named by a string so the CLI, the results file and the table agree:

- ``<strategy>/<network>`` runs :class:`models.trainer.StreamTrainer` (the service's own per-batch
  pipeline) in test-then-train micro-batches; ``rescaled/logreg?half_life=500&gamma=0.5``
  overrides :class:`models.trainer.TrainerConfig` fields.
- ``river:lr``, ``river:lr+ros``, ``river:lr+rus``, ``river:arf``, ``river:hat`` run river's
  stream learners one event at a time (predict, then learn).
- ``batch:rf`` (streams with timestamps only) is the batch reference: a scikit-learn random
  forest trained on the previous week scores the next one, week after week (the first week
  gets no score: uniform probabilities). Its labels are taken as known at once, as the
  online contenders' are.

Each run returns the prequential (pre-learning) probabilities and decisions for every event and,
for `models/` contenders, the per-step training statistics.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.streams import Stream

RIVER = ("river:lr", "river:lr+ros", "river:lr+rus", "river:arf", "river:hat")
BATCH = ("batch:rf",)
WEEK = 7 * 86_400.0
NETWORKS = ("logreg", "mlp")


@dataclass
class RunOutput:
    """What one contender produced on one stream."""

    probs: np.ndarray  # float32 [n, K], prequential (before learning on the event)
    y_pred: np.ndarray  # int64 [n], the contender's own decision
    seconds: float
    grad_norms: list[float] = field(default_factory=list)  # per step (models/ only)
    skipped_steps: int = 0
    clipped_steps: int = 0
    step_events: list[int] = field(default_factory=list)  # events seen after each step
    factors: list[list[float]] = field(default_factory=list)  # per step
    frequencies: list[list[float]] = field(default_factory=list)  # per step


def parse_contender(name: str) -> tuple[str, str, dict[str, object]]:
    """Split a contender name into (strategy, network, config overrides).

    >>> parse_contender("rescaled/mlp?half_life=500&gamma=0.5&optimizer=adam")
    ('rescaled', 'mlp', {'half_life': 500, 'gamma': 0.5, 'optimizer': 'adam'})
    >>> parse_contender("river:hat")
    ('river:hat', '', {})
    """
    if name.startswith("river:"):
        if name not in RIVER:
            raise ValueError(f"unknown river contender {name!r}; known: {', '.join(RIVER)}")
        return name, "", {}
    if name.startswith("batch:"):
        if name not in BATCH:
            raise ValueError(f"unknown batch contender {name!r}; known: {', '.join(BATCH)}")
        return name, "", {}
    head, _, query = name.partition("?")
    strategy, _, network = head.partition("/")
    if network not in NETWORKS:
        raise ValueError(f"contender {name!r}: network must be one of {NETWORKS}")
    overrides: dict[str, object] = {}
    for item in filter(None, query.split("&")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"contender {name!r}: override {item!r} is not key=value")
        try:
            overrides[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            overrides[key] = raw
    return strategy, network, overrides


def run(name: str, stream: Stream, seed: int, batch_size: int = 64, n_bits: int = 12) -> RunOutput:
    strategy, network, overrides = parse_contender(name)
    if strategy.startswith("river:"):
        return run_river(strategy, stream, seed)
    if strategy == "batch:rf":
        return run_batch_forest(stream, seed)
    return run_models(strategy, network, overrides, stream, seed, batch_size, n_bits)


def trainer_config(
    classes: list[str],
    strategy: str,
    network: str,
    overrides: dict[str, object],
    seed: int,
    n_bits: int,
):
    """The service's TrainerConfig with the benchmark's strategy, network and overrides."""
    from models.trainer import TrainerConfig

    params: dict[str, Any] = {"n_bits": n_bits}
    params.update(overrides)
    return TrainerConfig(
        classes=list(classes), strategy=strategy, network=network, seed=seed, **params
    )


def run_models(
    strategy: str,
    network: str,
    overrides: dict[str, object],
    stream: Stream,
    seed: int,
    batch_size: int,
    n_bits: int,
) -> RunOutput:
    from models.trainer import StreamTrainer

    trainer = StreamTrainer(
        trainer_config(stream.classes, strategy, network, overrides, seed, n_bits)
    )
    n, k = stream.n, len(stream.classes)
    out = RunOutput(
        probs=np.zeros((n, k), dtype=np.float32), y_pred=np.zeros(n, dtype=np.int64), seconds=0.0
    )
    labels = stream.labels.tolist()
    start_time = time.perf_counter()
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        report = trainer.process(stream.features[start:stop], labels[start:stop])
        out.probs[start:stop] = np.asarray(report.probs, dtype=np.float32)
        out.y_pred[start:stop] = np.asarray(report.y_pred, dtype=np.int64)
        step = report.step
        out.grad_norms.append(float(step.grad_norm))
        out.skipped_steps += int(step.skipped)
        out.clipped_steps += int(step.clipped)
        out.step_events.append(stop)
        out.factors.append([float(v) for v in report.factors])
        out.frequencies.append([float(v) for v in report.frequencies])
    out.seconds = time.perf_counter() - start_time
    return out


def river_model(name: str, n_classes: int, seed: int):
    """A fresh river learner for contender ``name`` (binary LR is one-vs-rest for K > 2)."""
    from river import forest, imblearn, linear_model, multiclass, preprocessing, tree

    def lr():
        base = linear_model.LogisticRegression()
        if n_classes > 2:
            base = multiclass.OneVsRestClassifier(base)
        return preprocessing.StandardScaler() | base

    balanced = {c: 1.0 / n_classes for c in range(n_classes)}
    if name == "river:lr":
        return lr()
    if name == "river:lr+ros":
        return imblearn.RandomOverSampler(lr(), desired_dist=balanced, seed=seed)
    if name == "river:lr+rus":
        return imblearn.RandomUnderSampler(lr(), desired_dist=balanced, seed=seed)
    if name == "river:arf":
        return forest.ARFClassifier(seed=seed)
    if name == "river:hat":
        return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    raise ValueError(f"unknown river contender {name!r}")


def run_river(name: str, stream: Stream, seed: int) -> RunOutput:
    k = len(stream.classes)
    model = river_model(name, k, seed)
    n = stream.n
    probs = np.zeros((n, k), dtype=np.float32)
    y_pred = np.zeros(n, dtype=np.int64)
    labels = stream.labels.tolist()
    start_time = time.perf_counter()
    for i, (x, y) in enumerate(zip(stream.features, labels, strict=True)):
        proba = model.predict_proba_one(x)
        if proba:
            # Binary LR answers with {False, True}; int() maps both key kinds to the class index.
            for key, value in proba.items():
                probs[i, int(key)] = value
            y_pred[i] = int(max(proba, key=proba.get))
        else:
            probs[i, :] = 1.0 / k  # nothing learned yet: no preference
        model.learn_one(x, y)
    return RunOutput(probs=probs, y_pred=y_pred, seconds=time.perf_counter() - start_time)


def week_index(timestamps: np.ndarray) -> np.ndarray:
    """Week of each event counted from the first one (0, 1, ...).

    >>> week_index(np.array([0.0, 6 * 86_400.0, 7 * 86_400.0, 15 * 86_400.0])).tolist()
    [0, 0, 1, 2]
    """
    return ((timestamps - timestamps[0]) // WEEK).astype(np.int64)


def run_batch_forest(stream: Stream, seed: int, n_estimators: int = 100) -> RunOutput:
    """A random forest refit every week on the previous week, scoring the current one.

    The decision is the balanced rule under the training week's fraud share, the same rule
    the online contenders use by default.
    """
    from sklearn.ensemble import RandomForestClassifier

    if stream.timestamps is None:
        raise ValueError(f"batch:rf needs timestamps; stream {stream.name!r} has none")
    names = sorted(stream.features[0])
    x = np.array([[event.get(k, 0.0) for k in names] for event in stream.features])
    y = stream.labels
    k = len(stream.classes)
    probs = np.full((stream.n, k), 1.0 / k, dtype=np.float32)
    y_pred = np.zeros(stream.n, dtype=np.int64)
    week = week_index(stream.timestamps)
    start_time = time.perf_counter()
    for w in range(1, int(week.max()) + 1):
        train, test = week == w - 1, week == w
        if not test.any() or len(np.unique(y[train])) < k:
            continue
        forest = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1)
        forest.fit(x[train], y[train])
        p = np.zeros((int(test.sum()), k))
        p[:, forest.classes_] = forest.predict_proba(x[test])
        prior = np.bincount(y[train], minlength=k) / train.sum()
        probs[test] = p
        y_pred[test] = np.argmax(p / prior, axis=1)
    return RunOutput(probs=probs, y_pred=y_pred, seconds=time.perf_counter() - start_time)
