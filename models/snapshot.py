"""Snapshots: a state dict <-> bytes, safe to load from untrusted storage.

``dumps`` writes ``{"format_version": FORMAT_VERSION, "state": state}`` with ``torch.save``;
``loads`` reads it back with ``torch.load(weights_only=True)``, which only rebuilds tensors
and plain containers/scalars/strings and refuses arbitrary pickled objects. Snapshots
written by an older format version are upgraded in ``_upgrade`` (fields added later get
defaults via ``setdefault``); a newer version than this code knows is refused.

Large 2-D tensors whose rows are mostly all-zero (hashed-feature weights of a linear model,
SparseAdam moments: only slots ever seen are non-zero) are stored as their non-zero rows
plus indices, and rebuilt bit for bit on load; a 2**18-slot model that saw a few thousand
distinct features shrinks from megabytes to kilobytes.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch

__all__ = ["FORMAT_VERSION", "SnapshotError", "dumps", "from_bytes", "loads", "to_bytes"]

FORMAT_VERSION = 1


class SnapshotError(ValueError):
    """Bytes that are not a loadable snapshot."""


def dumps(state: dict) -> bytes:
    """Serialize a state dict (tensors and plain values only).

    >>> loads(dumps({"w": torch.ones(2), "steps": 3}))["steps"]
    3
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, "state": _pack(state)}, buf)
    return buf.getvalue()


def loads(data: bytes) -> dict:
    """Deserialize bytes from ``dumps``; raises SnapshotError for anything else.

    >>> loads(b"not a snapshot")
    Traceback (most recent call last):
    ...
    models.snapshot.SnapshotError: not a snapshot: ...
    """
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SnapshotError(f"not a snapshot: {first_line}") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise SnapshotError("not a snapshot: missing format_version")
    version = payload["format_version"]
    if not isinstance(version, int) or version < 1:
        raise SnapshotError(f"not a snapshot: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format_version {version} is newer than supported {FORMAT_VERSION}"
        )
    try:
        state = _unpack(payload["state"])
    except (KeyError, TypeError, IndexError, RuntimeError) as exc:
        raise SnapshotError(f"not a snapshot: malformed packed tensor ({exc})") from None
    return _upgrade(state, version)


def _upgrade(state: dict, version: int) -> dict:
    # Version 1 is the first format; later versions add their defaults here, e.g.
    # ``if version < 2: state.setdefault("new_field", default)``.
    return state


_PACKED = "__sparse_rows__"
_MIN_ROWS = 1024  # smaller tensors are not worth the indirection


def _pack(obj: Any) -> Any:
    """Replace mostly-zero-row 2-D tensors by ``{_PACKED: 1, shape, rows, values}``."""
    if isinstance(obj, torch.Tensor):
        if obj.ndim == 2 and obj.shape[0] >= _MIN_ROWS and obj.is_floating_point():
            t = obj.detach()
            # signbit keeps -0.0 rows, so the rebuilt tensor is bitwise identical.
            rows = ((t != 0) | torch.signbit(t)).any(dim=1).nonzero().squeeze(1)
            if rows.shape[0] * 2 < t.shape[0]:
                return {_PACKED: 1, "shape": list(t.shape), "rows": rows, "values": t[rows]}
        return obj
    if isinstance(obj, dict):
        return {k: _pack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_pack(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_pack(v) for v in obj)
    return obj


def _unpack(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.get(_PACKED) == 1:
            values = obj["values"]
            out = torch.zeros(obj["shape"], dtype=values.dtype)
            return out.index_copy_(0, obj["rows"], values)
        return {k: _unpack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_unpack(v) for v in obj)
    return obj


# Names used in the plan's layout section.
to_bytes = dumps
from_bytes = loads
