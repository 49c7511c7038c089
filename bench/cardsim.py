"""A seeded card-transaction simulator with the fraud a payments team sees, and online features.

The world: customers with a home location and a spending profile (mean amount, its spread,
transactions per day), terminals scattered over the same 100 x 100 square, each customer
paying only at terminals within ``radius`` of home. Every day each customer makes a Poisson
number of transactions at times around midday. Fraud comes from three scenarios, the ones
fraud teams describe (and the public "fraud detection handbook" simulates):

1. **amount**: any transaction above ``amount_threshold`` is fraud (an easy, static pattern a
   baseline should catch);
2. **compromised terminal**: every day ``terminals_per_day`` terminals are compromised and
   every transaction on them during the next ``terminal_days`` days is fraud (the terminal
   risk features find it, once labels have come back);
3. **compromised card**: every day ``customers_per_day`` customers have their card details
   stolen; during the next ``customer_days`` days a share ``customer_share`` of their
   transactions are fraud, at ``customer_multiplier`` times the amount (the customer spending
   features find it). With ``customer_night_share`` > 0 that share of those transactions is
   moved to the night (fraudsters in another time zone).

The features are what a fraud team computes online at authorization time, for the
transaction being scored (13 numbers and 2 flags, 15 in all):

* ``amount``;
* per customer, over the last 1, 7 and 30 days including this transaction: the count and the
  mean amount (``cust_n_1d``, ``cust_mean_1d``, ...);
* per terminal, over 1, 7 and 30 days ending ``delay_days`` before now (fraud labels are only
  known after that delay): the count and the fraud share (``term_n_1d``, ``term_risk_1d``,
  ...);
* ``night`` (before 6:00) and ``weekend``, as 0/1.

Every transaction also has a timestamp (unix seconds) and a label-availability time: a fraud
is known when its chargeback arrives (``chargeback_days``: a gamma-distributed delay, median
about a week, a long tail), a legitimate transaction once its dispute window has closed
(``legit_days``). Label-maturity experiments can replay labels in that order.

Everything is numpy and vectorized (about 1.2 M transactions per 120 days of the default
world, a few seconds); :func:`simulate` is deterministic for a seed. Windows are computed with
one sort and two binary searches per window, so ``tests`` and other benchmarks can use it
freely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "FEATURES",
    "MIXES",
    "CardSimConfig",
    "Transactions",
    "events",
    "simulate",
    "window_stats",
]

DAY = 86_400.0
WINDOWS = (1, 7, 30)
FEATURES = (
    ("amount",)
    + tuple(f"cust_{kind}_{w}d" for w in WINDOWS for kind in ("n", "mean"))
    + tuple(f"term_{kind}_{w}d" for w in WINDOWS for kind in ("n", "risk"))
    + ("night", "weekend")
)
#: Fraud scenario codes in ``Transactions.scenario``.
LEGIT, AMOUNT, TERMINAL, CARD = 0, 1, 2, 3


@dataclass(frozen=True)
class CardSimConfig:
    """One simulated world. Defaults follow the handbook's (0.8% fraud, ~9.5k transactions a
    day); ``start`` is the unix time of day 0 (a Monday, 2026-01-05 00:00 UTC)."""

    n_customers: int = 5000
    n_terminals: int = 10_000
    days: int = 120
    radius: float = 5.0
    start: float = 1_767_571_200.0
    amount_threshold: float = 220.0
    terminals_per_day: float = 2.0
    terminal_days: int = 28
    customers_per_day: float = 3.0
    customer_days: int = 14
    customer_share: float = 1.0 / 3.0
    customer_multiplier: float = 5.0
    customer_night_share: float = 0.0
    #: Relative campaign intensity per week for scenarios 2 and 3 (cycled); () = steady.
    campaign_weeks: tuple[float, ...] = ()
    delay_days: int = 7
    chargeback_days: tuple[float, float] = (2.0, 4.0)  # gamma (shape, scale): median ~6.7 d
    legit_days: float = 60.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_customers", "n_terminals", "days", "terminal_days", "customer_days"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not 0 <= self.delay_days:
            raise ValueError(f"delay_days must be >= 0, got {self.delay_days!r}")
        for name in ("customer_share", "customer_night_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.radius <= 0 or self.customer_multiplier <= 0:
            raise ValueError("radius and customer_multiplier must be > 0")
        if any(not (math.isfinite(w) and w >= 0) for w in self.campaign_weeks):
            raise ValueError(f"campaign_weeks must be >= 0, got {self.campaign_weeks!r}")


#: Named fraud mixes: the handbook's, and one where stolen cards dominate, strike at night
#: and come in campaigns (harder: the amount rule catches less, terminal risk finds little).
MIXES: dict[str, CardSimConfig] = {
    "handbook": CardSimConfig(),
    "cardtheft": CardSimConfig(
        amount_threshold=260.0,
        terminals_per_day=1.0,
        customers_per_day=5.0,
        customer_share=0.4,
        customer_multiplier=3.0,
        customer_night_share=0.5,
        campaign_weeks=(0.5, 1.0, 2.0, 1.0, 0.5, 1.5),
    ),
}


@dataclass(frozen=True)
class Transactions:
    """Simulated transactions in time order (all arrays of one length)."""

    time: np.ndarray  # float64 unix seconds
    customer: np.ndarray  # int64
    terminal: np.ndarray  # int64
    amount: np.ndarray  # float64
    fraud: np.ndarray  # int64 0/1
    scenario: np.ndarray  # int64: LEGIT, AMOUNT, TERMINAL, CARD
    label_time: np.ndarray  # float64 unix seconds when the label becomes known
    features: dict[str, np.ndarray] = field(default_factory=dict)  # FEATURES -> float64
    config: CardSimConfig = field(default_factory=CardSimConfig)

    @property
    def n(self) -> int:
        return len(self.time)

    def day(self) -> np.ndarray:
        """Day index of each transaction since ``config.start``."""
        return ((self.time - self.config.start) // DAY).astype(np.int64)

    def select(self, mask: np.ndarray) -> Transactions:
        """The transactions where ``mask`` holds (order kept)."""
        return replace(
            self,
            time=self.time[mask],
            customer=self.customer[mask],
            terminal=self.terminal[mask],
            amount=self.amount[mask],
            fraud=self.fraud[mask],
            scenario=self.scenario[mask],
            label_time=self.label_time[mask],
            features={k: v[mask] for k, v in self.features.items()},
        )


def window_stats(
    group: np.ndarray,
    time: np.ndarray,
    values: np.ndarray,
    length: float,
    lag: float = 0.0,
    include_current: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per event: count and sum of ``values`` over the same group's events in a time window.

    The window is ``(t - lag - length, t - lag]``; with ``include_current`` and ``lag = 0``
    the event itself counts. Events need not be sorted.

    >>> g = np.array([0, 0, 0, 1]); t = np.array([0.0, 1.0, 5.0, 1.0]); v = np.array([1.0, 2, 4, 8])
    >>> n, s = window_stats(g, t, v, length=2.0)
    >>> n.tolist(), s.tolist()
    ([1, 2, 1, 1], [1.0, 3.0, 4.0, 8.0])
    >>> n, s = window_stats(g, t, v, length=2.0, lag=4.0)
    >>> n.tolist(), s.tolist()
    ([0, 0, 2, 0], [0.0, 0.0, 3.0, 0.0])
    """
    span = float(time.max() - time.min()) + length + lag + 1.0
    key = group.astype(np.float64) * (span * 2.0) + (time - time.min())
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    csum = np.concatenate(([0.0], np.cumsum(values[order])))
    # Queries in sorted order: a binary search over sorted queries stays in cache (6x faster).
    hi_key = sorted_key - lag
    hi = np.searchsorted(sorted_key, hi_key, side="right" if include_current or lag else "left")
    lo = np.searchsorted(sorted_key, hi_key - length, side="right")
    count = np.empty(len(key), dtype=np.int64)
    total = np.empty(len(key), dtype=np.float64)
    count[order] = hi - lo
    total[order] = csum[hi] - csum[lo]
    return count, total


def _truncated_normal(
    rng: np.random.Generator, mean: np.ndarray, std: np.ndarray, lo: float, hi: float
) -> np.ndarray:
    """Normal draws redrawn until inside [lo, hi) (per element)."""
    out = rng.normal(mean, std)
    bad = (out < lo) | (out >= hi)
    while bad.any():
        out[bad] = rng.normal(
            np.broadcast_to(mean, out.shape)[bad], np.broadcast_to(std, out.shape)[bad]
        )
        bad = (out < lo) | (out >= hi)
    return out


def _campaign(cfg: CardSimConfig, day: int) -> float:
    weeks = cfg.campaign_weeks
    return weeks[(day // 7) % len(weeks)] if weeks else 1.0


def _compromised(
    rng: np.random.Generator, n: int, cfg: CardSimConfig, per_day: float, days: int
) -> np.ndarray:
    """[n, cfg.days] bool: which of ``n`` items are compromised on which day."""
    hit = np.zeros((n, cfg.days + days), dtype=bool)
    for d in range(cfg.days):
        k = min(n, int(rng.poisson(per_day * _campaign(cfg, d))))
        for item in rng.choice(n, size=k, replace=False):
            hit[item, d : d + days] = True
    return hit[:, : cfg.days]


def simulate(cfg: CardSimConfig | None = None) -> Transactions:
    """Simulate ``cfg.days`` days of the world ``cfg`` describes; features included."""
    cfg = cfg or CardSimConfig()
    rng = np.random.default_rng(cfg.seed)
    c, t = cfg.n_customers, cfg.n_terminals
    home = rng.uniform(0, 100, size=(c, 2))
    mean_amount = rng.uniform(5, 100, size=c)
    std_amount = mean_amount / 2
    per_day = rng.uniform(0, 4, size=c)
    where = rng.uniform(0, 100, size=(t, 2))
    # Terminals within the radius of each customer's home, as a CSR list.
    near: list[np.ndarray] = []
    for i in range(c):
        d2 = ((where - home[i]) ** 2).sum(axis=1)
        near.append(np.flatnonzero(d2 < cfg.radius**2))
    n_near = np.array([len(x) for x in near])
    offsets = np.concatenate(([0], np.cumsum(n_near)))
    flat = np.concatenate(near) if offsets[-1] else np.zeros(0, dtype=np.int64)

    counts = rng.poisson(per_day[:, None], size=(c, cfg.days))
    counts[n_near == 0] = 0  # nowhere to pay
    cust = np.repeat(np.repeat(np.arange(c), cfg.days), counts.ravel())
    day = np.repeat(np.tile(np.arange(cfg.days), c), counts.ravel())
    n = len(cust)
    second = _truncated_normal(rng, np.full(n, DAY / 2), np.full(n, 20_000.0), 0.0, DAY)
    amount = rng.normal(mean_amount[cust], std_amount[cust])
    neg = amount < 0
    amount[neg] = rng.uniform(0, 2 * mean_amount[cust[neg]])
    term = flat[offsets[cust] + rng.integers(0, n_near[cust])]

    scenario = np.where(amount > cfg.amount_threshold, AMOUNT, LEGIT)
    bad_terms = _compromised(rng, t, cfg, cfg.terminals_per_day, cfg.terminal_days)
    scenario = np.where((scenario == LEGIT) & bad_terms[term, day], TERMINAL, scenario)
    bad_cards = _compromised(rng, c, cfg, cfg.customers_per_day, cfg.customer_days)
    stolen = (scenario == LEGIT) & bad_cards[cust, day] & (rng.random(n) < cfg.customer_share)
    scenario = np.where(stolen, CARD, scenario)
    amount = np.where(stolen, amount * cfg.customer_multiplier, amount)
    if cfg.customer_night_share > 0:
        move = stolen & (rng.random(n) < cfg.customer_night_share)
        second[move] = rng.uniform(0, 6 * 3600.0, size=int(move.sum()))
    fraud = (scenario != LEGIT).astype(np.int64)

    time = cfg.start + day * DAY + second
    shape, scale = cfg.chargeback_days
    delay = np.where(fraud == 1, rng.gamma(shape, scale, size=n), cfg.legit_days) * DAY
    order = np.argsort(time, kind="stable")
    tx = Transactions(
        time=time[order],
        customer=cust[order],
        terminal=term[order],
        amount=amount[order],
        fraud=fraud[order],
        scenario=scenario[order],
        label_time=(time + delay)[order],
        config=cfg,
    )
    return replace(tx, features=_features(tx))


def _features(tx: Transactions) -> dict[str, np.ndarray]:
    cfg = tx.config
    out: dict[str, np.ndarray] = {"amount": tx.amount.copy()}
    for w in WINDOWS:
        n, total = window_stats(tx.customer, tx.time, tx.amount, w * DAY)
        out[f"cust_n_{w}d"] = n.astype(np.float64)
        out[f"cust_mean_{w}d"] = total / np.maximum(n, 1)
    lag = cfg.delay_days * DAY
    for w in WINDOWS:
        n, frauds = window_stats(
            tx.terminal, tx.time, tx.fraud.astype(np.float64), w * DAY, lag=lag
        )
        out[f"term_n_{w}d"] = n.astype(np.float64)
        out[f"term_risk_{w}d"] = np.where(n > 0, frauds / np.maximum(n, 1), 0.0)
    seconds = (tx.time - cfg.start) % DAY
    out["night"] = (seconds < 6 * 3600.0).astype(np.float64)
    weekday = ((tx.time - cfg.start) // DAY).astype(np.int64) % 7  # day 0 is a Monday
    out["weekend"] = (weekday >= 5).astype(np.float64)
    return {name: out[name] for name in FEATURES}


def events(tx: Transactions, names: tuple[str, ...] = FEATURES) -> list[dict[str, float]]:
    """The transactions as feature dicts (what ``POST /learn`` would carry), in order."""
    columns = [tx.features[name].tolist() for name in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
