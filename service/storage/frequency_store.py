"""The class-frequency EMA of one model, kept in a Redis hash and updated by one Lua script.

`ema.lua` applies a micro-batch's labels in order and returns the estimates, bit for bit what
`models.frequency.ClassFrequencyEstimator` computes (the tests compare with `==`). The raw
state `{"m", "norm", "count", "last_time"}` goes into every checkpoint and is put back on a
restart or a rollback (`set_state`).
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio as aioredis

from service.storage.client import decode_text
from service.storage.keys import Keys
from service.storage.scripts import Scripts

__all__ = ["FrequencyStore", "initial_ema_state", "is_class_index"]


def initial_ema_state(n_classes: int) -> dict[str, Any]:
    """The EMA raw state before any label (what a fresh estimator holds).

    >>> initial_ema_state(2)
    {'m': [0.0, 0.0], 'norm': 0.0, 'count': 0, 'last_time': None}
    """
    return {"m": [0.0] * n_classes, "norm": 0.0, "count": 0, "last_time": None}


def is_class_index(label: Any, n_classes: int) -> bool:
    """A label as the stream carries it: a plain int in [0, n_classes) (no bool, no float).

    >>> is_class_index(1, 2), is_class_index(2, 2), is_class_index(True, 2), is_class_index(1.0, 2)
    (True, False, False, False)
    """
    return type(label) is int and 0 <= label < n_classes


class FrequencyStore:
    """The EMA hash of one model. n_classes: K, the size of the state."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, scripts: Scripts, n_classes: int) -> None:
        if not (isinstance(n_classes, int) and n_classes >= 2):
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
        self.redis = redis
        self.keys = keys
        self.scripts = scripts
        self.n_classes = n_classes

    async def update(
        self,
        labels: list[int],
        timestamps: list[float] | None,
        decay: float,
        time_half_life: float | None,
        floor: float,
    ) -> tuple[list[float], dict]:
        """Apply labels in order to the EMA in Redis (one Lua call); bit-equal to models.frequency.

        Returns (frequencies, raw state {"m", "norm", "count", "last_time"}). Timestamps
        are used only with time_half_life set, as in ClassFrequencyEstimator.update.
        """
        k = self.n_classes
        for label in labels:
            if not is_class_index(label, k):
                raise ValueError(f"label {label!r} out of range [0, {k})")
        args: list[Any] = [k, repr(float(decay)), repr(float(floor))]
        if time_half_life is None:
            args += ["", "0", len(labels), *labels]
        elif timestamps is None:
            args += [repr(float(time_half_life)), "0", len(labels), *labels]
        else:
            if len(timestamps) != len(labels):
                raise ValueError(
                    f"timestamps has {len(timestamps)} entries for {len(labels)} labels"
                )
            args += [repr(float(time_half_life)), "1", len(labels), *labels]
            for t in timestamps:
                t = float(t)
                if not math.isfinite(t):
                    raise ValueError(f"timestamps must be finite, got {t!r}")
                args.append(repr(t))
        out = await self.scripts.get("ema.lua")(keys=[self.keys.ema], args=args)
        frequencies = [float(v) for v in out[:k]]
        last_time = decode_text(out[2 * k + 2])
        state = {
            "m": [float(v) for v in out[k : 2 * k]],
            "norm": float(out[2 * k]),
            "count": int(out[2 * k + 1]),
            "last_time": float(last_time) if last_time else None,
        }
        return frequencies, state

    async def state(self) -> dict | None:
        """The raw EMA state stored in Redis, or None if none yet."""
        stored = await self.redis.hgetall(self.keys.ema)
        if not stored:
            return None
        last_time = stored.get(b"last_time")
        return {
            "m": [float(stored.get(f"m{c}".encode(), 0.0)) for c in range(self.n_classes)],
            "norm": float(stored.get(b"norm", 0.0)),
            "count": int(stored.get(b"count", 0)),
            "last_time": float(last_time) if last_time else None,
        }

    async def set_state(self, state: dict) -> None:
        """Replace the EMA hash with `state` (a checkpoint's raw state), atomically."""
        m = [float(v) for v in state["m"]]
        if len(m) != self.n_classes:
            raise ValueError(f"EMA state has {len(m)} classes, store has {self.n_classes}")
        mapping: dict[str | bytes, str | int] = {f"m{c}": repr(v) for c, v in enumerate(m)}
        mapping["norm"] = repr(float(state["norm"]))
        mapping["count"] = int(state.get("count", 0))
        if state.get("last_time") is not None:
            mapping["last_time"] = repr(float(state["last_time"]))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.ema)
            pipe.hset(self.keys.ema, mapping=mapping)  # type: ignore[arg-type]
            await pipe.execute()
