"""Drift and training-health monitoring: every signal behind ``GET /drift``.

``DriftMonitor`` is fed the prequential outcome of each micro-batch (test-then-train: the
prediction was made before the model learned from these labels) and keeps one signal per
thing that can go wrong in an imbalanced stream:

* ``error`` / ``error:<class>``: river's ADWIN on the 0/1 prequential error, overall and on
  each class's own events (a collapse of minority recall hides inside a stable overall error),
  from event ``error_warmup`` on (a fresh model's falling error is learning, not drift).
* ``prior:<class>``: a short and a long half-life EMA of the class indicator; a z-test of
  their difference (its exact stationary standard deviation, see ``ema_difference_std``)
  plus a minimum ratio, so a 1% class needs a real move, not a couple of lucky events.
* ``feature:<name>``: river's PageHinkley on sampled numeric features, standardized against
  the feature's first ``feature_reference`` values; at most ``feature_max`` features. A name
  gets a slot once it has been seen in two sampled rows (a name that never repeats, an id
  sent as a feature name, never does), and gives it back after ``feature_idle`` events
  without a value, so junk names cannot hold the slots for good.
* ``score_psi``: PSI between a reference window and a recent window of the minority-class
  score (0.1 warning, 0.25 drift, the usual credit-scoring bands).
* ``training_health``: gradient-norm EMAs (short vs long), clip rate, skipped steps.

Every signal reports name, detector, state (``ok`` | ``warning`` | ``drift``), value,
detections, last detection time (unix) and event index.

State: river's detectors are not plain data (ADWIN lives in Rust and only offers an opaque
bincode blob, which is not safe to decode from untrusted bytes), so ``state_dict`` stores
plain data: PageHinkley's few running sums, and for each ADWIN the 0/1 values it received
since its last reset (a uint8 tensor), capped at ``replay`` values. Loading re-creates each
ADWIN and replays those values, which rebuilds it exactly while fewer than ``replay`` values
have arrived since its last detection, and otherwise as an ADWIN that saw only the last
``replay``.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import random
import sys
import time as _time
import types
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "DRIFT",
    "OK",
    "STATE_CODES",
    "WARNING",
    "DriftMonitor",
    "ema_difference_std",
    "psi",
    "psi_against",
    "psi_reference",
]


def _plain_river_detectors() -> tuple[type, type]:
    from river import drift

    return drift.ADWIN, drift.PageHinkley


def _import_river_detectors() -> tuple[type, type]:
    """river's ``ADWIN`` and ``PageHinkley``, without running ``river.drift``'s ``__init__``.

    That ``__init__`` also imports KSWIN and the drift datasets, which pull in scipy.stats and
    scipy.io: about 0.8 s of CPU, a quarter of the service's 3 s start-up budget, for two
    detectors that need neither. While the two modules load, a bare package object stands
    in for ``river.drift``; it is removed afterwards, so a later ``import river.drift`` runs
    the real ``__init__``, which finds these modules already loaded and reuses them (the
    classes stay the same objects). If river's layout ever changes, the plain import is used.
    """
    spec = None if "river.drift" in sys.modules else importlib.util.find_spec("river.drift")
    if spec is None or spec.submodule_search_locations is None:
        return _plain_river_detectors()
    stand_in = types.ModuleType("river.drift")
    stand_in.__path__ = list(spec.submodule_search_locations)
    stand_in.__spec__ = spec
    sys.modules["river.drift"] = stand_in
    adwin: types.ModuleType | None = None
    page_hinkley: types.ModuleType | None = None
    try:
        adwin = importlib.import_module("river.drift.adwin")
        page_hinkley = importlib.import_module("river.drift.page_hinkley")
    except ImportError:  # pragma: no cover - a future river layout
        pass
    finally:
        if sys.modules.get("river.drift") is stand_in:
            del sys.modules["river.drift"]
    if adwin is None or page_hinkley is None:  # pragma: no cover
        return _plain_river_detectors()
    return adwin.ADWIN, page_hinkley.PageHinkley


ADWIN, PageHinkley = _import_river_detectors()

OK, WARNING, DRIFT = "ok", "warning", "drift"


def _floats(values: Any) -> list[float]:
    """A float list from a tensor or a list (snapshots before tensors held lists)."""
    if isinstance(values, torch.Tensor):
        return values.to(torch.float64).reshape(-1).tolist()
    return [float(v) for v in values]


# Untracked feature names remembered (seen once) while waiting for a second sighting.
_SIGHTED_LIMIT = 4096

# Numeric codes for the Prometheus gauge streambalance_drift_state{signal}.
STATE_CODES = {OK: 0, WARNING: 1, DRIFT: 2}

_STATE_VERSION = 1


def psi(
    reference: Sequence[float] | np.ndarray,
    recent: Sequence[float] | np.ndarray,
    bins: int = 10,
    eps: float = 1e-4,
) -> float:
    """Population stability index of ``recent`` against ``reference``.

    Bin edges are the reference's quantiles, so every reference bin holds about 1/bins of
    it; an empty bin counts as ``eps`` so the log stays finite.
    PSI = sum_i (a_i - e_i) * ln(a_i / e_i), a = recent shares, e = reference shares.

    >>> psi([0.1, 0.2, 0.3, 0.4] * 50, [0.4, 0.3, 0.2, 0.1] * 50, bins=4)
    0.0
    >>> round(psi([0.1, 0.2, 0.3, 0.4] * 50, [0.4] * 200, bins=4), 3)
    6.905
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins!r}")
    cur = np.asarray(recent, dtype=np.float64)
    if cur.size == 0:
        raise ValueError("psi needs non-empty reference and recent samples")
    return psi_against(psi_reference(reference, bins, eps), cur, eps)


def psi_reference(
    reference: Sequence[float] | np.ndarray, bins: int = 10, eps: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's half of ``psi``: (bin edges, expected shares floored at eps).

    Computed once per reference window and reused while it stays the same (a sort of the
    whole window per learner step otherwise).
    """
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        raise ValueError("psi needs non-empty reference and recent samples")
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    n_bins = edges.size + 1
    expected = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=n_bins) / ref.size
    return edges, np.maximum(expected, eps)


def psi_against(
    reference: tuple[np.ndarray, np.ndarray], recent: np.ndarray, eps: float = 1e-4
) -> float:
    """``psi`` of ``recent`` against a ``psi_reference`` result (same arithmetic)."""
    edges, expected = reference
    cur = np.asarray(recent, dtype=np.float64)
    actual = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    actual = np.maximum(actual / cur.size, eps)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ema_difference_std(
    p: float | np.ndarray, short_decay: float, long_decay: float
) -> float | np.ndarray:
    """Stationary std of (short EMA - long EMA) of an i.i.d. Bernoulli(p) indicator.

    With e = 1 - b: Var(EMA_b) = s2 * e / (1 + b) and Cov(EMA_s, EMA_l) =
    s2 * e_s * e_l / (1 - b_s * b_l), s2 = p(1 - p). ``p`` may be an array.

    >>> ema_difference_std(0.5, 0.9, 0.9)
    0.0
    >>> round(ema_difference_std(0.5, 0.5, 0.0), 4)   # 0.25 * (1/3 + 1 - 1)
    0.2887
    """
    e_s, e_l = 1.0 - short_decay, 1.0 - long_decay
    k = e_s / (1.0 + short_decay) + e_l / (1.0 + long_decay)
    k -= 2.0 * e_s * e_l / (1.0 - short_decay * long_decay)
    std = np.sqrt(np.maximum(np.asarray(p, dtype=np.float64) * (1.0 - np.asarray(p)) * k, 0.0))
    return float(std) if std.ndim == 0 else std


def _decay(half_life: float) -> float:
    return 2.0 ** (-1.0 / half_life)


def _ema_path(m0: float, x: np.ndarray, decay: float) -> np.ndarray:
    """Every intermediate value of m <- decay * m + (1 - decay) * x_t, vectorized.

    m_t = decay^t * (m0 + (1 - decay) * sum_{i<=t} decay^-i x_i), in chunks short enough
    that decay^-i stays below 2 (no overflow, no precision loss).
    """
    out = np.empty(x.shape[0])
    chunk = max(1, int(-math.log(2.0) / math.log(decay)))
    for start in range(0, x.shape[0], chunk):
        xs = x[start : start + chunk]
        t = np.arange(1, xs.shape[0] + 1, dtype=np.float64)
        path = decay**t * (m0 + (1.0 - decay) * np.cumsum(decay**-t * xs))
        out[start : start + xs.shape[0]] = path
        m0 = float(path[-1])
    return out


class _Signal(ABC):
    """Bookkeeping every signal shares: detections and the last one's time and event."""

    detector = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.detections = 0
        self.last_at: float | None = None
        self.last_event: int | None = None

    def _detected(self, event: int, now: float) -> None:
        self.detections += 1
        self.last_at = now
        self.last_event = event

    @abstractmethod
    def state(self, event: int) -> str: ...

    @abstractmethod
    def value(self) -> float | None: ...

    def report(self, event: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "detector": self.detector,
            "state": self.state(event),
            "value": self.value(),
            "detections": self.detections,
            "last_detection_at": self.last_at,
            "last_detection_event": self.last_event,
        }

    def _book_state(self) -> dict[str, Any]:
        return {
            "detections": self.detections,
            "last_at": self.last_at,
            "last_event": self.last_event,
        }

    def _load_book(self, state: Mapping[str, Any]) -> None:
        self.detections = int(state["detections"])
        self.last_at = None if state["last_at"] is None else float(state["last_at"])
        self.last_event = None if state["last_event"] is None else int(state["last_event"])


class _HeldSignal(_Signal):
    """A detector signal without a warning zone: ``drift`` for ``hold`` events after a detection."""

    def __init__(self, name: str, hold: int) -> None:
        super().__init__(name)
        self.hold = hold

    def state(self, event: int) -> str:
        if self.last_event is not None and event - self.last_event <= self.hold:
            return DRIFT
        return OK


class _AdwinSignal(_HeldSignal):
    """ADWIN on a 0/1 stream (prequential errors), restorable by bounded replay."""

    detector = "ADWIN"

    def __init__(self, name: str, delta: float, replay: int, hold: int) -> None:
        super().__init__(name, hold)
        self.delta = delta
        self._adwin = ADWIN(delta=delta)
        # Values since the ADWIN's last reset: enough to rebuild it on load.
        self._since_reset: deque[int] = deque(maxlen=replay)
        # "up" (the error rose: an alarm) or "down" (it fell: recovery) at the last detection.
        self.direction: str | None = None

    def add(self, x: int, event: int, now: float) -> bool:
        self._adwin.update(x)
        if self._adwin.drift_detected:
            self.direction = self._direction(x)
            # river's ADWIN drops its whole window on the next update, so do we.
            self._since_reset.clear()
            self._detected(event, now)
            return True
        self._since_reset.append(x)
        return False

    def _direction(self, x: int) -> str | None:
        """Compare the kept (post-cut) window's mean with the mean of what ADWIN dropped."""
        kept_n, kept_mean = self._adwin.width, self._adwin.estimation
        seen_n, seen_sum = len(self._since_reset) + 1, sum(self._since_reset) + x
        dropped_n = seen_n - kept_n
        if dropped_n <= 0:
            return None
        dropped_mean = (seen_sum - kept_mean * kept_n) / dropped_n
        return "up" if kept_mean > dropped_mean else "down"

    def value(self) -> float | None:
        return float(self._adwin.estimation) if self._adwin.width else None

    def report(self, event: int) -> dict[str, Any]:
        details = {"direction": self.direction, "window": int(self._adwin.width)}
        return {**super().report(event), "details": details}

    def state_dict(self) -> dict[str, Any]:
        # 0/1 values as uint8: a 10k-event replay costs 10 kB in a checkpoint.
        since = torch.tensor(list(self._since_reset), dtype=torch.uint8)
        return {**self._book_state(), "since_reset": since, "direction": self.direction}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._load_book(state)
        self.direction = state.get("direction")
        self._adwin = ADWIN(delta=self.delta)
        self._since_reset.clear()
        for x in torch.as_tensor(state["since_reset"]).tolist():
            self._adwin.update(x)
            self._since_reset.append(x)


class _PriorSignal(_Signal):
    """Short vs long half-life EMA of one class's indicator, z-tested with a minimum ratio."""

    detector = "EMA z-test"

    def __init__(
        self,
        name: str,
        short_half_life: float,
        long_half_life: float,
        z_warning: float,
        z_drift: float,
        min_ratio: float,
        grace: int,
        floor: float,
    ) -> None:
        super().__init__(name)
        self.b_short, self.b_long = _decay(short_half_life), _decay(long_half_life)
        self.z_warning, self.z_drift = z_warning, z_drift
        self.min_ratio, self.grace, self.floor = min_ratio, grace, floor
        self._m = [0.0, 0.0, 0.0, 0.0]  # short sum, short norm, long sum, long norm
        self._n = 0
        self._state = OK
        self._ratio: float | None = None

    def add_many(self, x: np.ndarray, first_event: int, now: float) -> bool:
        """Feed a batch of 0/1 indicators (vectorized); True if drift was entered in it."""
        n = x.shape[0]
        m, bs, bl = self._m, self.b_short, self.b_long
        ones = np.ones(n)
        s_sum, s_norm = _ema_path(m[0], x, bs), _ema_path(m[1], ones, bs)
        l_sum, l_norm = _ema_path(m[2], x, bl), _ema_path(m[3], ones, bl)
        self._m = [float(s_sum[-1]), float(s_norm[-1]), float(l_sum[-1]), float(l_norm[-1])]
        short, long = s_sum / s_norm, np.maximum(l_sum / l_norm, self.floor)
        ratio = short / long
        self._ratio = float(ratio[-1])
        counted = self._n + np.arange(1, n + 1)
        self._n += n
        p = np.minimum(long, 1.0 - self.floor)
        z = np.abs(short - long) / np.maximum(ema_difference_std(p, bs, bl), 1e-12)
        z = np.where(counted >= self.grace, z, 0.0)
        moved = (ratio >= self.min_ratio) | (ratio <= 1.0 / self.min_ratio)
        drift = moved & (z >= self.z_drift)
        warn = moved & (z >= self.z_warning)
        # hysteresis: leave drift only once clearly back, so one move counts once
        hold = drift | (z >= self.z_warning)
        detected = False
        i = 0
        while i < n:
            if self._state == DRIFT:
                leave = np.flatnonzero(~hold[i:])
                if leave.size == 0:
                    break
                i += int(leave[0])
            else:
                enter = np.flatnonzero(drift[i:])
                if enter.size == 0:
                    break
                i += int(enter[0])
                self._state = DRIFT
                self._detected(first_event + i, now)
                detected = True
                i += 1
                continue
            self._state = WARNING if warn[i] else OK
            i += 1
        if self._state != DRIFT and n:
            self._state = WARNING if warn[-1] else OK
        return detected

    def state(self, event: int) -> str:
        return self._state

    def value(self) -> float | None:
        return self._ratio

    def state_dict(self) -> dict[str, Any]:
        return {
            **self._book_state(),
            "m": list(self._m),
            "n": self._n,
            "state": self._state,
            "ratio": self._ratio,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._load_book(state)
        self._m = [float(v) for v in state["m"]]
        self._n = int(state["n"])
        self._state = str(state["state"])
        self._ratio = None if state["ratio"] is None else float(state["ratio"])


_PH_FIELDS = ("_sum_increase", "_sum_decrease", "_min_increase", "_max_decrease")


class _FeatureSignal(_HeldSignal):
    """PageHinkley on one numeric feature, standardized against its first values."""

    detector = "PageHinkley"

    def __init__(
        self, name: str, reference: int, delta: float, threshold: float, hold: int
    ) -> None:
        super().__init__(name, hold)
        self.reference, self.delta, self.threshold = reference, delta, threshold
        self._ph = PageHinkley(delta=delta, threshold=threshold, alpha=1.0)
        self._ref = [0.0, 0.0, 0.0]  # Welford n, mean, M2 over the reference values
        self._level: float | None = None  # EMA of the standardized value: 0 = at reference
        self.last_seen = 0  # event index of the last value fed

    def add(self, x: float, event: int, now: float) -> bool:
        self.last_seen = event
        n, mean, m2 = self._ref
        if n < self.reference:
            n += 1.0
            d = x - mean
            mean += d / n
            m2 += d * (x - mean)
            self._ref = [n, mean, m2]
            return False
        std = math.sqrt(m2 / (n - 1.0)) if n > 1 else 0.0
        z = (x - mean) / std if std > 1e-12 else x - mean
        z = min(max(z, -10.0), 10.0)  # one wild value must not decide the test alone
        self._level = z if self._level is None else 0.98 * self._level + 0.02 * z
        self._ph.update(z)
        if self._ph.drift_detected:
            self._detected(event, now)
            return True
        return False

    def value(self) -> float | None:
        return self._level

    def state_dict(self) -> dict[str, Any]:
        ph = self._ph
        return {
            **self._book_state(),
            "ref": list(self._ref),
            "level": self._level,
            "last_seen": self.last_seen,
            "ph_n": float(ph._x_mean.n),
            "ph_mean": float(ph._x_mean.get()),
            "ph_detected": bool(ph.drift_detected),
            **{f"ph{k}": float(getattr(ph, k)) for k in _PH_FIELDS},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._load_book(state)
        self._ref = [float(v) for v in state["ref"]]
        self._level = None if state["level"] is None else float(state["level"])
        self.last_seen = int(state.get("last_seen", self.last_seen))
        ph = PageHinkley(delta=self.delta, threshold=self.threshold, alpha=1.0)
        # PageHinkley is a handful of running sums; restoring them is exact (river 0.26 names).
        ph._x_mean = type(ph._x_mean)._from_state(state["ph_n"], state["ph_mean"])
        for k in _PH_FIELDS:
            setattr(ph, k, float(state[f"ph{k}"]))
        ph._drift_detected = bool(state["ph_detected"])
        self._ph = ph


class _PsiSignal(_Signal):
    """PSI of the minority-class score: a reference window against the most recent one."""

    detector = "PSI"

    def __init__(
        self, window: int, warmup: int, bins: int, warning: float, drift: float, n_classes: int
    ) -> None:
        super().__init__("score_psi")
        self.window, self.warmup, self.bins = window, warmup, bins
        self.warning, self.drift = warning, drift
        self._counts = [0] * n_classes
        self._seen = 0
        self.minority: int | None = None
        self._reference: list[float] = []
        self._reference_bins: tuple[np.ndarray, np.ndarray] | None = None  # psi_reference
        self._recent: deque[float] = deque(maxlen=window)
        self._value: float | None = None
        self._since_detection: int | None = None

    def add_batch(self, y_true: Sequence[int], probs: np.ndarray, event: int, now: float) -> bool:
        for y in y_true:
            self._counts[y] += 1
        start = max(self.warmup - self._seen, 0)
        self._seen += len(y_true)
        if start >= len(y_true):
            return False
        if self.minority is None:
            # Fixed once chosen: a reference is only comparable with scores of the same class.
            self.minority = int(np.argmin(self._counts))
        scores = probs[start:, self.minority].tolist()
        room = self.window - len(self._reference)
        if room > 0:
            self._reference.extend(scores[:room])
            self._reference_bins = None
            scores = scores[room:]
        self._recent.extend(scores)
        if self._since_detection is not None:
            self._since_detection += len(scores)
            if self._since_detection >= self.window:
                # The recent window is all post-change scores: adopt it as the new normal.
                self._reference = list(self._recent)
                self._reference_bins = None
                self._since_detection = None
        if len(self._recent) < self.window:
            return False
        previous = self.state(event)
        if self._reference_bins is None:
            self._reference_bins = psi_reference(self._reference, self.bins)
        self._value = psi_against(self._reference_bins, np.asarray(self._recent))
        if self._value >= self.drift and previous != DRIFT:
            self._since_detection = 0
            self._detected(event, now)
            return True
        return False

    def state(self, event: int) -> str:
        if self._value is None or self._value < self.warning:
            return OK
        return DRIFT if self._value >= self.drift else WARNING

    def value(self) -> float | None:
        return self._value

    def state_dict(self) -> dict[str, Any]:
        return {
            **self._book_state(),
            "counts": list(self._counts),
            "seen": self._seen,
            "minority": self.minority,
            # Tensors: far cheaper to pickle than 1,000-float lists (checkpoints run on the loop).
            "reference": torch.tensor(self._reference, dtype=torch.float64),
            "recent": torch.tensor(list(self._recent), dtype=torch.float64),
            "value": self._value,
            "since_detection": self._since_detection,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._load_book(state)
        self._counts = [int(c) for c in state["counts"]]
        self._seen = int(state["seen"])
        self.minority = None if state["minority"] is None else int(state["minority"])
        self._reference = _floats(state["reference"])
        self._reference_bins = None
        self._recent = deque(_floats(state["recent"]), maxlen=self.window)
        self._value = None if state["value"] is None else float(state["value"])
        sd = state["since_detection"]
        self._since_detection = None if sd is None else int(sd)


class _HealthSignal(_Signal):
    """Training health from the learner's StepStats: gradient norms, clipping, skipped steps."""

    detector = "step stats"

    def __init__(
        self,
        grad_warning: float,
        grad_drift: float,
        clip_warning: float,
        skip_drift: float,
        recent_steps: int,
        grace: int = 100,
    ) -> None:
        super().__init__("training_health")
        self.grace = grace  # steps before the long gradient EMA is a baseline worth comparing
        self.grad_warning, self.grad_drift = grad_warning, grad_drift
        self.clip_warning, self.skip_drift = clip_warning, skip_drift
        self.recent_steps = recent_steps
        self._b_short, self._b_long, self._b_rate = _decay(10.0), _decay(500.0), _decay(50.0)
        # [short sum, short norm, long sum, long norm, clip sum, skip sum, rate norm]
        self._m = [0.0] * 7
        self.steps = 0
        self.skipped = 0
        self.clipped = 0
        self._last_skip: int | None = None
        self._per_class: list[float] = []
        self._state = OK

    def add(self, step: Any, event: int, now: float) -> bool:
        m = self._m
        self.steps += 1
        grad = float(step.grad_norm)
        if not step.skipped and math.isfinite(grad):
            bs, bl = self._b_short, self._b_long
            m[0], m[1] = bs * m[0] + (1.0 - bs) * grad, bs * m[1] + (1.0 - bs)
            m[2], m[3] = bl * m[2] + (1.0 - bl) * grad, bl * m[3] + (1.0 - bl)
        br = self._b_rate
        m[4] = br * m[4] + (1.0 - br) * float(bool(step.clipped))
        m[5] = br * m[5] + (1.0 - br) * float(bool(step.skipped))
        m[6] = br * m[6] + (1.0 - br)
        self.clipped += int(bool(step.clipped))
        if step.skipped:
            self.skipped += 1
            self._last_skip = self.steps
        self._per_class = [float(g) for g in step.per_class_grad_norm]
        previous, self._state = self._state, self._evaluate()
        if self._state == DRIFT and previous != DRIFT:
            self._detected(event, now)
            return True
        return False

    def _rates(self) -> tuple[float | None, float, float]:
        m = self._m
        ratio = (m[0] / m[1]) / (m[2] / m[3]) if m[1] > 0 and m[2] > 0 else None
        clip = m[4] / m[6] if m[6] > 0 else 0.0
        skip = m[5] / m[6] if m[6] > 0 else 0.0
        return ratio, clip, skip

    def _evaluate(self) -> str:
        ratio, clip, skip = self._rates()
        grown = ratio if ratio is not None and self.steps >= self.grace else 1.0
        if skip >= self.skip_drift or grown >= self.grad_drift:
            return DRIFT
        recent_skip = (
            self._last_skip is not None and self.steps - self._last_skip < self.recent_steps
        )
        if recent_skip or clip >= self.clip_warning or grown >= self.grad_warning:
            return WARNING
        return OK

    def state(self, event: int) -> str:
        return self._state

    def value(self) -> float | None:
        return self._rates()[0]

    def report(self, event: int) -> dict[str, Any]:
        ratio, clip, skip = self._rates()
        m = self._m
        return {
            **super().report(event),
            "details": {
                "grad_norm_ema": m[0] / m[1] if m[1] > 0 else None,
                "grad_norm_long_ema": m[2] / m[3] if m[3] > 0 else None,
                "clip_rate": clip,
                "skip_rate": skip,
                "steps": self.steps,
                "skipped_steps": self.skipped,
                "clipped_steps": self.clipped,
                "per_class_grad_norm": list(self._per_class),
            },
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            **self._book_state(),
            "m": list(self._m),
            "steps": self.steps,
            "skipped": self.skipped,
            "clipped": self.clipped,
            "last_skip": self._last_skip,
            "per_class": list(self._per_class),
            "state": self._state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._load_book(state)
        self._m = [float(v) for v in state["m"]]
        self.steps, self.skipped = int(state["steps"]), int(state["skipped"])
        self.clipped = int(state["clipped"])
        self._last_skip = None if state["last_skip"] is None else int(state["last_skip"])
        self._per_class = [float(v) for v in state["per_class"]]
        self._state = str(state["state"])


class _SampledColumns(Mapping[str, Sequence[float | None]]):
    """``feature_values`` read from feature dicts at the sampled rows only (``read``): the
    numeric values per name, None elsewhere. Building full columns cost more than the
    signals that use a tenth of them.

    >>> cols = _SampledColumns([{"a": 1, "s": "x"}, {"a": 2.5, "b": True}, {"b": 3.0}])
    >>> cols.read([1, 2])
    >>> sorted(cols), cols["a"][1], cols["a"][0], cols["b"][2], len(cols["b"])
    (['a', 'b'], 2.5, None, 3.0, 3)
    """

    def __init__(self, events: Sequence[Mapping[str, object]]) -> None:
        self._events = events
        self._columns: dict[str, _SparseColumn] = {}

    def read(self, rows: Sequence[int]) -> None:
        n = len(self._events)
        columns = self._columns
        for i in rows:
            for name, value in self._events[i].items():
                if type(value) is float or type(value) is int:  # bool is not a number here
                    column = columns.get(name)
                    if column is None:
                        column = columns[name] = _SparseColumn(n)
                    column.values[i] = float(value)

    def __getitem__(self, name: str) -> Sequence[float | None]:
        return self._columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


class _SparseColumn(Sequence[float | None]):
    """A column of ``n`` values, None except where set."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: dict[int, float] = {}

    def __getitem__(self, i: int) -> float | None:  # type: ignore[override]
        return self.values.get(i)

    def __len__(self) -> int:
        return self.n


class DriftMonitor:
    """All drift and training-health signals of one model, fed once per micro-batch.

    >>> import numpy as np
    >>> monitor = DriftMonitor(["legit", "fraud"])
    >>> monitor.update([0, 1, 0], [0, 0, 0], np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2]]))
    []
    >>> monitor.events, monitor.drift_detected
    (3, False)
    >>> [s["name"] for s in monitor.signals()][:4]
    ['error', 'error:legit', 'error:fraud', 'prior:legit']
    """

    def __init__(
        self,
        classes: Sequence[str],
        seed: int = 0,
        adwin_delta: float = 0.002,
        error_warmup: int = 1000,
        replay: int = 10_000,
        hold: int = 1000,
        prior_short_half_life: float = 500.0,
        prior_long_half_life: float = 5000.0,
        prior_z_warning: float = 4.0,
        prior_z_drift: float = 6.0,
        prior_min_ratio: float = 1.5,
        prior_grace: int = 1000,
        prior_floor: float = 1e-4,
        feature_max: int = 20,
        feature_sample: float = 0.1,
        feature_reference: int = 200,
        feature_delta: float = 0.25,
        feature_threshold: float = 50.0,
        feature_idle: int = 10_000,
        psi_window: int = 1000,
        psi_warmup: int = 2000,
        psi_bins: int = 10,
        psi_warning: float = 0.1,
        psi_drift: float = 0.25,
        grad_warning: float = 3.0,
        grad_drift: float = 10.0,
        clip_warning: float = 0.5,
        skip_drift: float = 0.05,
        recent_steps: int = 100,
    ) -> None:
        self.classes = [str(c) for c in classes]
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be >= 2 distinct names, got {list(classes)!r}")
        _check_positive(
            adwin_delta=adwin_delta, replay=replay, prior_short_half_life=prior_short_half_life,
            prior_z_warning=prior_z_warning, prior_floor=prior_floor,
            feature_sample=feature_sample, feature_reference=feature_reference,
            feature_threshold=feature_threshold, feature_idle=feature_idle,
            psi_window=psi_window, psi_warning=psi_warning,
            grad_warning=grad_warning, clip_warning=clip_warning, skip_drift=skip_drift,
            recent_steps=recent_steps,
        )  # fmt: skip
        _check_non_negative(
            error_warmup=error_warmup, hold=hold, prior_grace=prior_grace,
            feature_max=feature_max, feature_delta=feature_delta, psi_warmup=psi_warmup,
        )  # fmt: skip
        if not adwin_delta < 1.0:
            raise ValueError(f"adwin_delta must be in (0, 1), got {adwin_delta!r}")
        if prior_long_half_life <= prior_short_half_life:
            raise ValueError(
                "prior_long_half_life must exceed prior_short_half_life, "
                f"got {prior_long_half_life!r}"
            )
        if prior_z_drift < prior_z_warning:
            raise ValueError(f"prior_z_drift must be >= prior_z_warning, got {prior_z_drift!r}")
        if prior_min_ratio <= 1.0:
            raise ValueError(f"prior_min_ratio must be > 1, got {prior_min_ratio!r}")
        if feature_sample > 1.0:
            raise ValueError(f"feature_sample must be in (0, 1], got {feature_sample!r}")
        if feature_reference < 2:
            raise ValueError(f"feature_reference must be >= 2, got {feature_reference!r}")
        if psi_bins < 2:
            raise ValueError(f"psi_bins must be >= 2, got {psi_bins!r}")
        if psi_drift < psi_warning:
            raise ValueError(f"psi_drift must be >= psi_warning, got {psi_drift!r}")
        if grad_drift < grad_warning:
            raise ValueError(f"grad_drift must be >= grad_warning, got {grad_drift!r}")
        if clip_warning > 1.0 or skip_drift > 1.0:
            raise ValueError(f"clip_warning/skip_drift are rates in (0, 1], got {clip_warning!r}")
        self.seed = seed
        self.adwin_delta, self.replay, self.hold = adwin_delta, replay, hold
        self.error_warmup = error_warmup
        self.prior_short_half_life = prior_short_half_life
        self.prior_long_half_life = prior_long_half_life
        self.prior_z_warning, self.prior_z_drift = prior_z_warning, prior_z_drift
        self.prior_min_ratio, self.prior_grace = prior_min_ratio, prior_grace
        self.prior_floor = prior_floor
        self.feature_max, self.feature_sample = feature_max, feature_sample
        self.feature_reference, self.feature_delta = feature_reference, feature_delta
        self.feature_threshold, self.feature_idle = feature_threshold, feature_idle
        self.psi_window, self.psi_warmup, self.psi_bins = psi_window, psi_warmup, psi_bins
        self.psi_warning, self.psi_drift = psi_warning, psi_drift
        self.grad_warning, self.grad_drift = grad_warning, grad_drift
        self.clip_warning, self.skip_drift = clip_warning, skip_drift
        self.recent_steps = recent_steps
        self._reset()

    def _reset(self) -> None:
        self.events = 0
        self._rng = random.Random(self.seed)
        self._error = _AdwinSignal("error", self.adwin_delta, self.replay, self.hold)
        self._class_error = [
            _AdwinSignal(f"error:{c}", self.adwin_delta, self.replay, self.hold)
            for c in self.classes
        ]
        self._prior = [
            _PriorSignal(
                f"prior:{c}", self.prior_short_half_life, self.prior_long_half_life,
                self.prior_z_warning, self.prior_z_drift, self.prior_min_ratio,
                self.prior_grace, self.prior_floor,
            )
            for c in self.classes
        ]  # fmt: skip
        self._features: dict[str, _FeatureSignal] = {}
        # Untracked names seen in one sampled row so far (a second sighting earns a slot);
        # a bounded memo, cleared when full.
        self._sighted: set[str] = set()
        self._psi = _PsiSignal(
            self.psi_window, self.psi_warmup, self.psi_bins, self.psi_warning, self.psi_drift,
            len(self.classes),
        )  # fmt: skip
        self._health = _HealthSignal(
            self.grad_warning, self.grad_drift, self.clip_warning, self.skip_drift,
            self.recent_steps,
        )  # fmt: skip

    @property
    def tracked_features(self) -> list[str]:
        """Names of the numeric features with a PageHinkley signal (at most ``feature_max``)."""
        return list(self._features)

    def wants_feature(self, name: str) -> bool:
        """Whether values of ``name`` could be used now (lets callers skip collecting the
        rest): it is tracked, or a slot is free or held by an idle feature."""
        return (
            name in self._features
            or len(self._features) < self.feature_max
            or any(self._idle(signal) for signal in self._features.values())
        )

    def _idle(self, signal: _FeatureSignal) -> bool:
        return self.events - signal.last_seen > self.feature_idle

    def update(
        self,
        y_true: Sequence[int],
        y_pred: Sequence[int],
        probs: np.ndarray,
        feature_values: Mapping[str, Sequence[float | None]] | None = None,
        step: Any | None = None,
        time: float | None = None,
        events: Sequence[Mapping[str, object]] | None = None,
    ) -> list[str]:
        """Feed one prequential batch; return the names of signals that detected drift in it.

        ``probs`` [B, K] are the pre-learning probabilities; ``feature_values`` maps a numeric
        feature name to its B values in batch order (None or NaN where the event lacks it);
        ``events``, instead of it, are the batch's feature dicts: only the sampled rows are
        read (the feature signals see ``feature_sample`` of the events), so nothing is
        collected for the rest;
        ``step`` is the learner's StepStats for this batch; ``time`` is unix time (now if None).
        """
        n = len(y_true)
        k = len(self.classes)
        if len(y_pred) != n:
            raise ValueError(f"y_pred has {len(y_pred)} entries for {n} labels")
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (n, k):
            raise ValueError(f"probs must have shape ({n}, {k}), got {probs.shape}")
        labels = [int(y) for y in y_true]
        for y in labels:
            if not 0 <= y < k:
                raise ValueError(f"y_true holds class index {y!r}, expected 0..{k - 1}")
        now = _time.time() if time is None else float(time)
        base = self.events
        fired: list[_Signal] = []
        # A young model's error falls as it learns: that is not drift, so skip the warm-up.
        skip = max(self.error_warmup - base, 0)
        for i, (y, p) in enumerate(zip(labels, y_pred, strict=True)):
            if i < skip:
                continue
            event = base + i
            err = 0 if int(p) == y else 1
            if self._error.add(err, event, now):
                fired.append(self._error)
            if self._class_error[y].add(err, event, now):
                fired.append(self._class_error[y])
        if n:
            y_arr = np.asarray(labels)
            for c, prior in enumerate(self._prior):
                if prior.add_many((y_arr == c).astype(np.float64), base, now):
                    fired.append(prior)
        if feature_values:
            fired.extend(self._update_features(feature_values, n, base, now))
        elif events is not None:
            if len(events) != n:
                raise ValueError(f"events has {len(events)} entries for {n} labels")
            fired.extend(self._update_features(_SampledColumns(events), n, base, now))
        if n and self._psi.add_batch(labels, probs, base + n - 1, now):
            fired.append(self._psi)
        if step is not None and self._health.add(step, base + max(n - 1, 0), now):
            fired.append(self._health)
        self.events = base + n
        order = {s.name: j for j, s in enumerate(self._all())}
        return sorted({s.name for s in fired}, key=order.__getitem__)

    def _update_features(
        self, feature_values: Mapping[str, Sequence[float | None]], n: int, base: int, now: float
    ) -> list[_Signal]:
        rows = [i for i in range(n) if self._rng.random() < self.feature_sample]
        fired: list[_Signal] = []
        if isinstance(feature_values, _SampledColumns):
            feature_values.read(rows)
        for name in [name for name, s in self._features.items() if self._idle(s)]:
            del self._features[name]  # unseen for feature_idle events: the slot is free
        candidates: list[tuple[str, list[float], list[int]]] = []
        for name in sorted(feature_values):
            values = feature_values[name]
            if len(values) != n:
                raise ValueError(
                    f"feature_values[{name!r}] has {len(values)} values for {n} events"
                )
            seen, xs = [], []
            for i in rows:
                x = values[i]
                if x is not None and math.isfinite(x):
                    seen.append(i)
                    xs.append(float(x))
            if not seen:
                continue
            signal = self._features.get(name)
            if signal is None:
                candidates.append((name, xs, seen))
                continue
            fired.extend(self._feed(signal, xs, seen, base, now))
        # The most-seen names first; a slot needs a second sighting, in this batch or before.
        for name, xs, seen in sorted(candidates, key=lambda c: (-len(c[2]), c[0])):
            if len(seen) < 2 and name not in self._sighted:
                if len(self._sighted) >= _SIGHTED_LIMIT:
                    self._sighted.clear()
                self._sighted.add(name)
            elif len(self._features) < self.feature_max:
                self._sighted.discard(name)
                signal = self._features[name] = self._new_feature(name)
                fired.extend(self._feed(signal, xs, seen, base, now))
        return fired

    @staticmethod
    def _feed(
        signal: _FeatureSignal, xs: list[float], seen: list[int], base: int, now: float
    ) -> list[_Signal]:
        return [signal for x, i in zip(xs, seen, strict=True) if signal.add(x, base + i, now)]

    def _new_feature(self, name: str) -> _FeatureSignal:
        return _FeatureSignal(
            f"feature:{name}", self.feature_reference, self.feature_delta,
            self.feature_threshold, self.hold,
        )  # fmt: skip

    def _all(self) -> list[_Signal]:
        return [
            self._error,
            *self._class_error,
            *self._prior,
            *self._features.values(),
            self._psi,
            self._health,
        ]

    def signals(self) -> list[dict[str, Any]]:
        """One dict per signal: name, detector, state, value, detections, last detection."""
        last = self.events - 1
        return [s.report(last) for s in self._all()]

    @property
    def drift_detected(self) -> bool:
        """True while any signal is in state ``drift``."""
        return any(s["state"] == DRIFT for s in self.signals())

    def report(self) -> dict[str, Any]:
        """The ``GET /drift`` body: ``{"drift_detected": bool, "signals": [...]}``."""
        signals = self.signals()
        return {"drift_detected": any(s["state"] == DRIFT for s in signals), "signals": signals}

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state: ``{"version", "classes", "events", "rng", "error", "class_error":
        [...], "prior": [...], "features": {name: ...}, "psi", "health"}``."""
        version, internal, gauss = self._rng.getstate()
        return {
            "version": _STATE_VERSION,
            "classes": list(self.classes),
            "events": self.events,
            "rng": [version, list(internal), gauss],
            "error": self._error.state_dict(),
            "class_error": [s.state_dict() for s in self._class_error],
            "prior": [s.state_dict() for s in self._prior],
            "features": {name: s.state_dict() for name, s in self._features.items()},
            "psi": self._psi.state_dict(),
            "health": self._health.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from ``state_dict()`` output (ADWINs rebuilt by replay, see module doc)."""
        if list(state["classes"]) != self.classes:
            raise ValueError(
                f"state is for classes {list(state['classes'])!r}, not {self.classes!r}"
            )
        version = int(state.get("version", 1))
        if version > _STATE_VERSION:
            raise ValueError(f"drift state version {version} is newer than {_STATE_VERSION}")
        self._reset()
        self.events = int(state["events"])
        rng_version, internal, gauss = state["rng"]
        self._rng.setstate((int(rng_version), tuple(int(v) for v in internal), gauss))
        self._error.load_state_dict(state["error"])
        for signal, sub in zip(self._class_error, state["class_error"], strict=True):
            signal.load_state_dict(sub)
        for prior, sub in zip(self._prior, state["prior"], strict=True):
            prior.load_state_dict(sub)
        for name, sub in state["features"].items():
            feature = self._features[name] = self._new_feature(name)
            # Snapshots before slots were released have no last_seen: count from now.
            feature.last_seen = self.events
            feature.load_state_dict(sub)
        self._psi.load_state_dict(state["psi"])
        self._health.load_state_dict(state["health"])


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
