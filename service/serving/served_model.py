"""The model `/predict` serves: one `StreamTrainer`, its version counters, and the lock.

The learner steps the model on the event loop and requests read it there too; the lock is
for the other threads that read it (the worker's metrics HTTP server renders the model view
in its own thread). Every read or write of the trainer goes through a method here, which
takes the lock: callers never hold it themselves. The trainer is swapped whole (a hot
reload, a promotion, a rollback), so a request sees the old or the new model, never half of
each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from models.trainer import BatchReport, StreamTrainer
from service.errors import NotReady
from service.serving.production_scoring import ProductionScorer

__all__ = ["ServedModel"]

T = TypeVar("T")


class ServedModel:
    """The served trainer of one model and what names it.

    classes: the class names; champion_strategy: the strategy serving at start-up (a
    checkpoint, a promotion or a rollback changes it).
    """

    def __init__(self, classes: Sequence[str], champion_strategy: str) -> None:
        self.classes = list(classes)
        self.trainer: StreamTrainer | None = None
        self.champion_strategy = champion_strategy
        self.model_version = 0  # learner updates applied to the served model
        self.checkpoint_version = 0  # checkpoints written (the store's counter)
        self.checkpoint_time: float | None = None
        self.last_step: Any = None
        self._lock = threading.Lock()

    def require_trainer(self) -> StreamTrainer:
        if self.trainer is None:
            raise NotReady("model: not loaded yet")
        return self.trainer

    def predict(self, features: list[dict[str, Any]]) -> tuple[Any, Any, int]:
        """(calibrated probabilities, labels, model version) from the served model."""
        trainer = self.require_trainer()
        with self._lock:
            probs, labels = trainer.predict(features)
            return probs, labels, self.model_version

    def read(self, reader: Callable[[StreamTrainer], T]) -> T:
        """`reader(trainer)` with the model held still (e.g. a report of its drift monitors)."""
        trainer = self.require_trainer()
        with self._lock:
            return reader(trainer)

    def learn(
        self,
        features: list[dict[str, Any]],
        labels: list[int],
        timestamps: list[float],
        frequencies: list[float],
    ) -> BatchReport:
        """`StreamTrainer.process` (test-then-train) on one micro-batch."""
        trainer = self.require_trainer()
        with self._lock:
            return trainer.process(features, labels, timestamps, frequencies=frequencies)

    def record_step(self, report: BatchReport) -> None:
        """Count one learner update (the model version names it)."""
        self.model_version += 1
        self.last_step = report.step

    def snapshot(self) -> tuple[StreamTrainer, bytes]:
        """(trainer, its bytes) taken under the lock."""
        trainer = self.require_trainer()
        with self._lock:
            return trainer, trainer.to_bytes()

    def swap(self, trainer: StreamTrainer, strategy: str) -> StreamTrainer:
        """Serve `trainer` (with `strategy`) from now on; returns the trainer it replaces.

        One more model version: a client waiting for "the model that applied my events"
        sees the swap as a change of model."""
        with self._lock:
            previous = self.require_trainer()
            self.trainer = trainer
            self.champion_strategy = strategy
            self.model_version += 1
            return previous

    def install(self, trainer: StreamTrainer) -> None:
        """Serve `trainer` (loaded from a checkpoint, or fresh). Replacing the reference is
        atomic: no lock needed."""
        self.trainer = trainer

    def restore_counters(self, meta: dict[str, Any]) -> None:
        """The version counters of the checkpoint whose `meta` this is."""
        self.model_version = int(meta.get("model_version", 0))
        self.checkpoint_version = int(meta.get("version", 0))
        self.checkpoint_time = meta.get("time")

    def view(self, production: ProductionScorer | None = None) -> dict[str, Any] | None:
        """The served model's numbers, for /state, the status history and the Prometheus
        collector; None before a model is loaded."""
        trainer = self.trainer
        if trainer is None:
            return None
        with self._lock:
            return self._view(trainer, production)

    def _view(self, trainer: StreamTrainer, production: ProductionScorer | None) -> dict[str, Any]:
        learner = trainer.learner
        step = self.last_step
        return {
            "classes": self.classes,
            "counts": list(trainer.counts),
            "events_learned": int(trainer.events_learned),
            "frequencies": list(trainer.frequencies),
            "factors": list(trainer.factors),
            "grad_norms": None if step is None else list(step.per_class_grad_norm),
            "steps": int(learner.steps),
            "skipped_steps": int(learner.skipped_steps),
            "clipped_steps": int(learner.clipped_steps),
            "quality": trainer.metrics.report(),
            "signals": trainer.drift.signals(),
            "model_version": self.model_version,
            "checkpoint_version": self.checkpoint_version,
            "checkpoint_time": self.checkpoint_time,
            "strategy": self.champion_strategy,
            "production": production.report() if production and production.scored else None,
            # Issue 16: a client sending ids as feature names shows here (a HyperLogLog
            # estimate); the model's state and its checkpoint stay bounded by the settings.
            "feature_names": learner.featurizer.distinct_names,
            "checkpoint_bytes": trainer.snapshot_bytes or None,  # written or loaded last
        }
