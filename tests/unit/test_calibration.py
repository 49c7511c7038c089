"""Prior correction and decision rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.calibration import DecisionRule, prior_correct
from models.rescaling import raw_factors


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_prior_correct_recovers_the_true_posterior_exactly() -> None:
    # The minimizer of the w-weighted cross-entropy has logits log P(c|x) + log w_c + const:
    # build those logits directly and check the correction returns P(c|x).
    rng = np.random.default_rng(0)
    true = softmax(rng.normal(size=(200, 3)) * 2.0)
    w = np.array([0.6, 2.5, 9.0])
    rescaled = softmax(np.log(true) + np.log(w))
    assert not np.allclose(rescaled, true)
    assert prior_correct(rescaled, w) == pytest.approx(true, abs=1e-12)


def _train_weighted_logreg(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Full-batch gradient descent on sum_i w_{y_i} * CE_i / N for a 1-D binary logreg."""
    theta = np.zeros(2)
    sample_w = w[y]
    for _ in range(3000):
        q = 1.0 / (1.0 + np.exp(-(theta[0] + theta[1] * x)))
        g = sample_w * (q - y)
        theta -= 0.5 * np.array([g.mean(), (g * x).mean()])
    q = 1.0 / (1.0 + np.exp(-(theta[0] + theta[1] * x)))
    return np.stack([1.0 - q, q], axis=1)


def test_corrected_probabilities_of_a_rescaled_model_are_closer_to_the_prior() -> None:
    rng = np.random.default_rng(1)
    prior = 0.05
    n = 20000
    y = (rng.random(n) < prior).astype(int)
    x = rng.normal(loc=1.5 * y, scale=1.0)  # overlapping classes: calibration matters
    p_emp = [1.0 - y.mean(), y.mean()]
    w = np.array(raw_factors(p_emp, gamma=1.0, r_max=100.0))
    raw = _train_weighted_logreg(x, y, w)
    corrected = prior_correct(raw, w)
    # The rescaled model over-predicts the rare class on average; corrected, it matches the prior.
    assert raw[:, 1].mean() > 3 * y.mean()
    assert abs(corrected[:, 1].mean() - y.mean()) < 0.2 * y.mean()
    assert abs(corrected[:, 1].mean() - y.mean()) < abs(raw[:, 1].mean() - y.mean())
    # ... and event by event it is close to the Bayes posterior of the generating model.
    logit = np.log(y.mean() / (1 - y.mean())) + 1.5 * x - 1.5**2 / 2
    bayes = 1.0 / (1.0 + np.exp(-logit))
    assert np.abs(corrected[:, 1] - bayes).mean() < 0.01
    assert np.abs(corrected[:, 1] - bayes).mean() < 0.2 * np.abs(raw[:, 1] - bayes).mean()


@settings(max_examples=100, deadline=None)
@given(
    logits=st.lists(st.floats(-8, 8), min_size=6, max_size=6),
    w=st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3),
)
def test_prior_correct_rows_are_distributions_and_unit_factors_change_nothing(
    logits: list[float], w: list[float]
) -> None:
    probs = softmax(np.array(logits).reshape(2, 3))
    out = prior_correct(probs, w)
    assert out.sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-12)
    assert (out >= 0).all()
    assert prior_correct(probs, [1.0, 1.0, 1.0]) == pytest.approx(probs, abs=1e-15)


def test_prior_correct_does_not_mutate_and_handles_zero_rows() -> None:
    probs = np.array([[0.2, 0.8], [0.0, 0.0]])
    copy = probs.copy()
    out = prior_correct(probs, [2.0, 4.0])
    assert np.array_equal(probs, copy)
    assert out.tolist() == [[1 / 3, 2 / 3], [0.5, 0.5]]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: prior_correct(np.array([[0.5, 0.5]]), [1.0, 0.0]), "factors"),
        (lambda: prior_correct(np.array([[0.5, 0.5]]), [1.0, 1.0, 1.0]), "factors"),
        (lambda: prior_correct(np.array([[0.5, np.nan]]), [1.0, 1.0]), "probs"),
        (lambda: prior_correct(np.array([[[0.5, 0.5]]]), [1.0, 1.0]), "probs"),
        (lambda: DecisionRule("bayes"), "rule"),
        (lambda: DecisionRule("threshold"), "thresholds"),
        (lambda: DecisionRule("threshold", thresholds=[0.5, 1.5]), "thresholds"),
        (lambda: DecisionRule("balanced", thresholds=[0.5, 0.5]), "thresholds"),
        (lambda: DecisionRule("cost"), "cost_matrix"),
        (lambda: DecisionRule("cost", cost_matrix=[[0, 1, 2], [1, 0, 2]]), "cost_matrix"),
        (lambda: DecisionRule("cost", cost_matrix=[[0, np.inf], [1, 0]]), "cost_matrix"),
        (lambda: DecisionRule("argmax", cost_matrix=[[0, 1], [1, 0]]), "cost_matrix"),
        (lambda: DecisionRule().decide(np.array([[0.5, 0.5]]), [1.0, 0.0]), "priors"),
        (
            lambda: DecisionRule("threshold", thresholds=[0.5] * 3).decide(
                np.array([[0.5, 0.5]]), [0.5, 0.5]
            ),
            "thresholds",
        ),
    ],
)
def test_bad_settings_are_named(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        call()


def test_balanced_rule_maximizes_balanced_accuracy_on_calibrated_scores() -> None:
    rng = np.random.default_rng(3)
    n, prior = 40000, 0.02
    y = (rng.random(n) < prior).astype(int)
    x = rng.normal(loc=2.0 * y)
    logit = np.log(prior / (1 - prior)) + 2.0 * x - 2.0
    p1 = 1 / (1 + np.exp(-logit))
    probs = np.stack([1 - p1, p1], axis=1)

    def bal_acc(pred: np.ndarray) -> float:
        return float(np.mean([np.mean(pred[y == c] == c) for c in (0, 1)]))

    balanced = bal_acc(DecisionRule().decide(probs, [1 - prior, prior]))
    argmax = bal_acc(DecisionRule("argmax").decide(probs, [1 - prior, prior]))
    assert balanced > argmax + 0.2
    # No fixed threshold on p1 does clearly better than the balanced rule.
    best = max(bal_acc((p1 >= t).astype(int)) for t in np.linspace(0.001, 0.5, 200))
    assert balanced >= best - 0.01


def test_threshold_rule() -> None:
    rule = DecisionRule("threshold", thresholds=[0.9, 0.2, 0.3])
    probs = np.array(
        [
            [0.75, 0.25, 0.0],  # only class 1 over its threshold
            [0.45, 0.21, 0.34],  # classes 1 and 2 over: most probable of them, 2
            [0.5, 0.1, 0.4],  # 2 over
            [0.85, 0.1, 0.05],  # none over -> argmax
            [0.95, 0.03, 0.02],  # 0 over
        ]
    )
    assert rule.decide(probs, [1 / 3] * 3).tolist() == [1, 2, 2, 0, 0]


def test_cost_rule_is_expected_cost_minimizer() -> None:
    cost = [[0.0, 1.0, 4.0], [10.0, 0.0, 2.0], [30.0, 5.0, 0.0]]
    rule = DecisionRule("cost", cost_matrix=cost)
    rng = np.random.default_rng(4)
    probs = softmax(rng.normal(size=(50, 3)))
    expected = [
        int(np.argmin([sum(p[i] * cost[i][j] for i in range(3)) for j in range(3)])) for p in probs
    ]
    assert rule.decide(probs, [1 / 3] * 3).tolist() == expected
    # Zero-one cost is argmax.
    zero_one = DecisionRule("cost", cost_matrix=1 - np.eye(3))
    assert zero_one.decide(probs, [1 / 3] * 3).tolist() == np.argmax(probs, axis=1).tolist()


def test_balanced_rule_with_uniform_priors_is_argmax() -> None:
    rng = np.random.default_rng(5)
    probs = softmax(rng.normal(size=(30, 4)))
    got = DecisionRule().decide(probs, [0.25] * 4)
    assert got.tolist() == np.argmax(probs, axis=1).tolist()
    assert got.dtype.kind == "i"
