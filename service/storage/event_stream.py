"""The event stream of one model: appends with idempotency, consumer-group reads, recovery.

`POST /learn` appends each request's events as ONE stream entry (`append.lua`: duplicates by
event id dropped, then XADD, in one round trip); the learner reads entries through the
consumer group `learners`, takes back what a dead learner left pending, and dead-letters
entries delivered too often. Acknowledged (XACK) entries are covered by a checkpoint and
trimmed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from service.storage.client import decode_text
from service.storage.keys import GROUP, Keys
from service.storage.scripts import Scripts

__all__ = ["AppendResult", "Entry", "EventStream"]

Entry = tuple[str, list[dict] | None]  # (stream entry id, its events; None: undecodable)


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    duplicates: int
    entry_id: str | None  # None when nothing new was stored


def _decode_entries(raw: list) -> list[Entry]:
    """XREADGROUP/XAUTOCLAIM entries -> (id, events); an entry deleted meanwhile has no fields."""
    out: list[Entry] = []
    for entry_id, fields in raw:
        payload = fields.get(b"e") if fields else None
        try:
            events = orjson.loads(payload) if payload else []
        except orjson.JSONDecodeError:  # a broken producer: the learner dead-letters it
            events = None
        out.append((decode_text(entry_id), events))
    return out


def _entries_of(response: Any) -> list:
    """Entries of our one stream from an XREADGROUP reply (RESP2 list or RESP3 dict shape)."""
    if not response:
        return []
    if isinstance(response, dict):
        return next(iter(response.values()))
    return response[0][1]


class EventStream:
    """Stream operations of one model; every method is one round trip unless it says otherwise.

    idempotency_ttl_s: how long an event id is remembered for deduplication.
    """

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, scripts: Scripts, idempotency_ttl_s: int = 86400
    ) -> None:
        if not (isinstance(idempotency_ttl_s, int) and idempotency_ttl_s > 0):
            raise ValueError(f"idempotency_ttl_s must be an int > 0, got {idempotency_ttl_s!r}")
        self.redis = redis
        self.keys = keys
        self.scripts = scripts
        self.idempotency_ttl_s = idempotency_ttl_s

    async def append(self, events: list[dict]) -> AppendResult:
        """Store a request's events as ONE stream entry, dropping ids already seen (one round trip).

        Events with an "id" are deduplicated (against earlier calls and within this call);
        events without one never are. Acknowledged means stored in the stream.
        """
        if not events:
            return AppendResult(0, 0, None)
        keys = [self.keys.events]
        slots: dict[str, int] = {}
        args: list[Any] = [self.idempotency_ttl_s, len(events)]
        for event in events:
            event_id = event.get("id")
            slot = 0
            if event_id is not None:
                event_id = str(event_id)  # 7 and "7" name the same key, so the same slot
                known = slots.get(event_id)
                if known is None:
                    keys.append(self.keys.idem(event_id))
                    known = slots[event_id] = len(keys)  # Lua KEYS are 1-based
                slot = known
            args.append(slot)
            args.append(orjson.dumps(event))
        # Group commit: one round trip for the appends of all concurrent requests.
        accepted, duplicates, entry_id = await self.scripts.grouped("append.lua", keys, args)
        return AppendResult(
            int(accepted), int(duplicates), None if entry_id is None else decode_text(entry_id)
        )

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group (from the first entry) if missing."""
        try:
            await self.redis.xgroup_create(self.keys.events, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_batch(self, consumer: str, count: int, block_ms: int) -> list[Entry]:
        """New entries for `consumer` (XREADGROUP '>'); waits up to block_ms (<= 0: no wait)."""
        response = await self.redis.xreadgroup(
            GROUP,
            consumer,
            {self.keys.events: ">"},
            count=count,
            block=block_ms if block_ms > 0 else None,
        )
        return _decode_entries(_entries_of(response))

    async def pending(self, consumer: str, page: int = 1000) -> list[Entry]:
        """All entries delivered to `consumer` and not acknowledged (its PEL), oldest first.

        Used on restart: replay what the last checkpoint did not cover.
        """
        out: list[Entry] = []
        start = "0"
        while True:
            response = await self.redis.xreadgroup(
                GROUP, consumer, {self.keys.events: start}, count=page
            )
            entries = _decode_entries(_entries_of(response))
            out.extend(entries)
            if len(entries) < page:
                return out
            start = entries[-1][0]

    async def claim_stale(
        self, consumer: str, min_idle_ms: int, max_deliveries: int, count: int = 100
    ) -> list[Entry]:
        """Take over entries idle for min_idle_ms in other consumers' PELs (XAUTOCLAIM).

        An entry delivered more than max_deliveries times (a poison entry) is moved to the
        dead-letter stream and acknowledged in one transaction instead of being returned.
        Three round trips; this is the recovery path, not the hot path.
        """
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, got {max_deliveries!r}")
        reply = await self.redis.xautoclaim(
            self.keys.events, GROUP, consumer, min_idle_ms, start_id="0-0", count=count
        )
        claimed = [(entry_id, fields) for entry_id, fields in reply[1] if entry_id is not None]
        if not claimed:
            return []
        details = await self.redis.xpending_range(
            self.keys.events,
            GROUP,
            min=claimed[0][0],
            max=claimed[-1][0],
            count=len(claimed),
            consumername=consumer,
        )
        deliveries = {decode_text(d["message_id"]): int(d["times_delivered"]) for d in details}  # type: ignore[arg-type]
        live, dead = [], []
        for entry_id, fields in claimed:
            ident = decode_text(entry_id)
            if deliveries.get(ident, 0) > max_deliveries:
                dead.append((ident, fields))
            else:
                live.append((entry_id, fields))
        if dead:
            async with self.redis.pipeline(transaction=True) as pipe:
                for ident, fields in dead:
                    pipe.xadd(
                        self.keys.dead,
                        {
                            b"e": (fields or {}).get(b"e", b"[]"),
                            b"entry": ident,
                            b"deliveries": deliveries[ident],
                            b"consumer": consumer,
                            b"time": repr(time.time()),
                        },
                    )
                pipe.xack(self.keys.events, GROUP, *[ident for ident, _ in dead])
                await pipe.execute()
        return _decode_entries(live)

    async def dead_letters(self) -> int:
        """Number of entries in the dead-letter stream."""
        return int(await self.redis.xlen(self.keys.dead))

    async def lag(self) -> int:
        """Entries not yet acknowledged: pending in the group plus never delivered."""
        try:
            groups = await self.redis.xinfo_groups(self.keys.events)
        except ResponseError:  # no stream yet
            return 0
        for group in groups:
            if decode_text(group["name"]) != GROUP:
                continue
            lag = group.get("lag")
            if lag is None:  # unknown after deletions: count what follows last-delivered
                after = "(" + decode_text(group["last-delivered-id"])
                lag = len(await self.redis.xrange(self.keys.events, min=after, max="+") or [])
            return int(group["pending"]) + int(lag)
        return int(await self.redis.xlen(self.keys.events))

    async def trim_acknowledged(self) -> int:
        """Delete stream entries that every consumer has acknowledged; returns how many.

        Everything older than the oldest pending entry (or, with none pending, than the
        last delivered one) was delivered and acknowledged: a checkpoint covers it, so the
        stream need not keep it. Safe without a transaction: entries only move from
        undelivered to pending to acknowledged, and new ones get larger ids.
        """
        try:
            groups = await self.redis.xinfo_groups(self.keys.events)
        except ResponseError:
            return 0
        group = next((g for g in groups if decode_text(g["name"]) == GROUP), None)
        if group is None:
            return 0
        summary = await self.redis.xpending(self.keys.events, GROUP)
        oldest = summary["min"] if summary["pending"] else group["last-delivered-id"]
        if decode_text(oldest) == "0-0":
            return 0
        return int(await self.redis.xtrim(self.keys.events, minid=oldest, approximate=False))
