"""Issue 6 §8: one source sends 10% of the stream with flipped labels. How much average
precision (fraud vs rest, on a clean hold-out) is lost without guards, and with them: the
per-source rate limit (the real Lua limiter on a simulated clock) plus the learner's
per-event loss cap? The guards must bound the drop.

The attacker flips labels where it hurts (a targeted label-flipping attack): real restaurant
payments labeled fraud, real wire-transfer frauds labeled legit. Flipping labels of random
events barely moves a ranking metric (measured: AP changed by < 0.01), so it would prove
nothing about the guards."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from models.trainer import StreamTrainer, TrainerConfig
from service.ingest.rate_limit import RateLimiter

N_EVENTS = 8000
FRAUD_RATE = 0.05
HONEST_SOURCES, HONEST_RATE = 45, 20.0  # events/s each: 900/s together
ATTACKER_SHARE = 0.10  # of the stream: 100/s
LIMIT, BURST = 25.0, 20  # per source, a little above what an honest source sends
LOSS_CAP = 1.0  # STREAMBALANCE_MAX_EVENT_LOSS as a guard (the default 10 is measured separately)
LOGISTIC = {
    "strategy": "rescaled", "network": "logreg", "optimizer": "sgd", "lr": 0.2, "numeric_bins": 16,
}  # fmt: skip


def transaction(rng: random.Random, fraud: bool) -> dict[str, Any]:
    """Overlapping classes, so average precision is well below 1 and can move."""
    if fraud:
        return {
            "amount": rng.gauss(300.0, 150.0),
            "ip_risk": rng.gauss(0.6, 0.2),
            "hour": rng.choice([0, 1, 2, 3, 4, 22, 23]),
            "mcc": rng.choice(["5732", "4829", "5411"]),
        }
    return {
        "amount": abs(rng.gauss(80.0, 100.0)),
        "ip_risk": rng.gauss(0.3, 0.2),
        "hour": rng.randint(0, 23),
        "mcc": rng.choice(["5411", "5812", "5541", "5732"]),
    }


def average_precision(y: Sequence[int], scores: Sequence[float]) -> float:
    """Mean of the precision at each positive, ranked by score (ties in index order).

    >>> average_precision([1, 0, 1], [0.9, 0.8, 0.7])
    0.8333333333333333
    """
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    ranked = np.asarray(y)[order]
    hits = np.cumsum(ranked)
    precision = hits / np.arange(1, len(ranked) + 1)
    return float((precision * ranked).sum() / max(1, ranked.sum()))


def attacker_event(rng: random.Random) -> tuple[dict[str, Any], int]:
    """A real transaction with its label flipped, chosen to move the model most."""
    fraud = rng.random() < 0.5
    wanted = "4829" if fraud else "5812"
    while True:
        features = transaction(rng, fraud)
        if features["mcc"] == wanted:
            return features, int(not fraud)


def arrivals(seed: int) -> list[tuple[float, str, dict[str, Any], int]]:
    """(time s, source, features, label) for honest sources and the attacker (Poisson each)."""
    rng = random.Random(seed)
    rates = {f"honest-{i}": HONEST_RATE for i in range(HONEST_SOURCES)}
    total_honest = HONEST_SOURCES * HONEST_RATE
    rates["attacker"] = total_honest * ATTACKER_SHARE / (1 - ATTACKER_SHARE)
    duration = N_EVENTS / sum(rates.values())
    out = []
    for source, rate in rates.items():
        t = rng.expovariate(rate)
        while t < duration:
            if source == "attacker":
                features, label = attacker_event(rng)
            else:
                fraud = rng.random() < FRAUD_RATE
                features, label = transaction(rng, fraud), int(fraud)
            out.append((t, source, features, label))
            t += rng.expovariate(rate)
    out.sort(key=lambda a: a[0])
    return out


def train_and_score(
    events: Sequence[tuple[dict[str, Any], int]],
    cap: float | None,
    holdout: Sequence[tuple[dict[str, Any], int]],
) -> float:
    # The configuration this test's tolerances were set on (the default until issue 12). With
    # the new default (logit_adjusted MLP) the cap of 1 on top of the rate limit cost 0.007 AP
    # here (0.8592 against 0.8664), over the 0.005 asserted below; logit_adjusted on the
    # logistic model, 0.015: the cap's cost is the strategy's, reported, not hidden by a
    # looser bound.
    trainer = StreamTrainer(TrainerConfig(max_event_loss=cap, seed=0, **LOGISTIC))
    for start in range(0, len(events), 64):
        chunk = events[start : start + 64]
        trainer.process([f for f, _ in chunk], [y for _, y in chunk])
    probs, _ = trainer.predict([f for f, _ in holdout])
    return average_precision([y for _, y in holdout], probs[:, 1].tolist())


async def admitted(stream: list, redis_client: aioredis.Redis) -> list:
    limiter = RateLimiter(redis_client, "poison", rate_per_s=LIMIT, burst=BURST)
    out = []
    for t, source, features, label in stream:
        if (await limiter.acquire(source, 1, now_s=1_000_000.0 + t)).allowed:
            out.append((t, source, features, label))
    return out


@pytest.mark.slow
async def test_guards_bound_the_damage_of_a_label_flipping_source(
    redis_client: aioredis.Redis,
) -> None:
    stream = arrivals(seed=7)
    rng = random.Random(99)
    holdout = [
        (transaction(rng, f), int(f)) for f in (rng.random() < FRAUD_RATE for _ in range(4000))
    ]
    clean = [(f, y) for _, s, f, y in stream if s != "attacker"]
    attacked = [(f, y) for _, _, f, y in stream]
    passed = await admitted(stream, redis_client)
    guarded = [(f, y) for _, _, f, y in passed]

    share = sum(s == "attacker" for _, s, _, _ in stream) / len(stream)
    share_guarded = sum(s == "attacker" for _, s, _, _ in passed) / len(passed)
    honest_sent = sum(s != "attacker" for _, s, _, _ in stream)
    honest_dropped = honest_sent - sum(s != "attacker" for _, s, _, _ in passed)

    ap_clean = train_and_score(clean, LOSS_CAP, holdout)
    ap_open = train_and_score(attacked, None, holdout)  # no rate limit, no loss cap
    ap_cap_only = train_and_score(attacked, LOSS_CAP, holdout)
    ap_limit_only = train_and_score(guarded, None, holdout)
    ap_guarded = train_and_score(guarded, LOSS_CAP, holdout)
    drop_open, drop_guarded = ap_clean - ap_open, ap_clean - ap_guarded
    outcome = (
        f"attacker share {share:.1%} -> {share_guarded:.1%} after the rate limit "
        f"({LIMIT:g}/s, burst {BURST}; honest events refused {honest_dropped}/{honest_sent}); "
        f"AP clean {ap_clean:.4f}; no guards {ap_open:.4f} (drop {drop_open:+.4f}); loss cap "
        f"{LOSS_CAP:g} only {ap_cap_only:.4f} (drop {ap_clean - ap_cap_only:+.4f}); "
        f"rate limit only "
        f"{ap_limit_only:.4f} (drop {ap_clean - ap_limit_only:+.4f}); both {ap_guarded:.4f} "
        f"(drop {drop_guarded:+.4f})"
    )
    print(outcome)
    assert 0.08 < share < 0.12, outcome
    assert share_guarded < 0.04, outcome
    assert honest_dropped <= 0.01 * honest_sent, outcome
    assert drop_open > 0.1, f"the attack should hurt without guards: {outcome}"
    assert drop_guarded <= 0.25 * drop_open, outcome
    assert ap_guarded >= ap_limit_only - 0.005 and ap_cap_only >= ap_open - 0.005, outcome
