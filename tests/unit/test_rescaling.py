"""Rescaling factors: expectation normalization, cap, smoothing, prior jumps, state."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.rescaling import (
    FactorSmoother,
    effective_number_factors,
    normalize_factors,
    raw_factors,
    smooth_factors,
)


def expectation(p: list[float], r: list[float]) -> float:
    return math.fsum(a * b for a, b in zip(p, r, strict=True))


@st.composite
def distributions(draw: st.DrawFn, min_k: int = 2, max_k: int = 8) -> list[float]:
    k = draw(st.integers(min_k, max_k))
    raw = draw(st.lists(st.floats(1e-4, 1.0), min_size=k, max_size=k))
    total = math.fsum(raw)
    return [v / total for v in raw]


@settings(max_examples=200, deadline=None)
@given(p=distributions(), gamma=st.floats(0.0, 2.0), r_max=st.floats(1.0, 100.0))
def test_raw_factors_expectation_is_one_and_cap_holds(
    p: list[float], gamma: float, r_max: float
) -> None:
    r = raw_factors(p, gamma=gamma, r_max=r_max)
    assert expectation(p, r) == pytest.approx(1.0, abs=1e-12)
    assert max(r) <= r_max
    assert min(r) > 0.0


@settings(max_examples=200, deadline=None)
@given(p=distributions(), gamma=st.floats(0.1, 2.0), r_max=st.floats(1.5, 100.0))
def test_raw_factors_keep_the_inverse_power_shape_below_the_cap(
    p: list[float], gamma: float, r_max: float
) -> None:
    r = raw_factors(p, gamma=gamma, r_max=r_max)
    uncapped = [c for c in range(len(p)) if r[c] < r_max]
    # Every uncapped class has r_c = s * p_c^-gamma with one common s ...
    scales = [r[c] * p[c] ** gamma for c in uncapped]
    for s in scales:
        assert s == pytest.approx(scales[0], rel=1e-9)
    # ... and a capped class would have been at least at the cap with that s.
    if scales:
        for c in range(len(p)):
            if r[c] == r_max:
                assert scales[0] * p[c] ** -gamma >= r_max * (1 - 1e-9)
    # Rarer classes never get smaller factors.
    order = sorted(range(len(p)), key=lambda c: p[c])
    assert all(r[a] >= r[b] - 1e-12 for a, b in pairwise(order))


def test_raw_factors_known_values() -> None:
    # Uncapped: r = (1/K) / p_c for gamma = 1.
    assert raw_factors([0.8, 0.15, 0.05], r_max=100.0) == pytest.approx(
        [1 / 3 / 0.8, 1 / 3 / 0.15, 1 / 3 / 0.05], rel=1e-12
    )
    # Capped: the rare class sits at r_max, the rest share 1 - p_rare * r_max.
    r = raw_factors([0.99, 0.01], r_max=10.0)
    assert r[1] == 10.0
    assert r[0] == pytest.approx(0.9 / 0.99, rel=1e-12)
    # Square root.
    r = raw_factors([0.64, 0.36], gamma=0.5, r_max=10.0)
    assert r[1] / r[0] == pytest.approx(0.8 / 0.6, rel=1e-12)


def test_r_max_one_means_no_rescaling() -> None:
    assert raw_factors([0.9, 0.09, 0.01], r_max=1.0) == pytest.approx([1.0, 1.0, 1.0])


def test_zero_probability_class_gets_the_cap() -> None:
    r = raw_factors([0.7, 0.3, 0.0], r_max=8.0)
    assert r[2] == 8.0
    assert expectation([0.7, 0.3, 0.0], r) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: raw_factors([0.5, 0.5], r_max=0.9), "r_max"),
        (lambda: raw_factors([0.5, 0.5], r_max=float("nan")), "r_max"),
        (lambda: raw_factors([0.5, 0.5], gamma=-0.5), "gamma"),
        (lambda: raw_factors([0.5, 0.6]), "sum to 1"),
        (lambda: raw_factors([1.5, -0.5]), ">= 0"),
        (lambda: raw_factors([]), "at least one"),
        (lambda: normalize_factors([0.5, 0.5], [1.0, 0.0], 10.0), "weights"),
        (lambda: effective_number_factors([10, 5], beta=1.0), "beta"),
        (lambda: effective_number_factors([0, 0]), "all be zero"),
        (lambda: smooth_factors([1.0], [1.0], alpha=0.0), "alpha"),
        (lambda: smooth_factors([1.0], [1.0], max_rel_change=0.0), "max_rel_change"),
        (lambda: smooth_factors([1.0], [1.0, 2.0]), "entries"),
        (lambda: FactorSmoother(2, scheme="sqrt"), "scheme"),
        (lambda: FactorSmoother(1), "n_classes"),
        (lambda: FactorSmoother(2, r_max=0.5), "r_max"),
        (lambda: FactorSmoother(2, alpha=2.0), "alpha"),
        (lambda: FactorSmoother(2, scheme="effective_number").update([0.5, 0.5]), "counts"),
    ],
)
def test_bad_values_are_named(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        call()


def test_effective_number_factors_follow_cui_et_al() -> None:
    counts = [5000.0, 300.0, 20.0]
    beta = 0.99
    r = effective_number_factors(counts, beta=beta, r_max=1e6)
    inv_eff = [(1 - beta) / (1 - beta**n) for n in counts]
    assert [a / r[0] for a in r] == pytest.approx([w / inv_eff[0] for w in inv_eff], rel=1e-12)
    p = [n / sum(counts) for n in counts]
    assert expectation(p, r) == pytest.approx(1.0, abs=1e-12)
    # beta -> 1 tends to inverse frequency; beta = 0 to no rescaling.
    assert effective_number_factors(counts, beta=0.0) == pytest.approx([1.0, 1.0, 1.0])
    near_inverse = effective_number_factors(counts, beta=1 - 1e-9, r_max=1e6)
    assert near_inverse == pytest.approx(raw_factors(p, r_max=1e6), rel=1e-5)


def test_effective_number_factors_under_a_given_prior_and_cap() -> None:
    p = [0.95, 0.05]
    r = effective_number_factors([1000.0, 0.0], beta=0.999, r_max=6.0, p=p)
    assert r[1] == 6.0  # unseen class -> cap
    assert expectation(p, r) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    prev=st.lists(st.floats(0.05, 20.0), min_size=2, max_size=6),
    data=st.data(),
    alpha=st.floats(0.01, 1.0),
    m=st.floats(0.01, 1.0),
)
def test_smoothing_bounds_the_change_per_step(
    prev: list[float], data: st.DataObject, alpha: float, m: float
) -> None:
    target = data.draw(st.lists(st.floats(0.05, 20.0), min_size=len(prev), max_size=len(prev)))
    out = smooth_factors(prev, target, alpha=alpha, max_rel_change=m)
    for a, b, v in zip(prev, target, out, strict=True):
        assert a / (1 + m) * (1 - 1e-12) <= v <= a * (1 + m) * (1 + 1e-12)
        assert min(a, b) - 1e-12 <= v <= max(a, b) + 1e-12
        # EMA part: never more than alpha of the gap.
        assert abs(v - a) <= alpha * abs(b - a) + 1e-12


def test_smoothing_keeps_the_cap() -> None:
    out = smooth_factors([10.0, 0.5], [10.0, 0.9], alpha=0.3)
    assert out[0] <= 10.0


@pytest.mark.parametrize("max_rel_change", [None, 0.05])
def test_prior_jump_moves_factors_gradually_and_monotonically(
    max_rel_change: float | None,
) -> None:
    sm = FactorSmoother(2, gamma=1.0, r_max=10.0, alpha=0.05, max_rel_change=max_rel_change)
    before = sm.update([0.99, 0.01])
    assert before == raw_factors([0.99, 0.01], r_max=10.0)  # first call jumps to target
    new_target = raw_factors([0.9, 0.1], r_max=10.0)  # [0.556, 5.0]
    path = [before] + [sm.update([0.9, 0.1]) for _ in range(300)]
    minority = [f[1] for f in path]
    majority = [f[0] for f in path]
    # Gradual: the first step moves at most alpha of the gap (and the bounded variant less).
    assert minority[0] - minority[1] <= 0.05 * (before[1] - new_target[1]) + 1e-12
    assert minority[1] < minority[0]
    assert minority[10] > new_target[1] + 1.0  # still far after 10 steps
    # Monotone: minority factor falls, majority factor falls (0.909 -> 0.556), no overshoot.
    assert all(b <= a for a, b in pairwise(minority))
    assert all(b <= a for a, b in pairwise(majority))
    assert min(minority) >= new_target[1] and min(majority) >= new_target[0]
    # Converges to the new target.
    assert path[-1] == pytest.approx(new_target, rel=1e-5)
    if max_rel_change is not None:
        ratios = [b / a for a, b in pairwise(minority)]
        assert min(ratios) >= 1 / 1.05 - 1e-12


def test_prior_jump_back_moves_factors_up_monotonically() -> None:
    sm = FactorSmoother(2, alpha=0.1)
    sm.update([0.9, 0.1])
    path = [sm.update([0.99, 0.01])[1] for _ in range(200)]
    assert all(b >= a for a, b in pairwise(path))
    assert path[-1] == pytest.approx(10.0, rel=1e-6)


def test_smoother_state_round_trip() -> None:
    a = FactorSmoother(3, gamma=0.5, r_max=5.0, alpha=0.2, scheme="effective_number", beta=0.99)
    a.update([0.8, 0.15, 0.05], counts=[80, 15, 5])
    a.update([0.7, 0.2, 0.1], counts=[150, 35, 15])
    b = FactorSmoother(3, gamma=0.5, r_max=5.0, alpha=0.2, scheme="effective_number", beta=0.99)
    b.load_state_dict(a.state_dict())
    assert b.factors == a.factors and b.steps == 2
    step = ([0.6, 0.3, 0.1], [200, 70, 25])
    assert a.update(*step) == b.update(*step)
    with pytest.raises(ValueError, match="classes"):
        FactorSmoother(2).load_state_dict(a.state_dict())


def test_smoother_starts_at_one_and_reports_target() -> None:
    sm = FactorSmoother(3)
    assert sm.factors == [1.0, 1.0, 1.0] and sm.steps == 0
    sm.update([0.5, 0.3, 0.2])
    sm.update([0.6, 0.3, 0.1])
    assert sm.last_target == raw_factors([0.6, 0.3, 0.1])
    assert sm.factors != sm.last_target


def test_tight_cap_lowers_the_majority_factor() -> None:
    r = raw_factors([0.999, 0.001], r_max=3.0)
    assert r[1] == 3.0 and r[0] < 1.0
