"""Every Redis key name of one model, all under the hash tag `sb:{<model>}:`.

The hash tag puts every key of a model in one Redis Cluster slot, so the Lua scripts and
MULTI transactions that touch several of them run unchanged on a cluster or a managed Redis.
No other module builds a key name: a new key family is added here, with its type and meaning.

>>> keys = Keys("fraud")
>>> keys.events
'sb:{fraud}:events'
>>> keys.idem("tx-1")
'sb:{fraud}:idem:tx-1'
>>> keys.archived(7), keys.shadow("weighted")
('sb:{fraud}:ckpt:v:7', 'sb:{fraud}:shadow:weighted')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GROUP", "PREFIX", "Keys"]

PREFIX = "sb"
GROUP = "learners"  # the consumer group of the event stream


@dataclass(frozen=True)
class Keys:
    """Every key (and the pub/sub channel) of one model.

    ema          HASH   m0..m{K-1}, norm, count, last_time: the class-frequency EMA state
    events       STREAM consumer group `learners`; field `e` = JSON list of events
    dead         STREAM dead letters (entries delivered too often)
    ckpt         STRING checkpoint bytes
    ckpt_meta    HASH   checkpoint metadata, JSON values; `version` counts checkpoints
    channel      pub/sub channel announcing a new model version
    leader       STRING the learner lease (redis-py `Lock`: a token, SET NX PX)
    versions     HASH   archived checkpoint version -> JSON summary
    ops          LIST   promotions and rollbacks, newest first (JSON records)
    archived(v)  STRING bytes of archived checkpoint version v
    shadow(s)    STRING snapshot of the shadow challenger with strategy s
    idem(id)     STRING the stream entry an event id went to (SET NX semantics, TTL)
    pred(id)     STRING features of a served prediction, kept for a late label (TTL)
    served(id)   STRING what was served for a prediction: probabilities, label, version, time (TTL)
    rate(d)      STRING a rate-limit source's theoretical arrival time (d: digest of the source)
    ready        STRING the time of the last readiness probe's write (TTL: it may be evicted)
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

    @property
    def leader(self) -> str:
        return self.base + "leader"

    @property
    def versions(self) -> str:
        return self.base + "versions"

    @property
    def ops(self) -> str:
        return self.base + "ops"

    @property
    def ready(self) -> str:
        return self.base + "ready"

    def archived(self, version: int) -> str:
        return f"{self.base}ckpt:v:{version}"

    def shadow(self, strategy: str) -> str:
        return f"{self.base}shadow:{strategy}"

    def idem(self, event_id: str) -> str:
        return f"{self.base}idem:{event_id}"

    def pred(self, prediction_id: str) -> str:
        return f"{self.base}pred:{prediction_id}"

    def served(self, prediction_id: str) -> str:
        return f"{self.base}served:{prediction_id}"

    def rate(self, digest: str) -> str:
        return f"{self.base}rl:{digest}"
