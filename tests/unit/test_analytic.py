"""The closed-form logistic-regression step equals autograd's, strategy by strategy."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from models.features import stable_hash
from models.learner import OnlineLearner, StepStats
from models.strategies import STRATEGIES

ANALYTIC = {"none", "weighted", "batch_normalized", "rescaled", "logit_adjusted", "oob"}


def make_batches(seed: int) -> list[tuple[list[dict], list[int]]]:
    rng = random.Random(seed)
    batches = []
    for size in [1, 7, 64, 1, 3, 64, 32, 1, 64, 16] * 2:
        events, labels = [], []
        for _ in range(size):
            fraud = rng.random() < 0.15
            event = {
                "amount": rng.lognormvariate(3.0 + 2 * fraud, 1.0),
                "v": rng.gauss(2.0 * fraud, 1.0),
                "mcc": rng.choice(["5411", "5732", "7995"]),
                "flag": rng.random() < 0.3,
            }
            if rng.random() < 0.1:
                event = {}  # an empty bag: the bias alone
            events.append(event)
            labels.append(int(fraud))
        batches.append((events, labels))
    return batches


def pair(strategy: str, **kw) -> tuple[OnlineLearner, OnlineLearner]:
    settings = {"n_bits": 10, "numeric_bins": 4, "lr": 0.3, "seed": 3, **kw}
    fast = OnlineLearner(2, strategy=strategy, **settings)
    slow = OnlineLearner(2, strategy=strategy, **settings)
    slow._analytic = False
    return fast, slow


def assert_same_step(a: StepStats, b: StepStats) -> None:
    assert (a.skipped, a.clipped, a.batch_size) == (b.skipped, b.clipped, b.batch_size)
    for x, y in ((a.loss, b.loss), (a.grad_norm, b.grad_norm)):
        assert (math.isfinite(x), math.isfinite(y)) == (math.isfinite(y), math.isfinite(x))
        if math.isfinite(x):
            assert x == pytest.approx(y, rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(a.per_class_loss, b.per_class_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a.per_class_grad_norm, b.per_class_grad_norm, rtol=1e-5, atol=1e-7)


def assert_same_parameters(fast: OnlineLearner, slow: OnlineLearner) -> None:
    for (name, p), q in zip(
        fast.network.named_parameters(), slow.network.parameters(), strict=True
    ):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_the_closed_form_serves_exactly_the_cross_entropy_strategies() -> None:
    for strategy in STRATEGIES:
        assert OnlineLearner(2, strategy=strategy, n_bits=6)._analytic == (strategy in ANALYTIC)
    assert not OnlineLearner(2, network="mlp", n_bits=6)._analytic


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("strategy", sorted(ANALYTIC))
def test_closed_form_steps_equal_autograd_steps(strategy: str, optimizer: str) -> None:
    """Twenty steps of batches of 1 to 64 events, with the per-event cap and the global
    clip both biting now and then: every step's stats and the parameters after it agree."""
    fast, slow = pair(strategy, optimizer=optimizer, max_event_loss=0.8, clip_norm=0.5)
    factors, priors = [0.6, 4.0], [0.85, 0.15]
    capped = clipped = 0
    for events, labels in make_batches(seed=1):
        a = fast.learn(events, labels, factors, priors)
        b = slow.learn(events, labels, factors, priors)
        assert_same_step(a, b)
        assert_same_parameters(fast, slow)
        capped += max(a.per_class_loss) > 0.8  # some event was capped
        clipped += a.clipped
    assert capped and clipped  # both guards were exercised
    assert (fast.steps, fast.clipped_steps) == (slow.steps, slow.clipped_steps)
    if strategy == "oob":  # the Poisson draws came from the generator the same way
        assert torch.equal(fast.generator.get_state(), slow.generator.get_state())


@pytest.mark.parametrize("strategy", sorted(ANALYTIC))
def test_closed_form_skips_what_autograd_skips(strategy: str) -> None:
    event = {"mcc": "5411"}
    # a non-finite loss: an infinite weight on the event's slot
    fast, slow = pair(strategy)
    for m in (fast, slow):
        with torch.no_grad():
            m.network.linear.weight[stable_hash("mcc=5411", 10)] = torch.tensor([math.inf, 0.0])
    steps = [m.learn([event, {"mcc": "1"}], [1, 0], [1.0, 1.0], [0.5, 0.5]) for m in (fast, slow)]
    assert steps[0].skipped and steps[1].skipped and fast.skipped_steps == 1
    assert all(p.grad is None for p in fast.network.parameters())
    # a finite loss whose gradient overflows float32 (as in test_learner)
    fast, slow = pair(strategy, max_event_loss=None)
    warm = [{"x": float(i % 2)} for i in range(200)]
    for m in (fast, slow):
        m.learn(warm, [0] * 200, [1.0, 1.0], [0.5, 0.5])
    before = [p.detach().clone() for p in fast.network.parameters()]
    a = fast.learn([{"x": 1e6}], [1], [0.8, 3.0e38], [0.5, 0.5])
    b = slow.learn([{"x": 1e6}], [1], [0.8, 3.0e38], [0.5, 0.5])
    assert a.skipped == b.skipped
    if a.skipped:
        assert all(
            torch.equal(p, q) for p, q in zip(fast.network.parameters(), before, strict=True)
        )
    assert_same_parameters(fast, slow)
