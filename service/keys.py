"""Redis key names of one model, all under the hash tag `sb:{<model>}:`.

The hash tag puts every key of a model in one Redis Cluster slot, so the Lua scripts and
MULTI transactions that touch several of them run unchanged on a cluster or a managed Redis.

>>> keys = Keys("fraud")
>>> keys.events
'sb:{fraud}:events'
>>> keys.idem("tx-1")
'sb:{fraud}:idem:tx-1'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GROUP", "PREFIX", "Keys"]

PREFIX = "sb"
GROUP = "learners"  # the consumer group of the event stream


@dataclass(frozen=True)
class Keys:
    """Every key (and the pub/sub channel) of one model.

    ema        HASH   m0..m{K-1}, norm, count, last_time: the class-frequency EMA state
    events     STREAM consumer group `learners`; field `e` = JSON list of events
    dead       STREAM dead letters (entries delivered too often)
    ckpt       STRING checkpoint bytes
    ckpt_meta  HASH   checkpoint metadata, JSON values; `version` counts checkpoints
    channel    pub/sub channel announcing a new model version
    idem(id)   STRING the stream entry an event id went to (SET NX semantics, TTL)
    pred(id)   STRING features of a served prediction, kept for a late label (TTL)
    """

    model: str

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model or self.model.strip() != self.model:
            raise ValueError(
                f"model name must be a non-empty string without spaces, got {self.model!r}"
            )
        if "{" in self.model or "}" in self.model:
            raise ValueError(f"model name must not contain braces (hash tag), got {self.model!r}")

    @property
    def base(self) -> str:
        return f"{PREFIX}:{{{self.model}}}:"

    @property
    def ema(self) -> str:
        return self.base + "ema"

    @property
    def events(self) -> str:
        return self.base + "events"

    @property
    def dead(self) -> str:
        return self.base + "dead"

    @property
    def ckpt(self) -> str:
        return self.base + "ckpt"

    @property
    def ckpt_meta(self) -> str:
        return self.base + "ckpt:meta"

    @property
    def channel(self) -> str:
        return self.base + "version"

    def idem(self, event_id: str) -> str:
        return f"{self.base}idem:{event_id}"

    def pred(self, prediction_id: str) -> str:
        return f"{self.base}pred:{prediction_id}"
