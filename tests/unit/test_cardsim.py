"""The card-transaction simulator: determinism, fraud mix, and the online features checked
against a brute-force recomputation on a small world."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bench import cardsim
from bench.cardsim import DAY, CardSimConfig, simulate

SMALL = CardSimConfig(
    n_customers=200, n_terminals=400, days=45, terminals_per_day=0.2, customers_per_day=0.3
)


@pytest.fixture(scope="module")
def small() -> cardsim.Transactions:
    return simulate(SMALL)


def test_same_seed_same_world_other_seed_another(small: cardsim.Transactions) -> None:
    again = simulate(SMALL)
    assert np.array_equal(small.time, again.time)
    assert all(np.array_equal(small.features[k], again.features[k]) for k in cardsim.FEATURES)
    other = simulate(replace(SMALL, seed=1))
    assert other.n != small.n or not np.array_equal(small.amount, other.amount)


def test_transactions_are_in_time_order_with_labels_known_later(
    small: cardsim.Transactions,
) -> None:
    assert np.all(np.diff(small.time) >= 0)
    assert np.all(small.label_time > small.time)
    legit = small.fraud == 0
    assert np.allclose(small.label_time[legit] - small.time[legit], SMALL.legit_days * DAY)
    assert set(small.features) == set(cardsim.FEATURES) and len(cardsim.FEATURES) == 15


def test_every_fraud_scenario_happens_and_labels_follow_them(
    small: cardsim.Transactions,
) -> None:
    s = small.scenario
    assert {cardsim.LEGIT, cardsim.AMOUNT, cardsim.TERMINAL, cardsim.CARD} <= set(s.tolist())
    assert np.array_equal(small.fraud, (s != cardsim.LEGIT).astype(np.int64))
    assert np.all(small.amount[s == cardsim.AMOUNT] > SMALL.amount_threshold)


def brute_force(tx: cardsim.Transactions, i: int) -> dict[str, float]:
    t, c, term = tx.time[i], tx.customer[i], tx.terminal[i]
    out = {"amount": tx.amount[i]}
    for w in cardsim.WINDOWS:
        mine = (tx.customer == c) & (tx.time > t - w * DAY) & (tx.time <= t)
        out[f"cust_n_{w}d"] = mine.sum()
        out[f"cust_mean_{w}d"] = tx.amount[mine].mean()
    end = t - SMALL.delay_days * DAY
    for w in cardsim.WINDOWS:
        seen = (tx.terminal == term) & (tx.time > end - w * DAY) & (tx.time <= end)
        out[f"term_n_{w}d"] = seen.sum()
        out[f"term_risk_{w}d"] = tx.fraud[seen].mean() if seen.any() else 0.0
    seconds = (t - SMALL.start) % DAY
    out["night"] = float(seconds < 6 * 3600)
    out["weekend"] = float(((t - SMALL.start) // DAY) % 7 >= 5)
    return out


def test_online_features_equal_a_brute_force_recomputation(
    small: cardsim.Transactions,
) -> None:
    rng = np.random.default_rng(0)
    picks = list(rng.choice(small.n, size=150, replace=False))
    picks += list(np.flatnonzero(small.fraud)[:20])  # frauds too: term_risk must see them
    for i in picks:
        want = brute_force(small, int(i))
        got = {k: small.features[k][i] for k in cardsim.FEATURES}
        for k in cardsim.FEATURES:
            assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-9), (i, k)
    assert small.features["term_risk_30d"].max() > 0  # the delayed labels did arrive


def test_default_world_has_a_realistic_fraud_share() -> None:
    tx = simulate(replace(CardSimConfig(), days=50))
    month = tx.select(tx.day() >= 37)
    assert 9_000 < month.n / 13 < 11_000  # transactions a day
    assert 0.005 <= month.fraud.mean() <= 0.012, month.fraud.mean()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"days": 0}, "days"),
        ({"customer_share": 1.5}, "customer_share"),
        ({"campaign_weeks": (1.0, -1.0)}, "campaign_weeks"),
    ],  # fmt: skip
)
def test_bad_settings_are_rejected_by_name(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CardSimConfig(**kwargs)


def test_events_are_the_feature_columns(small: cardsim.Transactions) -> None:
    events = cardsim.events(small)
    assert len(events) == small.n
    assert events[7]["amount"] == small.amount[7] and list(events[0]) == list(cardsim.FEATURES)
