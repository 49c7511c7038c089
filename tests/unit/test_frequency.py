"""Class-frequency EMA: closed forms, half-life meaning, floor, time decay, state."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.frequency import (
    ClassFrequencyEstimator,
    decay_for_half_life,
    ema_step,
    ema_update,
    estimates,
    time_decay,
)


def closed_form(labels: list[int], k: int, b: float) -> list[float]:
    """p_c = sum_i (1-b) b^(t-i) [y_i=c] / (1-b^t), i = 1..t."""
    t = len(labels)
    num = [0.0] * k
    for i, y in enumerate(labels, start=1):
        num[y] += (1.0 - b) * b ** (t - i)
    return [v / (1.0 - b**t) for v in num]


@pytest.mark.parametrize("half_life", [1.5, 10.0, 300.0])
def test_bias_correction_matches_closed_form(half_life: float) -> None:
    rng = random.Random(7)
    labels = [rng.choices([0, 1, 2], weights=[0.7, 0.2, 0.1])[0] for _ in range(500)]
    b = decay_for_half_life(half_life)
    m, norm = ema_update([0.0] * 3, 0.0, labels, b)
    got = estimates(m, norm, floor=0.0)
    assert got == pytest.approx(closed_form(labels, 3, b), abs=1e-12)


def test_bias_correction_exact_from_first_event() -> None:
    # Without correction the first event would read as (1-b); corrected it is exactly 1.
    b = decay_for_half_life(2000.0)
    m, norm = ema_step([0.0, 0.0], 0.0, 1, b)
    assert estimates(m, norm, floor=0.0) == [0.0, 1.0]


def test_half_life_meaning() -> None:
    half_life = 50
    b = decay_for_half_life(half_life)
    # Start from a long history of class 0, then half_life events of class 1: the old
    # estimate keeps weight b**half_life = 1/2 (the history is long, so norm ~ 1).
    m, norm = ema_update([0.0, 0.0], 0.0, [0] * 20000, b)
    m, norm = ema_update(m, norm, [1] * half_life, b)
    p = estimates(m, norm, floor=0.0)
    assert b**half_life == pytest.approx(0.5, abs=1e-12)
    assert p[0] == pytest.approx(0.5, abs=1e-9)
    assert p[1] == pytest.approx(0.5, abs=1e-9)


def test_floor_keeps_unseen_class_positive_and_renormalizes() -> None:
    est = ClassFrequencyEstimator(3, half_life=100.0, floor=1e-3)
    p = est.update([0, 1] * 50)
    assert p[2] > 0.0
    # q = (~0.5, ~0.5, 1e-3) -> p_2 = 1e-3 / (1 + 1e-3)
    assert p[2] == pytest.approx(1e-3 / (1.0 + 1e-3), rel=1e-6)
    assert sum(p) == pytest.approx(1.0, abs=1e-15)


def test_vanishing_class_decays_to_floor() -> None:
    est = ClassFrequencyEstimator(2, half_life=10.0, floor=1e-4)
    est.update([1] * 20)
    p = est.update([0] * 400)  # 40 half-lives: 2**-40 << floor
    assert p[1] == pytest.approx(1e-4 / (1.0 + 1e-4), rel=1e-9)


def test_no_data_is_uniform() -> None:
    assert ClassFrequencyEstimator(4).frequencies == [0.25] * 4


def test_time_decay_irregular_gaps_closed_form() -> None:
    thl = 60.0
    b = decay_for_half_life(100.0)
    times = [0.0, 1.0, 1.5, 100.0, 100.25, 400.0, 401.0]
    labels = [0, 1, 0, 1, 1, 0, 1]
    est = ClassFrequencyEstimator(2, half_life=100.0, floor=0.0, time_half_life=thl)
    got = est.update(labels, times)
    # Closed form: event i counts 1 and fades by every later gap: its weight is
    # prod_{j > i} d_j with d_j = 0.5**(gap_j/thl); the estimate is weights per class over
    # their total.
    d = [b] + [0.5 ** ((times[i] - times[i - 1]) / thl) for i in range(1, len(times))]
    w = [_prod(d[i + 1 :]) for i in range(len(d))]
    expected = [sum(wi for wi, y in zip(w, labels, strict=True) if y == c) / sum(w) for c in (0, 1)]
    assert got == pytest.approx(expected, abs=1e-12)
    assert est.state_dict()["last_time"] == 401.0


def _prod(xs: list[float]) -> float:
    out = 1.0
    for x in xs:
        out *= x
    return out


def test_time_decay_long_gap_forgets_more_than_short_gap() -> None:
    def run(gap: float) -> float:
        est = ClassFrequencyEstimator(2, half_life=1000.0, floor=0.0, time_half_life=10.0)
        est.update([0] * 300, [float(i) for i in range(300)])  # norm ~ 1 - 2**-30
        return est.update([1], [299.0 + gap])[1]

    # After a gap of one time half-life, the old counts weigh half as much as before ...
    old = sum(0.5 ** (k / 10.0) for k in range(300))
    assert run(10.0) == pytest.approx(1.0 / (1.0 + 0.5 * old), abs=1e-12)
    # ... and a longer quiet period forgets the old prior more.
    assert run(100.0) > run(10.0) > run(1.0)


def test_out_of_order_timestamp_decays_nothing_and_clock_does_not_go_back() -> None:
    est = ClassFrequencyEstimator(2, half_life=10.0, floor=0.0, time_half_life=5.0)
    est.update([0, 1], [10.0, 20.0])
    before = est.state_dict()
    est.update([0], [15.0])
    after = est.state_dict()
    # no decay, the late event still counts once
    assert after["m"] == [before["m"][0] + 1.0, before["m"][1]]
    assert after["norm"] == before["norm"] + 1.0
    assert after["last_time"] == 20.0
    assert after["count"] == 3


def test_state_round_trip_continues_identically() -> None:
    a = ClassFrequencyEstimator(3, half_life=20.0, floor=1e-3, time_half_life=30.0)
    a.update([0, 1, 2, 0], [1.0, 2.0, 4.0, 8.0])
    b = ClassFrequencyEstimator(3, half_life=20.0, floor=1e-3, time_half_life=30.0)
    b.load_state_dict(a.state_dict())
    assert a.update([2, 2], [9.0, 30.0]) == b.update([2, 2], [9.0, 30.0])
    assert a.state_dict() == b.state_dict()


def test_inputs_not_mutated() -> None:
    m = [0.25, 0.5]
    ema_step(m, 0.75, 0, 0.5)
    ema_update(m, 0.75, [1, 1], 0.5)
    assert m == [0.25, 0.5]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_classes": 1}, "n_classes"),
        ({"n_classes": 2, "half_life": 0.0}, "half_life"),
        ({"n_classes": 2, "half_life": float("inf")}, "half_life"),
        ({"n_classes": 2, "floor": -1e-3}, "floor"),
        ({"n_classes": 2, "floor": 0.5}, "floor"),
        ({"n_classes": 2, "time_half_life": -1.0}, "time_half_life"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClassFrequencyEstimator(**kwargs)


def test_bad_labels_and_timestamps_are_rejected() -> None:
    est = ClassFrequencyEstimator(2, time_half_life=10.0)
    with pytest.raises(ValueError, match="out of range"):
        est.update([2])
    with pytest.raises(ValueError, match="ints"):
        est.update([True])
    with pytest.raises(ValueError, match="ints"):
        est.update([1.0])
    with pytest.raises(ValueError, match="timestamps"):
        est.update([0, 1], [1.0])
    with pytest.raises(ValueError, match="finite"):
        est.update([0], [float("nan")])
    assert est.count == 0
    with pytest.raises(ValueError, match="half_life_seconds"):
        time_decay(1.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=1, max_size=200),
    half_life=st.floats(0.5, 5000.0),
    floor=st.floats(0.0, 0.2),
)
def test_estimates_are_a_distribution_above_the_floor(
    labels: list[int], half_life: float, floor: float
) -> None:
    m, norm = ema_update([0.0] * 4, 0.0, labels, decay_for_half_life(half_life))
    p = estimates(m, norm, floor)
    assert sum(p) == pytest.approx(1.0, abs=1e-12)
    assert min(p) >= floor / (1.0 + 4 * floor) - 1e-15


def test_time_mode_counts_simultaneous_events_fully() -> None:
    # A burst (or a batch stamped at arrival) shares one timestamp: every event of it must
    # count, as one each, not vanish for lack of a time gap.
    est = ClassFrequencyEstimator(2, half_life=100.0, floor=0.0, time_half_life=10.0)
    est.update([0], [0.0])
    assert est.update([1, 1, 1], [0.0, 0.0, 0.0]) == [0.25, 0.75]
    # without timestamps, time mode still counts each event once (fading by the event decay)
    untimed = ClassFrequencyEstimator(2, half_life=1.0, floor=0.0, time_half_life=10.0)
    assert untimed.update([0, 1]) == [1.0 / 3.0, 2.0 / 3.0]


def test_numpy_integer_labels_are_accepted_as_ints() -> None:
    import numpy as np

    a = ClassFrequencyEstimator(3)
    b = ClassFrequencyEstimator(3)
    assert a.update(np.array([0, 2, 1])) == b.update([0, 2, 1])
