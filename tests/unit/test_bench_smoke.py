"""Smoke version of the learning-quality benchmark: one short 1:100 stream, fixed seed.

Runs the same code path as ``python -m bench.quality`` (StreamTrainer, test-then-train
micro-batches of 64) with the default configuration (whatever ``TrainerConfig`` defaults to)
and, as baselines, the same configuration with another strategy.

What the benchmark established, and so what is asserted here: the default beats plain
cross-entropy on minority recall and G-mean, and keeps its ranking (average precision) within
10% of class-weighted cross-entropy. The stronger claim that it *beats* `weighted` on average
precision did not hold: with the same settings `weighted` is slightly ahead on short static
streams (0-14% in AP over the seeds tried) and the two tie on the 200k-event streams
(docs/benchmarks/quality.md). The ranking assertion fails with r_max 10 (the shipped cap).
"""

from __future__ import annotations

import numpy as np
import pytest
from river.datasets import synth

from bench.contenders import parse_contender, run
from bench.report import average_precision, measure
from bench.streams import Stream, class_rejection, load_stream
from models.trainer import TrainerConfig

pytestmark = pytest.mark.slow  # ~15 s of CPU: four 16k-event runs

N_EVENTS = 16_000
SEED = 3


def one_in_a_hundred(n: int = N_EVENTS, seed: int = SEED) -> Stream:
    """A linearly separable concept (Hyperplane, no noise) with a 1% minority."""
    gen = synth.Hyperplane(seed=seed, n_features=5, n_drift_features=0, noise_percentage=0.0)
    xs, ys = class_rejection([iter(gen)], lambda t: [0.99, 0.01], lambda t: 0, n, seed)
    return Stream("smoke 1:100", ["majority", "minority"], xs, np.asarray(ys), [], "smoke")


def default_name() -> str:
    cfg = TrainerConfig()
    return f"{cfg.strategy}/{cfg.network}"


def with_strategy(strategy: str, **overrides: object) -> str:
    """Contender name: the default configuration with another strategy (and overrides)."""
    network = TrainerConfig().network
    query = "&".join(f"{k}={v}" for k, v in overrides.items())
    return f"{strategy}/{network}" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def stream() -> Stream:
    return one_in_a_hundred()


@pytest.fixture(scope="module")
def results(stream: Stream) -> dict[str, dict]:
    names = {
        "default": default_name(),
        # No imbalance handling at all: plain CE and the argmax decision.
        "none": with_strategy("none", decision="argmax"),
        # Plain CE with the service's balanced decision (threshold moving only).
        "none_balanced": with_strategy("none"),
        "weighted": with_strategy("weighted"),
    }
    return {
        key: measure(stream, run(name, stream, seed=SEED))["measures"]
        for key, name in names.items()
    }


def test_stream_is_one_in_a_hundred(stream: Stream) -> None:
    share = stream.labels.mean()
    assert stream.n == N_EVENTS
    assert 0.007 < share < 0.013, share


def test_default_beats_none_on_minority_recall_and_g_mean(results: dict[str, dict]) -> None:
    d, none = results["default"], results["none"]
    assert d["minority_recall"] > none["minority_recall"], (d, none)
    assert d["g_mean"] > none["g_mean"], (d, none)
    # Threshold moving alone does not rescue plain CE either: its G-mean stays below.
    assert d["g_mean"] > results["none_balanced"]["g_mean"]


def test_default_keeps_ranking_within_10_percent_of_weighted(results: dict[str, dict]) -> None:
    d, w = results["default"]["avg_precision"], results["weighted"]["avg_precision"]
    assert d >= 0.9 * w, (d, w)
    # and it learned a ranking at all: far above the 1% a constant score gets
    assert d > 0.1, d


def test_run_is_deterministic() -> None:
    s = one_in_a_hundred(n=1_000, seed=1)
    a = run(default_name(), s, seed=1)
    b = run(default_name(), s, seed=1)
    np.testing.assert_array_equal(a.probs, b.probs)
    np.testing.assert_array_equal(a.y_pred, b.y_pred)
    assert a.grad_norms == b.grad_norms


def test_measures_against_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1])
    assert average_precision(y, np.array([0.9, 0.1, 0.8, 0.7])) == pytest.approx(
        0.5 * 0.5 + 0.5 * 2 / 3
    )


def test_streams_follow_their_schedule(tmp_path) -> None:
    s = load_stream("S2", seed=0, n=5_000, cache_dir=tmp_path)
    assert s.drift_points == [1000, 2000, 3000, 4000]
    first, last = s.labels[:1000].mean(), s.labels[4000:].mean()
    assert 0.4 < first < 0.6 and last < 0.05, (first, last)
    again = load_stream("S2", seed=0, n=5_000, cache_dir=tmp_path)  # from the cache
    assert again.features == s.features


def test_contender_names_are_checked() -> None:
    with pytest.raises(ValueError, match="network"):
        parse_contender("rescaled/cnn")
    with pytest.raises(ValueError, match="river:svm"):
        parse_contender("river:svm")
