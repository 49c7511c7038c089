"""Model versions, rollback and promotion: the operator's controls over what `/predict` serves.

Every checkpoint is also archived (`VersionArchive`: the bytes, and a summary with its
prequential metrics); the last `keep_versions` are kept. `rollback` puts an archived version
back as the served and learning model (the answer to a poisoning or a bad drift adaptation);
`promote` makes a shadow challenger the champion. Both swap the served model (a request sees
the old or the new model, never half of each), write a checkpoint at once (so a restart keeps
the choice), append a record to the operations log and log it. Both need the learner in this
process (role "all" or the worker): they talk to it through `LearnerControl`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from service.errors import Conflict, NotFound
from service.observability.logs import log_event
from service.serving.served_model import ServedModel
from service.serving.shadows import Shadows, quality_summary
from service.serving.trainer_factory import TrainerFactory
from service.storage.checkpoint_store import CheckpointStore

__all__ = ["LearnerControl", "ModelControl", "VersionArchive"]

log = logging.getLogger(__name__)


class LearnerControl(Protocol):
    """What operations need from the learner of this process (`service.learner.loop`)."""

    @property
    def leader(self) -> bool: ...

    async def checkpoint(self) -> int: ...

    async def reset_frequencies(self, state: dict[str, Any]) -> None: ...


class VersionArchive:
    """Keeps each checkpoint as a version (a learner's `after_checkpoint` hook)."""

    def __init__(self, checkpoints: CheckpointStore, served: ServedModel, keep: int) -> None:
        self.checkpoints = checkpoints
        self.served = served
        self.keep = keep

    async def save(self, version: int, data: bytes, meta: dict[str, Any]) -> None:
        """Keep checkpoint `version` (bytes + summary) and drop versions beyond `keep`."""
        trainer = self.served.require_trainer()
        summary = {
            "version": version,
            "model_version": meta.get("model_version"),
            "strategy": meta.get("strategy", self.served.champion_strategy),
            "events_learned": meta.get("events_learned"),
            "time": meta.get("time"),
            "stream_id": meta.get("stream_id"),
            "ema": meta.get("ema"),
            "prequential": quality_summary(trainer.metrics.report()),
        }
        await self.checkpoints.archive(version, data, summary, self.keep)


class ModelControl:
    """Promotion, rollback and the listing of versions and operations, for one model.

    learner: the learner of this process, or None (an API-only replica: no promotions).
    """

    def __init__(
        self,
        served: ServedModel,
        shadows: Shadows,
        checkpoints: CheckpointStore,
        factory: TrainerFactory,
        learner: LearnerControl | None,
    ) -> None:
        self.served = served
        self.shadows = shadows
        self.checkpoints = checkpoints
        self.factory = factory
        self.learner = learner

    def describe(self) -> dict[str, Any]:
        """The champion and its challengers, as `GET /models` shows them."""
        served = self.served

        def champion(trainer: Any) -> dict[str, Any]:
            return {
                "name": served.champion_strategy,
                "strategy": served.champion_strategy,
                "role": "champion",
                "events_learned": int(trainer.events_learned),
                "model_version": served.model_version,
                "checkpoint_version": served.checkpoint_version,
                "prequential": quality_summary(trainer.metrics.report()),
            }

        return {"champion": served.read(champion), "shadows": self.shadows.describe()}

    async def versions(self) -> list[dict[str, Any]]:
        """Archived versions, newest first (without their EMA state)."""
        return await self.checkpoints.versions()

    async def operations(self, count: int = 20) -> list[dict[str, Any]]:
        """The latest promotions and rollbacks, newest first."""
        return await self.checkpoints.operations(count)

    def _leading_learner(self) -> LearnerControl:
        learner = self.learner
        if learner is None or not learner.leader:
            raise Conflict(
                "models: this process is not the model's learner; send promotions and rollbacks "
                "to the service that learns (role 'all') or run them where the worker runs"
            )
        return learner

    async def _record(self, record: dict[str, Any]) -> None:
        await self.checkpoints.record_operation(record)
        fields = {k: v for k, v in record.items() if k != "action"}
        log_event(log, record["action"], f"model {record['action']}", **fields)

    async def promote(self, name: str) -> dict[str, Any]:
        """Make shadow `name` the champion; returns the operation record."""
        learner = self._leading_learner()
        served = self.served
        if name == served.champion_strategy:
            raise Conflict(f"name: {name!r} is already the champion")
        if name not in self.shadows.trainers:
            known = ", ".join(self.shadows.trainers) or "none configured (STREAMBALANCE_SHADOWS)"
            raise NotFound(f"name: no shadow challenger {name!r}; shadows: {known}")
        previous = served.champion_strategy
        champion = served.swap(self.shadows.trainers[name], name)
        self.shadows.retire_champion(name, champion, previous)
        version = await learner.checkpoint()
        record = {
            "action": "promotion",
            "champion": name,
            "previous": previous,
            "checkpoint_version": version,
            "model_version": served.model_version,
            "time": time.time(),
        }
        await self._record(record)
        return record

    async def rollback(self, version: int) -> dict[str, Any]:
        """Serve and continue learning from archived checkpoint `version`."""
        learner = self._leading_learner()
        served = self.served
        archived = await self.checkpoints.archived(version)
        if archived is None:
            kept = [v["version"] for v in await self.versions()]
            raise NotFound(f"version: {version} is not kept; kept versions: {kept}")
        data, summary = archived
        strategy = str(summary.get("strategy") or self.factory.configured_strategy)
        trainer = self.factory.from_bytes(data, strategy)
        previous = served.champion_strategy
        current = served.swap(trainer, strategy)
        if strategy != previous:
            self.shadows.retire_champion(strategy, current, previous)
        if summary.get("ema"):
            # The class-frequency EMA goes back too: the learner continues from that point.
            await learner.reset_frequencies(summary["ema"])
        new_version = await learner.checkpoint()
        record = {
            "action": "rollback",
            "to_version": version,
            "strategy": strategy,
            "checkpoint_version": new_version,
            "model_version": served.model_version,
            "time": time.time(),
        }
        await self._record(record)
        return record
