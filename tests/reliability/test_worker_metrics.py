"""Issue 17 item 3 for `streambalance worker`: its metrics endpoint carries the process,
platform and GC collectors, the model it learns, and the numbers read from Redis (stream
lag, Redis memory), which no /metrics route refreshes there, so the worker reads them on a
timer."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.storage.embedded_server import EmbeddedRedis
from tests.reliability.conftest import Proc, free_port
from tests.reliability.helpers import make_events, wait_learned


def _samples(url: str) -> dict[str, float]:
    text = httpx.get(url, timeout=5.0).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.slow
def test_the_worker_exports_process_model_and_redis_metrics(
    redis_factory: Callable[..., EmbeddedRedis], service_factory: Callable[..., Proc], tmp_path
) -> None:
    server = redis_factory(data_dir=tmp_path / "redis")
    port = free_port()
    service_factory(server.url, command="worker", name="worker", worker_metrics_port=port)
    api = service_factory(server.url, name="api", role="api")
    events = make_events(200, seed=3)
    response = httpx.post(api.url + "/learn", json={"events": events}, timeout=10.0)
    assert response.status_code == 202, response.text
    wait_learned(api.url, 200, timeout=60.0)
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 20.0
    samples: dict[str, float] = {}
    while time.monotonic() < deadline:
        try:
            samples = _samples(url)
        except httpx.HTTPError:
            samples = {}
        if samples.get("streambalance_redis_used_memory_bytes"):
            break
        time.sleep(0.5)
    wanted = {
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "python_gc_objects_collected_total",
        "streambalance_events_learned_total",
        "streambalance_stream_lag_events",
        "streambalance_redis_used_memory_bytes",
        "streambalance_redis_maxmemory_bytes",
        "streambalance_redis_evicted_keys_total",
    }
    assert wanted <= samples.keys(), sorted(wanted - samples.keys())
    assert samples["streambalance_redis_used_memory_bytes"] > 0
    assert samples["process_resident_memory_bytes"] > 50 * 2**20
