"""The default on a short simulated fraud stream (issue 12's check, in the suite).

Three weeks of a small simulated card world (bench.cardsim: amount fraud, compromised
terminals, stolen cards; about 45k transactions, 0.85% fraud) run prequentially through
``StreamTrainer`` in micro-batches of 64, as ``python -m bench.quality --realistic`` does on
the full month. The default must rank fraud (average precision) within 0.02 of its unweighted
twin (plain cross-entropy, same network and settings) or better, and balance the classes
(G-mean) better than that twin with the argmax decision. The shipped default before this
check (`rescaled` logistic regression, r_max 100) fails it: its AP is 0.15 below its own
unweighted twin's here, which the last test keeps visible.
"""

from __future__ import annotations

import pytest

from bench import cardsim
from bench.contenders import run
from bench.realistic import OLD_DEFAULT, default_contender, twin
from bench.report import measure
from bench.streams import Stream

pytestmark = pytest.mark.slow  # ~15 s: four short runs

SEED = 0
WORLD = cardsim.CardSimConfig(
    n_customers=1000, n_terminals=2000, days=60, terminals_per_day=0.4, customers_per_day=0.6,
    seed=SEED,
)  # fmt: skip
FIRST_DAY = 37  # after the 30-day windows and the 7-day label delay have filled


@pytest.fixture(scope="module")
def stream() -> Stream:
    tx = cardsim.simulate(WORLD)
    tx = tx.select(tx.day() >= FIRST_DAY)
    return Stream(
        "short card stream", ["legit", "fraud"], cardsim.events(tx), tx.fraud, [], "test",
        timestamps=tx.time, label_times=tx.label_time,
    )  # fmt: skip


def measures(stream: Stream, name: str) -> dict:
    return measure(stream, run(name, stream, seed=SEED))["measures"]


def with_argmax(name: str) -> str:
    return name + ("&" if "?" in name else "?") + "decision='argmax'"


def check(stream: Stream, default: str) -> tuple[float, float, float, float]:
    """(default AP, twin AP, default G-mean, twin-with-argmax G-mean)."""
    d, plain = measures(stream, default), measures(stream, twin(default))
    plain_argmax = measures(stream, with_argmax(twin(default)))
    assert plain["avg_precision"] == plain_argmax["avg_precision"]  # same model, same scores
    return d["avg_precision"], plain["avg_precision"], d["g_mean"], plain_argmax["g_mean"]


def test_stream_is_a_fraud_stream(stream: Stream) -> None:
    assert 40_000 < stream.n < 50_000
    assert 0.005 < stream.labels.mean() < 0.012


def test_default_ranks_like_plain_ce_and_balances_better(stream: Stream) -> None:
    ap, plain_ap, g, plain_argmax_g = check(stream, default_contender())
    assert ap >= plain_ap - 0.02, (ap, plain_ap)
    assert g > plain_argmax_g, (g, plain_argmax_g)
    assert ap > 0.3 and g > 0.8, (ap, g)  # and it learned something worth having


def test_the_old_default_fails_the_ranking_check(stream: Stream) -> None:
    ap, plain_ap, _, _ = check(stream, OLD_DEFAULT)
    assert ap < plain_ap - 0.02, (ap, plain_ap)
