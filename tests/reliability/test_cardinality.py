"""Issue 16's probe as a test (the audit's probes 3 and 4): a client sends 500,000 numeric
feature names that never repeat (10 requests of 1,000 events x 50 names) to a running
`streambalance serve`. The service keeps answering, its resident memory and its checkpoint
stay within bounds set by the configuration, and /metrics shows what happened."""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from models.trainer import StreamTrainer
from service.settings import Settings
from tests.reliability.conftest import Proc, rss_kib
from tests.reliability.helpers import make_events

NAMES_PER_EVENT, EVENTS, REQUESTS = 50, 1000, 10
# What names may add to the process: the statistics table's touched pages (6 MiB at most at
# 18 bits) and the hash caches, bounded in entries and key length (models/features.py); the
# rest is the allocator keeping what 0.8 MB request bodies (tens of MB as Python objects)
# left behind, which moves by ±30 MiB from one request to the next. Bounded means the growth
# stops: over the second 250,000 names the resident set has no trend (medians compared).
# (Before the featurizer was bounded: +534 MiB, growing with every request.)
RSS_GROWTH_BOUND_MIB = 128.0
RSS_TREND_BOUND_MIB = 24.0


def checkpoint_bound(settings: Settings) -> int:
    """The largest snapshot these settings allow: every statistics row in use (32 bytes with
    its index), the model's parameters dense, and 512 KiB for the bounded rest (metrics
    windows, drift detectors, EMA, smoother)."""
    trainer = StreamTrainer(settings.trainer_config())
    parameters = sum(p.numel() * p.element_size() for p in trainer.learner.network.parameters())
    return trainer.learner.featurizer.max_state_rows * 32 + parameters + 512 * 1024


def _gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10.0).text
    return {n: float(v) for n, v in re.findall(r"^(streambalance_\w+) (\S+)$", text, re.M)}


def _wait_checkpoint_after(url: str, version: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(url + "/state", timeout=10.0).json()
        if state["checkpoint_version"] > version:
            return state
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint after version {version} within {timeout} s")


@pytest.mark.slow
def test_500k_never_repeating_names_leave_memory_and_checkpoint_bounded(
    service_factory: Callable[..., Proc],
) -> None:
    service = service_factory(None, name="cardinality", checkpoint_every_seconds=2.0)
    url = service.url
    normal = make_events(2000, seed=4)
    for i in range(0, len(normal), 500):
        response = httpx.post(
            url + "/learn?wait=true", json={"events": normal[i : i + 500]}, timeout=60.0
        )
        assert response.status_code == 200, response.text
    state = _wait_checkpoint_after(url, 0)
    before = {"rss_mib": rss_kib(service.pid) / 1024, **_gauges(url)}

    stop = threading.Event()
    health: list[tuple[int, float]] = []

    def probe() -> None:  # probe4: does the service keep answering while it learns?
        with httpx.Client(timeout=10.0) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.get(url + "/healthz").status_code
                except httpx.HTTPError:
                    status = 0
                health.append((status, time.perf_counter() - started))
                time.sleep(0.02)

    thread = threading.Thread(target=probe)
    thread.start()
    statuses, rss_mib = [], []
    began = time.monotonic()
    with httpx.Client(timeout=300.0) as client:
        for r in range(REQUESTS):
            events = [
                {
                    "features": {f"f{r}_{j}_{k}": float(k) for k in range(NAMES_PER_EVENT)},
                    "label": 0,
                }
                for j in range(EVENTS)
            ]
            response = client.post(url + "/learn?wait=true", json={"events": events})
            statuses.append(response.status_code)
            rss_mib.append(rss_kib(service.pid) / 1024)
    learn_s = time.monotonic() - began
    state = _wait_checkpoint_after(url, state["checkpoint_version"])
    stop.set()
    thread.join(30)
    after = {"rss_mib": rss_kib(service.pid) / 1024, **_gauges(url)}

    bound = checkpoint_bound(Settings())
    names = REQUESTS * EVENTS * NAMES_PER_EVENT
    worst = max(latency for _, latency in health)
    outcome = (
        f"{names:,} names in {learn_s:.1f} s (statuses {sorted(set(statuses))}); RSS "
        f"{before['rss_mib']:.0f} -> {after['rss_mib']:.0f} MiB (after each request: "
        f"{' '.join(f'{m:.0f}' for m in rss_mib)}); checkpoint "
        f"{before['streambalance_checkpoint_bytes']:,.0f} -> "
        f"{after['streambalance_checkpoint_bytes']:,.0f} bytes (bound {bound:,}); feature "
        f"names {after['streambalance_feature_names']:,.0f}; /healthz {len(health)} probes, "
        f"{sum(s != 200 for s, _ in health)} failed, worst {worst * 1000:.0f} ms"
    )
    print(outcome)
    assert set(statuses) == {200}, outcome
    assert health and all(status == 200 for status, _ in health), outcome
    assert after["rss_mib"] - before["rss_mib"] < RSS_GROWTH_BOUND_MIB, outcome
    half = REQUESTS // 2
    trend = statistics.median(rss_mib[half:]) - statistics.median(rss_mib[:half])
    assert trend < RSS_TREND_BOUND_MIB, outcome
    assert after["streambalance_checkpoint_bytes"] <= bound, outcome
    assert after["streambalance_feature_names"] == pytest.approx(names, rel=0.05), outcome
    assert state["events_learned"] == len(normal) + REQUESTS * EVENTS, outcome
