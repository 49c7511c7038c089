"""All Redis state of one model: its key names and one store per aggregate, on one client.

The client must be a `redis.asyncio.Redis` with `decode_responses=False` (payloads are orjson
bytes). Multi-key writes are atomic: Lua scripts (keys passed explicitly in KEYS) or
MULTI/EXEC transactions, all on keys sharing the model's hash tag (see `storage.keys`).
Several models in one deployment are several `ModelStorage` objects on the same client.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from service.storage.checkpoint_store import CheckpointStore
from service.storage.client import ping
from service.storage.event_stream import EventStream
from service.storage.frequency_store import FrequencyStore
from service.storage.keys import Keys
from service.storage.prediction_store import PredictionStore
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
