"""Model versions, rollback and promotion: the operator's controls over what `/predict` serves.

Every checkpoint is also archived (`sb:{model}:ckpt:v:<version>` bytes, and a summary with its
prequential metrics in the hash `sb:{model}:versions`); the last `keep_versions` are kept.
`rollback` puts an archived version back as the served and learning model (the answer to a
poisoning or a bad drift adaptation); `promote` makes a shadow challenger the champion. Both
swap the model under the model lock (a request sees the old or the new model, never half of
each), write a checkpoint at once (so a restart keeps the choice), append a record to
`sb:{model}:ops` and log it. Both need the learner in this process (role "all" or the worker).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from models.trainer import StreamTrainer
from service.errors import Conflict, NotFound
from service.observability.logs import log_event
from service.shadows import quality_summary

if TYPE_CHECKING:
    from service.deps import Runtime

__all__ = ["Conflict", "NotFound", "archive", "list_versions", "operations", "promote", "rollback"]

log = logging.getLogger(__name__)
_OPS_KEPT = 100


def _key(rt: Runtime, name: str) -> str:
    return rt.store.keys.base + name


async def archive(rt: Runtime, version: int, data: bytes, meta: dict[str, Any]) -> None:
    """Keep checkpoint `version` (bytes + summary) and drop versions beyond `keep_versions`."""
    trainer = rt.require_trainer()
    summary = {
        "version": version,
        "model_version": meta.get("model_version"),
        "strategy": meta.get("strategy", rt.champion_strategy),
        "events_learned": meta.get("events_learned"),
        "time": meta.get("time"),
        "stream_id": meta.get("stream_id"),
        "ema": meta.get("ema"),
        "prequential": quality_summary(trainer.metrics.report()),
    }
    index = _key(rt, "versions")
    async with rt.redis.pipeline(transaction=True) as pipe:
        pipe.set(_key(rt, f"ckpt:v:{version}"), data)
        pipe.hset(index, str(version), orjson.dumps(summary))
        pipe.hkeys(index)
        *_, names = await pipe.execute()
    kept = sorted((int(n) for n in names), reverse=True)
    old = kept[rt.settings.keep_versions :]
    if old:
        async with rt.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(index, *[str(v) for v in old])
            pipe.delete(*[_key(rt, f"ckpt:v:{v}") for v in old])
            await pipe.execute()


async def list_versions(rt: Runtime) -> list[dict[str, Any]]:
    """Archived versions, newest first (without their EMA state)."""
    raw = await rt.redis.hgetall(_key(rt, "versions"))
    out = []
    for value in raw.values():
        summary = orjson.loads(value)
        summary.pop("ema", None)
        out.append(summary)
    return sorted(out, key=lambda s: s["version"], reverse=True)


async def operations(rt: Runtime, count: int = 20) -> list[dict[str, Any]]:
    """The latest promotions and rollbacks, newest first."""
    raw = await rt.redis.lrange(_key(rt, "ops"), 0, count - 1)
    return [orjson.loads(r) for r in raw]


def _learner(rt: Runtime) -> Any:
    learner = rt.learner
    if learner is None or not learner.leader:
        raise Conflict(
            "models: this process is not the model's learner; send promotions and rollbacks "
            "to the service that learns (role 'all') or run them where the worker runs"
        )
    return learner


async def _record(rt: Runtime, record: dict[str, Any]) -> None:
    async with rt.redis.pipeline(transaction=True) as pipe:
        pipe.lpush(_key(rt, "ops"), orjson.dumps(record))
        pipe.ltrim(_key(rt, "ops"), 0, _OPS_KEPT - 1)
        await pipe.execute()
    fields = {k: v for k, v in record.items() if k != "action"}
    log_event(log, record["action"], f"model {record['action']}", **fields)


async def promote(rt: Runtime, name: str) -> dict[str, Any]:
    """Make shadow `name` the champion; returns the operation record."""
    learner = _learner(rt)
    if name == rt.champion_strategy:
        raise Conflict(f"name: {name!r} is already the champion")
    if name not in rt.shadows.trainers:
        known = ", ".join(rt.shadows.trainers) or "none configured (STREAMBALANCE_SHADOWS)"
        raise NotFound(f"name: no shadow challenger {name!r}; shadows: {known}")
    previous = rt.champion_strategy
    with rt.model_lock:
        champion = rt.require_trainer()
        rt.trainer = rt.shadows.swap(name, champion, previous)
        rt.champion_strategy = name
        rt.model_version += 1
    version = await learner.checkpoint()
    record = {
        "action": "promotion",
        "champion": name,
        "previous": previous,
        "checkpoint_version": version,
        "model_version": rt.model_version,
        "time": time.time(),
    }
    await _record(rt, record)
    return record


async def rollback(rt: Runtime, version: int) -> dict[str, Any]:
    """Serve and continue learning from archived checkpoint `version`."""
    learner = _learner(rt)
    index = _key(rt, "versions")
    async with rt.redis.pipeline(transaction=True) as pipe:
        pipe.get(_key(rt, f"ckpt:v:{version}"))
        pipe.hget(index, str(version))
        data, raw = await pipe.execute()
    if data is None or raw is None:
        kept = [v["version"] for v in await list_versions(rt)]
        raise NotFound(f"version: {version} is not kept; kept versions: {kept}")
    summary = orjson.loads(raw)
    strategy = str(summary.get("strategy") or rt.settings.strategy)
    trainer = StreamTrainer.from_bytes(data, rt.trainer_config(strategy))
    previous = rt.champion_strategy
    with rt.model_lock:
        current = rt.require_trainer()
        if strategy != previous:
            rt.shadows.trainers.pop(strategy, None)
            rt.shadows.trainers[previous] = current
        rt.trainer = trainer
        rt.champion_strategy = strategy
        rt.model_version += 1
    if summary.get("ema"):
        # The class-frequency EMA goes back too: the learner continues from that point.
        await rt.store.set_ema_state(summary["ema"])
        learner.ema_state = summary["ema"]
    new_version = await learner.checkpoint()
    record = {
        "action": "rollback",
        "to_version": version,
        "strategy": strategy,
        "checkpoint_version": new_version,
        "model_version": rt.model_version,
        "time": time.time(),
    }
    await _record(rt, record)
    return record
