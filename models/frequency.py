"""Class-frequency EMA: the bias-corrected, floored estimate of the current class prior.

This module is the reference for the service's Redis Lua script, which must reproduce it bit
for bit. Everything here is therefore plain Python float (IEEE-754 double) arithmetic, one
operation at a time, in loops that run left to right: no numpy, no ``math.fsum`` and no
built-in ``sum()`` over floats (Python 3.12+ ``sum()`` uses compensated summation, which Lua
does not).

State of the estimator (all JSON-able):

* ``m``: list of K floats, the un-normalized EMA of the one-hot labels;
* ``norm``: float, the EMA of the constant 1 (``1 - b**t`` for a constant decay ``b``), the
  bias-correction denominator;
* ``count``: int, labels seen;
* ``last_time``: float or None, timestamp of the last timed event (time-based decay only).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

__all__ = [
    "ClassFrequencyEstimator",
    "decay_for_half_life",
    "ema_step",
    "ema_update",
    "estimates",
    "time_decay",
]


def _as_label(label: object) -> int:
    """An int class index (numpy integers accepted; bools and floats are not)."""
    if isinstance(label, bool):
        raise ValueError(f"labels must be ints, got {label!r}")
    try:
        return operator.index(label)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"labels must be ints, got {label!r}") from None


def decay_for_half_life(half_life: float) -> float:
    """Per-event decay ``b = 2**(-1/half_life)``: after ``half_life`` events an old weight halves.

    >>> decay_for_half_life(1.0)
    0.5
    >>> b = decay_for_half_life(2000.0)
    >>> round(b ** 2000, 12)
    0.5
    """
    if not (isinstance(half_life, int | float) and math.isfinite(half_life) and half_life > 0):
        raise ValueError(f"half_life must be a finite number > 0, got {half_life!r}")
    return 2.0 ** (-1.0 / half_life)


def time_decay(dt_seconds: float, half_life_seconds: float) -> float:
    """Decay for a time gap: ``0.5 ** (max(dt, 0) / half_life_seconds)``.

    A negative gap (an out-of-order timestamp) decays nothing.

    >>> time_decay(60.0, 60.0)
    0.5
    >>> time_decay(0.0, 60.0)
    1.0
    >>> time_decay(-5.0, 60.0)
    1.0
    """
    if not (math.isfinite(half_life_seconds) and half_life_seconds > 0):
        raise ValueError(
            f"half_life_seconds must be a finite number > 0, got {half_life_seconds!r}"
        )
    if not math.isfinite(dt_seconds):
        raise ValueError(f"dt_seconds must be finite, got {dt_seconds!r}")
    gap = dt_seconds if dt_seconds > 0.0 else 0.0
    return 0.5 ** (gap / half_life_seconds)


def ema_step(
    m: Sequence[float], norm: float, label: int, decay: float, gain: float | None = None
) -> tuple[list[float], float]:
    """One labeled event: ``m_c <- d*m_c + g*[label == c]``, ``norm <- d*norm + g``.

    The gain ``g`` is ``1 - d`` by default (the classic EMA). Time mode passes ``g = 1``: each
    event counts as one and the counts fade with elapsed time, so simultaneous events keep
    their full weight. Either way ``m_c / norm`` is the bias-corrected estimate. Returns new
    values; the inputs are not modified.

    >>> ema_step([0.0, 0.0], 0.0, 1, 0.5)
    ([0.0, 0.5], 0.5)
    >>> ema_step([0.0, 0.5], 0.5, 0, 0.5)
    ([0.5, 0.25], 0.75)
    >>> ema_step([0.0, 1.0], 1.0, 0, 1.0, gain=1.0)
    ([1.0, 1.0], 2.0)
    """
    k = len(m)
    label = _as_label(label)
    if not 0 <= label < k:
        raise ValueError(f"label must be an int in [0, {k}), got {label!r}")
    if not (0.0 <= decay <= 1.0):
        raise ValueError(f"decay must be in [0, 1], got {decay!r}")
    rest = 1.0 - decay if gain is None else gain
    out = []
    for c in range(k):
        indicator = 1.0 if c == label else 0.0
        out.append(decay * m[c] + rest * indicator)
    return out, decay * norm + rest


def ema_update(
    m: Sequence[float], norm: float, labels: Sequence[int], decay: float
) -> tuple[list[float], float]:
    """Apply :func:`ema_step` to each label in order.

    >>> ema_update([0.0, 0.0], 0.0, [1, 0], 0.5)
    ([0.5, 0.25], 0.75)
    """
    out = list(m)
    for label in labels:
        out, norm = ema_step(out, norm, label, decay)
    return out, norm


def estimates(m: Sequence[float], norm: float, floor: float) -> list[float]:
    """Bias-corrected frequencies ``m_c / norm``, floored at ``floor``, renormalized to sum 1.

    With no data yet (``norm == 0``) the estimate is uniform.

    >>> estimates([0.0, 0.0], 0.0, 1e-4)
    [0.5, 0.5]
    >>> estimates([0.5, 0.25], 0.75, 0.0)
    [0.6666666666666666, 0.3333333333333333]
    >>> estimates([0.0, 0.5], 0.5, 0.25)
    [0.2, 0.8]
    """
    k = len(m)
    if k == 0:
        raise ValueError("m must hold at least one class")
    if not floor >= 0.0:
        raise ValueError(f"floor must be >= 0, got {floor!r}")
    if norm == 0.0:
        return [1.0 / k] * k
    q = []
    for c in range(k):
        v = m[c] / norm
        q.append(v if v > floor else floor)
    s = 0.0
    for v in q:
        s = s + v
    return [v / s for v in q]


class ClassFrequencyEstimator:
    """Keeps the class-frequency EMA state and turns labels into prior estimates.

    Parameters are stored under the same names: ``n_classes``, ``half_life`` (in events),
    ``floor`` (lowest frequency reported for an unseen or vanishing class, before
    renormalization) and ``time_half_life`` (seconds; when set, each timed event decays the
    state by the time gap since the previous timed event instead of by ``half_life``).

    Time mode counts every event as one (gain 1) and lets the counts fade by the time that
    passes: ``m_c <- d(gap)*m_c + [y=c]``, ``norm <- d(gap)*norm + 1``. Events sharing a
    timestamp (a burst, a batch stamped at arrival) each keep their full weight; a batch
    without timestamps fades by the event half-life per event.

    >>> est = ClassFrequencyEstimator(2, half_life=10.0, floor=1e-3)
    >>> est.update([0, 0, 0, 1])[1] > 0.25
    True
    >>> est.count
    4
    """

    def __init__(
        self,
        n_classes: int,
        half_life: float = 2000.0,
        floor: float = 1e-4,
        time_half_life: float | None = None,
    ) -> None:
        if not (isinstance(n_classes, int) and n_classes >= 2):
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
        decay_for_half_life(half_life)  # validates half_life
        if not (isinstance(floor, int | float) and 0.0 <= floor < 1.0 / n_classes):
            raise ValueError(f"floor must be in [0, 1/n_classes), got {floor!r}")
        if time_half_life is not None and not (
            math.isfinite(time_half_life) and time_half_life > 0
        ):
            raise ValueError(f"time_half_life must be None or > 0, got {time_half_life!r}")
        self.n_classes = n_classes
        self.half_life = half_life
        self.floor = floor
        self.time_half_life = time_half_life
        self._reset()

    def _reset(self) -> None:
        self._decay = decay_for_half_life(self.half_life)
        self._m = [0.0] * self.n_classes
        self._norm = 0.0
        self._count = 0
        self._last_time: float | None = None

    def update(
        self, labels: Sequence[int], timestamps: Sequence[float] | None = None
    ) -> list[float]:
        """Apply ``labels`` in order and return the new frequency estimates.

        ``timestamps`` (seconds, one per label) are used only when ``time_half_life`` is set:
        the first timed event decays by the event half-life, each later one by
        ``time_decay(ts - last_time, time_half_life)``; ``last_time`` never moves backwards.
        Without timestamps every event decays by the event half-life (with the gain of the
        mode in force).
        """
        labels = [_as_label(label) for label in labels]
        for label in labels:
            if not 0 <= label < self.n_classes:
                raise ValueError(f"label {label!r} out of range [0, {self.n_classes})")
        if timestamps is not None:
            timestamps = [float(t) for t in timestamps]
            if len(timestamps) != len(labels):
                raise ValueError(
                    f"timestamps has {len(timestamps)} entries for {len(labels)} labels"
                )
            for t in timestamps:
                if not math.isfinite(t):
                    raise ValueError(f"timestamps must be finite, got {t!r}")
        if self.time_half_life is None:
            self._m, self._norm = ema_update(self._m, self._norm, labels, self._decay)
        elif timestamps is None:
            for label in labels:
                self._m, self._norm = ema_step(self._m, self._norm, label, self._decay, 1.0)
        else:
            for label, t in zip(labels, timestamps, strict=True):
                if self._last_time is None:
                    decay = self._decay
                    self._last_time = t
                else:
                    decay = time_decay(t - self._last_time, self.time_half_life)
                    if t > self._last_time:
                        self._last_time = t
                self._m, self._norm = ema_step(self._m, self._norm, label, decay, 1.0)
        self._count += len(labels)
        return self.frequencies

    @property
    def frequencies(self) -> list[float]:
        """Current floored, bias-corrected class frequencies (sum to 1)."""
        return estimates(self._m, self._norm, self.floor)

    @property
    def count(self) -> int:
        """Number of labels applied so far."""
        return self._count

    def state_dict(self) -> dict:
        """``{"m": list[float], "norm": float, "count": int, "last_time": float | None}``."""
        return {
            "m": list(self._m),
            "norm": self._norm,
            "count": self._count,
            "last_time": self._last_time,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (for the same number of classes)."""
        m = [float(v) for v in state["m"]]
        if len(m) != self.n_classes:
            raise ValueError(f"state has {len(m)} classes, estimator has {self.n_classes}")
        last_time = state.get("last_time")
        self._m = m
        self._norm = float(state["norm"])
        self._count = int(state.get("count", 0))
        self._last_time = None if last_time is None else float(last_time)
