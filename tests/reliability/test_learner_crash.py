"""Issue 6 §2: scaled out (two API replicas, two `streambalance worker`s on one Redis), kill -9
the worker holding pending entries; the other reclaims them (XAUTOCLAIM) and applies them
exactly once. An entry that keeps failing goes to the dead-letter stream and to /metrics."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from service.storage.embedded_server import EmbeddedRedis
from service.storage.keys import GROUP, Keys
from tests.reliability.conftest import Proc
from tests.reliability.helpers import make_events, redis_ema, wait_learned

KEYS = Keys("default")
COMMON = {
    "checkpoint_every_seconds": 1.0,
    "claim_idle_ms": 1000,
    "max_deliveries": 3,
    "batch_max_size": 64,
}


def _pending_by_consumer(client: redis.Redis) -> dict[str, int]:
    try:
        rows = client.xinfo_consumers(KEYS.events, GROUP)
    except redis.ResponseError:
        return {}
    return {row["name"].decode(): int(row["pending"]) for row in rows}


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _all_acknowledged(client: redis.Redis) -> bool:
    try:
        groups = client.xinfo_groups(KEYS.events)
    except redis.ResponseError:
        return False
    return any(int(g["pending"]) == 0 and int(g.get("lag") or 0) == 0 for g in groups)


@pytest.mark.slow
def test_killed_worker_entries_are_reclaimed_and_applied_once(
    redis_factory: Callable[..., EmbeddedRedis], service_factory: Callable[..., Proc], tmp_path
) -> None:
    server = redis_factory(data_dir=tmp_path / "redis")
    client = redis.Redis.from_url(server.url)
    workers = {
        name: service_factory(server.url, "worker", name=name, consumer=name, **COMMON)
        for name in ("w1", "w2")
    }
    apis = [service_factory(server.url, name=f"api{i}", role="api", **COMMON) for i in (1, 2)]
    _wait(
        lambda: (
            set(_pending_by_consumer(client)) >= {"w1", "w2"}
            or len(_pending_by_consumer(client)) >= 1
        ),
        60.0,
        "a worker to join the consumer group",
    )
    events = make_events(3000, seed=21, prefix="sc")
    batches = [events[i : i + 20] for i in range(0, len(events), 20)]
    acked = 0
    statuses: dict[int, int] = {}
    killed: dict[str, object] = {}
    lock = threading.Lock()

    def killer() -> None:
        # Kill whichever worker holds pending entries, once the stream is flowing.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not killed:
            pending = _pending_by_consumer(client)
            busy = [(n, c) for n, c in pending.items() if c > 0 and n in workers]
            if busy and acked > 600:
                name, count = max(busy, key=lambda x: x[1])
                workers[name].kill()
                killed.update(name=name, pending_entries=count, after_acked=acked)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    with httpx.Client(timeout=30.0) as http:
        for i, batch in enumerate(batches):
            response = http.post(apis[i % 2].url + "/learn", json={"events": batch})
            with lock:
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 202:
                    acked += len(batch)
            time.sleep(0.01)
    thread.join()
    assert killed, f"no worker had pending entries to kill (statuses {statuses})"
    took = _wait(lambda: _all_acknowledged(client), 60.0, "every entry to be acknowledged")
    final = wait_learned(apis[0].url, len(events), timeout=30.0, settle=3.0)
    other = wait_learned(apis[1].url, len(events), timeout=10.0, settle=0.0)
    ema = redis_ema(client, "default")
    survivor = next(w for n, w in workers.items() if n != killed["name"])
    found = re.findall(
        r"(?:claimed (\d+) stale|replaying (\d+) stream entries of a previous)", survivor.log()
    )
    claimed = sum(int(a or b) for a, b in found)
    client.close()
    outcome = (
        f"sent {len(events)}, acknowledged {acked} (statuses {statuses}); "
        f"killed {killed}; survivor "
        f"claimed {claimed} entries, all acknowledged {took:.1f} s after the stream ended; applied "
        f"(API 1 /state) {final.get('events_learned')}, (API 2) {other.get('events_learned')}; "
        f"EMA count {ema.get('count')}"
    )
    print(outcome)
    assert acked == len(events), outcome
    assert claimed > 0, outcome
    assert final["events_learned"] == len(events) and other["events_learned"] == len(events), (
        outcome
    )
    assert ema["count"] == len(events), outcome


@pytest.mark.slow
def test_an_entry_that_keeps_failing_goes_to_the_dead_letter_stream(
    redis_factory: Callable[..., EmbeddedRedis], service_factory: Callable[..., Proc], tmp_path
) -> None:
    server = redis_factory(data_dir=tmp_path / "redis")
    service = service_factory(
        server.url, name="dl", max_deliveries=2, claim_idle_ms=1000, checkpoint_every_seconds=0.5
    )
    client = redis.Redis.from_url(server.url)
    events = make_events(400, seed=4, prefix="dl")
    rng = random.Random(4)
    with httpx.Client(base_url=service.url, timeout=30.0) as http:
        assert http.post("/learn?wait=true", json={"events": events[:200]}).status_code == 200
        # An entry no learner can decode (e.g. written by a broken producer), between good ones.
        client.xadd(KEYS.events, {"e": b"\x00not json" + rng.randbytes(8)})
        for i in range(200, 400, 20):
            assert http.post("/learn", json={"events": events[i : i + 20]}).status_code == 202
        final = wait_learned(service.url, 400, timeout=45.0, settle=1.0)
        _wait(
            lambda: client.xlen(KEYS.dead) >= 1, 30.0, "the poison entry in the dead-letter stream"
        )
        metrics = http.get("/metrics").text
    dead = client.xlen(KEYS.dead)
    client.close()
    line = next(
        (ln for ln in metrics.splitlines() if ln.startswith("streambalance_dead_letters_total")),
        None,
    )
    outcome = (
        f"400 good events + 1 undecodable entry: applied {final.get('events_learned')}, "
        f"dead-letter stream length {dead}, metric line {line!r}"
    )
    print(outcome)
    assert dead == 1, outcome
    assert line is not None and float(line.split()[-1]) == 1.0, outcome
    assert final["events_learned"] == 400, outcome
