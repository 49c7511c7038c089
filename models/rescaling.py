"""Per-class gradient-rescaling factors from class frequencies, and their smoothing over steps.

Factors are normalized in expectation under the current prior, ``sum_c p_c * r_c = 1``, so the
average gradient scale equals plain cross-entropy and the learning rate keeps its meaning; a
cap ``r_max`` bounds the largest factor, with the scale re-solved so both hold at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "SCHEMES",
    "FactorSmoother",
    "effective_number_factors",
    "normalize_factors",
    "raw_factors",
    "smooth_factors",
]

SCHEMES = ("inverse", "effective_number")
_DIST_TOL = 1e-6


def _check_distribution(p: Sequence[float], name: str = "p") -> list[float]:
    out = [float(v) for v in p]
    if not out:
        raise ValueError(f"{name} must hold at least one class")
    if not all(math.isfinite(v) and v >= 0.0 for v in out):
        raise ValueError(f"{name} must be finite and >= 0, got {out!r}")
    if abs(math.fsum(out) - 1.0) > _DIST_TOL:
        raise ValueError(f"{name} must sum to 1, got sum {math.fsum(out)!r}")
    return out


def _check_r_max(r_max: float) -> None:
    if not (isinstance(r_max, int | float) and r_max >= 1.0):  # also rejects NaN
        raise ValueError(
            f"r_max must be >= 1 (the all-ones factors must be feasible), got {r_max!r}"
        )


def normalize_factors(p: Sequence[float], weights: Sequence[float], r_max: float) -> list[float]:
    """Scale ``weights`` to ``r_c = min(s * weights_c, r_max)`` with ``sum_c p_c r_c = 1``.

    Water-filling: the classes with the largest weights are capped at ``r_max`` and ``s`` is
    re-solved on the others, so the cap and the expectation constraint hold together. A
    weight of ``inf`` (an unseen class) gets ``r_max``. Needs ``r_max >= 1``.

    >>> normalize_factors([0.5, 0.5], [1.0, 3.0], r_max=10.0)
    [0.5, 1.5]
    >>> normalize_factors([0.9, 0.1], [1.0, 100.0], r_max=5.0)
    [0.5555555555555556, 5.0]
    """
    p = _check_distribution(p)
    _check_r_max(r_max)
    w = [float(v) for v in weights]
    if len(w) != len(p):
        raise ValueError(f"weights has {len(w)} entries, p has {len(p)}")
    if not all(v > 0.0 for v in w):  # inf allowed, NaN and <= 0 rejected
        raise ValueError(f"weights must be > 0, got {w!r}")
    # Only classes with p_c > 0 enter the constraint; visit the largest weights first, since
    # those are the ones the cap reaches first.
    order = sorted((c for c in range(len(p)) if p[c] > 0.0), key=lambda c: -w[c])
    capped_mass = 0.0
    scale = math.inf
    for k in range(len(order)):
        rest = order[k:]
        denom = math.fsum(p[c] * w[c] for c in rest)
        if math.isfinite(denom):
            s = (1.0 - r_max * capped_mass) / denom
            if s * w[rest[0]] <= r_max:
                scale = s
                break
        capped_mass += p[order[k]]
    return [r_max if math.isinf(v) else min(scale * v, r_max) for v in w]


def raw_factors(p: Sequence[float], gamma: float = 1.0, r_max: float = 10.0) -> list[float]:
    """Factors ``r_c ∝ p_c ** -gamma`` with ``sum_c p_c r_c = 1`` and ``r_c <= r_max``.

    ``gamma = 1`` is full inverse frequency, ``0.5`` the square root, ``0`` no rescaling.

    >>> raw_factors([0.75, 0.25])
    [0.6666666666666666, 2.0]
    >>> raw_factors([0.99, 0.01], r_max=10.0)
    [0.9090909090909092, 10.0]
    >>> raw_factors([0.99, 0.01], gamma=0.0)
    [1.0, 1.0]
    """
    p = _check_distribution(p)
    if not (isinstance(gamma, int | float) and math.isfinite(gamma) and gamma >= 0.0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    weights = [math.inf if v == 0.0 and gamma > 0 else v**-gamma for v in p]
    return normalize_factors(p, weights, r_max)


def effective_number_factors(
    counts: Sequence[float],
    beta: float = 0.999,
    r_max: float = 10.0,
    p: Sequence[float] | None = None,
) -> list[float]:
    """Cui et al. (2019) class-balanced weights ``(1 - beta) / (1 - beta**n_c)``, normalized.

    The effective number of samples ``(1 - beta**n) / (1 - beta)`` grows like ``n`` for small
    ``n`` and saturates at ``1 / (1 - beta)``; its inverse is the weight. Normalization is the
    same as :func:`raw_factors` (``sum_c p_c r_c = 1``, cap ``r_max``), under ``p`` if given,
    otherwise under ``counts / sum(counts)``. A class with no samples gets ``r_max``.

    >>> effective_number_factors([900, 100], beta=0.0)
    [1.0, 1.0]
    >>> r = effective_number_factors([900, 100], beta=0.999)
    >>> [round(v, 4) for v in r]
    [0.6564, 4.0925]
    """
    n = [float(v) for v in counts]
    if not n or not all(math.isfinite(v) and v >= 0.0 for v in n):
        raise ValueError(f"counts must be finite and >= 0, got {n!r}")
    if not (isinstance(beta, int | float) and 0.0 <= beta < 1.0):
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    total = math.fsum(n)
    if p is None:
        if total <= 0.0:
            raise ValueError("counts must not all be zero when p is not given")
        p = [v / total for v in n]
    weights = [math.inf if v == 0.0 else (1.0 - beta) / (1.0 - beta**v) for v in n]
    return normalize_factors(p, weights, r_max)


def smooth_factors(
    prev: Sequence[float],
    target: Sequence[float],
    alpha: float = 0.05,
    max_rel_change: float | None = None,
) -> list[float]:
    """Move ``prev`` toward ``target``: ``prev + alpha * (target - prev)`` per class.

    With ``max_rel_change = m`` the ratio new/prev is also kept within ``[1/(1+m), 1+m]``
    (a symmetric bound on the log of the factor). The result always lies between ``prev`` and
    ``target``, so a cap that both respect still holds.

    >>> smooth_factors([1.0, 1.0], [0.5, 5.0], alpha=0.5)
    [0.75, 3.0]
    >>> smooth_factors([1.0, 1.0], [0.5, 5.0], alpha=0.5, max_rel_change=0.1)
    [0.9090909090909091, 1.1]
    """
    prev = [float(v) for v in prev]
    target = [float(v) for v in target]
    if len(prev) != len(target):
        raise ValueError(f"prev has {len(prev)} entries, target has {len(target)}")
    if not all(math.isfinite(v) and v > 0.0 for v in prev + target):
        raise ValueError("factors must be finite and > 0")
    if not (isinstance(alpha, int | float) and 0.0 < alpha <= 1.0):
        raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
    if max_rel_change is not None and not (
        isinstance(max_rel_change, int | float) and max_rel_change > 0.0
    ):
        raise ValueError(f"max_rel_change must be None or > 0, got {max_rel_change!r}")
    out = []
    for a, b in zip(prev, target, strict=True):
        v = a + alpha * (b - a)
        if max_rel_change is not None:
            v = min(max(v, a / (1.0 + max_rel_change)), a * (1.0 + max_rel_change))
        out.append(v)
    return out


class FactorSmoother:
    """Turns class frequencies into smoothed rescaling factors, step by step.

    Settings (stored under the same names): ``n_classes``, ``gamma`` and ``r_max`` (see
    :func:`raw_factors`), ``alpha`` and ``max_rel_change`` (see :func:`smooth_factors`),
    ``scheme`` (``"inverse"``: ``p ** -gamma``; ``"effective_number"``: Cui et al. with
    ``beta``, needs counts). The first update jumps straight to the target; before any update
    the factors are all 1.

    >>> sm = FactorSmoother(2, alpha=0.5)
    >>> sm.update([0.75, 0.25])
    [0.6666666666666666, 2.0]
    >>> sm.update([0.5, 0.5])
    [0.8333333333333333, 1.5]
    """

    def __init__(
        self,
        n_classes: int,
        gamma: float = 1.0,
        r_max: float = 10.0,
        alpha: float = 0.05,
        max_rel_change: float | None = None,
        scheme: str = "inverse",
        beta: float = 0.999,
    ) -> None:
        if not (isinstance(n_classes, int) and n_classes >= 2):
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        # Validate the numeric settings once, here, with the pure functions' own checks.
        raw_factors([1.0 / n_classes] * n_classes, gamma=gamma, r_max=r_max)
        smooth_factors([1.0], [1.0], alpha=alpha, max_rel_change=max_rel_change)
        effective_number_factors([1.0], beta=beta)
        self.n_classes = n_classes
        self.gamma = gamma
        self.r_max = r_max
        self.alpha = alpha
        self.max_rel_change = max_rel_change
        self.scheme = scheme
        self.beta = beta
        self._reset()

    def _reset(self) -> None:
        self._factors = [1.0] * self.n_classes
        self._target = [1.0] * self.n_classes
        self._steps = 0

    def target(self, p: Sequence[float], counts: Sequence[float] | None = None) -> list[float]:
        """The unsmoothed factors for frequencies ``p`` (and ``counts`` for effective_number)."""
        if len(p) != self.n_classes:
            raise ValueError(f"p has {len(p)} entries, expected {self.n_classes}")
        if self.scheme == "inverse":
            return raw_factors(p, gamma=self.gamma, r_max=self.r_max)
        if counts is None:
            raise ValueError("counts are required with scheme='effective_number'")
        if len(counts) != self.n_classes:
            raise ValueError(f"counts has {len(counts)} entries, expected {self.n_classes}")
        return effective_number_factors(counts, beta=self.beta, r_max=self.r_max, p=p)

    def update(self, p: Sequence[float], counts: Sequence[float] | None = None) -> list[float]:
        """One step toward the target for ``p``; returns the smoothed factors."""
        target = self.target(p, counts)
        if self._steps == 0:
            self._factors = list(target)
        else:
            self._factors = smooth_factors(
                self._factors, target, alpha=self.alpha, max_rel_change=self.max_rel_change
            )
        self._target = target
        self._steps += 1
        return list(self._factors)

    @property
    def factors(self) -> list[float]:
        """Current smoothed factors."""
        return list(self._factors)

    @property
    def last_target(self) -> list[float]:
        """The target of the last update (all ones before any)."""
        return list(self._target)

    @property
    def steps(self) -> int:
        """Number of updates so far."""
        return self._steps

    def state_dict(self) -> dict:
        """``{"factors": list[float], "target": list[float], "steps": int}``."""
        return {"factors": list(self._factors), "target": list(self._target), "steps": self._steps}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (for the same number of classes)."""
        factors = [float(v) for v in state["factors"]]
        if len(factors) != self.n_classes:
            raise ValueError(f"state has {len(factors)} classes, smoother has {self.n_classes}")
        self._factors = factors
        self._target = [float(v) for v in state.get("target", factors)]
        self._steps = int(state.get("steps", 1))
