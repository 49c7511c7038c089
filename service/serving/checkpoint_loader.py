"""Loading a checkpoint into the served model, its shadows and its production scores.

Used at start-up, by a standby or API-only replica on each published version, and by the
learner before it replays. The checkpoint's meta names the strategy that serves, so a
restart, a hot reload, a promotion and a rollback all agree on it.
"""

from __future__ import annotations

from typing import Any

from service.serving.production_scoring import ProductionScorer
from service.serving.served_model import ServedModel
from service.serving.shadows import Shadows
from service.serving.trainer_factory import TrainerFactory
from service.storage.checkpoint_store import CheckpointStore

__all__ = ["CheckpointLoader"]


class CheckpointLoader:
    """Puts the latest checkpoint of model `model_name` into `served` (and its companions)."""

    def __init__(
        self,
        checkpoints: CheckpointStore,
        served: ServedModel,
        shadows: Shadows,
        production: ProductionScorer,
        factory: TrainerFactory,
        model_name: str,
    ) -> None:
        self.checkpoints = checkpoints
        self.served = served
        self.shadows = shadows
        self.production = production
        self.factory = factory
        self.model_name = model_name

    async def load_latest(self) -> dict[str, Any] | None:
        """Serve the latest checkpoint (or a fresh model if none); returns its meta or None."""
        served = self.served
        loaded = await self.checkpoints.load()
        if loaded is None:
            if served.trainer is None:
                served.install(self.factory.new(served.champion_strategy))
                await self.shadows.load(served.champion_strategy)
            return None
        data, meta = loaded
        served.champion_strategy = str(meta.get("strategy") or self.factory.configured_strategy)
        try:
            trainer = self.factory.from_bytes(data, served.champion_strategy)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ValueError(
                f"invalid setting: the checkpoint of model {self.model_name!r} does not "
                f"fit the current settings (classes, network, hidden, hash_bits must not change; "
                f"use another STREAMBALANCE_MODEL_NAME): {exc}"
            ) from exc
        served.install(trainer)
        if meta.get("production"):
            self.production.load_state_dict(meta["production"])
        await self.shadows.load(served.champion_strategy)
        served.restore_counters(meta)
        return meta

    def start_fresh(self) -> None:
        """Serve a new, untrained model (a learner with no checkpoint to restore)."""
        self.served.install(self.factory.new(self.served.champion_strategy))
        self.served.model_version = 0
