"""The serving fast paths give what the plain paths give: the prediction kernels equal the
torch modules to 1e-6, the rest bit for bit."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from models import kernels
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


def _trained(network: str, n_classes: int, optimizer: str = "sgd") -> OnlineLearner:
    learner = OnlineLearner(
        n_classes, network=network, hidden=(16, 8), n_bits=12, numeric_bins=8, lr=0.1,
        optimizer=optimizer,
    )  # fmt: skip
    events = _events(400)
    labels = [i % n_classes for i in range(len(events))]
    for start in range(0, 400, 50):
        learner.learn(
            events[start : start + 50], labels[start : start + 50],
            [1.0] * n_classes, [1.0 / n_classes] * n_classes,
        )  # fmt: skip
    return learner


@pytest.mark.parametrize("network", ["logreg", "mlp"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_kernels_equal_the_torch_module_to_1e6(network: str, n_classes: int) -> None:
    """Every route into the kernels (plain floats up to PLAIN_MAX_EVENTS events of a linear
    model, numpy above, feature dicts or a FeatureBatch) against the network module."""
    learner = _trained(network, n_classes)
    assert next(iter(learner.export_weights().values())).any()  # trained: non-trivial weights
    events = _events(800, seed=1)
    worst = 0.0
    for size in (1, 2, 4, 5, 23, 64, 200):
        for start in range(0, 600, 97):
            batch = events[start : start + size]
            fast = learner.predict_proba(batch)
            reference = _torch_proba(learner, batch)
            assert fast.dtype == np.float64 and fast.shape == reference.shape
            worst = max(worst, float(np.abs(fast - reference).max()))
            encoded = learner.featurizer.transform(batch)
            assert np.array_equal(learner.predict_proba(encoded), fast)
    assert worst < 1e-6
    assert worst > 0.0 or network == "logreg"  # the MLP's float64 is not torch's float32


def test_plain_and_numpy_kernels_agree_and_batches_do_not_change_an_event() -> None:
    learner = _trained("logreg", 3)
    weights = learner.export_weights()
    events = _events(50, seed=2)
    indices, offsets, values = learner.featurizer.encode(events)
    plain = kernels._linear_plain(weights, indices, offsets, values)
    by_numpy = kernels._softmax(kernels._logits(weights, indices, offsets, values))
    np.testing.assert_allclose(plain, by_numpy, rtol=0, atol=1e-15)
    one = [learner.predict_proba([e])[0] for e in events[:4]]
    together = learner.predict_proba(events[:4])
    assert all(np.array_equal(a, b) for a, b in zip(one, together, strict=True))


def test_exported_weights_follow_learning_and_loading_and_pack_into_one_buffer() -> None:
    learner = _trained("mlp", 2, optimizer="adam")
    weights = learner.export_weights()
    before = {k: v.copy() for k, v in weights.items()}
    learner.learn(_events(50, seed=3), [1] * 50, [1.0, 1.0], [0.5, 0.5])
    assert any(not np.array_equal(before[k], v) for k, v in weights.items())  # live views
    other = _trained("mlp", 2, optimizer="adam")
    other.load_state_dict(learner.state_dict())
    probe = _events(30, seed=4)
    np.testing.assert_array_equal(other.predict_proba(probe), learner.predict_proba(probe))
    buffer = bytearray(kernels.weights_nbytes(weights))
    _, layout = kernels.pack_weights(weights, buffer)
    packed = kernels.unpack_weights(buffer, layout)  # what another process would map
    encoded = learner.featurizer.encode(probe)
    np.testing.assert_array_equal(
        kernels.predict_proba(packed, *encoded), kernels.predict_proba(weights, *encoded)
    )
    with pytest.raises(TypeError, match="no kernel"):
        kernels.export_weights(torch.nn.Linear(2, 2))


def test_empty_input_gives_an_empty_answer() -> None:
    assert OnlineLearner(2, n_bits=8).predict_proba([]).shape == (0, 2)
    learner = OnlineLearner(3, network="mlp", hidden=(4,), n_bits=8)
    np.testing.assert_allclose(
        learner.predict_proba([{}]), _torch_proba(learner, [{}]), rtol=0, atol=1e-6
    )


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
def test_one_event_calibration_equals_the_numpy_path_exactly(n_classes: int, decision: str) -> None:
    """GET /predict's one-event path (plain floats) against the batch path (numpy)."""
    classes = [f"c{c}" for c in range(n_classes)]
    trainer = StreamTrainer(
        TrainerConfig(classes=classes, decision=decision, n_bits=10, numeric_bins=4)
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
