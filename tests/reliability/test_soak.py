"""Issue 6 §9: a bounded soak (SOAK_SECONDS, default 120) of mixed learn/predict load against
a `streambalance serve` child: no errors, resident memory flat, latency steady."""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.reliability.conftest import Proc, rss_kib
from tests.reliability.helpers import make_events, wait_learned

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
WARMUP_S = 20.0  # allocator and caches settle; memory is compared from here on
WINDOWS = 4


def _pace(started: float, count: int, rate: float) -> None:
    delay = started + count / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _quantile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100)[int(q * 100) - 1] if len(values) >= 2 else float("nan")
    )


@pytest.mark.slow
def test_soak_memory_flat_latency_steady_no_errors(service_factory: Callable[..., Proc]) -> None:
    service = service_factory(None, name="soak")
    stop = threading.Event()
    samples: dict[str, list[tuple[float, float]]] = {
        "learn": [],
        "predict_get": [],
        "predict_post": [],
    }
    errors: list[str] = []
    rss: list[tuple[float, int]] = []
    accepted = [0]
    began = time.monotonic()

    def learner() -> None:
        events = make_events(200_000, seed=8, prefix="soak")
        with httpx.Client(base_url=service.url, timeout=30.0) as client:
            i = 0
            while not stop.is_set():
                batch = events[(i * 20) % len(events) : (i * 20) % len(events) + 20]
                t0 = time.perf_counter()
                try:
                    response = client.post("/learn", json={"events": batch})
                    if response.status_code != 202:
                        errors.append(f"learn {response.status_code}: {response.text[:200]}")
                    else:
                        accepted[0] += response.json()["accepted"]
                except httpx.HTTPError as exc:
                    errors.append(f"learn {type(exc).__name__}: {exc}")
                samples["learn"].append((time.monotonic() - began, time.perf_counter() - t0))
                i += 1
                _pace(began, i, 10.0)  # 10 requests/s x 20 events

    def predictor() -> None:
        rng = random.Random(1)
        with httpx.Client(base_url=service.url, timeout=30.0) as client:
            i = 0
            while not stop.is_set():
                features = {
                    "amount": round(rng.uniform(1, 900), 2),
                    "mcc": rng.choice(["5411", "5732"]),
                    "ip_risk": round(rng.random(), 3),
                }
                kind = "predict_post" if i % 5 == 0 else "predict_get"
                t0 = time.perf_counter()
                try:
                    if kind == "predict_get":
                        response = client.get("/predict", params=features)
                    else:
                        response = client.post(
                            "/predict", json={"events": [{"features": features}] * 10}
                        )
                    if response.status_code != 200:
                        errors.append(f"{kind} {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(f"{kind} {type(exc).__name__}: {exc}")
                samples[kind].append((time.monotonic() - began, time.perf_counter() - t0))
                i += 1
                _pace(began, i, 40.0)

    threads = [threading.Thread(target=learner), threading.Thread(target=predictor)]
    for t in threads:
        t.start()
    while time.monotonic() - began < SOAK_SECONDS:
        rss.append((time.monotonic() - began, rss_kib(service.pid)))
        time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(60)
    final = wait_learned(service.url, accepted[0], timeout=60.0, settle=0.5)
    rss.append((time.monotonic() - began, rss_kib(service.pid)))

    span = (SOAK_SECONDS - WARMUP_S) / WINDOWS
    table = []
    p95: dict[str, list[float]] = {}
    for kind, rows in samples.items():
        for w in range(WINDOWS):
            lo = WARMUP_S + w * span
            window = [d * 1000 for t, d in rows if lo <= t < lo + span]
            p95.setdefault(kind, []).append(_quantile(window, 0.95))
            if w in (0, WINDOWS - 1):
                table.append(
                    f"{kind} [{lo:.0f}-{lo + span:.0f} s] n={len(window)} "
                    f"p50={_quantile(window, 0.5):.1f} ms p95={_quantile(window, 0.95):.1f} ms "
                    f"p99={_quantile(window, 0.99):.1f} ms"
                )
    steady = [kib for t, kib in rss if t >= WARMUP_S]
    growth_mib = (steady[-1] - steady[0]) / 1024
    slope_mib_per_min = growth_mib / max(1e-9, (rss[-1][0] - WARMUP_S) / 60)
    requests = sum(len(rows) for rows in samples.values())
    outcome = (
        f"{SOAK_SECONDS:.0f} s, {requests} requests ({len(samples['learn'])} learn = {accepted[0]} "
        f"events, {len(samples['predict_get'])} GET + "
        f"{len(samples['predict_post'])} POST predict), "
        f"errors {len(errors)} {errors[:3]}; "
        f"learned {final.get('events_learned')} of {accepted[0]}; "
        f"RSS {steady[0] / 1024:.0f} -> {steady[-1] / 1024:.0f} MiB after warm-up (max "
        f"{max(k for _, k in rss) / 1024:.0f}, {slope_mib_per_min:+.2f} MiB/min); "
        + "; ".join(table)
    )
    print(outcome)
    assert not errors, outcome
    assert final["events_learned"] == accepted[0], outcome
    assert growth_mib < max(16.0, 0.10 * steady[0] / 1024), f"memory grows: {outcome}"
    for kind, values in p95.items():
        assert values[-1] <= 3 * values[0] + 10.0, f"{kind} latency drifts up {values}: {outcome}"
