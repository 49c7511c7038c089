"""Prediction kernels on plain arrays: the networks' forward pass without torch.

For one event, autograd bookkeeping and module dispatch cost more than the arithmetic (a
hashed logistic regression is a sum of a few dozen table rows). These kernels compute the
same function from the parameters as plain numpy arrays:

* ``export_weights(network)`` gives the parameters by name, as numpy views of the live
  tensors (they follow every in-place update of the optimizer), float32:
  ``"table"`` [n_inputs, D] (the EmbeddingBag: D = K for logreg, hidden[0] for the MLP),
  ``"bias"`` [D], then for each Linear layer i = 1, 2, ... of the MLP's head
  ``"weight{i}"`` [out, in] and ``"bias{i}"`` [out], each after a ReLU.
* ``predict_proba(weights, indices, offsets, values)`` gives the softmax [B, K] (float64) of
  events in EmbeddingBag form (the featurizer's ``encode`` lists, or a FeatureBatch's
  arrays).
* ``pack_weights`` lays the arrays out in one buffer (``weights_nbytes`` long) and
  ``unpack_weights`` rebuilds views from that buffer and the layout: how another process
  reads a published model from shared memory.

Arithmetic: values are rounded to float32 (as the torch path feeds them), products and
sums are float64 in index order, bias last. That is at least as exact as torch's float32
path; the two agree to 1e-6 in probability (tests/unit/test_fast_predict.py), and a batch
of up to ``PLAIN_MAX_EVENTS`` events of a linear model is computed in plain Python floats,
event by event, which gives every event the same bits whatever batch it comes in.
"""

from __future__ import annotations

import array
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from models.networks import MLP, LogisticRegression

__all__ = [
    "PLAIN_MAX_EVENTS",
    "export_weights",
    "pack_weights",
    "predict_proba",
    "unpack_weights",
    "weights_nbytes",
]

# Up to this many events, a linear model (no hidden layer) is evaluated in plain Python:
# about 5 µs an event, against numpy's fixed cost of about 15 µs a call.
PLAIN_MAX_EVENTS = 4

Weights = Mapping[str, np.ndarray]
_ALIGN = 64  # bytes: each array of a packed buffer starts on a cache line


def export_weights(network: torch.nn.Module) -> dict[str, np.ndarray]:
    """The parameters of a ``LogisticRegression`` or ``MLP`` as named numpy views (no copy).

    >>> from models.networks import build_network
    >>> {k: v.shape for k, v in export_weights(build_network("logreg", 16, 3)).items()}
    {'table': (16, 3), 'bias': (3,)}
    >>> {k: v.shape for k, v in export_weights(build_network("mlp", 16, 2, (4,))).items()}
    {'table': (16, 4), 'bias': (4,), 'weight1': (2, 4), 'bias1': (2,)}
    """
    pairs: list[tuple[str, torch.Tensor]]
    if isinstance(network, LogisticRegression):
        pairs = [("table", network.linear.weight), ("bias", network.bias)]
    elif isinstance(network, MLP):
        pairs = [("table", network.embed.weight), ("bias", network.embed_bias)]
        layers = [m for m in network.head if isinstance(m, torch.nn.Linear)]
        for i, layer in enumerate(layers, start=1):
            pairs += [(f"weight{i}", layer.weight), (f"bias{i}", layer.bias)]
    else:
        raise TypeError(f"no kernel for {type(network).__name__}")
    return {name: p.detach().numpy() for name, p in pairs}


def _depth(weights: Weights) -> int:
    depth = 0
    while f"weight{depth + 1}" in weights:
        depth += 1
    return depth


def predict_proba(
    weights: Weights,
    indices: Sequence[int] | np.ndarray,
    offsets: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Softmax [B, K] (float64) of B events: event i owns ``indices[offsets[i]:offsets[i+1]]``
    and their ``values`` (the last event runs to the end), as EmbeddingBag reads them.

    >>> w = {"table": np.array([[1.0, 0.0], [0.0, 2.0]], np.float32),
    ...      "bias": np.zeros(2, np.float32)}
    >>> predict_proba(w, [0, 1, 1], [0, 2], [1.0, 1.0, 0.5]).round(4).tolist()
    [[0.2689, 0.7311], [0.2689, 0.7311]]
    >>> predict_proba(w, [], [0], []).tolist()  # an empty bag: the bias alone
    [[0.5, 0.5]]
    """
    n_events = len(offsets)
    if n_events <= PLAIN_MAX_EVENTS and not _depth(weights):
        return _linear_plain(weights, _as_list(indices), _as_list(offsets), _as_list(values))
    return _softmax(_logits(weights, indices, offsets, values))


def _as_list(values: Sequence | np.ndarray) -> list:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _linear_plain(
    weights: Weights, indices: list[int], offsets: list[int], values: list[float]
) -> np.ndarray:
    """``predict_proba`` of a linear model in plain floats, event by event."""
    table = weights["table"]
    k = table.shape[1]
    flat = np.ascontiguousarray(table).reshape(-1).data  # a memoryview: items are floats
    bias = weights["bias"].tolist()
    rounded = array.array("f", values).tolist()  # float32, as torch's inputs
    ends = [*offsets[1:], len(indices)]
    out = []
    for start, end in zip(offsets, ends, strict=True):
        if k == 2:  # the usual binary model, unrolled: half the interpreter's work
            a0 = a1 = 0.0
            for j in range(start, end):
                base = 2 * indices[j]
                x = rounded[j]
                a0 += x * flat[base]
                a1 += x * flat[base + 1]
            acc = [a0, a1]
        else:
            acc = [0.0] * k
            for j in range(start, end):
                base = indices[j] * k
                x = rounded[j]
                for c in range(k):
                    acc[c] += x * flat[base + c]
        logits = [a + b for a, b in zip(acc, bias, strict=True)]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = 0.0
        for e in exps:  # left to right, as numpy sums a short row
            total += e
        out.append([e / total for e in exps])
    return np.array(out, dtype=np.float64).reshape(len(offsets), k)


def _logits(
    weights: Weights,
    indices: Sequence[int] | np.ndarray,
    offsets: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """float64 logits [B, K]: the bag sums, the bias, then each ReLU + Linear layer."""
    table = weights["table"]
    idx = np.asarray(indices, dtype=np.intp)
    starts = np.asarray(offsets, dtype=np.intp)
    x = np.asarray(values, dtype=np.float32).astype(np.float64)
    h = np.zeros((len(starts), table.shape[1]))
    if idx.size:
        rows = table[idx].astype(np.float64)
        rows *= x[:, None]
        ends = np.append(starts[1:], idx.size)
        filled = ends > starts  # reduceat would give an empty bag its next row
        h[filled] = np.add.reduceat(rows, starts[filled], axis=0)
    h += weights["bias"]
    for i in range(1, _depth(weights) + 1):
        np.maximum(h, 0.0, out=h)
        h = h @ weights[f"weight{i}"].T.astype(np.float64) + weights[f"bias{i}"]
    return h


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _layout(weights: Weights) -> list[tuple[str, int, tuple[int, ...]]]:
    out, offset = [], 0
    for name, arr in weights.items():
        out.append((name, offset, tuple(arr.shape)))
        offset += -(-arr.nbytes // _ALIGN) * _ALIGN
    return out


def weights_nbytes(weights: Weights) -> int:
    """Bytes a ``pack_weights`` buffer needs for these arrays.

    >>> weights_nbytes({"table": np.zeros((3, 2), np.float32), "bias": np.zeros(2, np.float32)})
    128
    """
    name, offset, shape = _layout(weights)[-1]
    return offset + -(-weights[name].nbytes // _ALIGN) * _ALIGN


def pack_weights(
    weights: Weights, buffer: memoryview | bytearray
) -> tuple[dict[str, np.ndarray], list[tuple[str, int, tuple[int, ...]]]]:
    """Copy float32 ``weights`` into ``buffer``; their views on it and the layout
    (name, byte offset, shape) that ``unpack_weights`` needs in another process."""
    layout = _layout(weights)
    views = unpack_weights(buffer, layout)
    for name, view in views.items():
        view[...] = weights[name]
    return views, layout


def unpack_weights(
    buffer: memoryview | bytearray, layout: Sequence[tuple[str, int, Sequence[int]]]
) -> dict[str, np.ndarray]:
    """Views (no copy) of the float32 arrays that ``pack_weights`` wrote into ``buffer``.

    >>> w = {"table": np.arange(6, dtype=np.float32).reshape(3, 2), "bias": np.ones(2, np.float32)}
    >>> buf = bytearray(weights_nbytes(w))
    >>> views, layout = pack_weights(w, buf)
    >>> unpack_weights(buf, layout)["table"].tolist()
    [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    """
    out = {}
    for name, offset, shape in layout:
        count = int(np.prod(shape)) if len(shape) else 1
        flat = np.frombuffer(buffer, dtype=np.float32, count=count, offset=offset)
        out[name] = flat.reshape(tuple(shape))
    return out
