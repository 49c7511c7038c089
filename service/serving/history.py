"""A bounded in-memory history of the served model, for the status page's charts.

`History` keeps the last `history_size` samples; `run_history` appends one every
`history_interval_s` seconds while the model changes (an idle model adds nothing), so the
page at `/` has data to draw the moment it loads. Process-local on purpose: it is a view for
the embedded default run; Prometheus keeps the long-term series.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from service.observability.prometheus import DRIFT_STATE_VALUES

__all__ = ["History", "run_history", "sample_of"]

log = logging.getLogger(__name__)


def sample_of(view: dict[str, Any], now: float) -> dict[str, Any]:
    """One history point from a `ServedModel.view()`.

    >>> v = {"classes": ["a", "b"], "model_version": 3, "events_learned": 10,
    ...      "frequencies": [0.9, 0.1], "factors": [0.6, 4.5], "quality": {"recall": {"a": 1.0},
    ...      "precision": {}}, "signals": [{"name": "error", "state": "drift", "detections": 2}],
    ...      "production": None}
    >>> s = sample_of(v, 5.0)
    >>> s["frequencies"], s["recall"], s["drift"]
    ({'a': 0.9, 'b': 0.1}, {'a': 1.0, 'b': None}, {'error': 2})
    """
    classes = view["classes"]
    quality = view["quality"]
    production = view.get("production") or {}
    return {
        "time": now,
        "model_version": view["model_version"],
        "events_learned": view["events_learned"],
        "frequencies": dict(zip(classes, view["frequencies"], strict=True)),
        "factors": dict(zip(classes, view["factors"], strict=True)),
        "recall": {c: (quality.get("recall") or {}).get(c) for c in classes},
        "precision": {c: (quality.get("precision") or {}).get(c) for c in classes},
        "g_mean": quality.get("g_mean"),
        "production_g_mean": production.get("g_mean"),
        "drift": {s["name"]: DRIFT_STATE_VALUES.get(s["state"], 0) for s in view["signals"]},
        "detections": sum(int(s["detections"]) for s in view["signals"]),
    }


class History:
    """The last `size` samples, oldest first."""

    def __init__(self, size: int = 900) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        self.size = size
        self.samples: deque[dict[str, Any]] = deque(maxlen=size)

    def add(self, sample: dict[str, Any]) -> bool:
        """Append unless the model has not changed since the last sample; True if added."""
        last = self.samples[-1] if self.samples else None
        if last is not None and last["model_version"] == sample["model_version"]:
            return False
        self.samples.append(sample)
        return True

    def since(self, after: float | None = None) -> list[dict[str, Any]]:
        return [s for s in self.samples if after is None or s["time"] > after]


async def run_history(
    view: Callable[[], dict[str, Any] | None], history: History, interval_s: float
) -> None:
    """Sample `view()` into `history` every `interval_s` seconds until cancelled."""
    while True:
        try:
            current = view()
            if current is not None:
                history.add(sample_of(current, time.time()))
        except Exception:  # a broken sample must not stop the page's data
            log.exception("status history: sampling failed")
        await asyncio.sleep(interval_s)
