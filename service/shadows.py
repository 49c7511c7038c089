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

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from models.trainer import StreamTrainer, TrainerConfig

if TYPE_CHECKING:
    from service.deps import Runtime

__all__ = ["Shadows", "config_for", "quality_summary"]

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


def config_for(base: TrainerConfig, configured: str, strategy: str) -> TrainerConfig:
    """`base` with another strategy; `strategy_params` kept only for the configured one."""
    if strategy == base.strategy:
        return base
    params = base.strategy_params if strategy == configured else {}
    return dataclasses.replace(base, strategy=strategy, strategy_params=dict(params))


class Shadows:
    """The challengers of one runtime, by strategy name."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.trainers: dict[str, StreamTrainer] = {}
        self.failures: dict[str, int] = {}

    def names(self, champion: str) -> list[str]:
        """Challenger strategies when `champion` serves (configured order, no duplicates)."""
        settings = self.rt.settings
        wanted = list(settings.shadows)
        if wanted or champion != settings.strategy:
            wanted.append(settings.strategy)
        out: list[str] = []
        for name in wanted:
            if name != champion and name not in out:
                out.append(name)
        return out

    async def load(self, champion: str) -> None:
        """(Re)build the challengers from their stored snapshots, fresh where there is none."""
        trainers: dict[str, StreamTrainer] = {}
        for name in self.names(champion):
            config = self.rt.trainer_config(name)
            data = await self.rt.storage.checkpoints.shadow_snapshot(name)
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

    def swap(self, name: str, champion: StreamTrainer, champion_strategy: str) -> StreamTrainer:
        """Take challenger `name` out and put the current champion in under its strategy."""
        challenger = self.trainers.pop(name)
        self.trainers[champion_strategy] = champion
        return challenger

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
