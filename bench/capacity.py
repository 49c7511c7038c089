"""Redis capacity: bytes per stored prediction, per idempotency key and per stream entry,
measured on a real server (the embedded valkey-server) with the service's own storage code,
and how many days of each fit in a memory budget.

    python -m bench.capacity                      # 5,000 of each; budgets 1, 4 and 16 GB
    python -m bench.capacity --n 20000 --gb 1 8   # more samples, other budgets

Every record is written by `service.storage` exactly as the service writes it (the
`save_predictions.lua` and `append.lua` scripts, the same JSON), with card-transaction events
of nine features (`service.http.schemas.EXAMPLE_TRANSACTION`, values varied). Two figures
per record: the sum of `MEMORY USAGE` over its keys (what Redis attributes to the key and its
value), and the growth of `used_memory` divided by the count (which adds the key table and
the expiry table: the figure a budget must hold). The tables use the second.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from service.http.schemas import EXAMPLE_TRANSACTION
from service.serving.production_scoring import served_record
from service.storage.embedded_server import EmbeddedRedis
from service.storage.model_storage import ModelStorage

__all__ = ["Footprint", "compact_table", "days_that_fit", "main", "measure", "render"]

GIB = 2**30


@dataclass(frozen=True)
class Footprint:
    """Bytes one record costs Redis: `memory_usage` (MEMORY USAGE of its keys) and `used`
    (growth of INFO used_memory per record)."""

    what: str
    memory_usage: float
    used: float


def _event(rng: random.Random, i: int) -> dict[str, Any]:
    features = dict(EXAMPLE_TRANSACTION)
    features.update(
        amount=round(rng.lognormvariate(3.5, 1.2), 2),
        mcc=rng.choice(["5411", "5812", "5732", "4829", "5541", "5912"]),
        hour=rng.randint(0, 23),
        account_age_days=rng.randint(0, 4000),
        tx_count_1h=rng.randint(0, 30),
        ip_risk=round(rng.random(), 3),
    )
    return {"id": f"tx-{i:08d}-{rng.getrandbits(48):012x}", "features": features, "label": 0}


async def _empty(client: aioredis.Redis) -> None:
    """FLUSHALL SYNC, then wait for lazy frees: valkey frees asynchronously by default
    (lazyfree-lazy-user-flush), which would leave the old keys in the next used_memory."""
    await client.execute_command("FLUSHALL", "SYNC")
    while int((await client.info("memory")).get("lazyfree_pending_objects", 0)):
        await asyncio.sleep(0.01)


async def _used(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def _memory_usage(client: aioredis.Redis, keys: Sequence[str]) -> int:
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)  # 0: every element of a stream, not a sample
        return sum(int(v or 0) for v in await pipe.execute())


async def measure(url: str, n: int, seed: int = 0) -> list[Footprint]:
    """Footprints of n predictions, n idempotency keys and stream entries (single events and
    100-event requests), each family written to an empty server."""
    rng = random.Random(seed)
    client = aioredis.from_url(url, decode_responses=False)
    storage = ModelStorage(client, "capacity", 2)
    keys = storage.keys
    out: list[Footprint] = []
    try:
        # Predictions: features + served record, one script call per 100 (as POST /predict).
        await _empty(client)
        before = await _used(client)
        ids = [f"{rng.getrandbits(128):032x}" for _ in range(n)]
        now = time.time()
        for start in range(0, n, 100):
            chunk = ids[start : start + 100]
            items = [(pid, _event(rng, start + j)["features"]) for j, pid in enumerate(chunk)]
            served = [served_record([0.97, 0.03], 0, 42, now) for _ in chunk]
            await storage.predictions.save_many(items, 604_800, served=served)
        used = (await _used(client) - before) / n
        usage = await _memory_usage(
            client, [k for pid in ids for k in (keys.pred(pid), keys.served(pid))]
        )
        out.append(Footprint("stored prediction (features + served record)", usage / n, used))

        # Stream entries of single-event requests: first without ids (the stream alone), then
        # with ids (the stream and an idempotency key per event); the difference is the key.
        events = [_event(rng, i) for i in range(n)]
        anonymous = [{k: v for k, v in e.items() if k != "id"} for e in events]
        await _empty(client)
        before = await _used(client)
        for event in anonymous:
            await storage.stream.append([event])
        stream_used = (await _used(client) - before) / n
        stream_usage = await _memory_usage(client, [keys.events])
        await _empty(client)
        before = await _used(client)
        for event in events:
            await storage.stream.append([event])
        idem_used = (await _used(client) - before) / n - stream_used
        idem_usage = await _memory_usage(client, [keys.idem(e["id"]) for e in events])
        out.append(Footprint("idempotency key (event id, 1 day TTL)", idem_usage / n, idem_used))
        out.append(
            Footprint(
                "stream entry, per event (single-event requests)", stream_usage / n, stream_used
            )
        )

        # Stream entries of 100-event requests, without ids.
        await _empty(client)
        before = await _used(client)
        for start in range(0, n, 100):
            await storage.stream.append(anonymous[start : start + 100])
        used = (await _used(client) - before) / n
        usage = await _memory_usage(client, [keys.events])
        out.append(Footprint("stream entry, per event (100-event requests)", usage / n, used))
    finally:
        await client.aclose()
    return out


def days_that_fit(budget_bytes: float, bytes_per_record: float, per_second: float) -> float:
    """Days of records arriving at `per_second` that a budget holds.

    >>> round(days_that_fit(2**30, 1000, 10), 2)
    1.24
    """
    return budget_bytes / (bytes_per_record * per_second * 86_400)


def _days(value: float) -> str:
    """A span of days, in the unit that reads best.

    >>> _days(250.0), _days(2.44), _days(0.25), _days(0.01)
    ('250 days', '2.4 days', '6.0 h', '14 min')
    """
    if value >= 100:
        return f"{value:,.0f} days"
    if value >= 1:
        return f"{value:.1f} days"
    hours = value * 24
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"


def render(
    footprints: Sequence[Footprint],
    budgets_gb: Sequence[float],
    rates: Sequence[float],
    n: int,
    server: str,
) -> str:
    """The capacity tables as Markdown."""
    lines = [
        f"Measured on {server} with {n:,} records of each kind "
        f"(`python -m bench.capacity --n {n}`).",
        "",
        "| record | MEMORY USAGE | used_memory growth |",
        "|---|---|---|",
    ]
    for fp in footprints:
        lines.append(f"| {fp.what} | {fp.memory_usage:,.0f} B | {fp.used:,.0f} B |")
    lines += [
        "",
        "Days that fit in a budget, at a steady rate (used_memory growth per record):",
        "",
        "| record | per second | MB per day | "
        + " | ".join(f"{gb:g} GB holds" for gb in budgets_gb)
        + " |",
        "|---|---|---|" + "---|" * len(budgets_gb),
    ]
    for fp in footprints:
        if "100-event" in fp.what:
            continue  # the single-event figure is the larger: it bounds both
        name = fp.what.split(" (")[0]
        for rate in rates:
            per_day = fp.used * rate * 86_400 / 1e6
            days = " | ".join(_days(days_that_fit(gb * GIB, fp.used, rate)) for gb in budgets_gb)
            lines.append(f"| {name} | {rate:g} | {per_day:,.0f} | {days} |")
    lines += ["", f"The same for one budget of {budgets_gb[0]:g} GB (the README's table):", ""]
    lines += compact_table(footprints, budgets_gb[0], rates)
    return "\n".join(lines) + "\n"


def compact_table(
    footprints: Sequence[Footprint], budget_gb: float, rates: Sequence[float]
) -> list[str]:
    """One row per record: its bytes and how long `budget_gb` holds it at each rate."""
    lines = [
        "| record | bytes | "
        + " | ".join(f"{budget_gb:g} GB holds, at {r:,.0f}/s" for r in rates)
        + " |",
        "|---|---|" + "---|" * len(rates),
    ]
    for fp in footprints:
        held = " | ".join(_days(days_that_fit(budget_gb * GIB, fp.used, r)) for r in rates)
        lines.append(f"| {fp.what} | {fp.used:,.0f} | {held} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--n", type=int, default=5000, help="records of each kind")
    parser.add_argument("--gb", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 100.0, 1000.0])
    args = parser.parse_args(argv)
    if args.n < 100 or args.n % 100:
        parser.error("--n must be a multiple of 100, at least 100")
    with EmbeddedRedis(appendonly=False) as server:
        name = asyncio.run(_server_name(server.url))
        footprints = asyncio.run(measure(server.url, args.n))
    sys.stdout.write(render(footprints, args.gb, args.rates, args.n, name))
    return 0


async def _server_name(url: str) -> str:
    client = aioredis.from_url(url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    version = info.get("valkey_version") or info.get("redis_version")
    return f"{info.get('server_name') or 'redis'} {version}"


if __name__ == "__main__":
    raise SystemExit(main())
