"""OnlineLearner: the batch-size-1 trap, guarded steps, the loss cap, snapshots, validation."""

import copy
import io

import numpy as np
import pytest
import torch

from models.features import FeatureError, stable_hash
from models.learner import OnlineLearner, StepStats
from models.snapshot import FORMAT_VERSION, SnapshotError, dumps, loads

torch.set_num_threads(1)  # tiny steps: threads only add latency on a shared machine

PRIORS = [0.98, 0.02]
FACTORS = [0.8, 10.0]  # sum p*w = 0.984: close to the expectation normalization
EVENT = {"mcc": "5411", "country": "fr"}


def learner(strategy: str, **kw) -> OnlineLearner:
    return OnlineLearner(2, n_bits=10, strategy=strategy, seed=0, **kw)


def params(m: OnlineLearner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.network.parameters()]


def tensors(obj) -> list[torch.Tensor]:
    """Every tensor in a nested state dict, in a fixed order."""
    if torch.is_tensor(obj):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=str) for t in tensors(obj[k])]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in tensors(v)]
    return []


def delta(strategy: str, label: int, **kw) -> list[torch.Tensor]:
    """Parameter change from one learn() on a single event from the same fresh start."""
    m = learner(strategy, **kw)
    before = params(m)
    m.learn([EVENT], [label], FACTORS, PRIORS)
    return [a - b for a, b in zip(params(m), before, strict=True)]


@pytest.mark.parametrize("network", ["logreg", "mlp"])
@pytest.mark.parametrize("label", [0, 1])
def test_batch_size_one_trap_batch_normalized_updates_exactly_like_none(label, network):
    none = delta("none", label, network=network, hidden=(8,))
    bn = delta("batch_normalized", label, network=network, hidden=(8,))
    assert any(d.abs().sum() > 0 for d in none)
    for a, b in zip(none, bn, strict=True):
        # w * l / w: equal up to one float rounding of the division.
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("network", ["logreg", "mlp"])
def test_batch_size_one_rescaled_minority_gradient_is_larger_by_the_factor_ratio(network):
    kw = {"network": network, "hidden": (8,)}
    none_min, none_maj = delta("none", 1, **kw), delta("none", 0, **kw)
    res_min, res_maj = delta("rescaled", 1, **kw), delta("rescaled", 0, **kw)
    # Plain SGD: each rescaled step is the plain step times the event's factor ...
    for r, n in zip(res_min, none_min, strict=True):
        torch.testing.assert_close(r, FACTORS[1] * n, rtol=1e-5, atol=1e-8)
    for r, n in zip(res_maj, none_maj, strict=True):
        torch.testing.assert_close(r, FACTORS[0] * n, rtol=1e-5, atol=1e-8)
    # ... so relative to the unweighted step, the minority event pulls 10 / 0.8 times harder.
    norm = lambda ds: float(torch.sqrt(sum((d**2).sum() for d in ds)))  # noqa: E731
    ratio = (norm(res_min) / norm(none_min)) / (norm(res_maj) / norm(none_maj))
    assert ratio == pytest.approx(FACTORS[1] / FACTORS[0], rel=1e-4)


def test_class_gradient_at_batch_size_one_steps_like_rescaled():
    # coef_c = (p_c w_c / sum p w) / P(c present) = w_c / sum p w at B = 1; the smoother's
    # factors have sum p w = 1, these test factors 0.984.
    norm = sum(p * w for p, w in zip(PRIORS, FACTORS, strict=True))
    for label in (0, 1):
        for a, b in zip(delta("class_gradient", label), delta("rescaled", label), strict=True):
            torch.testing.assert_close(a, b / norm, rtol=1e-5, atol=1e-8)


def test_mixed_batch_separates_batch_normalized_from_none():
    batch, labels = [EVENT, {"mcc": "7995"}], [0, 1]
    out = []
    for name in ("none", "batch_normalized"):
        m = learner(name)
        before = params(m)
        m.learn(batch, labels, FACTORS, PRIORS)
        out.append([a - b for a, b in zip(params(m), before, strict=True)])
    assert not torch.allclose(out[0][0], out[1][0])


def test_step_stats_report_per_class_loss_and_pull():
    m = learner("rescaled")
    stats = m.learn([EVENT, {"mcc": "7995"}, {"mcc": "1"}], [0, 0, 1], FACTORS, PRIORS)
    assert isinstance(stats, StepStats) and not stats.skipped and stats.batch_size == 3
    # Fresh logreg predicts uniform: every raw loss is log 2.
    assert stats.per_class_loss == pytest.approx([np.log(2)] * 2)
    assert stats.loss == pytest.approx(np.log(2) * (2 * 0.8 + 10.0) / 3)
    # Logit-gradient of event i is w_i (p - onehot) / B: norm w_i * sqrt(0.5) / 3 per event.
    maj = 0.8 * np.sqrt(0.5) / 3 * np.sqrt(2)
    assert stats.per_class_grad_norm == pytest.approx([maj, 10.0 * np.sqrt(0.5) / 3], rel=1e-5)
    assert stats.grad_norm > 0 and not stats.clipped
    assert (m.steps, m.events_seen, m.class_counts) == (1, 3, [2.0, 1.0])


def test_per_event_loss_cap_bounds_one_events_pull():
    m = learner("none", max_event_loss=1.0)
    # Make the model confidently wrong about one event, then feed it with the other label.
    slot = stable_hash("mcc=5411", 10)
    with torch.no_grad():
        m.network.linear.weight[slot] = torch.tensor([4.0, -4.0])
    uncapped = OnlineLearner.from_state_dict(m.state_dict())
    uncapped.max_event_loss = None
    raw = float(torch.nn.functional.cross_entropy(m.logits([{"mcc": "5411"}]), torch.tensor([1])))
    assert raw > 5.0
    deltas = []
    for model in (m, uncapped):
        before = params(model)
        stats = model.learn([{"mcc": "5411"}], [1], FACTORS, PRIORS)
        deltas.append([a - b for a, b in zip(params(model), before, strict=True)])
    assert stats.loss == pytest.approx(raw, rel=1e-5)
    for capped, full in zip(*deltas, strict=True):
        torch.testing.assert_close(capped, full * (1.0 / raw), rtol=1e-4, atol=1e-8)


def test_non_finite_loss_skips_the_step_and_counts_it():
    m = learner("rescaled", optimizer="adam")
    m.learn([EVENT], [0], FACTORS, PRIORS)
    with torch.no_grad():
        m.network.linear.weight[stable_hash("mcc=5411", 10)] = torch.tensor([float("inf"), 0.0])
    before = params(m)
    opt_before = copy.deepcopy(m.optimizer.state_dict())
    stats = m.learn([EVENT, {"mcc": "1"}], [1, 0], FACTORS, PRIORS)
    assert stats.skipped and not np.isfinite(stats.loss)
    assert (m.skipped_steps, m.steps) == (1, 1)
    for a, b in zip(params(m), before, strict=True):
        assert torch.equal(a, b)
    opt_after = tensors(m.optimizer.state_dict())
    assert opt_after and all(
        torch.equal(a, b) for a, b in zip(tensors(opt_before), opt_after, strict=True)
    )
    assert all(p.grad is None for p in m.network.parameters())


def test_non_finite_gradient_with_finite_loss_is_skipped():
    m = learner("rescaled", max_event_loss=None)
    # A numeric feature at the clip (10 sd) on a minority event ...
    m.learn([{"x": float(i % 2)} for i in range(200)], [0] * 200, FACTORS, PRIORS)
    event = [{"x": 1e6}]
    raw = float(torch.nn.functional.cross_entropy(m.logits(event), torch.tensor([1])))
    # ... with a factor that keeps w * l finite in float32 but w * (1 - p) * 10 not.
    assert raw < 1.1
    huge = 3.0e38
    before = params(m)
    stats = m.learn(event, [1], [0.8, huge], PRIORS)
    assert np.isfinite(stats.loss) and not np.isfinite(stats.grad_norm)
    assert stats.skipped and m.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(params(m), before, strict=True))


def test_non_finite_feature_is_rejected_with_its_name_and_changes_nothing():
    m = learner("rescaled")
    m.learn([{"x": 1.0}, {"x": 2.0}], [0, 1], FACTORS, PRIORS)
    state = m.state_dict()
    with pytest.raises(FeatureError, match="'amount'") as exc:
        m.learn([{"x": 3.0}, {"amount": float("nan")}], [0, 0], FACTORS, PRIORS)
    assert exc.value.field == "amount"
    after = m.state_dict()
    assert after["counters"] == state["counters"]
    assert torch.equal(after["featurizer"]["stats"], state["featurizer"]["stats"])
    assert torch.equal(after["class_counts"], state["class_counts"])


@pytest.mark.parametrize(
    ("labels", "factors", "priors", "message"),
    [
        ([2], FACTORS, PRIORS, r"labels\[0\]=2"),
        ([True], FACTORS, PRIORS, r"labels\[0\]"),
        (["fraud"], FACTORS, PRIORS, r"labels\[0\]"),
        ([0, 1], FACTORS, PRIORS, "features has 1 events but labels has 2"),
        ([0], [1.0], PRIORS, "factors must have 2 values"),
        ([0], [1.0, float("nan")], PRIORS, r"factors\[1\]"),
        ([0], FACTORS, [1.0, 0.0], r"priors\[1\]"),
    ],
)
def test_bad_learn_arguments_rejected(labels, factors, priors, message):
    with pytest.raises(ValueError, match=message):
        learner("rescaled").learn([EVENT], labels, factors, priors)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_classes": 1}, "n_classes"),
        ({"network": "tree"}, "'tree'"),
        ({"optimizer": "rmsprop"}, "'rmsprop'"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"max_event_loss": -1.0}, "max_event_loss"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"strategy": "smote"}, "'smote'"),
        ({"strategy": "focal", "strategy_params": {"tau": 1.0}}, "'tau'"),
    ],
)
def test_bad_settings_rejected(kwargs, message):
    args = {"n_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        OnlineLearner(**args)


def test_global_clip_norm_clips_and_counts():
    m = learner("none", clip_norm=1e-3)
    before = params(m)
    stats = m.learn([EVENT], [1], FACTORS, PRIORS)
    assert stats.clipped and stats.grad_norm > 1e-3 and m.clipped_steps == 1
    moved = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(params(m), before, strict=True)))
    assert float(moved) == pytest.approx(m.lr * 1e-3, rel=1e-4)


def test_predicting_changes_nothing_and_probabilities_are_the_raw_softmax():
    m = learner("rescaled")
    m.learn([{"x": 1.0, **EVENT}, {"x": -1.0}], [0, 1], FACTORS, PRIORS)
    state = m.state_dict()
    probs = m.predict_proba([{"x": 5.0, **EVENT}, {}])
    assert probs.dtype == np.float64 and probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    logits = m.logits([{"x": 5.0, **EVENT}, {}])
    np.testing.assert_allclose(probs, torch.softmax(logits.double(), 1).numpy())
    assert torch.equal(m.state_dict()["featurizer"]["stats"], state["featurizer"]["stats"])


def test_calibration_factors_follow_the_strategy():
    assert learner("rescaled").calibration_factors(FACTORS, PRIORS) == pytest.approx(FACTORS)
    assert learner("none").calibration_factors(FACTORS, PRIORS) == [1.0, 1.0]
    la = learner("logit_adjusted").calibration_factors(FACTORS, PRIORS)
    assert la[1] / la[0] == pytest.approx(PRIORS[0] / PRIORS[1], rel=1e-5)
    assert sum(p * w for p, w in zip(PRIORS, la, strict=True)) == pytest.approx(1.0, rel=1e-5)
    weighted = learner("weighted").calibration_factors(FACTORS, PRIORS, counts=[90, 10])
    assert weighted == pytest.approx([100 / 180, 100 / 20])


def test_weighted_uses_its_own_running_counts_by_default():
    m = learner("weighted")
    m.learn([EVENT] * 4, [0, 0, 0, 1], FACTORS, PRIORS)
    assert m.class_counts == [3.0, 1.0]
    assert m.calibration_factors(FACTORS, PRIORS) == pytest.approx([4 / 6, 4 / 2])


def test_snapshot_bytes_round_trip_and_config_checks():
    m = learner("oob", network="mlp", hidden=(8,), optimizer="adam", lr=0.01)
    m.learn([EVENT, {"x": 2.0}], [0, 1], FACTORS, PRIORS)
    data = dumps(m.state_dict())
    assert isinstance(data, bytes)
    state = loads(data)
    assert state["config"] == m.config
    restored = OnlineLearner.from_state_dict(state)
    assert (restored.steps, restored.events_seen) == (1, 2)
    # A restart may change lr on purpose: the constructor's lr wins.
    other = OnlineLearner(
        2, network="mlp", hidden=(8,), n_bits=10, strategy="oob", optimizer="adam", lr=0.5
    )
    other.load_state_dict(state)
    assert other.optimizer.param_groups[0]["lr"] == 0.5
    for key, kwargs in [
        ("n_bits", {"n_bits": 11}),
        ("hidden", {"hidden": (9,)}),
        ("network", {"network": "logreg"}),
        ("optimizer", {"optimizer": "sgd"}),
    ]:
        cfg = {"network": "mlp", "hidden": (8,), "n_bits": 10, "optimizer": "adam", **kwargs}
        with pytest.raises(ValueError, match=key):
            OnlineLearner(2, **cfg).load_state_dict(state)


def test_state_dict_is_a_copy():
    m = learner("rescaled")
    state = m.state_dict()
    m.learn([EVENT], [1], FACTORS, PRIORS)
    assert float(state["network"]["bias"].abs().sum()) == 0.0


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_snapshot_loading_refuses_arbitrary_objects_and_unknown_versions():
    buf = io.BytesIO()
    torch.save({"format_version": 1, "state": {"x": Evil()}}, buf)
    with pytest.raises(SnapshotError, match="not a snapshot"):
        loads(buf.getvalue())
    newer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION + 1, "state": {}}, newer)
    with pytest.raises(SnapshotError, match="newer"):
        loads(newer.getvalue())
    with pytest.raises(SnapshotError):
        loads(b"")
    plain = io.BytesIO()
    torch.save({"w": torch.ones(1)}, plain)
    with pytest.raises(SnapshotError, match="format_version"):
        loads(plain.getvalue())


def test_mostly_zero_tensors_are_packed_and_rebuilt_bit_for_bit():
    t = torch.zeros(4096, 3)
    t[7] = torch.tensor([1.0, -0.0, float("nan")])
    t[4000, 1] = -0.0
    t[9] = 1e-30
    dense = torch.randn(2048, 2, generator=torch.Generator().manual_seed(0))
    state = {"sparse": t, "dense": dense, "nested": [{"x": t}], "tuple": (1, "a")}
    data = dumps(state)
    back = loads(data)
    assert len(dumps({"sparse": t})) < t.numel() * 4 / 4  # not stored densely
    for got in (back["sparse"], back["nested"][0]["x"]):
        assert got.shape == t.shape and got.dtype == t.dtype
        assert torch.equal(got.view(torch.int32), t.view(torch.int32))  # bits, incl. -0.0/nan
    assert torch.equal(back["dense"], dense) and back["tuple"] == (1, "a")


def test_hashed_logreg_snapshot_is_small():
    m = OnlineLearner(2, n_bits=18, strategy="rescaled")
    m.learn([{"f": f"v{i}", "x": float(i)} for i in range(100)], [i % 2 for i in range(100)],
            FACTORS, PRIORS)  # fmt: skip
    data = dumps(m.state_dict())
    assert len(data) < 100_000  # 2**18 x 2 float32 weights would be 2 MB
    restored = OnlineLearner.from_state_dict(loads(data))
    probe = [{"f": "v3", "x": 3.0}, {"f": "new"}]
    assert (restored.predict_proba(probe) == m.predict_proba(probe)).all()


def test_malformed_packed_tensor_is_a_snapshot_error():
    buf = io.BytesIO()
    bad = {
        "__sparse_rows__": 1,
        "shape": [4, 2],
        "rows": torch.tensor([9]),
        "values": torch.ones(1, 2),
    }
    torch.save({"format_version": 1, "state": {"w": bad}}, buf)
    with pytest.raises(SnapshotError, match="malformed"):
        loads(buf.getvalue())


def test_zero_gradient_batch_does_not_move_adam():
    m = learner("oob", optimizer="adam", lr=0.1)
    m.learn([EVENT], [1], FACTORS, PRIORS)  # Adam now has momentum
    # A generator seed under which one rate-1 Poisson draw (a majority event) is k = 0.
    seed = next(
        s
        for s in range(100)
        if float(torch.poisson(torch.ones(1), generator=torch.Generator().manual_seed(s))[0]) == 0
    )
    m.generator.manual_seed(seed)
    before = params(m)
    stats = m.learn([EVENT], [0], FACTORS, PRIORS)
    assert stats.grad_norm == 0.0 and not stats.skipped
    assert all(torch.equal(a, b) for a, b in zip(params(m), before, strict=True))


@pytest.mark.parametrize("network", ["logreg", "mlp"])
def test_plain_sgd_moves_parameters_exactly_like_torch_sgd(network):
    """PlainSGD replaces torch.optim.SGD (start-up time); the arithmetic must be the same."""
    ours = OnlineLearner(2, network=network, n_bits=10, seed=3, lr=0.3)
    theirs = OnlineLearner(2, network=network, n_bits=10, seed=3, lr=0.3)
    theirs.optimizer = torch.optim.SGD(theirs.network.parameters(), lr=0.3)
    start = params(ours)
    rng = np.random.default_rng(0)
    for _ in range(6):
        events = [
            {"amount": float(rng.normal()), "mcc": str(rng.integers(20)), "n": int(i)}
            for i in range(17)
        ]
        labels = rng.integers(0, 2, size=17).tolist()
        ours.learn(events, labels, FACTORS, PRIORS)
        theirs.learn(events, labels, FACTORS, PRIORS)
    for a, b in zip(params(ours), params(theirs), strict=True):
        assert torch.equal(a, b)
    assert all(not torch.equal(a, b) for a, b in zip(params(ours), start, strict=True))


def test_plain_sgd_loads_a_torch_sgd_state_and_refuses_momentum():
    m = learner("rescaled")
    torch_state = torch.optim.SGD(m.network.parameters(), lr=0.7).state_dict()
    m.optimizer.load_state_dict(torch_state)
    assert m.optimizer.param_groups[0]["lr"] == 0.7
    mine = m.optimizer.state_dict()["param_groups"][0]
    assert mine["params"] == torch_state["param_groups"][0]["params"]
    with_momentum = torch.optim.SGD(m.network.parameters(), lr=0.1, momentum=0.9).state_dict()
    with pytest.raises(ValueError, match="momentum"):
        m.optimizer.load_state_dict(with_momentum)
