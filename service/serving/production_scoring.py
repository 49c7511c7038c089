"""Production performance: how the predictions actually served did, once their labels arrived.

`/predict` keeps what it served (calibrated probabilities, decided label, model version, time)
next to the features under the prediction id; a late label `{prediction_id, label}` carries
that record into the stream (`event["served"]`), and the learner scores it here. This is the
number a fraud team reports upward: the model that served, at the time it served, against the
label that came back days later. The learner's prequential metrics (predict right before
learning, with the newest model) are a different, more optimistic number.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from models.metrics import PrequentialMetrics

__all__ = ["ProductionScorer", "served_record"]

log = logging.getLogger(__name__)


def served_record(probs: Sequence[float], label: int, version: int, time: float) -> dict[str, Any]:
    """What is kept with a prediction's features for production scoring.

    >>> served_record([0.9, 0.1], 0, 7, 1700000000.0)
    {'p': [0.9, 0.1], 'y': 0, 'v': 7, 't': 1700000000.0}
    """
    return {"p": [float(v) for v in probs], "y": int(label), "v": int(version), "t": float(time)}


class ProductionScorer:
    """Rolling per-class recall/precision, G-mean and PR-AUC of served predictions.

    classes: class names; window: how many scored predictions the rolling metrics cover.
    """

    def __init__(self, classes: Sequence[str], window: int = 2000) -> None:
        self.classes = list(classes)
        self.window = window
        self.metrics = PrequentialMetrics(self.classes, window=window)
        self.scored = 0

    def observe(self, events: Iterable[dict[str, Any]]) -> int:
        """Score the events that carry a `served` record; returns how many were scored."""
        k = len(self.classes)
        y_true: list[int] = []
        y_pred: list[int] = []
        probs: list[list[float]] = []
        for event in events:
            served = event.get("served")
            if not isinstance(served, dict):
                continue
            p, y = served.get("p"), served.get("y")
            if not (isinstance(p, list) and len(p) == k and type(y) is int and 0 <= y < k):
                log.warning("production: malformed served record skipped: %r", served)
                continue
            y_true.append(int(event["label"]))
            y_pred.append(y)
            probs.append([float(v) for v in p])
        if y_true:
            self.metrics.update(y_true, np.array(probs, dtype=np.float64), y_pred)
            self.scored += len(y_true)
        return len(y_true)

    def report(self) -> dict[str, Any]:
        """`PrequentialMetrics.report()` over served predictions plus `scored` (all time)."""
        out = self.metrics.report()
        out["scored"] = self.scored
        return out

    def state_dict(self) -> dict[str, Any]:
        """`{"scored": int, "metrics": PrequentialMetrics.state_dict()}`, its tensors as lists:
        this goes into the checkpoint's JSON meta."""
        metrics = {
            key: value.tolist() if hasattr(value, "tolist") else value
            for key, value in self.metrics.state_dict().items()
        }
        return {"scored": self.scored, "metrics": metrics}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.metrics.load_state_dict(state["metrics"])
        self.scored = int(state.get("scored", 0))
