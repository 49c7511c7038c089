"""Issue 16 item 3 and issue 18 ("soak extended"): a bounded soak (SOAK_SECONDS, default 150)
of mixed load against a `streambalance serve` child on loopback:

* single-event and 50-event `POST /learn`, a share of them resent (duplicate ids);
* `GET /predict` and 10-event `POST /predict`, and late labels for some of those predictions;
* one learned event in ten carrying ten feature names that never repeat (a client sending
  ids as keys).

Sampled every 2 s: the service's resident memory, Redis `used_memory` and the checkpoint's
size. After a warm-up all three must be flat, there must be no error, every accepted event
learned, every duplicate counted, and the p99 latency of each kind steady.

The configuration makes a steady state reachable within minutes: stored predictions live
20 s and event ids 30 s (what Redis holds is then rate x TTL; with the 7-day default it is
the memory budget that bounds it, see test_redis_memory.py), and `HASH_BITS=10` (1,024
statistics rows and model slots, filled by the never-repeating names during the warm-up; at
the default 18 bits the bound is reached after about a million names: test_cardinality.py)."""

from __future__ import annotations

import itertools
import os
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from service.storage.embedded_server import EmbeddedRedis
from service.storage.keys import Keys
from tests.reliability.conftest import Proc, rss_kib
from tests.reliability.helpers import make_events, wait_learned

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "150"))
WARMUP_S = min(50.0, SOAK_SECONDS / 3)  # > the 30 s TTLs: Redis holds its steady state
WINDOWS = 4
SETTINGS = {
    "prediction_ttl_s": 20,
    "idempotency_ttl_s": 30,
    "hash_bits": 10,
    "checkpoint_every_seconds": 5.0,
}
KEYS = Keys("default")


def _pace(started: float, count: int, rate: float) -> None:
    delay = started + count / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _quantile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100)[int(q * 100) - 1] if len(values) >= 2 else float("nan")
    )


class Load:
    """The soak's clients: each kind in its own thread, paced, recording (time, latency)."""

    def __init__(self, url: str, began: float) -> None:
        self.url = url
        self.began = began
        self.stop = threading.Event()
        self.samples: dict[str, list[tuple[float, float]]] = {
            k: [] for k in ("learn_one", "learn_batch", "late_label", "predict_get", "predict_post")
        }
        self.errors: list[str] = []
        self.accepted = 0
        self.duplicates = 0
        self.expected_duplicates = 0
        self.served: deque[tuple[str, str]] = deque(maxlen=200)  # (prediction id, true label)
        self._lock = threading.Lock()
        self._events = iter(make_events(1_000_000, seed=8, prefix="soak"))
        self._unique = itertools.count()

    def _event(self, rng: random.Random) -> dict[str, Any]:
        event = next(self._events)
        if rng.random() < 0.1:  # ids used as feature names: never seen again
            n = next(self._unique)
            event["features"].update({f"merchant_{n}_{k}": rng.random() for k in range(10)})
        return event

    def _call(
        self, client: httpx.Client, kind: str, method: str, path: str, ok: int, **kwargs: Any
    ) -> Any:
        started = time.perf_counter()
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.errors.append(f"{kind} {type(exc).__name__}: {exc}")
            return None
        finally:
            self.samples[kind].append(
                (time.monotonic() - self.began, time.perf_counter() - started)
            )
        if response.status_code != ok:
            self.errors.append(f"{kind} {response.status_code}: {response.text[:200]}")
            return None
        return response.json()

    def _count(self, body: Any) -> None:
        if body is not None:
            with self._lock:
                self.accepted += body["accepted"]
                self.duplicates += body["duplicates"]

    def learner(self) -> None:
        rng = random.Random(1)
        sent: deque[list[dict[str, Any]]] = deque(maxlen=20)
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                if i % 3 == 2:  # a 50-event batch; every third one a resend of an earlier one
                    if i % 9 == 8 and sent:
                        batch = rng.choice(sent)
                        self.expected_duplicates += len(batch)
                    else:
                        batch = [self._event(rng) for _ in range(50)]
                        sent.append(batch)
                    body = self._call(
                        client, "learn_batch", "POST", "/learn", 202, json={"events": batch}
                    )
                else:
                    body = self._call(
                        client, "learn_one", "POST", "/learn", 202, json=self._event(rng)
                    )
                self._count(body)
                _pace(self.began, i + 1, 12.0)

    def predictor(self) -> None:
        rng = random.Random(2)
        events = make_events(20_000, seed=9, prefix="p")
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                if i % 7 == 0:
                    batch = rng.sample(events, 10)
                    body = self._call(
                        client, "predict_post", "POST", "/predict", 200,
                        json={"events": [{"features": e["features"]} for e in batch]},
                    )  # fmt: skip
                    if body is not None:
                        for p, e in zip(body["predictions"], batch, strict=True):
                            self.served.append((p["prediction_id"], e["label"]))
                elif i % 7 == 3 and len(self.served) >= 5:  # chargebacks for earlier ones
                    taken = [self.served.popleft() for _ in range(5)]
                    late = [{"prediction_id": pid, "label": label} for pid, label in taken]
                    body = self._call(
                        client, "late_label", "POST", "/learn", 202, json={"events": late}
                    )
                    self._count(body)
                else:
                    features = rng.choice(events)["features"]
                    self._call(client, "predict_get", "GET", "/predict", 200, params=features)
                _pace(self.began, i + 1, 35.0)


@pytest.mark.slow
def test_soak_memory_redis_and_checkpoint_flat_latency_steady_no_errors(
    redis_factory: Callable[..., EmbeddedRedis], service_factory: Callable[..., Proc], tmp_path
) -> None:
    server = redis_factory(data_dir=tmp_path / "redis")
    sync = redis.Redis.from_url(server.url)
    # The embedded server's defaults (Settings.redis_maxmemory, _policy) on this one.
    sync.config_set("maxmemory", "1gb")
    sync.config_set("maxmemory-policy", "volatile-lru")
    service = service_factory(server.url, name="soak", **SETTINGS)
    began = time.monotonic()
    load = Load(service.url, began)
    threads = [threading.Thread(target=load.learner), threading.Thread(target=load.predictor)]
    for t in threads:
        t.start()
    sampled: list[tuple[float, float, float, float]] = []  # (t, rss MiB, redis MiB, ckpt KiB)
    while time.monotonic() - began < SOAK_SECONDS:
        sampled.append((
            time.monotonic() - began,
            rss_kib(service.pid) / 1024,
            int(sync.info("memory")["used_memory"]) / 2**20,
            sync.strlen(KEYS.ckpt) / 1024,
        ))  # fmt: skip
        time.sleep(2.0)
    load.stop.set()
    for t in threads:
        t.join(60)
    final = wait_learned(service.url, load.accepted, timeout=60.0, settle=0.5)
    evicted = int(sync.info("stats")["evicted_keys"])
    sync.close()

    span = (SOAK_SECONDS - WARMUP_S) / WINDOWS
    table, p99 = [], {}
    for kind, rows in load.samples.items():
        for w in range(WINDOWS):
            lo = WARMUP_S + w * span
            window = [d * 1000 for t, d in rows if lo <= t < lo + span]
            p99.setdefault(kind, []).append(_quantile(window, 0.99))
            if w in (0, WINDOWS - 1):
                table.append(
                    f"{kind} [{lo:.0f}-{lo + span:.0f} s] n={len(window)} "
                    f"p50={_quantile(window, 0.5):.1f} p99={_quantile(window, 0.99):.1f} ms"
                )
    steady = [row for row in sampled if row[0] >= WARMUP_S]

    def growth(i: int) -> tuple[float, float]:
        first = statistics.median(r[i] for r in steady[:3])
        last = statistics.median(r[i] for r in steady[-3:])
        return first, last

    rss, mem, ckpt = growth(1), growth(2), growth(3)
    requests = sum(len(rows) for rows in load.samples.values())
    outcome = (
        f"{SOAK_SECONDS:.0f} s, {requests} requests ("
        + ", ".join(f"{k} {len(v)}" for k, v in load.samples.items())
        + f"), errors {len(load.errors)} {load.errors[:3]}; accepted {load.accepted}, learned "
        f"{final.get('events_learned')}; duplicates {load.duplicates} of "
        f"{load.expected_duplicates} resent; after {WARMUP_S:.0f} s warm-up: RSS "
        f"{rss[0]:.0f} -> {rss[1]:.0f} MiB, Redis {mem[0]:.1f} -> {mem[1]:.1f} MiB "
        f"(evicted {evicted}), checkpoint {ckpt[0]:.0f} -> {ckpt[1]:.0f} KiB; RSS every 30 s "
        + " ".join(f"{r[1]:.0f}" for r in sampled[::15])
        + " MiB; "
        + "; ".join(table)
    )
    print(outcome)
    assert not load.errors, outcome
    assert final["events_learned"] == load.accepted, outcome
    assert load.duplicates == load.expected_duplicates > 0, outcome
    assert rss[1] - rss[0] < max(16.0, 0.10 * rss[0]), f"service memory grows: {outcome}"
    assert mem[1] - mem[0] < max(4.0, 0.15 * mem[0]), f"Redis memory grows: {outcome}"
    assert ckpt[1] - ckpt[0] < max(16.0, 0.10 * ckpt[0]), f"checkpoint grows: {outcome}"
    for kind, values in p99.items():
        assert values[-1] <= 3 * values[0] + 25.0, f"{kind} p99 drifts up {values}: {outcome}"
