"""Checkpoints of one model: the latest one, the archived versions, the shadows' snapshots and
the log of operator actions (promotions, rollbacks).

A checkpoint is written with the XACK of the stream entries it covers and the version bump in
one MULTI/EXEC, then published on the model's channel. Every checkpoint is also archived
(bytes + a JSON summary), and the last `keep` versions are kept for a rollback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from service.storage.client import decode_text
from service.storage.event_stream import EventStream
from service.storage.keys import GROUP, Keys

__all__ = ["CheckpointStore"]

_OPS_KEPT = 100


class CheckpointStore:
    """Checkpoint I/O of one model; `stream` is the model's event stream (XACK and trim)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, stream: EventStream) -> None:
        self.redis = redis
        self.keys = keys
        self.stream = stream

    # -- the latest checkpoint ---------------------------------------------------------------

    async def save(
        self,
        data: bytes,
        meta: dict,
        ack_ids: list[str],
        *,
        trim: bool = True,
        shadows: dict[str, bytes] | None = None,
    ) -> int:
        """Write checkpoint + meta, XACK the entries it covers and bump the version, in one
        MULTI/EXEC; then PUBLISH the new version (and, with trim, drop acknowledged entries
        from the stream: see `EventStream.trim_acknowledged`). Returns the new version.

        meta: JSON-able values (e.g. stream_id, events_learned, time, ema: the raw EMA state);
        the key "version" is reserved. The version counter lives in the meta hash, so a
        reader of the checkpoint always sees the version that names it. `shadows`: the shadow
        challengers' snapshots by strategy, SET in the same transaction.
        """
        if "version" in meta:
            raise ValueError("meta must not set 'version': the store assigns it")
        mapping = {name: orjson.dumps(value) for name, value in meta.items()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.ckpt, data)
            if mapping:
                pipe.hset(self.keys.ckpt_meta, mapping=mapping)
            pipe.hincrby(self.keys.ckpt_meta, "version", 1)
            for strategy, snapshot in (shadows or {}).items():
                pipe.set(self.keys.shadow(strategy), snapshot)
            if ack_ids:
                pipe.xack(self.keys.events, GROUP, *ack_ids)
            results = await pipe.execute()
        version = int(results[2 if mapping else 1])
        await self.redis.publish(self.keys.channel, version)
        if trim:
            await self.stream.trim_acknowledged()
        return version

    async def load(self) -> tuple[bytes, dict] | None:
        """(checkpoint bytes, meta) read in one transaction, or None if never saved."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.ckpt)
            pipe.hgetall(self.keys.ckpt_meta)
            data, raw_meta = await pipe.execute()
        if data is None:
            return None
        return data, {decode_text(name): orjson.loads(value) for name, value in raw_meta.items()}

    async def latest_version(self) -> int:
        """Version of the latest checkpoint (0 before the first)."""
        return int(await self.redis.hget(self.keys.ckpt_meta, "version") or 0)

    @asynccontextmanager
    async def announcements(self) -> AsyncIterator[PubSub]:
        """A pub/sub connection subscribed to the model's new-version channel; closed on exit."""
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.keys.channel)
            yield pubsub
        finally:
            await pubsub.aclose()

    async def shadow_snapshot(self, strategy: str) -> bytes | None:
        """The stored snapshot of the shadow challenger `strategy`, if any."""
        data = await self.redis.get(self.keys.shadow(strategy))
        return data if isinstance(data, bytes) else None

    # -- archived versions -------------------------------------------------------------------

    async def archive(self, version: int, data: bytes, summary: dict[str, Any], keep: int) -> None:
        """Keep checkpoint `version` (bytes + summary); drop versions beyond the newest `keep`."""
        index = self.keys.versions
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.archived(version), data)
            pipe.hset(index, str(version), orjson.dumps(summary))
            pipe.hkeys(index)
            *_, names = await pipe.execute()
        kept = sorted((int(n) for n in names), reverse=True)
        old = kept[keep:]
        if old:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(index, *[str(v) for v in old])
                pipe.delete(*[self.keys.archived(v) for v in old])
                await pipe.execute()

    async def archived(self, version: int) -> tuple[bytes, dict[str, Any]] | None:
        """(bytes, summary) of archived `version`, read in one transaction; None if not kept."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.archived(version))
            pipe.hget(self.keys.versions, str(version))
            data, raw = await pipe.execute()
        if data is None or raw is None:
            return None
        return data, orjson.loads(raw)

    async def versions(self) -> list[dict[str, Any]]:
        """Summaries of the archived versions, newest first (without their EMA state)."""
        raw = await self.redis.hgetall(self.keys.versions)
        out = []
        for value in raw.values():
            summary = orjson.loads(value)
            summary.pop("ema", None)
            out.append(summary)
        return sorted(out, key=lambda s: s["version"], reverse=True)

    # -- the operations log ------------------------------------------------------------------

    async def record_operation(self, record: dict[str, Any]) -> None:
        """Append a promotion or rollback record (the newest 100 are kept)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self.keys.ops, orjson.dumps(record))
            pipe.ltrim(self.keys.ops, 0, _OPS_KEPT - 1)
            await pipe.execute()

    async def operations(self, count: int = 20) -> list[dict[str, Any]]:
        """The latest promotions and rollbacks, newest first."""
        raw = await self.redis.lrange(self.keys.ops, 0, count - 1)
        return [orjson.loads(r) for r in raw]
