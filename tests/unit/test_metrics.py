"""Prequential metrics: checked against brute-force definitions over the rolling window."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.metrics import PrequentialMetrics, average_precision, roc_auc


def brute_roc_auc(y: list[bool], s: list[float]) -> float:
    pos = [b for a, b in zip(y, s, strict=True) if a]
    neg = [b for a, b in zip(y, s, strict=True) if not a]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def brute_ap(y: list[bool], s: list[float]) -> float:
    n_pos = sum(y)
    total, prev_recall = 0.0, 0.0
    for t in sorted(set(s), reverse=True):
        chosen = [a for a, b in zip(y, s, strict=True) if b >= t]
        recall = sum(chosen) / n_pos
        total += (recall - prev_recall) * (sum(chosen) / len(chosen))
        prev_recall = recall
    return total


def random_stream(n: int, k: int, seed: int, minority_rate: float = 0.15, ties: bool = True):
    rng = np.random.default_rng(seed)
    weights = np.r_[1.0 - minority_rate * (k - 1), [minority_rate] * (k - 1)]
    y = rng.choice(k, size=n, p=weights)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    if ties:
        logits = np.round(logits, 1)  # create tied scores on purpose
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y_pred = np.argmax(probs, axis=1)
    return y, probs, y_pred


def feed(pm: PrequentialMetrics, y, probs, y_pred, batch: int) -> None:
    for i in range(0, len(y), batch):
        pm.update(y[i : i + batch].tolist(), probs[i : i + batch], y_pred[i : i + batch].tolist())


@pytest.mark.parametrize("k", [2, 3])
def test_report_matches_brute_force_over_the_window(k: int) -> None:
    window = 120
    y, probs, y_pred = random_stream(400, k, seed=k)
    pm = PrequentialMetrics([f"c{c}" for c in range(k)], window=window)
    feed(pm, y, probs, y_pred, batch=37)
    r = pm.report()
    yw, pw, ypw = y[-window:], probs[-window:], y_pred[-window:]
    assert r["n"] == window and r["events_seen"] == 400
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (yw, ypw), 1)
    assert r["confusion_matrix"] == {
        f"c{i}": {f"c{j}": int(cm[i, j]) for j in range(k)} for i in range(k)
    }
    recalls = [cm[c, c] / cm[c].sum() for c in range(k)]
    precisions = [cm[c, c] / cm[:, c].sum() for c in range(k)]
    for c in range(k):
        assert r["recall"][f"c{c}"] == pytest.approx(recalls[c], abs=1e-12)
        assert r["precision"][f"c{c}"] == pytest.approx(precisions[c], abs=1e-12)
        f1 = 2 * recalls[c] * precisions[c] / (recalls[c] + precisions[c])
        assert r["f1"][f"c{c}"] == pytest.approx(f1, abs=1e-12)
        assert r["support"][f"c{c}"] == int((yw == c).sum())
    assert r["accuracy"] == pytest.approx(float(np.mean(yw == ypw)), abs=1e-12)
    assert r["balanced_accuracy"] == pytest.approx(float(np.mean(recalls)), abs=1e-12)
    assert r["g_mean"] == pytest.approx(float(np.prod(recalls) ** (1 / k)), abs=1e-12)
    assert r["log_loss"] == pytest.approx(
        float(np.mean(-np.log(pw[np.arange(window), yw]))), abs=1e-12
    )
    if k == 2:
        minority = int(np.argmin([(yw == 0).sum(), (yw == 1).sum()]))
        assert r["minority"] == f"c{minority}"
        yb, s = (yw == minority).tolist(), pw[:, minority].tolist()
        assert r["roc_auc"] == pytest.approx(brute_roc_auc(yb, s), abs=1e-12)
        assert r["pr_auc"] == pytest.approx(brute_ap(yb, s), abs=1e-12)
    else:
        assert r["minority"] is None
        rocs = [brute_roc_auc((yw == c).tolist(), pw[:, c].tolist()) for c in range(k)]
        aps = [brute_ap((yw == c).tolist(), pw[:, c].tolist()) for c in range(k)]
        assert r["roc_auc"] == pytest.approx(float(np.mean(rocs)), abs=1e-12)
        assert r["pr_auc"] == pytest.approx(float(np.mean(aps)), abs=1e-12)


def test_report_is_plain_python() -> None:
    y, probs, y_pred = random_stream(300, 3, seed=9)
    pm = PrequentialMetrics(["a", "b", "c"], window=100)
    feed(pm, y, probs, y_pred, batch=300)

    def check(value: object) -> None:
        if isinstance(value, dict):
            for key, v in value.items():
                assert type(key) is str
                check(v)
        else:
            assert value is None or type(value) in (int, float, str), (value, type(value))

    check(pm.report())


def test_undefined_values_are_none() -> None:
    pm = PrequentialMetrics(["legit", "fraud"], window=50)
    r = pm.report()
    assert r["n"] == 0
    for key in ("accuracy", "balanced_accuracy", "g_mean", "log_loss", "roc_auc", "pr_auc"):
        assert r[key] is None, key
    assert r["recall"] == {"legit": None, "fraud": None}
    # Only legit in the window: fraud recall undefined, AUCs undefined, precision of a
    # never-predicted class undefined.
    pm.update([0, 0, 0], np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]), [0, 0, 1])
    r = pm.report()
    assert r["recall"] == {"legit": 2 / 3, "fraud": None}
    assert r["precision"] == {"legit": 1.0, "fraud": 0.0}
    assert r["roc_auc"] is None and r["pr_auc"] is None
    # G-mean and balanced accuracy over the classes present in the window.
    assert r["g_mean"] == pytest.approx(2 / 3)
    assert r["balanced_accuracy"] == pytest.approx(2 / 3)


def test_g_mean_is_zero_when_a_present_class_is_never_recalled() -> None:
    pm = PrequentialMetrics(["a", "b"], window=10)
    pm.update([0, 1, 0], np.array([[0.9, 0.1], [0.7, 0.3], [0.8, 0.2]]), [0, 0, 0])
    r = pm.report()
    assert r["g_mean"] == 0.0 and r["recall"]["b"] == 0.0 and r["f1"]["b"] == 0.0


def test_window_forgets_old_events() -> None:
    pm = PrequentialMetrics(["a", "b"], window=4)
    good = np.array([[0.9, 0.1], [0.1, 0.9]])
    pm.update([0, 1], good, [1, 0])  # both wrong
    pm.update([0, 1, 0, 1], np.vstack([good, good]), [0, 1, 0, 1])  # four right
    r = pm.report()
    assert r["n"] == 4 and r["events_seen"] == 6
    assert r["accuracy"] == 1.0 and r["roc_auc"] == 1.0
    assert r["confusion_matrix"] == {"a": {"a": 2, "b": 0}, "b": {"a": 0, "b": 2}}


def test_fixed_minority_is_scored() -> None:
    y, probs, y_pred = random_stream(200, 2, seed=11, minority_rate=0.2, ties=False)
    auto = PrequentialMetrics(["x", "y"], window=200)
    fixed = PrequentialMetrics(["x", "y"], window=200, minority=0)
    feed(auto, y, probs, y_pred, 50)
    feed(fixed, y, probs, y_pred, 50)
    assert auto.report()["minority"] == "y" and fixed.report()["minority"] == "x"
    # Binary ROC-AUC does not depend on which class is scored (p0 = 1 - p1 reverses the
    # order, up to rounding of near-ties, hence continuous scores here); AP does.
    assert auto.report()["roc_auc"] == pytest.approx(fixed.report()["roc_auc"], abs=1e-12)
    assert fixed.report()["pr_auc"] == pytest.approx(
        brute_ap((y == 0).tolist(), probs[:, 0].tolist()), abs=1e-12
    )


def test_state_round_trip_gives_same_report_and_same_future() -> None:
    y, probs, y_pred = random_stream(500, 3, seed=12)
    a = PrequentialMetrics(["a", "b", "c"], window=150)
    feed(a, y[:300], probs[:300], y_pred[:300], 64)
    b = PrequentialMetrics(["a", "b", "c"], window=150)
    b.load_state_dict(a.state_dict())
    assert b.report() == a.report()
    feed(a, y[300:], probs[300:], y_pred[300:], 64)
    feed(b, y[300:], probs[300:], y_pred[300:], 64)
    assert b.report() == a.report()
    state = a.state_dict()
    assert set(state) == {"classes", "window", "events_seen", "y_true", "y_pred", "probs"}
    # Tensors (cheap to checkpoint), and the list form of older snapshots still loads.
    assert state["y_true"].dtype == torch.int64 and state["probs"].shape == (150, 3)
    as_lists = {**state, **{k: state[k].tolist() for k in ("y_true", "y_pred", "probs")}}
    c = PrequentialMetrics(["a", "b", "c"], window=150)
    c.load_state_dict(as_lists)
    assert c.report() == a.report()
    with pytest.raises(ValueError, match="classes"):
        PrequentialMetrics(["a", "b"]).load_state_dict(state)


def test_update_does_not_mutate_inputs() -> None:
    y = [0, 1]
    probs = np.array([[0.7, 0.3], [0.4, 0.6]])
    copy = probs.copy()
    PrequentialMetrics(["a", "b"]).update(y, probs, [0, 1])
    assert y == [0, 1] and np.array_equal(probs, copy)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: PrequentialMetrics(["a"]), "classes"),
        (lambda: PrequentialMetrics(["a", "a"]), "classes"),
        (lambda: PrequentialMetrics(["a", "b"], window=0), "window"),
        (lambda: PrequentialMetrics(["a", "b"], minority=2), "minority"),
        (lambda: PrequentialMetrics(["a", "b"]).update([0], np.array([[0.5, 0.5]]), [2]), "y_pred"),
        (
            lambda: PrequentialMetrics(["a", "b"]).update([-1], np.array([[0.5, 0.5]]), [0]),
            "y_true",
        ),
        (
            lambda: PrequentialMetrics(["a", "b"]).update([0, 1], np.array([[0.5, 0.5]]), [0, 1]),
            "probs",
        ),
        (
            lambda: PrequentialMetrics(["a", "b"]).update([0], np.array([[np.nan, 0.5]]), [0]),
            "finite",
        ),
        (lambda: average_precision([1, 0], [0.5]), "equal length"),
    ],
)
def test_bad_inputs_are_named(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        call()


@settings(max_examples=80, deadline=None)
@given(data=st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=40))
def test_average_precision_matches_definition(data: list[tuple[bool, int]]) -> None:
    y = [a for a, _ in data]
    s = [b / 5 for _, b in data]
    got = average_precision(y, s)
    if not any(y):
        assert got is None
    else:
        assert got == pytest.approx(brute_ap(y, s), abs=1e-12)
        assert 0.0 < got <= 1.0
        assert math.isfinite(got)


@settings(max_examples=80, deadline=None)
@given(data=st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=40))
def test_roc_auc_matches_pairwise_definition_with_ties(data: list[tuple[bool, int]]) -> None:
    y = [a for a, _ in data]
    s = [b / 5 for _, b in data]
    got = roc_auc(y, s)
    if all(y) or not any(y):
        assert got is None
    else:
        assert got == pytest.approx(brute_roc_auc(y, s), abs=1e-12)


def test_constant_scores_give_chance_auc() -> None:
    # A fresh model scores every event the same: that is chance (0.5), not 0.
    pm = PrequentialMetrics(["legit", "fraud"], window=100)
    y = [0] * 90 + [1] * 10
    pm.update(y, np.full((100, 2), 0.5), [0] * 100)
    r = pm.report()
    assert r["roc_auc"] == 0.5
    assert r["pr_auc"] == pytest.approx(0.1)
