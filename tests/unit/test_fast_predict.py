"""The serving fast paths give exactly what the plain paths give (bit for bit)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from models.drift import psi, psi_against, psi_reference
from models.features import HashingFeaturizer, as_tensor
from models.learner import OnlineLearner
from models.trainer import StreamTrainer, TrainerConfig


def _events(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        event: dict = {
            "amount": rng.lognormvariate(3.0, 1.0),
            "hour": rng.randint(0, 23),
            "mcc": rng.choice(["5411", "5732", "5999"]),
            "ip_risk": rng.random(),
            "card_present": rng.random() < 0.5,  # bool: the featurizer's slow path
            "age": np.float64(rng.uniform(1, 3000)),  # numpy scalar: slow path too
        }
        if i % 7 == 0:
            event["note"] = None
        if i % 11 == 0:
            event = {}  # an empty bag: bias only
        out.append(event)
    return out


def _torch_proba(learner: OnlineLearner, features: list[dict]) -> np.ndarray:
    """The reference: the network module, softmax in float64."""
    return torch.softmax(learner.logits(features).to(torch.float64), dim=1).numpy()


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logreg_fast_path_equals_the_module_exactly(n_classes: int) -> None:
    learner = OnlineLearner(n_classes, n_bits=12, numeric_bins=8, lr=0.1)
    events = _events(600)
    labels = [i % n_classes for i in range(len(events))]
    for start in range(0, 400, 50):
        learner.learn(
            events[start : start + 50],
            labels[start : start + 50],
            [1.0] * n_classes,
            [1.0 / n_classes] * n_classes,
        )
    assert learner.network.linear.weight.abs().sum() > 0  # trained: non-trivial weights
    for size in (1, 2, 5, 64):
        for start in range(400, 600 - size, 37):
            batch = events[start : start + size]
            fast = learner.predict_proba(batch)
            assert fast.dtype == np.float64
            assert np.array_equal(fast, _torch_proba(learner, batch)), (size, start)


def test_mlp_is_unchanged_and_empty_input_still_works() -> None:
    learner = OnlineLearner(2, network="mlp", hidden=(8,), n_bits=10)
    events = _events(20)
    assert np.array_equal(learner.predict_proba(events), _torch_proba(learner, events))
    assert OnlineLearner(2, n_bits=8).predict_proba([]).shape == (0, 2)


def test_calibration_cache_follows_every_input() -> None:
    trainer = StreamTrainer(TrainerConfig(classes=["a", "b"], n_bits=10, strategy="weighted"))
    learner = trainer.learner
    events = _events(300, seed=3)
    for start in range(0, 300, 30):
        labels = [1 if (start + i) % 9 == 0 else 0 for i in range(30)]
        trainer.process(events[start : start + 30], labels)
        for factors, priors in ([trainer.factors, trainer.frequencies], [[1.0, 2.0], [0.5, 0.5]]):
            cached = learner.calibration_factors(factors, priors)
            again = learner.calibration_factors(factors, priors)
            fresh = learner.strategy.calibration_factors(
                learner._context(factors, priors, None, learner._class_counts)
            ).tolist()
            assert cached == again == fresh
    with pytest.raises(ValueError, match="factors"):
        learner.calibration_factors([float("nan"), 1.0], [0.5, 0.5])


def test_encode_and_as_tensor_match_torch_tensor() -> None:
    featurizer = HashingFeaturizer(n_bits=10, numeric_bins=4)
    events = _events(50)
    featurizer.transform(events, update=True)
    batch = featurizer.transform(events)
    indices, offsets, weights = featurizer.encode(events)
    assert torch.equal(batch.indices, torch.tensor(indices, dtype=torch.int64))
    assert torch.equal(batch.offsets, torch.tensor(offsets, dtype=torch.int64))
    assert torch.equal(batch.weights, torch.tensor(weights, dtype=torch.float32))
    assert batch.indices.dtype == torch.int64 and batch.weights.dtype == torch.float32
    assert as_tensor([], "q").dtype == torch.int64


def test_psi_split_equals_psi() -> None:
    rng = np.random.default_rng(0)
    reference = rng.beta(2, 5, size=500)
    for shift in (0.0, 0.1, 0.3):
        recent = np.clip(rng.beta(2, 5, size=300) + shift, 0, 1)
        assert psi_against(psi_reference(reference, 10), recent) == psi(reference, recent, 10)


@pytest.mark.parametrize("n_classes", [2, 3, 7])
@pytest.mark.parametrize("decision", ["balanced", "argmax"])
def test_one_event_calibration_equals_the_numpy_path_exactly(
    n_classes: int, decision: str
) -> None:
    """GET /predict's one-event path (plain floats) against the batch path (numpy).

    Logistic regression, whose raw probabilities for one event are the same bits alone or in a
    batch: an MLP's matrix products may round a batch of one and of two differently (in the
    last float32 bit), which is not the calibration this test is about.
    """
    classes = [f"c{c}" for c in range(n_classes)]
    trainer = StreamTrainer(
        TrainerConfig(
            classes=classes, decision=decision, n_bits=10, numeric_bins=4, network="logreg"
        )
    )
    events = _events(600, seed=n_classes)
    rng = random.Random(n_classes)
    labels = [rng.choice([0, 0, 0, 0, 0, n_classes - 1, 1]) for _ in events]
    for start in range(0, 600, 50):
        trainer.process(events[start : start + 50], labels[start : start + 50])
        for event in events[start : start + 5]:
            one_probs, one_label = trainer.predict([event])
            batch_probs, batch_labels = trainer.predict([event, event])
            assert one_probs.dtype == batch_probs.dtype and one_probs.shape == (1, n_classes)
            assert one_probs[0].tolist() == batch_probs[0].tolist()
            assert one_label.tolist() == batch_labels[:1].tolist()
    assert len(set(trainer.predict(events[:200])[0][:, 0].tolist())) > 50  # not a constant
