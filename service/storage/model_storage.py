"""All Redis state of one model: its key names and one store per aggregate, on one client.

The client must be a `redis.asyncio.Redis` with `decode_responses=False` (payloads are orjson
bytes). Multi-key writes are atomic: Lua scripts (keys passed explicitly in KEYS) or
MULTI/EXEC transactions, all on keys sharing the model's hash tag (see `storage.keys`).
Several models in one deployment are several `ModelStorage` objects on the same client.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.storage.checkpoint_store import CheckpointStore
from service.storage.client import ping
from service.storage.event_stream import EventStream
from service.storage.frequency_store import FrequencyStore
from service.storage.keys import Keys
from service.storage.prediction_store import PredictionStore
from service.storage.redis_errors import describe_redis_error
from service.storage.scripts import Scripts

__all__ = ["ModelStorage"]


class ModelStorage:
    """The stores of one model.

    redis: the client; model: the model name, the hash tag of all keys; n_classes: K, the
    size of the EMA state; idempotency_ttl_s: how long an event id is remembered.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        model: str,
        n_classes: int,
        idempotency_ttl_s: int = 86400,
    ) -> None:
        self.redis = redis
        self.keys = Keys(model)
        self.scripts = Scripts(redis)
        self.frequencies = FrequencyStore(redis, self.keys, self.scripts, n_classes)
        self.stream = EventStream(redis, self.keys, self.scripts, idempotency_ttl_s)
        self.checkpoints = CheckpointStore(redis, self.keys, self.stream)
        self.predictions = PredictionStore(redis, self.keys, self.scripts)

    async def ping(self) -> bool:
        """True when Redis answers; False on any connection or server error."""
        return await ping(self.redis)

    async def write_problem(self) -> str | None:
        """None when Redis takes a write on this model's slot; else what stops it.

        A PING answers on an out-of-memory server, a read-only replica and a cluster node
        that lost the model's slot alike, while every write fails: readiness writes one small
        key (with a TTL, so eviction may take it) under the model's hash tag instead."""
        try:
            await self.redis.set(self.keys.ready, repr(time.time()), px=60_000)
        except (RedisError, OSError) as exc:
            return describe_redis_error(exc)[1]
        return None
