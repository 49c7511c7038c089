"""Shadow challengers: extra `StreamTrainer`s, other strategies, trained on the champion's batches.

`STREAMBALANCE_SHADOWS=weighted,logit_adjusted` builds one trainer per listed strategy with
the champion's configuration (only the strategy differs; its `strategy_params` only apply to
the configured strategy). The learner feeds every micro-batch to each shadow right after the
champion, with the same class frequencies from Redis, so their prequential metrics compare
like for like. Shadows never serve. Their snapshots are written in the champion's checkpoint
transaction (`sb:{model}:shadow:<strategy>`), so a restart resumes them too.

After a promotion the champion's old strategy becomes a shadow: the challengers are always
`settings.shadows + [settings.strategy]` minus the strategy that currently serves.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from models.trainer import StreamTrainer
from service.serving.trainer_factory import TrainerFactory

__all__ = ["Shadows", "quality_summary"]

log = logging.getLogger(__name__)

_SUMMARY_KEYS = (
    "n", "g_mean", "balanced_accuracy", "pr_auc", "roc_auc", "log_loss", "macro_f1",
    "recall", "precision",
)  # fmt: skip


def quality_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The comparable part of a `PrequentialMetrics.report()` (no confusion matrix).

    >>> quality_summary({"n": 3, "g_mean": 0.5, "confusion_matrix": {}})
    {'n': 3, 'g_mean': 0.5}
    """
    return {key: report[key] for key in _SUMMARY_KEYS if key in report}


class Shadows:
    """The challengers of one model, by strategy name.

    factory: builds trainers by strategy; configured: the shadow strategies the settings list;
    load_snapshot: the stored snapshot of a challenger, by strategy (None: start fresh).
    """

    def __init__(
        self,
        factory: TrainerFactory,
        configured: Sequence[str],
        load_snapshot: Callable[[str], Awaitable[bytes | None]],
    ) -> None:
        self.factory = factory
        self.configured = list(configured)
        self.load_snapshot = load_snapshot
        self.trainers: dict[str, StreamTrainer] = {}
        self.failures: dict[str, int] = {}

    def names(self, champion: str) -> list[str]:
        """Challenger strategies when `champion` serves (configured order, no duplicates)."""
        first = self.factory.configured_strategy
        wanted = list(self.configured)
        if wanted or champion != first:
            wanted.append(first)
        out: list[str] = []
        for name in wanted:
            if name != champion and name not in out:
                out.append(name)
        return out

    async def load(self, champion: str) -> None:
        """(Re)build the challengers from their stored snapshots, fresh where there is none."""
        trainers: dict[str, StreamTrainer] = {}
        for name in self.names(champion):
            config = self.factory.config(name)
            data = await self.load_snapshot(name)
            trainer = None
            if data is not None:
                try:
                    trainer = StreamTrainer.from_bytes(data, config)
                except (ValueError, RuntimeError, KeyError) as exc:
                    log.warning("shadow %s: snapshot unusable (%s); starting fresh", name, exc)
            trainers[name] = trainer if trainer is not None else StreamTrainer(config)
        self.trainers = trainers

    def process(
        self,
        features: Sequence[Mapping[str, Any]],
        labels: Sequence[int],
        timestamps: Sequence[float],
        frequencies: Sequence[float],
    ) -> None:
        """Train every challenger on the batch; a failing one is logged, never fatal."""
        for name, trainer in list(self.trainers.items()):
            try:
                trainer.process(features, labels, timestamps, frequencies=frequencies)
            except Exception:
                self.failures[name] = self.failures.get(name, 0) + 1
                log.exception("shadow %s: a micro-batch failed", name)

    def snapshots(self) -> dict[str, bytes]:
        """Strategy -> snapshot bytes of every challenger (for the checkpoint transaction)."""
        return {name: t.to_bytes() for name, t in self.trainers.items()}

    def retire_champion(
        self, promoted: str, champion: StreamTrainer, champion_strategy: str
    ) -> None:
        """After `promoted` took over serving: it is no challenger any more, and the champion
        it replaced becomes one under its strategy."""
        self.trainers.pop(promoted, None)
        self.trainers[champion_strategy] = champion

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "strategy": name,
                "role": "shadow",
                "events_learned": int(t.events_learned),
                "failures": self.failures.get(name, 0),
                "prequential": quality_summary(t.metrics.report()),
            }
            for name, t in self.trainers.items()
        ]
