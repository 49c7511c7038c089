"""Issue 6 §1: kill -9 the service mid-stream, restart it, resend what was not acknowledged
(plus some retries of acknowledged events): every event applied exactly once."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from service.storage.embedded_server import EmbeddedRedis
from tests.reliability.conftest import Proc
from tests.reliability.helpers import (
    ema_reference,
    make_events,
    redis_ema,
    stream_order,
    wait_learned,
)

N_EVENTS = 10_000
BATCH = 25
SENDERS = 4


def _send_all(
    url: str,
    batches: list[list[dict]],
    acked: set[int],
    statuses: dict[int, int],
    stop: threading.Event,
) -> None:
    """SENDERS threads post the batches (indices into `batches`); a 202 acknowledges one."""
    lock = threading.Lock()
    todo = list(range(len(batches)))

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=10.0) as client:
            while not stop.is_set():
                with lock:
                    if not todo:
                        return
                    index = todo.pop(0)
                try:
                    response = client.post("/learn", json={"events": batches[index]})
                except httpx.TransportError:
                    return  # the service is gone: this batch and the rest are unacknowledged
                with lock:
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code == 202:
                        acked.add(index)

    threads = [threading.Thread(target=worker) for _ in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


@pytest.mark.slow
def test_kill_9_of_the_service_loses_and_doubles_nothing(
    redis_factory: Callable[..., EmbeddedRedis], service_factory: Callable[..., Proc], tmp_path
) -> None:
    seed = random.SystemRandom().randrange(1_000_000)
    rng = random.Random(seed)
    server = redis_factory(data_dir=tmp_path / "redis")
    settings = {
        "checkpoint_every_seconds": 0.5,
        "checkpoint_every_steps": 20,
        "batch_max_size": 128,
    }
    service = service_factory(server.url, name="crash1", **settings)
    events = make_events(N_EVENTS, seed=seed)
    batches = [events[i : i + BATCH] for i in range(0, N_EVENTS, BATCH)]

    acked: set[int] = set()
    statuses: dict[int, int] = {}
    stop = threading.Event()
    # A random point of the stream: once a random share of the batches is acknowledged, plus
    # a random delay of up to 20 ms so requests are caught in flight.
    kill_at = rng.randint(len(batches) // 10, len(batches) * 9 // 10)
    kill_delay = rng.uniform(0.0, 0.02)

    def kill_midway() -> None:
        deadline = time.monotonic() + 120
        while len(acked) < kill_at and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(kill_delay)
        service.kill()

    killer = threading.Thread(target=kill_midway)
    killer.start()
    _send_all(service.url, batches, acked, statuses, stop)
    killer.join()
    assert service.process is not None and service.process.returncode == -9

    restarted = service_factory(server.url, name="crash1b", start=False, **settings)
    restarted.env["STREAMBALANCE_PORT"] = service.env["STREAMBALANCE_PORT"]
    restarted.port = service.port
    restarted.start()
    unacked = [i for i in range(len(batches)) if i not in acked]
    retried = rng.sample(sorted(acked), min(len(acked), 40))  # client retries of acknowledged ones
    resend = sorted(set(unacked) | set(retried))
    duplicates = accepted = 0
    with httpx.Client(base_url=restarted.url, timeout=30.0) as client:
        for index in resend:
            response = client.post("/learn", json={"events": batches[index]})
            assert response.status_code == 202, response.text
            accepted += response.json()["accepted"]
            duplicates += response.json()["duplicates"]

    final = wait_learned(restarted.url, N_EVENTS, timeout=120.0, settle=2.0)
    client = redis.Redis.from_url(server.url)
    try:
        ordered = stream_order(client, "default", events)
        ema = redis_ema(client, "default")
    finally:
        client.close()
    m, norm, frequencies = ema_reference(ordered)
    n_fraud = sum(e["label"] == "fraud" for e in events)
    acked_events = len(acked) * BATCH
    applied = final.get("events_learned")
    outcome = (
        f"seed={seed} kill after {kill_at} acknowledged batches + {kill_delay * 1000:.0f} ms: "
        f"sent {N_EVENTS} events, acknowledged "
        f"{acked_events} before the kill (status counts {statuses}), resent {len(resend) * BATCH} "
        f"({len(retried) * BATCH} of them already acknowledged): {accepted} accepted, {duplicates} "
        f"duplicates; applied {applied}, lost {max(0, N_EVENTS - (applied or 0))}, doubled "
        f"{max(0, (applied or 0) - N_EVENTS)}; EMA count {ema.get('count')}"
    )
    print(outcome)
    assert len(acked) < len(batches), f"the kill came after the stream: {outcome}"
    assert len(ordered) == N_EVENTS, outcome
    assert applied == N_EVENTS, outcome
    assert final["counts"] == {"legit": N_EVENTS - n_fraud, "fraud": n_fraud}, outcome
    assert ema["count"] == N_EVENTS, outcome
    assert [ema["m0"], ema["m1"]] == pytest.approx(m, rel=1e-12, abs=1e-300), outcome
    assert ema["norm"] == pytest.approx(norm, rel=1e-12), outcome
    assert list(final["class_frequencies"].values()) == pytest.approx(frequencies, rel=1e-12), (
        outcome
    )
    assert duplicates >= len(retried) * BATCH, outcome
