"""Prequential (test-then-train) quality metrics over a rolling window of the last events.

A rolling confusion matrix (counts in, counts out as events leave the window) gives recall,
precision, F1, G-mean and balanced accuracy (the mean recall of the classes present, as
river's and sklearn's ``BalancedAccuracy``). It is kept here rather than with river's
``utils.Rolling(ConfusionMatrix)``: importing ``river.metrics`` pulls in scipy.stats, about
0.6 s of the service's 3 s start-up budget, for a k x k table of counts. Three things are
computed with numpy over the window at report time:

* ROC-AUC: river's ``RollingROCAUC`` gives tied scores no credit (one positive and one
  negative both scored 0.5 give 0.0, not 0.5), and a young or saturated model produces
  many ties; here ties count one half (the Mann-Whitney statistic);
* PR-AUC as average precision: river's ``RollingPRAUC`` interpolates the PR curve
  differently from the usual average precision;
* log-loss: river's ``CrossEntropy`` wants one dict per event, which would dominate
  ``update`` (it is on the learner's hot path).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = ["PrequentialMetrics", "average_precision", "roc_auc"]

_EPS = 1e-15


def _binary_inputs(y_true: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y_true and scores must be 1-D of equal length, got {y.shape}, {s.shape}")
    return y, s


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float | None:
    """ROC-AUC as P(score of a positive > score of a negative), ties counting one half.

    Computed from average ranks (Mann-Whitney U). ``None`` without both classes.

    >>> roc_auc([1, 0, 1, 0], [0.5, 0.5, 0.7, 0.2])
    0.875
    >>> roc_auc([1, 0], [0.5, 0.5])
    0.5
    >>> roc_auc([1, 1], [0.2, 0.3]) is None
    True
    """
    y, s = _binary_inputs(y_true, scores)
    n = len(y)
    n_pos = y.sum()
    if n_pos == 0 or n_pos == n:
        return None
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    new_group = np.r_[True, ss[1:] != ss[:-1]]
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], n]
    ranks = np.empty(n)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(new_group) - 1]
    u = ranks[y > 0].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * (n - n_pos)))


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float | None:
    """Area under the precision-recall curve as ``sum_k (R_k - R_{k-1}) * P_k``.

    The sum runs over distinct score thresholds, highest first (tied scores form one step),
    the same definition as scikit-learn's ``average_precision_score``. ``None`` when there
    is no positive.

    >>> average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    0.8333333333333333
    >>> average_precision([0, 0], [0.3, 0.5]) is None
    True
    """
    y, s = _binary_inputs(y_true, scores)
    n_pos = y.sum()
    if n_pos == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y)[last_of_tie]
    seen = np.arange(1, len(y) + 1, dtype=np.float64)[last_of_tie]
    recall = tp / n_pos
    precision = tp / seen
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


class PrequentialMetrics:
    """Rolling prequential metrics over the last ``window`` labeled events.

    ``classes`` are the class names (index ``c`` is ``classes[c]``). ``minority`` fixes the
    class scored by the binary ROC-AUC / PR-AUC; by default it is the class with the fewest
    events in the window (ties: the higher index). With K > 2 both AUCs are macro averages
    of one-vs-rest scores over the classes that have positives and negatives in the window.

    >>> pm = PrequentialMetrics(["legit", "fraud"], window=100)
    >>> pm.update([0, 0, 1, 0], np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]),
    ...           [0, 0, 1, 1])
    >>> r = pm.report()
    >>> r["recall"], r["roc_auc"], r["balanced_accuracy"]
    ({'legit': 0.6666666666666666, 'fraud': 1.0}, 1.0, 0.8333333333333333)
    """

    def __init__(self, classes: Sequence[str], window: int = 2000, minority: int | None = None):
        classes = [str(c) for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be >= 2 distinct names, got {classes!r}")
        if not (isinstance(window, int) and window >= 1):
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        if minority is not None and not (
            isinstance(minority, int) and 0 <= minority < len(classes)
        ):
            raise ValueError(f"minority must be None or a class index, got {minority!r}")
        self.classes = classes
        self.window = window
        self.minority = minority
        self._reset()

    def _reset(self) -> None:
        self._events_seen = 0
        # Window of (y_true, y_pred, probs, per-event log-loss), oldest first.
        self._recent: deque[tuple[int, int, list[float], float]] = deque(maxlen=self.window)
        k = len(self.classes)
        # _cm[true][predicted] over the events in the window.
        self._cm = [[0] * k for _ in range(k)]

    @property
    def n(self) -> int:
        """Events currently in the window."""
        return len(self._recent)

    @property
    def events_seen(self) -> int:
        """Events ever passed to :meth:`update`."""
        return self._events_seen

    def update(
        self,
        y_true: Sequence[int] | np.ndarray,
        probs: np.ndarray,
        y_pred: Sequence[int] | np.ndarray,
    ) -> None:
        """Add a batch: true labels, the probabilities predicted before learning, decided labels."""
        k = len(self.classes)
        y = np.asarray(y_true)
        yp = np.asarray(y_pred)
        p = np.asarray(probs, dtype=np.float64)
        if y.ndim != 1 or yp.shape != y.shape or p.shape != (y.shape[0], k):
            raise ValueError(
                f"expected y_true [B], y_pred [B], probs [B, {k}], got "
                f"{y.shape}, {yp.shape}, {p.shape}"
            )
        if len(y) == 0:
            return
        for name, arr in (("y_true", y), ("y_pred", yp)):
            if arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= k:
                raise ValueError(f"{name} must hold class indices in [0, {k})")
        if not np.isfinite(p).all():
            raise ValueError("probs must be finite")
        losses = -np.log(np.clip(p[np.arange(len(y)), y], _EPS, 1.0))
        self._ingest(y.tolist(), yp.tolist(), p.tolist(), losses.tolist())

    def _ingest(
        self, ys: list[int], yps: list[int], ps: list[list[float]], losses: list[float]
    ) -> None:
        recent, cm, full = self._recent, self._cm, self.window
        for y, yp, p, loss in zip(ys, yps, ps, losses, strict=True):
            if len(recent) == full:
                old = recent[0]
                cm[old[0]][old[1]] -= 1
            recent.append((y, yp, p, loss))
            cm[y][yp] += 1
        self._events_seen += len(ys)

    def report(self) -> dict:
        """Plain-Python report over the window; a value is ``None`` where it is undefined.

        Keys: ``n``, ``events_seen``, ``window``, ``accuracy``, ``balanced_accuracy``,
        ``g_mean``, ``log_loss``, ``roc_auc``, ``pr_auc``, ``minority`` (class scored by the
        binary AUCs, else None), ``macro_f1``, and per class name: ``support``, ``recall``,
        ``precision``, ``f1``; ``confusion_matrix[true_name][predicted_name]`` (counts).
        """
        names, k, n = self.classes, len(self.classes), self.n
        cm = self._cm
        support = [sum(cm[c]) for c in range(k)]
        predicted = [sum(cm[t][c] for t in range(k)) for c in range(k)]
        recall: dict[str, float | None] = {}
        precision: dict[str, float | None] = {}
        f1: dict[str, float | None] = {}
        for c, name in enumerate(names):
            tp = cm[c][c]
            fp, fn = predicted[c] - tp, support[c] - tp
            recall[name] = tp / (tp + fn) if tp + fn > 0 else None
            precision[name] = tp / (tp + fp) if tp + fp > 0 else None
            f1[name] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else None
        present = [v for v in recall.values() if v is not None]
        g_mean = None
        if present:
            g_mean = (
                0.0
                if min(present) == 0.0
                else math.exp(math.fsum(math.log(r) for r in present) / len(present))
            )
        f1_values = [v for v in f1.values() if v is not None]
        roc_auc, pr_auc, minority = self._aucs(support)
        return {
            "n": n,
            "events_seen": self._events_seen,
            "window": self.window,
            "accuracy": sum(cm[c][c] for c in range(k)) / n if n else None,
            "balanced_accuracy": math.fsum(present) / len(present) if present else None,
            "g_mean": g_mean,
            "log_loss": math.fsum(e[3] for e in self._recent) / n if n else None,
            "roc_auc": roc_auc,
            "pr_auc": pr_auc,
            "minority": None if minority is None else names[minority],
            "macro_f1": math.fsum(f1_values) / len(f1_values) if f1_values else None,
            "support": dict(zip(names, support, strict=True)),
            "recall": recall,
            "precision": precision,
            "f1": f1,
            "confusion_matrix": {
                names[i]: {names[j]: cm[i][j] for j in range(k)} for i in range(k)
            },
        }

    def _aucs(self, support: list[int]) -> tuple[float | None, float | None, int | None]:
        n, k = self.n, len(self.classes)
        both = [c for c in range(k) if 0 < support[c] < n]
        if not both:
            return None, None, None
        ys = np.fromiter((e[0] for e in self._recent), dtype=np.int64, count=n)
        ps = np.array([e[2] for e in self._recent], dtype=np.float64)
        if k == 2:
            minority = self.minority
            if minority is None:
                minority = min(range(k), key=lambda c: (support[c], -c))
            if minority not in both:
                return None, None, minority
            yb, sb = ys == minority, ps[:, minority]
            return roc_auc(yb, sb), average_precision(yb, sb), minority
        rocs = [roc_auc(ys == c, ps[:, c]) or 0.0 for c in both]  # defined: c is in `both`
        aps = [average_precision(ys == c, ps[:, c]) or 0.0 for c in both]
        return math.fsum(rocs) / len(rocs), math.fsum(aps) / len(aps), None

    def state_dict(self) -> dict:
        """``{"classes", "window", "events_seen", "y_true", "y_pred", "probs"}``: the window as
        int64 ``[n]``, int64 ``[n]`` and float64 ``[n, K]`` tensors.

        Tensors, not lists: a checkpoint is written on the service's event loop, and pickling
        a 2,000-event window as nested lists took most of its 15 ms. The confusion matrix is
        rebuilt on load by replaying the window (lists, from older snapshots, load too).
        """
        k = len(self.classes)
        recent = self._recent
        return {
            "classes": list(self.classes),
            "window": self.window,
            "events_seen": self._events_seen,
            "y_true": torch.tensor([e[0] for e in recent], dtype=torch.int64),
            "y_pred": torch.tensor([e[1] for e in recent], dtype=torch.int64),
            "probs": torch.tensor([e[2] for e in recent], dtype=torch.float64).reshape(-1, k),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` (same classes; the window may differ)."""
        if list(state["classes"]) != self.classes:
            raise ValueError(f"state classes {state['classes']!r} != {self.classes!r}")
        self._reset()
        k = len(self.classes)
        ys = np.asarray(state["y_true"], dtype=np.int64).reshape(-1)[-self.window :]
        yps = np.asarray(state["y_pred"], dtype=np.int64).reshape(-1)[-self.window :]
        ps = np.asarray(state["probs"], dtype=np.float64).reshape(-1, k)[-self.window :]
        if len(ys):
            self.update(ys, ps, yps)
        self._events_seen = int(state.get("events_seen", len(ys)))
