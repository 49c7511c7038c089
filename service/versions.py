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

from models.trainer import StreamTrainer
from service.errors import Conflict, NotFound
from service.observability.logs import log_event
from service.shadows import quality_summary

if TYPE_CHECKING:
    from service.deps import Runtime

__all__ = ["Conflict", "NotFound", "archive", "list_versions", "operations", "promote", "rollback"]

log = logging.getLogger(__name__)


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
    await rt.storage.checkpoints.archive(version, data, summary, rt.settings.keep_versions)


async def list_versions(rt: Runtime) -> list[dict[str, Any]]:
    """Archived versions, newest first (without their EMA state)."""
    return await rt.storage.checkpoints.versions()


async def operations(rt: Runtime, count: int = 20) -> list[dict[str, Any]]:
    """The latest promotions and rollbacks, newest first."""
    return await rt.storage.checkpoints.operations(count)


def _learner(rt: Runtime) -> Any:
    learner = rt.learner
    if learner is None or not learner.leader:
        raise Conflict(
            "models: this process is not the model's learner; send promotions and rollbacks "
            "to the service that learns (role 'all') or run them where the worker runs"
        )
    return learner


async def _record(rt: Runtime, record: dict[str, Any]) -> None:
    await rt.storage.checkpoints.record_operation(record)
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
    archived = await rt.storage.checkpoints.archived(version)
    if archived is None:
        kept = [v["version"] for v in await list_versions(rt)]
        raise NotFound(f"version: {version} is not kept; kept versions: {kept}")
    data, summary = archived
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
        await rt.storage.frequencies.set_state(summary["ema"])
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
