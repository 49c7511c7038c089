"""Calibration back to the current prior, and the rule that turns probabilities into a label.

A model trained on a loss where class ``c`` carries factor ``w_c`` learns scores proportional
to ``w_c * P(c | x)``: it over-predicts rare classes. :func:`prior_correct` divides that out.
:class:`DecisionRule` then picks the label (balanced argmax by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["RULES", "DecisionRule", "prior_correct"]

RULES = ("balanced", "argmax", "threshold", "cost")


def _as_probs(probs: np.ndarray) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"probs must have shape [B, K] with K >= 2, got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("probs must be finite and >= 0")
    return arr


def _as_positive(values: Sequence[float], name: str, k: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (k,):
        raise ValueError(f"{name} must have {k} entries, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr <= 0).any():
        raise ValueError(f"{name} must be finite and > 0, got {arr.tolist()!r}")
    return arr


def prior_correct(probs: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Undo the rescaling: ``q_c / w_c``, each row renormalized to sum 1.

    ``probs`` is ``[B, K]`` (a 1-D ``[K]`` row is accepted and returned 1-D). A row that is
    all zeros after division is returned uniform.

    >>> prior_correct(np.array([[0.5, 0.5]]), [0.5, 4.5])
    array([[0.9, 0.1]])
    >>> prior_correct(np.array([0.25, 0.75]), [1.0, 1.0])
    array([0.25, 0.75])
    """
    one_row = np.ndim(probs) == 1
    arr = _as_probs(np.atleast_2d(probs))
    w = _as_positive(factors, "factors", arr.shape[1])
    out = arr / w
    totals = out.sum(axis=1, keepdims=True)
    zero = totals[:, 0] <= 0.0
    if zero.any():
        out[zero] = 1.0
        totals[zero] = arr.shape[1]
    out = out / totals
    return out[0] if one_row else out


class DecisionRule:
    """Chooses a label per row of calibrated probabilities.

    ``rule``:

    * ``"balanced"`` (default): ``argmax_c probs_c / priors_c``, the Bayes decision for the
      balanced error (mean per-class recall), since it weighs each class as if all were equal;
    * ``"argmax"``: ``argmax_c probs_c`` (minimum plain error, ignores rare classes);
    * ``"threshold"``: ``thresholds[c]`` per class; among classes whose probability reaches its
      threshold, the most probable; if none does, argmax;
    * ``"cost"``: ``cost_matrix[i][j]`` is the cost of deciding ``j`` when the truth is ``i``;
      decides ``argmin_j sum_i probs_i * cost_matrix[i][j]``.

    Ties go to the lowest class index.

    >>> probs = np.array([[0.9, 0.1], [0.98, 0.02]])
    >>> DecisionRule().decide(probs, priors=[0.95, 0.05]).tolist()
    [1, 0]
    >>> DecisionRule("argmax").decide(probs, priors=[0.95, 0.05]).tolist()
    [0, 0]
    >>> DecisionRule("cost", cost_matrix=[[0, 1], [50, 0]]).decide(probs, [0.95, 0.05]).tolist()
    [1, 1]
    """

    def __init__(
        self,
        rule: str = "balanced",
        thresholds: Sequence[float] | None = None,
        cost_matrix: Sequence[Sequence[float]] | None = None,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        if rule == "threshold":
            if thresholds is None:
                raise ValueError("thresholds are required with rule='threshold'")
            t = [float(v) for v in thresholds]
            if not t or not all(0.0 <= v <= 1.0 for v in t):
                raise ValueError(f"thresholds must be numbers in [0, 1], got {thresholds!r}")
        elif thresholds is not None:
            raise ValueError(f"thresholds are only used with rule='threshold', not {rule!r}")
        if rule == "cost":
            if cost_matrix is None:
                raise ValueError("cost_matrix is required with rule='cost'")
            rows = [[float(v) for v in row] for row in cost_matrix]
            k = len(rows)
            if k < 2 or any(len(row) != k for row in rows):
                raise ValueError(f"cost_matrix must be square K x K with K >= 2, got {rows!r}")
            if not all(math.isfinite(v) for row in rows for v in row):
                raise ValueError("cost_matrix must be finite")
        elif cost_matrix is not None:
            raise ValueError(f"cost_matrix is only used with rule='cost', not {rule!r}")
        self.rule = rule
        self.thresholds = None if thresholds is None else [float(v) for v in thresholds]
        self.cost_matrix = (
            None if cost_matrix is None else [[float(v) for v in row] for row in cost_matrix]
        )

    def decide(self, probs: np.ndarray, priors: Sequence[float]) -> np.ndarray:
        """Labels (``int64 [B]``) for calibrated ``probs [B, K]`` under the current ``priors``."""
        arr = _as_probs(probs)
        k = arr.shape[1]
        if self.rule == "balanced":
            return np.argmax(arr / _as_positive(priors, "priors", k), axis=1)
        if self.rule == "argmax":
            return np.argmax(arr, axis=1)
        if self.rule == "threshold":
            t = np.asarray(self.thresholds)
            if t.shape != (k,):
                raise ValueError(f"thresholds has {t.shape[0]} entries for {k} classes")
            over = arr >= t
            masked = np.where(over, arr, -1.0)
            return np.where(over.any(axis=1), np.argmax(masked, axis=1), np.argmax(arr, axis=1))
        c = np.asarray(self.cost_matrix)
        if c.shape != (k, k):
            raise ValueError(f"cost_matrix is {c.shape[0]} x {c.shape[0]} for {k} classes")
        return np.argmin(arr @ c, axis=1)
