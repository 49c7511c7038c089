"""Trainers of one model by strategy: the settings' configuration with the strategy swapped.

The champion and every shadow challenger share one configuration apart from the strategy;
`strategy_params` apply only to the configured strategy (`config_for`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from models.trainer import StreamTrainer, TrainerConfig

__all__ = ["TrainerFactory", "config_for"]


def config_for(base: TrainerConfig, configured: str, strategy: str) -> TrainerConfig:
    """`base` with another strategy; `strategy_params` kept only for the configured one.

    >>> base = TrainerConfig(classes=["a", "b"], strategy="rescaled")
    >>> config_for(base, "rescaled", "rescaled") is base
    True
    >>> config_for(base, "rescaled", "weighted").strategy
    'weighted'
    """
    if strategy == base.strategy:
        return base
    params = base.strategy_params if strategy == configured else {}
    return dataclasses.replace(base, strategy=strategy, strategy_params=dict(params))


class TrainerFactory:
    """Builds the trainers of one model.

    base_config: returns the settings' `TrainerConfig` (a fresh one per call);
    configured_strategy: the strategy the settings name (the first champion).
    """

    def __init__(self, base_config: Callable[[], TrainerConfig], configured_strategy: str) -> None:
        self.base_config = base_config
        self.configured_strategy = configured_strategy

    def config(self, strategy: str) -> TrainerConfig:
        """The settings' `TrainerConfig` with `strategy`."""
        return config_for(self.base_config(), self.configured_strategy, strategy)

    def new(self, strategy: str) -> StreamTrainer:
        """A fresh trainer with `strategy`."""
        return StreamTrainer(self.config(strategy))

    def from_bytes(self, data: bytes, strategy: str) -> StreamTrainer:
        """A trainer restored from a snapshot, configured with `strategy`."""
        return StreamTrainer.from_bytes(data, self.config(strategy))
