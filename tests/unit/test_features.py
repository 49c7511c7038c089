"""HashingFeaturizer: encoding, online standardization, validation, stable hashing, state."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import (
    CLIP,
    STATS_MAX_ABS,
    FeatureBatch,
    FeatureError,
    HashingFeaturizer,
    stable_hash,
)

ROOT = Path(__file__).resolve().parents[2]


def same_stats(a: dict, b: dict) -> bool:
    """Two featurizer state dicts hold the same statistics rows, bit for bit."""
    return torch.equal(a["rows"], b["rows"]) and torch.equal(a["stats"], b["stats"])


def row_of(f: HashingFeaturizer, name: str) -> int:
    return stable_hash(name, f.n_bits) & ((1 << f.stats_bits) - 1)


def bag(batch: FeatureBatch, i: int) -> list[tuple[int, float]]:
    """Event i's (slot, weight) pairs."""
    start = int(batch.offsets[i])
    end = int(batch.offsets[i + 1]) if i + 1 < batch.size else batch.indices.shape[0]
    return list(
        zip(batch.indices[start:end].tolist(), batch.weights[start:end].tolist(), strict=True)
    )


def test_encoding_of_each_value_kind():
    f = HashingFeaturizer(n_bits=12)
    b = f.transform([{"mcc": "5411", "flag": True, "off": False, "gone": None}])
    assert b.size == 1
    assert bag(b, 0) == [
        (stable_hash("mcc=5411", 12), 1.0),
        (stable_hash("flag", 12), 1.0),
        (stable_hash("off", 12), 0.0),
    ]
    assert b.indices.dtype == torch.int64 and b.offsets.dtype == torch.int64
    assert b.weights.dtype == torch.float32


def test_empty_events_get_empty_bags_and_offsets_line_up():
    f = HashingFeaturizer(n_bits=8)
    b = f.transform([{}, {"a": "x"}, {}, {"a": "y", "b": "z"}])
    assert b.offsets.tolist() == [0, 0, 1, 1]
    assert b.indices.shape[0] == 3
    assert f.transform([]).size == 0


def test_numbers_are_standardized_with_welford_stats_when_learning():
    f = HashingFeaturizer(n_bits=10)
    values = [3.0, 5.0, 10.0, -2.0]
    out = [bag(f.transform([{"x": v}], update=True), 0)[0][1] for v in values]
    # Stats are updated before standardizing: event i uses mean/std of values[: i + 1].
    for i, v in enumerate(values):
        seen = np.array(values[: i + 1])
        std = seen.std()
        expected = (v - seen.mean()) / std if std > 0 else v - seen.mean()
        assert out[i] == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert f.standardize("x", 4.0) == pytest.approx((4.0 - np.mean(values)) / np.std(values))


def test_predicting_never_updates_stats():
    f = HashingFeaturizer(n_bits=10)
    f.transform([{"x": 1.0}, {"x": 2.0}, {"x": 4.0}], update=True)
    before = f.state_dict()
    first = f.transform([{"x": 100.0}]).weights.tolist()
    again = f.transform([{"x": 100.0}]).weights.tolist()
    assert first == again
    after = f.state_dict()
    assert same_stats(before, after)


def test_standardized_values_are_clipped():
    f = HashingFeaturizer(n_bits=10)
    f.transform([{"x": float(i % 2)} for i in range(50)], update=True)
    w = f.transform([{"x": 1e9}, {"x": -1e9}]).weights.tolist()
    assert w == [CLIP, -CLIP]


@pytest.mark.parametrize(
    ("features", "field"),
    [
        ({"amount": float("nan")}, "amount"),
        ({"amount": float("inf")}, "amount"),
        ({"amount": -float("inf")}, "amount"),
        ({"amount": 10**400}, "amount"),
        ({"nested": {"a": 1}}, "nested"),
        ({"items": [1, 2]}, "items"),
        ({"raw": b"bytes"}, "raw"),
        ({"arr": np.array([1.0, 2.0])}, "arr"),
        ({"nan64": np.float64("nan")}, "nan64"),
        ({1: "x"}, "1"),
    ],
)
def test_bad_values_raise_feature_error_naming_the_field(features, field):
    f = HashingFeaturizer(n_bits=8)
    with pytest.raises(FeatureError) as exc:
        f.transform([{"ok": 1.0}, features], update=True)
    assert exc.value.field == field
    assert repr(field) in str(exc.value)
    assert isinstance(exc.value, ValueError)
    with pytest.raises(FeatureError):
        f.validate(features)


def test_too_many_features_rejected():
    f = HashingFeaturizer(n_bits=8, max_features=3)
    with pytest.raises(FeatureError, match="max_features=3") as exc:
        f.transform([{f"k{i}": 1.0 for i in range(4)}])
    assert exc.value.field == "features"
    f.validate({f"k{i}": 1.0 for i in range(3)})


def test_failed_batch_leaves_stats_untouched():
    f = HashingFeaturizer(n_bits=8)
    f.transform([{"x": 1.0}, {"x": 3.0}], update=True)
    before = f.state_dict()
    with pytest.raises(FeatureError):
        f.transform([{"x": 50.0, "new": 2.0}, {"x": float("nan")}], update=True)
    after = f.state_dict()
    assert same_stats(after, before) and after["rows"].tolist() == [row_of(f, "x")]


def test_numpy_scalars_encode_like_python_numbers():
    a, b = HashingFeaturizer(n_bits=10), HashingFeaturizer(n_bits=10)
    xa = a.transform([{"x": 1.5, "y": 2, "s": "v", "t": True}], update=True)
    xb = b.transform(
        [{"x": np.float32(1.5), "y": np.int64(2), "s": np.str_("v"), "t": np.bool_(True)}],
        update=True,
    )
    assert xa.indices.tolist() == xb.indices.tolist()
    assert xa.weights.tolist() == xb.weights.tolist()


def test_input_dicts_are_not_mutated():
    events = [{"a": 1.0, "b": "x", "c": None}, {"a": 2, "d": True}]
    snapshot = copy.deepcopy(events)
    HashingFeaturizer(n_bits=8).transform(events, update=True)
    assert events == snapshot


def test_hash_is_stable_across_processes():
    keys = ["amount", "mcc=5411", "ünïcode=✓", ""]
    code = (
        "import json; from models.features import stable_hash; "
        f"print(json.dumps([stable_hash(k, 18) for k in {keys!r}]))"
    )
    # A different string-hash salt than this process: built-in hash() would differ.
    env = dict(os.environ, PYTHONHASHSEED="12345")
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(res.stdout) == [stable_hash(k, 18) for k in keys]


def test_state_round_trip_reproduces_standardization():
    f = HashingFeaturizer(n_bits=10)
    f.transform([{"x": float(i), "y": i * 0.5} for i in range(20)], update=True)
    g = HashingFeaturizer(n_bits=10)
    g.load_state_dict(f.state_dict())
    probe = [{"x": 3.3, "y": -1.0, "s": "a"}]
    assert f.transform(probe).weights.tolist() == g.transform(probe).weights.tolist()
    assert sorted(g.state_dict()["rows"].tolist()) == sorted([row_of(g, "x"), row_of(g, "y")])
    with pytest.raises(ValueError, match="n_bits"):
        HashingFeaturizer(n_bits=11).load_state_dict(f.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_bits": 0}, "n_bits"), ({"n_bits": 31}, "n_bits"), ({"max_features": 0}, "max_features")],
)
def test_bad_settings_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HashingFeaturizer(**kwargs)


def test_slots_stay_in_range():
    f = HashingFeaturizer(n_bits=4)
    b = f.transform([{f"k{i}": f"v{i}" for i in range(100)}])
    assert int(b.indices.min()) >= 0 and int(b.indices.max()) < f.n_inputs == 16
    assert math.isclose(float(b.weights.sum()), 100.0)


# -- numeric bins ----------------------------------------------------------------------


def test_numeric_bins_add_one_bin_slot_per_number() -> None:
    f = HashingFeaturizer(n_bits=16, numeric_bins=8)
    b = f.transform([{"amount": 1.0, "mcc": "5411"}, {"amount": 3.0}], update=True)
    # number -> (value slot, bin slot); string -> one slot
    assert b.offsets.tolist() == [0, 3]
    assert b.weights.tolist()[1] == 1.0 and b.weights.tolist()[4] == 1.0
    assert b.indices.tolist()[0] == b.indices.tolist()[3]  # same value slot
    assert b.indices.tolist()[1] != b.indices.tolist()[4]  # z = -1 and z = +1: other bins


def test_numeric_bins_let_a_linear_model_learn_a_band() -> None:
    # Class 1 lives in a middle band of one feature: no linear function of z separates it,
    # one-hot bins do.
    import random

    from models.learner import OnlineLearner

    def band_accuracy(bins: int) -> float:
        rng = random.Random(0)
        learner = OnlineLearner(2, n_bits=12, lr=0.5, numeric_bins=bins, strategy="none")
        for _ in range(300):
            xs = [rng.uniform(0.0, 100.0) for _ in range(32)]
            learner.learn(
                [{"age": x} for x in xs], [int(40 <= x < 60) for x in xs], [1, 1], [0.5, 0.5]
            )
        test = [rng.uniform(0.0, 100.0) for _ in range(2000)]
        probs = learner.predict_proba([{"age": x} for x in test])
        hits = [(p[1] > 0.5) == (40 <= x < 60) for p, x in zip(probs, test, strict=True)]
        return sum(hits) / len(hits)

    assert band_accuracy(0) < 0.85  # the z weight alone cannot carve out a band
    assert band_accuracy(16) > 0.9


def test_numeric_bins_round_trip_and_mismatch_is_named() -> None:
    f = HashingFeaturizer(n_bits=10, numeric_bins=4)
    f.transform([{"x": 1.0}, {"x": 2.0}, {"x": 9.0}], update=True)
    g = HashingFeaturizer(n_bits=10, numeric_bins=4)
    g.load_state_dict(f.state_dict())
    assert torch.equal(f.transform([{"x": 5.0}]).indices, g.transform([{"x": 5.0}]).indices)
    with pytest.raises(ValueError, match="numeric_bins"):
        HashingFeaturizer(n_bits=10, numeric_bins=0).load_state_dict(f.state_dict())
    with pytest.raises(ValueError, match="numeric_bins"):
        HashingFeaturizer(numeric_bins=-1)


# -- the column-wise encoder (batches of VECTOR_MIN_EVENTS or more) -------------------------


def _mixed_events(n: int, seed: int) -> list[dict]:
    """Events of several layouts: numbers (ints and floats), strings, booleans, nulls,
    missing keys and a name that is a number in some events and a string in others."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        event: dict = {"amount": float(rng.lognormal(4.0, 1.0)), "hour": int(rng.integers(24))}
        if i % 3:
            event["mcc"] = str(rng.choice(["5411", "5732", "7995"]))
        if i % 4 == 0:
            event["foreign"] = bool(rng.random() < 0.3)
        if i % 5 == 0:
            event["note"] = None
        event["mixed"] = float(rng.normal()) if i % 7 else "n/a"
        if i % 11 == 0:
            event = {"rare": float(rng.normal(50.0, 2.0)), **event}  # another key order
        out.append(event)
    return out


def _arrays(batch: FeatureBatch) -> tuple[list, list, list]:
    return batch.indices.tolist(), batch.offsets.tolist(), batch.weights.tolist()


def test_column_encoder_predicts_exactly_like_the_scalar_encoder() -> None:
    from models.features import VECTOR_MIN_EVENTS

    f = HashingFeaturizer(n_bits=14, numeric_bins=16)
    f.transform(_mixed_events(300, seed=1), update=True)
    f.transform([{"one_value": 3.0}], update=True)  # stats with a count of 1: no spread yet
    probe = _mixed_events(200, seed=2) + [{"one_value": 5.0, "unseen": 7.5}, {}]
    assert len(probe) >= VECTOR_MIN_EVENTS
    columns = f._encode_columns(probe, update=False)
    assert columns is not None  # the plain events take the column path
    scalar = f.encode(probe, update=False)
    indices, offsets, weights = columns
    assert indices.tolist() == scalar[0] and offsets.tolist() == scalar[1]
    assert weights.tolist() == torch.tensor(scalar[2], dtype=torch.float32).tolist()


def test_column_encoder_learns_the_same_stats_as_the_scalar_encoder() -> None:
    columns, scalar = HashingFeaturizer(n_bits=14, numeric_bins=16), HashingFeaturizer(
        n_bits=14, numeric_bins=16
    )
    events = _mixed_events(2000, seed=3)
    for start in range(0, len(events), 250):
        batch = events[start : start + 250]
        by_columns = columns.transform(batch, update=True)
        by_scalar = scalar.encode(batch, update=True)
        assert by_columns.indices.tolist() == by_scalar[0]  # bins included
        assert by_columns.offsets.tolist() == by_scalar[1]
        np.testing.assert_allclose(by_columns.weights.numpy(), by_scalar[2], rtol=1e-5, atol=1e-6)
    a, b = columns.state_dict(), scalar.state_dict()
    assert torch.equal(a["rows"], b["rows"])
    np.testing.assert_allclose(a["stats"].numpy(), b["stats"].numpy(), rtol=1e-9)


def test_column_encoder_hands_anything_unusual_to_the_scalar_encoder() -> None:
    f = HashingFeaturizer(n_bits=10)
    good = [{"x": float(i), "s": "a"} for i in range(40)]
    f.transform(good, update=True)
    before = f.state_dict()
    for bad, field in (
        ({"x": float("nan")}, "x"),
        ({"x": 10**400}, "x"),
        ({"x": [1, 2]}, "x"),
        ({1: 2.0}, "1"),
    ):
        with pytest.raises(FeatureError) as exc:
            f.transform([*good[:30], bad, *good[30:]], update=True)
        assert exc.value.field == field
    after = f.state_dict()
    assert same_stats(after, before)
    # numpy scalars are not plain: the scalar path encodes them, like Python numbers
    plain = f._encode_columns([{"x": 1.5}] * 20, update=False)
    assert plain is not None and f._encode_columns([{"x": np.float64(1.5)}] * 20, False) is None
    assert f.transform([{"x": np.float64(1.5)}] * 20).weights.tolist() == plain[2].tolist()


def test_column_encoder_leaves_thousands_of_one_off_names_to_the_scalar_encoder() -> None:
    f, g = HashingFeaturizer(n_bits=12), HashingFeaturizer(n_bits=12)
    events = [{f"id_{i}_{j}": float(j) for j in range(30)} | {"x": float(i)} for i in range(300)]
    assert f._encode_columns(events, update=True) is None  # 9,000 columns x 300 rows
    assert g.state_dict()["rows"].tolist() == []  # and nothing was changed on the way
    by_transform = g.transform(events, update=True)
    assert by_transform.indices.tolist() == f.encode(events, update=True)[0]


@pytest.mark.parametrize("n", [5, 200])  # the scalar path, and the column path read once
def test_transform_pair_equals_the_two_transforms(n: int) -> None:
    paired, separate = HashingFeaturizer(n_bits=14, numeric_bins=16), HashingFeaturizer(
        n_bits=14, numeric_bins=16
    )
    for seed in range(3):
        events = _mixed_events(n, seed=seed)
        before, after = paired.transform_pair(events)
        assert _arrays(before) == _arrays(separate.transform(events))
        assert _arrays(after) == _arrays(separate.transform(events, update=True))
        assert len(before) == len(after) == n
    assert same_stats(paired.state_dict(), separate.state_dict())


@pytest.mark.parametrize("path", ["scalar", "columns"])
def test_one_wild_value_moves_the_statistics_a_bounded_amount(path: str) -> None:
    """A 1e200 once made Welford's m2 infinite, and the feature standardized to 0 for good.
    Now it enters the statistics clamped to CLIP standard deviations of the mean (and to
    STATS_MAX_ABS), on either path; the value itself still standardizes to CLIP."""
    rng = np.random.default_rng(0)
    f = HashingFeaturizer(n_bits=10)
    warm = [{"x": float(v)} for v in rng.normal(100.0, 5.0, 200)]
    f.transform(warm, update=True)
    count, mean, m2 = f.state_dict()["stats"][0].tolist()
    std = math.sqrt(m2 / count)
    batch = [{"x": float(v)} for v in rng.normal(100.0, 5.0, 40)] + [{"x": 1e200}]
    if path == "scalar":
        out = f.encode(batch, update=True)[2]
    else:
        columns = f._encode_columns(batch, update=True)
        assert columns is not None  # huge values no longer push a batch off the column path
        out = columns[2].tolist()
    assert out[-1] == CLIP
    count, mean_after, m2_after = f.state_dict()["stats"][0].tolist()
    assert math.isfinite(m2_after) and count == 241
    assert abs(mean_after - 100.0) < 1.0  # the wild value moved it by at most ~CLIP*std/n
    assert math.sqrt(m2_after / count) < 1.5 * std
    # ordinary values still standardize to ordinary numbers
    assert abs(f.standardize("x", 105.0) - 1.0) < 0.3


def test_wild_first_values_leave_the_statistics_finite_on_both_paths() -> None:
    events = [{"x": 1e200}, {"x": -1.7e308}] + [{"x": float(i)} for i in range(40)]
    f, g = HashingFeaturizer(n_bits=10), HashingFeaturizer(n_bits=10)
    by_columns = f._encode_columns(events, update=True)
    by_scalar = g.encode(events, update=True)
    assert by_columns is not None
    assert by_columns[0].tolist() == by_scalar[0]
    np.testing.assert_allclose(by_columns[2], by_scalar[2], rtol=1e-5, atol=1e-5)
    for h in (f, g):
        stats = h.state_dict()["stats"].numpy()
        assert np.isfinite(stats).all() and np.abs(stats[:, 1]).max() <= STATS_MAX_ABS
        assert np.isfinite(h.transform([{"x": 3.0}] * 30).weights.numpy()).all()
    # The column path's sums round relative to the batch's largest magnitude (1e100 here):
    # equal up to rounding on the scale of the spread, which is what standardization sees.
    a, b = f.state_dict()["stats"][0].tolist(), g.state_dict()["stats"][0].tolist()
    spread = math.sqrt(b[2] / b[0])
    assert a[0] == b[0] and a[2] == pytest.approx(b[2], rel=1e-9)
    assert abs(a[1] - b[1]) < 1e-12 * spread


def test_transform_pair_of_a_ragged_batch_equals_the_two_transforms() -> None:
    """Predicting takes the column path, the update is too ragged for it: the pair mixes
    both paths and must still equal the two calls."""
    events = [{f"id_{i}_{j}": float(j) for j in range(30)} | {"x": float(i)} for i in range(300)]
    paired, separate = HashingFeaturizer(n_bits=12), HashingFeaturizer(n_bits=12)
    paired.transform(events[:1], update=True)
    separate.transform(events[:1], update=True)
    before, after = paired.transform_pair(events)
    assert _arrays(before) == _arrays(separate.transform(events))
    assert _arrays(after) == _arrays(separate.transform(events, update=True))
    assert same_stats(paired.state_dict(), separate.state_dict())


# Property: on any batch of plain events, the column path predicts exactly like the scalar
# path and learns the same statistics to rounding, whatever the layouts, types and order.
_names = st.sampled_from(["a", "b", "c", "amount", "mcc", "flag", "z"])
_values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.integers(-(10**6), 10**6),
    st.sampled_from(["x", "y", "5411", ""]),
    st.booleans(),
    st.none(),
)
_events = st.lists(st.dictionaries(_names, _values, max_size=7), min_size=24, max_size=80)


@settings(max_examples=60, deadline=None)
@given(warmup=_events, batch=_events)
def test_column_path_matches_the_scalar_path_on_any_plain_batch(warmup, batch) -> None:
    columns = HashingFeaturizer(n_bits=12, numeric_bins=8)
    scalar = HashingFeaturizer(n_bits=12, numeric_bins=8)
    columns.transform(warmup, update=True)
    scalar.encode(warmup, update=True)
    predicted = columns._encode_columns(batch, update=False)
    assert predicted is not None
    expected = scalar.encode(batch)
    assert predicted[0].tolist() == expected[0] and predicted[1].tolist() == expected[1]
    assert predicted[2].tolist() == torch.tensor(expected[2], dtype=torch.float32).tolist()
    learned = columns._encode_columns(batch, update=True)
    assert learned is not None
    expected = scalar.encode(batch, update=True)
    assert learned[1].tolist() == expected[1]
    np.testing.assert_allclose(learned[2], expected[2], rtol=1e-5, atol=1e-5)
    a, b = columns.state_dict(), scalar.state_dict()
    assert torch.equal(a["rows"], b["rows"])
    np.testing.assert_allclose(a["stats"].numpy(), b["stats"].numpy(), rtol=1e-7, atol=1e-6)
