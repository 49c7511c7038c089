"""The logistic-regression step in closed form: what autograd computes, without autograd.

For logits ``z = W x + b`` (W read through EmbeddingBag: event i sums ``v_j W[s_j]`` over its
slots) and the cross-entropy ``l_i = logsumexp(z_i + a) - (z_i + a)[y_i]`` (``a`` a fixed
shift: zero, or logit adjustment's ``tau log prior``), a loss ``L = sum_i c_i l_i`` whose
per-event coefficients ``c_i`` are constants of the step (class weight, per-event cap,
the reduction's 1/B) has the gradients

    dL/dz_i = c_i (softmax(z_i + a) - onehot(y_i))
    dL/db   = sum_i dL/dz_i
    dL/dW[s]   = sum over the occurrences j of slot s of v_j dL/dz_{i(j)}

The functions here compute them in float32 as torch does (bag sums left to right, bias
last; a slot's occurrences summed in input order), so the learner's guards see the same
overflow to infinity as with autograd.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bag_gradients", "bag_logits", "cross_entropy"]


def bag_logits(
    table: np.ndarray, bias: np.ndarray, indices: np.ndarray, offsets: np.ndarray,
    values: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """float32 logits [B, K]: each event's ``sum_j values_j table[indices_j]`` plus ``bias``.

    >>> table = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    >>> bag_logits(table, np.zeros(2, np.float32), np.array([0, 1, 1]), np.array([0, 2, 3]),
    ...            np.array([1.0, 1.0, 0.5], np.float32)).tolist()
    [[1.0, 2.0], [0.0, 1.0], [0.0, 0.0]]
    """
    out = np.zeros((len(offsets), table.shape[1]), dtype=np.float32)
    if indices.size:
        rows = table[indices]
        rows *= values[:, None]
        ends = np.append(offsets[1:], indices.size)
        filled = ends > offsets  # reduceat would give an empty bag its next row
        out[filled] = np.add.reduceat(rows, offsets[filled], axis=0)
    out += bias
    return out


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-event cross-entropy [B] and its gradient on the logits, softmax - onehot [B, K].

    >>> loss, grad = cross_entropy(np.array([[0.0, 0.0], [2.0, 0.0]], np.float32),
    ...                            np.array([1, 0]))
    >>> loss.astype(float).round(4).tolist(), grad.astype(float).round(4).tolist()
    ([0.6931, 0.1269], [[0.5, -0.5], [-0.1192, 0.1192]])
    """
    top = logits.max(axis=1, keepdims=True)
    shifted = logits - top
    exps = np.exp(shifted)
    total = exps.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = np.log(total[:, 0]) - shifted[rows, y]
    grad = exps / total
    grad[rows, y] -= 1.0
    return loss, grad


def bag_gradients(
    indices: np.ndarray, offsets: np.ndarray, values: np.ndarray, logit_grad: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The table's gradient, coalesced: its slots (ascending, once each) and their rows
    [U, K], each the sum of ``v_j dL/dz_{i(j)}`` over the slot's occurrences; and the bias's
    gradient [K]. Autograd gives the rows one per occurrence, and summing duplicates
    (``coalesce``) is the first thing every consumer of it does.

    >>> slots, rows, bias = bag_gradients(np.array([4, 1, 4]), np.array([0, 2]),
    ...                                   np.array([1.0, 2.0, 3.0], np.float32),
    ...                                   np.array([[1.0, -1.0], [0.5, 0.5]], np.float32))
    >>> slots.tolist(), rows.tolist(), bias.tolist()
    ([1, 4], [[2.0, -2.0], [2.5, 0.5]], [1.5, -0.5])
    """
    lengths = np.diff(np.append(offsets, values.size))
    event_of = np.repeat(np.arange(len(offsets)), lengths)
    occurrences = logit_grad[event_of] * values[:, None]
    if not indices.size:
        return indices, occurrences, logit_grad.sum(axis=0)
    order = np.argsort(indices, kind="stable")  # a slot's occurrences stay in input order
    sorted_slots = indices[order]
    first = np.empty(sorted_slots.size, dtype=bool)
    first[0] = True
    np.not_equal(sorted_slots[1:], sorted_slots[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    rows = np.add.reduceat(occurrences[order], starts, axis=0)
    return sorted_slots[starts], rows, logit_grad.sum(axis=0)
