"""Hashed sparse features: flat event dicts -> EmbeddingBag inputs.

Owns validation of raw feature dicts, the stable feature hash, and the online per-feature
standardization (Welford running mean/variance) of numeric values.

Encoding, per ``name: value`` pair:

* int / float (not bool): one slot ``hash(name)`` with weight ``(x - mean) / std``, clipped to
  [-CLIP, CLIP]. Stats are updated only by ``transform(..., update=True)`` (learning), before
  the value is standardized, so predictions never move them.
* str: one slot ``hash(name + "=" + value)`` with weight 1.0.
* bool: one slot ``hash(name)`` with weight 1.0 (True) or 0.0 (False), not standardized.
* None: absent, exactly like a missing key.
* with ``numeric_bins = B > 0``, each number also sets one of B "bin" slots,
  ``hash(name + "#" + k)`` with weight 1.0, where k is the bin of the standardized value over
  [-BIN_RANGE, BIN_RANGE] standard deviations. A linear model on z alone can only say "more
  is riskier" (or less); the bins let it learn bands and thresholds (an amount that is
  suspicious only in a middle range, an age band) with no schema and no extra pass.

``n_inputs`` is ``2 ** n_bits``; there is no reserved slot (an event with no features is an
empty bag, which EmbeddingBag maps to zeros, so the network's bias alone decides it).

State is bounded by the configuration, not by the traffic. The running statistics live per
hashed slot, in one float64 table of ``2 ** stats_bits`` rows (count, mean, m2), with
``stats_bits = min(n_bits, STATS_MAX_BITS)``: a numeric feature's statistics row is its
weight slot, so two names share statistics only where they already share a weight (or,
above 2**20 slots, where their slots agree in the low 20 bits). A client that sends ids as
feature names fills slots, never memory; the snapshot stores the rows in use only. The
hash caches are bounded in entries and key length and cleared when full; the distinct
names learned from are counted by a HyperLogLog sketch (``distinct_names``).

What one value can do to the statistics is capped: the value folded into them is clamped to
``+-STATS_MAX_ABS``, and, once a slot has ``WINSOR_MIN_COUNT`` values and a spread, to
``CLIP`` standard deviations around the mean the slot had before the batch. The value
itself is standardized unclamped (then clipped to ``+-CLIP``), as before.
"""

from __future__ import annotations

import array
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.sketch import DistinctCounter, digest64

__all__ = [
    "BIN_RANGE",
    "CLIP",
    "STATS_MAX_ABS",
    "STATS_MAX_BITS",
    "WINSOR_MIN_COUNT",
    "FeatureBatch",
    "FeatureError",
    "HashingFeaturizer",
    "as_tensor",
    "bin_index",
    "stable_hash",
]

# One wild value (a typo'd amount, a unit change) must not produce a huge input weight and
# with it a huge step; 10 standard deviations keeps real signal and bounds the damage.
CLIP = 10.0

# Numeric bins cover +-3 standard deviations; values beyond fall into the outermost bins.
BIN_RANGE = 3.0


def bin_index(z: float, n_bins: int) -> int:
    """The bin of a standardized value among ``n_bins`` equal bins over [-BIN_RANGE, BIN_RANGE].

    >>> [bin_index(z, 4) for z in (-9.0, -1.0, 0.0, 1.4, 2.999, 50.0)]
    [0, 1, 2, 2, 3, 3]
    """
    k = int((z + BIN_RANGE) * n_bins / (2.0 * BIN_RANGE))
    return 0 if k < 0 else (n_bins - 1 if k >= n_bins else k)


# Batches of at least this many events are encoded column-wise (``_encode_columns``); below
# it numpy's fixed cost per call (about 110 µs) is more than the Python it saves. A pair of
# encodings (``transform_pair``) shares one reading, so it pays from fewer events.
VECTOR_MIN_EVENTS = 24
VECTOR_MIN_EVENTS_PAIR = 16

# The statistics table has at most 2**20 rows (24 MiB); above that, slots share rows by
# their low 20 bits. Below it, a feature's row is its weight slot.
STATS_MAX_BITS = 20

# A value folded into the statistics is clamped to this magnitude: squares and sums of
# squares of such values stay finite (a 1e200 made Welford's m2 infinite, and the feature
# standardized to 0 for ever), in the scalar recurrence and in the column path's sums.
STATS_MAX_ABS = 1e100

# From this many values on (and with a spread), a value enters the statistics clamped to
# CLIP standard deviations of the slot's pre-batch mean: the model never sees a value
# further out than that either, and one wild value moves the mean by at most CLIP / n
# standard deviations instead of setting it.
WINSOR_MIN_COUNT = 30

# The hash caches are only caches: bounded in entries (and keys longer than
# _CACHE_KEY_MAX_LEN are hashed every time, never kept), cleared when full. A cleared
# cache costs one re-hash per key still in use.
_CACHE_LIMIT = 1 << 16
_CACHE_KEY_MAX_LEN = 256
_BIN_CACHE_LIMIT = 1 << 14


class FeatureError(ValueError):
    """A feature dict that cannot be encoded; ``field`` names the offending key."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"feature {field!r}: {reason}")

    def __repr__(self) -> str:
        return f"FeatureError(field={self.field!r}, reason={self.reason!r})"


def stable_hash(key: str, n_bits: int) -> int:
    """Hash ``key`` into ``[0, 2**n_bits)``, identically in every process.

    Python's ``hash()`` of a str is salted per process, so it would scramble a model
    restored in another process; blake2b of the UTF-8 bytes is not.

    >>> stable_hash("amount", 18)
    32077
    >>> stable_hash("amount", 18) == stable_hash("amount", 18)
    True
    >>> 0 <= stable_hash("mcc=5411", 4) < 16
    True
    """
    return digest64(key) & ((1 << n_bits) - 1)


_DTYPES = {"q": torch.int64, "f": torch.float32}


def as_tensor(values: list[int] | list[float], typecode: str) -> torch.Tensor:
    """A 1-D int64 ("q") or float32 ("f") tensor of ``values``, equal to ``torch.tensor``'s.

    Through a C array (one C-level conversion) it is about 3x cheaper than
    ``torch.tensor(list)``, which inspects every element; float32 rounding is the same C
    cast either way.

    >>> as_tensor([1, 2], "q").tolist(), as_tensor([0.1], "f").item() == torch.tensor([0.1]).item()
    ([1, 2], True)
    >>> as_tensor([], "f").shape
    torch.Size([0])
    """
    if not values:
        return torch.empty(0, dtype=_DTYPES[typecode])
    return torch.frombuffer(array.array(typecode, values), dtype=_DTYPES[typecode])


@dataclass(frozen=True)
class FeatureBatch:
    """EmbeddingBag inputs for ``size`` events; event i owns ``indices[offsets[i]:offsets[i+1]]``
    (the last event runs to the end)."""

    indices: torch.Tensor  # int64 [nnz]
    offsets: torch.Tensor  # int64 [size]
    weights: torch.Tensor  # float32 [nnz]
    size: int

    def __len__(self) -> int:
        return self.size


def _per_event(plan_of: np.ndarray, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``rows[plan_of[i]]`` over events i, with each element's event: the
    per-plan arrays laid out for the whole batch in a few numpy calls, not one per event.

    >>> ev, out = _per_event(np.array([1, 0, 1]), [np.array([7]), np.array([8, 9])])
    >>> ev.tolist(), out.tolist()
    ([0, 0, 1, 2, 2], [8, 9, 7, 8, 9])
    """
    if len(rows) == 1:  # the usual batch: every event has the same layout
        row = rows[0]
        return np.repeat(np.arange(len(plan_of)), len(row)), np.tile(row, len(plan_of))
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    width = int(lengths.max()) if len(rows) else 0
    padded = np.zeros((len(rows), width), dtype=rows[0].dtype if rows else np.int64)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = row
    counts = lengths[plan_of]
    taken = np.arange(width) < counts[:, None]
    return np.repeat(np.arange(len(plan_of)), counts), padded[plan_of][taken]


def _feature_batch(indices: np.ndarray, offsets: np.ndarray, weights: np.ndarray) -> FeatureBatch:
    return FeatureBatch(
        indices=torch.from_numpy(indices),
        offsets=torch.from_numpy(offsets),
        weights=torch.from_numpy(weights),
        size=len(offsets),
    )


_NO_INDEX = np.empty(0, dtype=np.int64)


class _Columns:
    """A batch read by ``HashingFeaturizer._gather``: what does not depend on the numbers'
    statistics, so one reading serves both encodings of a labeled batch."""

    __slots__ = (
        "bin_slots",
        "fixed_index",
        "fixed_weight",
        "gid",
        "group_rows",
        "names",
        "nid",
        "offsets",
        "value_slots",
        "where",
        "x",
    )

    def __init__(self, n_events: int) -> None:
        self.offsets = np.zeros(n_events, dtype=np.int64)  # each event's first entry
        self.where = np.empty(0, dtype=np.int64)  # entry position of each part's element
        self.fixed_index: np.ndarray | None = None  # string / boolean slots, their weights
        self.fixed_weight: np.ndarray | None = None
        self.x: np.ndarray | None = None  # the numbers (None: there are none)
        self.nid = _NO_INDEX  # each number's name (in ``names``)
        self.gid = _NO_INDEX  # each number's statistics group
        self.group_rows = _NO_INDEX  # each group's row of the stats table
        self.value_slots = _NO_INDEX  # each number's weight slot
        self.bin_slots: np.ndarray | None = None  # per name, its bins' slots [names, B]
        self.names: list[str] = []  # numeric names, then the batch's other names


class _Plan:
    """How ``_encode_columns`` reads the events of one layout (these keys, in this order,
    with these value types): the positions of numbers, strings and booleans, as arrays
    ready to be concatenated per event. ``of`` gives None for a layout it does not take."""

    __slots__ = (
        "boolean_rel",
        "index",
        "boolean_slots",
        "fixed_is_string",
        "fixed_rel",
        "names",
        "num_nid",
        "num_rel",
        "numbers",
        "size",
        "strings",
    )

    def __init__(
        self,
        index: int,
        size: int,
        names: list[str],
        num_rel: list[int],
        num_nid: list[int],
        strings: list[tuple[int, str]],
        booleans: list[tuple[int, int]],
    ) -> None:
        self.index = index  # in the batch's list of plans
        self.size = size
        self.names = names  # of the values that are not None, in order
        self.num_rel = np.array(num_rel, dtype=np.int64)
        self.num_nid = np.array(num_nid, dtype=np.intp)
        self.strings = strings  # (position, "name=") per string value
        self.boolean_rel = [rel for rel, _ in booleans]
        self.boolean_slots = np.array([slot for _, slot in booleans], dtype=np.int64)
        self.fixed_rel = np.array([rel for rel, _ in strings] + self.boolean_rel, dtype=np.int64)
        self.fixed_is_string = np.array([True] * len(strings) + [False] * len(booleans), dtype=bool)
        self.numbers: Any = None  # values -> the numbers among them, in order
        if len(num_rel) == 1:
            only = num_rel[0]
            self.numbers = lambda values: (values[only],)
        elif num_rel:
            self.numbers = operator.itemgetter(*num_rel)

    @staticmethod
    def of(
        index: int, names: tuple, types: tuple, nids: dict[str, int], slot_of: Any
    ) -> _Plan | None:
        num_rel: list[int] = []
        num_nid: list[int] = []
        strings: list[tuple[int, str]] = []
        booleans: list[tuple[int, int]] = []
        present: list[str] = []
        for rel, (name, t) in enumerate(zip(names, types, strict=True)):
            if type(name) is not str:
                return None
            if t is not type(None):
                present.append(name)
            if t is float or t is int:
                num_rel.append(rel)
                num_nid.append(nids.setdefault(name, len(nids)))
            elif t is str:
                strings.append((rel, name + "="))
            elif t is bool:
                booleans.append((rel, slot_of(name)))
            elif t is not type(None):
                return None
        return _Plan(index, len(names), present, num_rel, num_nid, strings, booleans)


class HashingFeaturizer:
    """Validate and hash flat feature dicts; standardize numbers online.

    >>> f = HashingFeaturizer(n_bits=8)
    >>> b = f.transform([{"amount": 12.5, "mcc": "5411"}, {}], update=True)
    >>> b.size, b.offsets.tolist(), b.weights.tolist()
    (2, [0, 2], [0.0, 1.0])
    >>> f.transform([{"amount": float("nan")}])
    Traceback (most recent call last):
    ...
    models.features.FeatureError: feature 'amount': value is not finite (nan)
    >>> round(f.distinct_names), f.stats_rows_used
    (2, 1)
    """

    def __init__(self, n_bits: int = 18, max_features: int = 1000, numeric_bins: int = 0) -> None:
        if not isinstance(n_bits, int) or isinstance(n_bits, bool) or not 1 <= n_bits <= 30:
            raise ValueError(f"n_bits must be an int in [1, 30], got {n_bits!r}")
        if not isinstance(max_features, int) or isinstance(max_features, bool) or max_features < 1:
            raise ValueError(f"max_features must be a positive int, got {max_features!r}")
        if (
            not isinstance(numeric_bins, int)
            or isinstance(numeric_bins, bool)
            or not 0 <= numeric_bins <= 1000
        ):
            raise ValueError(f"numeric_bins must be an int in [0, 1000], got {numeric_bins!r}")
        self.n_bits = n_bits
        self.max_features = max_features
        self.numeric_bins = numeric_bins
        self.n_inputs = 1 << n_bits
        self.stats_bits = min(n_bits, STATS_MAX_BITS)
        self._reset()

    def _reset(self) -> None:
        # Row r of the statistics: (count, mean, m2) of the values whose slot's low
        # stats_bits bits are r, Welford's recurrence. A flat C array of doubles: the
        # scalar path reads it as cheaply as a list, numpy views it without a copy.
        self._stats = array.array("d", bytes(24 << self.stats_bits))
        self._table = np.frombuffer(self._stats, dtype=np.float64).reshape(-1, 3)
        self._stats_mask = (1 << self.stats_bits) - 1
        self._slots: dict[str, int] = {}
        # name -> slot of each numeric bin, hashed once per name
        self._bin_slots: dict[str, list[int]] = {}
        self._names = DistinctCounter()
        self._noted: set[str] = set()  # names already in the sketch (a bounded memo)

    # -- hashing -----------------------------------------------------------------------
    def _slot(self, key: str) -> int:
        slot = self._slots.get(key)
        if slot is None:
            slot = stable_hash(key, self.n_bits)
            if len(key) <= _CACHE_KEY_MAX_LEN:
                if len(self._slots) >= _CACHE_LIMIT:
                    self._slots.clear()
                self._slots[key] = slot
        return slot

    def _bins_of(self, name: str) -> list[int]:
        bins = self._bin_slots.get(name)
        if bins is None:
            bins = [stable_hash(f"{name}#{k}", self.n_bits) for k in range(self.numeric_bins)]
            if len(name) <= _CACHE_KEY_MAX_LEN:
                if len(self._bin_slots) >= _BIN_CACHE_LIMIT:
                    self._bin_slots.clear()
                self._bin_slots[name] = bins
        return bins

    def _note_names(self, names: list[str]) -> None:
        """Count names learned from in the sketch (each once per life of the memo)."""
        noted = self._noted
        for name in names:
            if name not in noted:
                if len(noted) >= _CACHE_LIMIT:
                    noted.clear()
                noted.add(name)
                self._names.add(name)

    # -- validation --------------------------------------------------------------------
    def validate(self, features: Mapping[str, object]) -> None:
        """Raise FeatureError naming the first field that cannot be encoded."""
        if not isinstance(features, Mapping):
            raise FeatureError("features", f"expected a mapping, got {type(features).__name__}")
        if len(features) > self.max_features:
            raise FeatureError(
                "features", f"{len(features)} keys exceed max_features={self.max_features}"
            )
        for name, value in features.items():
            _check_value(name, value)

    # -- encoding ----------------------------------------------------------------------
    def transform(
        self, batch: Sequence[Mapping[str, object]], *, update: bool = False
    ) -> FeatureBatch:
        """Encode a batch of feature dicts; with ``update`` (learning) fold numbers into stats.

        If any event is invalid nothing is changed: stats touched by earlier events of the
        batch are restored before FeatureError propagates.
        """
        if len(batch) >= VECTOR_MIN_EVENTS:
            columns = self._encode_columns(batch, update)
            if columns is not None:
                return _feature_batch(*columns)
        return self._transform_scalar(batch, update)

    def _transform_scalar(
        self, batch: Sequence[Mapping[str, object]], update: bool
    ) -> FeatureBatch:
        indices, offsets, weights = self.encode(batch, update=update)
        return FeatureBatch(
            indices=as_tensor(indices, "q"),
            offsets=as_tensor(offsets, "q"),
            weights=as_tensor(weights, "f"),
            size=len(offsets),
        )

    def transform_pair(
        self, batch: Sequence[Mapping[str, object]]
    ) -> tuple[FeatureBatch, FeatureBatch]:
        """``transform(batch)``, then ``transform(batch, update=True)``: the encodings of a
        labeled batch before learning (the prequential prediction) and for the learning
        step, equal to the two calls. A column-wise batch is read once for both, which
        halves the featurizer's share of a step; the stats move, as in the second call."""
        if len(batch) >= VECTOR_MIN_EVENTS_PAIR:
            layout = self._gather(batch)
            if layout is not None:
                before = self._assemble(layout, update=False)  # never None: no stats move
                after = self._assemble(layout, update=True)
                if before is not None:
                    return _feature_batch(*before), (
                        _feature_batch(*after)
                        if after is not None  # too ragged for the running sums: scalar
                        else self._transform_scalar(batch, update=True)
                    )
        return self.transform(batch), self.transform(batch, update=True)

    def encode(
        self, batch: Sequence[Mapping[str, object]], *, update: bool = False
    ) -> tuple[list[int], list[int], list[float]]:
        """``transform`` as plain lists (indices, offsets, weights), no tensors built: the
        serving fast path of small batches skips torch entirely."""
        # statistics row -> (count, mean, m2) before the batch, and its clamp bounds
        touched: dict[int, tuple[float, ...]] | None = {} if update else None
        fresh: list[str] = []
        try:
            encoded = self._encode(batch, touched, fresh)
        except FeatureError:
            if touched:
                stats = self._stats
                for row, before in touched.items():
                    stats[row], stats[row + 1], stats[row + 2] = before[:3]
            raise
        if fresh:
            self._note_names(fresh)
        return encoded

    def _encode(
        self, batch: Sequence[Mapping[str, Any]], touched: dict | None, fresh: list[str]
    ) -> tuple[list[int], list[int], list[float]]:
        """The scalar encoder. With ``touched`` (learning) it records, per statistics row
        it moves, the row before the batch and the row's clamp bounds for this batch; names
        not yet in the sketch's memo go to ``fresh``."""
        indices: list[int] = []
        weights: list[float] = []
        offsets: list[int] = []
        slots = self._slots
        stats = self._stats
        mask = self._stats_mask
        noted = self._noted
        max_features = self.max_features
        n_bins = self.numeric_bins
        bin_slots = self._bin_slots
        isfinite = math.isfinite
        sqrt = math.sqrt
        two_range = 2.0 * BIN_RANGE
        last_bin = n_bins - 1
        for features in batch:
            offsets.append(len(indices))
            if type(features) is not dict and not isinstance(features, Mapping):
                raise FeatureError("features", f"expected a mapping, got {type(features).__name__}")
            if len(features) > max_features:
                raise FeatureError(
                    "features", f"{len(features)} keys exceed max_features={max_features}"
                )
            for name, value in features.items():
                t = type(value)
                if t is float or t is int:
                    if type(name) is not str:
                        _check_value(name, value)
                    x = float(value) if t is float else _int_to_float(name, value)
                    if not isfinite(x):
                        raise FeatureError(name, f"value is not finite ({x})")
                    slot = slots.get(name)
                    if slot is None:
                        slot = self._slot(name)
                    row = 3 * (slot & mask)
                    count, mean, m2 = stats[row], stats[row + 1], stats[row + 2]
                    if touched is not None:
                        if name not in noted:
                            fresh.append(name)
                        before = touched.get(row)
                        if before is None:
                            # _clamp_bounds for one row, inlined (same arithmetic)
                            low, high = -STATS_MAX_ABS, STATS_MAX_ABS
                            if count >= WINSOR_MIN_COUNT and m2 > 0.0:
                                reach = CLIP * sqrt(m2 / count)
                                low, high = mean - reach, mean + reach
                                if low < -STATS_MAX_ABS:
                                    low = -STATS_MAX_ABS
                                if high > STATS_MAX_ABS:
                                    high = STATS_MAX_ABS
                            touched[row] = (count, mean, m2, low, high)
                        else:
                            _, _, _, low, high = before
                        xs = x if low <= x <= high else (low if x < low else high)
                        count += 1.0
                        delta = xs - mean
                        mean += delta / count
                        m2 += delta * (xs - mean)
                        stats[row] = count
                        stats[row + 1] = mean
                        stats[row + 2] = m2
                    if count < 2.0:
                        # No spread known yet: centre if we can, never divide by zero.
                        z = x - mean if count > 0.0 else x
                    else:
                        var = m2 / count
                        z = (x - mean) / sqrt(var) if var > 0.0 else x - mean
                    if z > CLIP:
                        z = CLIP
                    elif z < -CLIP:
                        z = -CLIP
                    indices.append(slot)
                    weights.append(z)
                    if n_bins:
                        names_bins = bin_slots.get(name)
                        if names_bins is None:
                            names_bins = self._bins_of(name)
                        # bin_index(z, n_bins), inlined (same arithmetic): the hot loop
                        k = int((z + BIN_RANGE) * n_bins / two_range)
                        indices.append(
                            names_bins[0 if k < 0 else (last_bin if k > last_bin else k)]
                        )
                        weights.append(1.0)
                elif t is str:
                    if type(name) is not str:
                        _check_value(name, value)
                    key = f"{name}={value}"
                    slot = slots.get(key)
                    if slot is None:
                        slot = self._slot(key)
                    indices.append(slot)
                    weights.append(1.0)
                    if touched is not None and name not in noted:
                        fresh.append(name)
                elif value is None:
                    if type(name) is not str:
                        _check_value(name, value)
                else:
                    # Rare types (bool, numpy scalars, str subclasses, bad values): slow path.
                    kind, x = _check_value(name, value)
                    if kind == "num":
                        # A numeric subclass (e.g. numpy.float64): re-run as a plain number.
                        sub_indices, _, sub_weights = self._encode([{name: x}], touched, fresh)
                        indices.extend(sub_indices)
                        weights.extend(sub_weights)
                        continue
                    if kind == "str":
                        indices.append(self._slot(f"{name}={x}"))
                        weights.append(1.0)
                    elif kind == "bool":
                        indices.append(self._slot(name))
                        weights.append(x)
                    if touched is not None and name not in noted:
                        fresh.append(name)
        return indices, offsets, weights

    def _encode_columns(
        self, batch: Sequence[Mapping[str, Any]], update: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``_encode`` for a batch of plain events, with the arithmetic done per column
        (``_gather`` then ``_assemble``); None, having changed nothing, where ``_encode``
        must do it."""
        layout = self._gather(batch)
        return None if layout is None else self._assemble(layout, update)

    def _gather(self, batch: Sequence[Mapping[str, Any]]) -> _Columns | None:
        """Read a batch of plain events into columns; ``_encode``'s work, done per column.

        Events of a stream mostly share a layout (the same keys with the same value types),
        so the Python work per event is a handful of C-level calls: the layout's plan
        (which positions hold numbers, strings, booleans) is worked out once per batch, its
        numbers are gathered with one ``itemgetter``, and only string values are looked at
        one by one (their slot depends on the value). numpy then standardizes every number
        of the batch at once (``_standardize_columns``).

        Without ``update`` the result equals ``_encode``'s bit for bit, in the same slot
        order; with it the stats agree to the last bits (see ``_standardize_columns``).
        Returns None, having changed nothing, for anything but plain dicts of str, int,
        float, bool and None with finite numbers: ``_encode`` handles (and names) the rest.
        """
        max_features = self.max_features
        nids: dict[str, int] = {}  # numeric name -> its index in this batch
        plans: dict[tuple, _Plan] = {}
        plan_list: list[_Plan] = []
        event_plans: list[int] = []  # per event: its plan's index in plan_list
        numbers: list[float] = []
        string_slots: list[int] = []
        boolean_weights: list[float] = []
        slots = self._slots
        slot_of = self._slot
        last_names: tuple = ()
        last_types: tuple = ()
        plan: _Plan | None = None
        for features in batch:
            if type(features) is not dict or len(features) > max_features:
                return None
            values = tuple(features.values())
            names = tuple(features)
            types = tuple(map(type, values))
            if plan is None or names != last_names or types != last_types:
                signature = (names, types)
                plan = plans.get(signature)
                if plan is None:
                    plan = _Plan.of(len(plan_list), names, types, nids, slot_of)
                    if plan is None:
                        return None
                    plans[signature] = plan
                    plan_list.append(plan)
                last_names, last_types = names, types
            event_plans.append(plan.index)
            if plan.numbers is not None:
                numbers.extend(plan.numbers(values))
            for rel, prefix in plan.strings:
                key = prefix + values[rel]
                slot = slots.get(key)
                if slot is None:
                    slot = slot_of(key)
                string_slots.append(slot)
            for rel in plan.boolean_rel:
                boolean_weights.append(1.0 if values[rel] else 0.0)
        n_events = len(batch)
        # Pair r of event i gets the key 2 * (first[i] + r), its bin the next key: ranking the
        # keys restores _encode's order (pairs in dict order, each bin after its number).
        plan_of = np.array(event_plans, dtype=np.intp)
        first = np.zeros(n_events + 1, dtype=np.int64)
        np.cumsum(np.array([p.size for p in plan_list], dtype=np.int64)[plan_of], out=first[1:])
        layout = _Columns(n_events)
        parts_event: list[np.ndarray] = []
        parts_key: list[np.ndarray] = []
        if string_slots or boolean_weights:
            # per event: its string slots, then its boolean slots (the plan's fixed_rel order)
            fixed_event, fixed_rel = _per_event(plan_of, [p.fixed_rel for p in plan_list])
            _, string_at = _per_event(plan_of, [p.fixed_is_string for p in plan_list])
            _, boolean_slots = _per_event(plan_of, [p.boolean_slots for p in plan_list])
            parts_event.append(fixed_event)
            parts_key.append(2 * (first[fixed_event] + fixed_rel))
            layout.fixed_index = np.empty(len(fixed_event), dtype=np.int64)
            layout.fixed_index[string_at] = string_slots
            layout.fixed_index[~string_at] = boolean_slots
            layout.fixed_weight = np.ones(len(fixed_event))
            layout.fixed_weight[~string_at] = boolean_weights
        if numbers:
            try:
                layout.x = np.array(numbers, dtype=np.float64)
            except OverflowError:  # an int beyond float range: _encode names it
                return None
            if not np.isfinite(layout.x).all():  # _encode names it
                return None
            num_event, layout.nid = _per_event(plan_of, [p.num_nid for p in plan_list])
            numeric = list(nids)
            name_slots = np.array([slot_of(name) for name in numeric], dtype=np.int64)
            # Names that share a statistics row form one group, in event order (as _encode
            # folds them one after the other into the same row).
            layout.group_rows, gid_of_name = np.unique(
                name_slots & self._stats_mask, return_inverse=True
            )
            layout.gid = gid_of_name.reshape(-1)[layout.nid]
            layout.value_slots = name_slots[layout.nid]
            if self.numeric_bins:
                layout.bin_slots = np.array([self._bins_of(n) for n in numeric], dtype=np.int64)
            _, num_rel = _per_event(plan_of, [p.num_rel for p in plan_list])
            num_key = 2 * (first[num_event] + num_rel)
            parts_event.append(num_event)
            parts_key.append(num_key)
            if self.numeric_bins:
                parts_event.append(num_event)
                parts_key.append(num_key + 1)
        layout.names = list(dict.fromkeys(name for p in plan_list for name in p.names))
        if parts_key:
            keys = np.concatenate(parts_key)
            occupied = np.zeros(2 * int(first[-1]), dtype=np.int64)
            occupied[keys] = 1
            layout.where = (np.cumsum(occupied) - 1)[keys]
            per_event = np.bincount(np.concatenate(parts_event), minlength=n_events)
            np.cumsum(per_event[:-1], out=layout.offsets[1:])
        return layout

    def _assemble(
        self, layout: _Columns, update: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The (indices, offsets, weights) of a gathered batch: its numbers standardized
        (moving the stats with ``update``), their bins, everything in ``_encode``'s order."""
        n_entries = len(layout.where)
        parts_index: list[np.ndarray] = []
        parts_weight: list[np.ndarray] = []
        if layout.fixed_index is not None and layout.fixed_weight is not None:
            parts_index.append(layout.fixed_index)
            parts_weight.append(layout.fixed_weight)
        if layout.x is not None:
            z = self._standardize_columns(layout.group_rows, layout.gid, layout.x, update)
            if z is None:
                return None
            parts_index.append(layout.value_slots)
            parts_weight.append(z)
            if layout.bin_slots is not None:
                n_bins = self.numeric_bins
                k = ((z + BIN_RANGE) * n_bins / (2.0 * BIN_RANGE)).astype(np.int64)  # int()
                np.clip(k, 0, n_bins - 1, out=k)
                parts_index.append(layout.bin_slots[layout.nid, k])
                parts_weight.append(np.ones(len(z)))
        if update:
            self._note_names(layout.names)
        indices = np.empty(n_entries, dtype=np.int64)
        weights = np.empty(n_entries, dtype=np.float32)
        if n_entries:
            indices[layout.where] = np.concatenate(parts_index)
            weights[layout.where] = np.concatenate(parts_weight)  # the same float64 -> float32
        return indices, layout.offsets.copy(), weights

    def _standardize_columns(
        self, rows: np.ndarray, gid: np.ndarray, x: np.ndarray, update: bool
    ) -> np.ndarray | None:
        """Clipped z of every value ``x`` of group ``gid`` (statistics row ``rows[gid]``).
        With ``update`` the rows move as in ``_encode``; None (nothing changed) when the
        groups are too ragged for the dense running sums to pay."""
        table = self._table
        before = table[rows]  # a copy: [groups, (count, mean, m2)]
        n0, mean0, m2_0 = before[:, 0], before[:, 1], before[:, 2]
        n_groups = len(rows)
        if update:
            counts = np.bincount(gid, minlength=n_groups)
            longest = int(counts.max())
            # Running sums go through a dense [groups, longest] matrix: fine while most
            # names appear in most events, wasteful for thousands of one-off names.
            if n_groups * longest > 4 * len(x) + 4096:
                return None
            low, high = _clamp_bounds(n0, mean0, m2_0)
            order = np.argsort(gid, kind="stable")  # each group's values, in event order
            g = gid[order]
            xr = x[order]
            xs = np.minimum(np.maximum(xr, low[g]), high[g])  # what the statistics see
            starts = np.cumsum(counts) - counts
            pos = np.arange(len(xs)) - starts[g]
            shift = np.where(n0 > 0.0, mean0, xs[starts])
            d = xs - shift[g]
            dense = np.zeros((n_groups, longest))
            dense[g, pos] = d
            s1 = np.cumsum(dense, axis=1)[g, pos]
            dense[g, pos] = d * d
            s2 = np.cumsum(dense, axis=1)[g, pos]
            n = n0[g] + (pos + 1)
            mean = shift[g] + s1 / n
            m2 = np.maximum(m2_0[g] + s2 - s1 * s1 / n, 0.0)
            var = m2 / n
            scale = np.where((n >= 2.0) & (var > 0.0), np.sqrt(np.where(var > 0.0, var, 1.0)), 1.0)
            z_sorted = (xr - mean) / scale
            z = np.empty_like(z_sorted)
            z[order] = z_sorted
            last = starts + counts - 1
            table[rows] = np.stack([n[last], mean[last], m2[last]], axis=1)
        else:
            known = n0 > 0.0
            spread = known & (n0 >= 2.0) & (m2_0 / np.where(known, n0, 1.0) > 0.0)
            var = np.where(spread, m2_0 / np.where(known, n0, 1.0), 1.0)
            # _encode: (x - mean) / sqrt(var) with a spread, x - mean without, x if unseen
            z = x - mean0[gid]
            z = np.where(spread[gid], z / np.sqrt(var)[gid], z)
        np.clip(z, -CLIP, CLIP, out=z)
        return z

    # -- introspection -----------------------------------------------------------------
    def standardize(self, name: str, value: float) -> float:
        """The clipped standardized value of numeric feature ``name`` under current stats."""
        count, mean, m2 = self._table[stable_hash(name, self.n_bits) & self._stats_mask].tolist()
        if count == 0.0:
            z = float(value)
        elif count < 2.0 or m2 <= 0.0:
            z = float(value) - mean
        else:
            z = (float(value) - mean) / math.sqrt(m2 / count)
        return max(-CLIP, min(CLIP, z))

    @property
    def distinct_names(self) -> float:
        """Estimated number of distinct feature names learned from (HyperLogLog, about 1.6%
        standard error), numbers, strings and booleans alike: a client that sends ids as
        feature names shows here, while the statistics stay bounded."""
        return self._names.estimate()

    @property
    def stats_rows_used(self) -> int:
        """Rows of the statistics table holding a numeric feature's values (of
        ``2 ** stats_bits``): how full the hashed space of numeric names is."""
        return int(np.count_nonzero(self._table[:, 0]))

    @property
    def max_state_rows(self) -> int:
        """The most statistics rows a snapshot can hold: ``2 ** stats_bits`` (32 bytes each
        at most, with the row index), whatever the traffic."""
        return 1 << self.stats_bits

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"n_bits": int, "max_features": int, "numeric_bins": int, "stats_bits": int,
        "rows": int64 [R], "stats": float64 [R, 3], "names_sketch": DistinctCounter state}``.

        ``stats`` holds (count, mean, m2) of the statistics rows in use, ``rows`` their
        indices (ascending): R is at most ``2 ** stats_bits``, and a stream with a few
        dozen numeric features stores a few dozen rows.

        Snapshots written before statistics were per slot hold ``"names": [str]`` and
        per-name ``"stats"`` instead; ``load_state_dict`` folds them into rows.
        """
        used = np.flatnonzero(self._table[:, 0])
        return {
            "n_bits": self.n_bits,
            "max_features": self.max_features,
            "numeric_bins": self.numeric_bins,
            "stats_bits": self.stats_bits,
            "rows": torch.from_numpy(used.astype(np.int64)),
            "stats": torch.from_numpy(self._table[used].copy()),
            "names_sketch": self._names.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["n_bits"] != self.n_bits:
            raise ValueError(
                f"snapshot n_bits={state['n_bits']!r} does not match "
                f"featurizer n_bits={self.n_bits}"
            )
        bins = int(state.get("numeric_bins", 0))  # snapshots before bins existed had none
        if bins != self.numeric_bins:
            raise ValueError(
                f"snapshot numeric_bins={bins!r} does not match featurizer "
                f"numeric_bins={self.numeric_bins}"
            )
        self.max_features = int(state.get("max_features", self.max_features))
        self._reset()
        if "names" in state:  # per-name statistics: fold them into their rows
            self._load_per_name(list(state["names"]), state["stats"].tolist())
            return
        stats_bits = int(state["stats_bits"])
        if stats_bits != self.stats_bits:
            raise ValueError(
                f"snapshot stats_bits={stats_bits!r} does not match featurizer "
                f"stats_bits={self.stats_bits}"
            )
        rows = state["rows"].to(torch.int64).numpy()
        stats = state["stats"].to(torch.float64).numpy().reshape(-1, 3)
        fits = len(rows) == 0 or (0 <= rows.min() and rows.max() < len(self._table))
        if len(rows) != len(stats) or not fits:
            raise ValueError("snapshot statistics rows do not fit this featurizer")
        self._table[rows] = stats
        self._names.load_state_dict(state["names_sketch"])

    def _load_per_name(self, names: list[str], stats: list[list[float]]) -> None:
        """Old snapshots: per-name (count, mean, m2), merged per row (Chan et al.'s
        pairwise update) where names share one, and the names counted in the sketch."""
        for name, (count, mean, m2) in zip(names, stats, strict=True):
            row = self._table[stable_hash(name, self.n_bits) & self._stats_mask]
            row[:] = _merge_moments(row.tolist(), [count, mean, m2])
            self._names.add(name)
            self._noted.add(name)


def _merge_moments(a: list[float], b: list[float]) -> list[float]:
    """(count, mean, m2) of two sets of values together (Chan, Golub and LeVeque).

    >>> _merge_moments([2.0, 1.0, 2.0], [2.0, 3.0, 2.0])  # {0, 2} and {2, 4}
    [4.0, 2.0, 8.0]
    >>> _merge_moments([0.0, 0.0, 0.0], [3.0, 5.0, 1.5])
    [3.0, 5.0, 1.5]
    """
    na, ma, m2a = a
    nb, mb, m2b = b
    n = na + nb
    if n == 0.0:
        return [0.0, 0.0, 0.0]
    delta = mb - ma
    return [n, ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n]


def _clamp_bounds(
    count: np.ndarray, mean: np.ndarray, m2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The bounds of the values each statistics row takes in a batch, from the row before
    the batch: ``+-STATS_MAX_ABS``, narrowed to ``mean +- CLIP std`` once the row has
    ``WINSOR_MIN_COUNT`` values and a spread. ``_encode`` inlines the same arithmetic.

    >>> low, high = _clamp_bounds(np.array([0.0, 100.0]), np.array([0.0, 5.0]),
    ...                           np.array([0.0, 400.0]))  # the second: std 2
    >>> low.tolist(), high.tolist()
    ([-1e+100, -15.0], [1e+100, 25.0])
    """
    wide = (count >= WINSOR_MIN_COUNT) & (m2 > 0.0)
    reach = CLIP * np.sqrt(np.where(wide, m2, 0.0) / np.where(wide, count, 1.0))
    low = np.where(wide, np.maximum(mean - reach, -STATS_MAX_ABS), -STATS_MAX_ABS)
    high = np.where(wide, np.minimum(mean + reach, STATS_MAX_ABS), STATS_MAX_ABS)
    return low, high


def _int_to_float(name: object, value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        raise FeatureError(str(name), "integer too large for a float") from None


def _check_value(name: object, value: object) -> tuple[str, Any]:
    """Classify one pair as ("num"|"str"|"bool"|"none", normalized value) or raise."""
    if not isinstance(name, str):
        raise FeatureError(repr(name), f"feature names must be strings, got {type(name).__name__}")
    if value is None:
        return "none", None
    if isinstance(value, bool | np.bool_):
        return "bool", 1.0 if value else 0.0
    if isinstance(value, str):
        return "str", str(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset | bytes | bytearray):
        raise FeatureError(name, f"nested values are not supported ({type(value).__name__})")
    if isinstance(value, int | float) or hasattr(value, "__float__"):
        if hasattr(value, "shape") and getattr(value, "shape", ()) != ():
            raise FeatureError(name, "nested values are not supported (array)")
        try:
            x = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            raise FeatureError(name, f"cannot convert {type(value).__name__} to a number") from None
        if not math.isfinite(x):
            raise FeatureError(name, f"value is not finite ({x})")
        return "num", x
    raise FeatureError(name, f"unsupported type {type(value).__name__}")
