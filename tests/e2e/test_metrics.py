"""/metrics is valid Prometheus text (client parser and promtool) with the agreed names."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from tests.e2e.conftest import fraud_stream, learn_all, running

EXPECTED = {
    "streambalance_events_learned_total",
    "streambalance_events_rejected_total",
    "streambalance_events_duplicate_total",
    "streambalance_predictions_total",
    "streambalance_learn_latency_seconds_bucket",
    "streambalance_predict_latency_seconds_bucket",
    "streambalance_learner_step_seconds_bucket",
    "streambalance_learner_batch_size_bucket",
    "streambalance_class_frequency",
    "streambalance_class_factor",
    "streambalance_class_gradient_norm",
    "streambalance_steps_skipped_total",
    "streambalance_steps_clipped_total",
    "streambalance_class_recall",
    "streambalance_class_precision",
    "streambalance_class_f1",
    "streambalance_g_mean",
    "streambalance_log_loss",
    "streambalance_pr_auc",
    "streambalance_roc_auc",
    "streambalance_drift_state",
    "streambalance_drift_detections_total",
    "streambalance_stream_lag_events",
    "streambalance_model_version",
    "streambalance_checkpoint_age_seconds",
    "streambalance_dead_letters_total",
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    # model state that grows with what clients send, bounded (issue 16 item 1)
    "streambalance_checkpoint_bytes",
    "streambalance_feature_names",
    # Redis memory, read at the scrape (issue 16 item 2)
    "streambalance_redis_used_memory_bytes",
    "streambalance_redis_maxmemory_bytes",
    "streambalance_redis_evicted_keys_total",
    # prometheus_client's default collectors, on the app's own registry (issue 17 item 3)
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "python_info",
    "python_gc_objects_collected_total",
}


async def test_metrics_parse_and_pass_promtool(make_settings: Callable[..., Settings]) -> None:
    events = fraud_stream(1500, fraud_rate=0.05, seed=11)
    async with running(make_settings(checkpoint_every_steps=2)) as (_, client):
        await learn_all(client, events, batch=100)
        await client.post("/learn?wait=true", json={"events": events[:5]})  # duplicates
        await client.post("/learn", json={"features": {"a": 1}, "label": "nope"})  # rejected
        await client.get("/predict?amount=900&mcc=5732")
        await client.post("/predict", json={"events": [{"features": {"amount": 10}}]})
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text

    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    missing = EXPECTED - samples.keys()
    assert not missing, sorted(missing)

    learned = {s.labels["class"]: s.value for s in samples["streambalance_events_learned_total"]}
    frauds = sum(e["label"] == "fraud" for e in events)
    assert learned == {"legit": len(events) - frauds, "fraud": frauds}
    assert samples["streambalance_events_duplicate_total"][0].value == 5
    rejected = {s.labels["reason"]: s.value for s in samples["streambalance_events_rejected_total"]}
    assert rejected["validation"] == 1
    assert samples["streambalance_predictions_total"][0].value == 2
    frequency = {s.labels["class"]: s.value for s in samples["streambalance_class_frequency"]}
    assert abs(sum(frequency.values()) - 1.0) < 1e-9
    # The embedded server's budget, as the settings gave it (1gb by default).
    assert samples["streambalance_redis_maxmemory_bytes"][0].value == 2**30
    assert samples["process_resident_memory_bytes"][0].value > 50 * 2**20
    # amount, ip_risk, hour, mcc, card_present (fraud_stream's names): the estimate is exact
    assert round(samples["streambalance_feature_names"][0].value) == 5
    assert samples["streambalance_checkpoint_bytes"][0].value > 1000

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install -y prometheus (Debian) provides it"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_http_metrics_count_each_request_by_route_template_method_and_status(
    make_settings: Callable[..., Settings],
) -> None:
    async with running(make_settings()) as (_, client):
        for _ in range(3):
            assert (await client.get("/predict?amount=12")).status_code == 200
        assert (await client.post("/learn", json={"features": {}, "label": 9})).status_code == 422
        assert (await client.get("/no/such/route")).status_code == 404
        assert (await client.request("BREW", "/predict")).status_code == 405
        await client.get("/metrics")
        text = (await client.get("/metrics")).text
    requests = {
        (s.labels["handler"], s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "http_requests_total"
    }
    assert requests[("/predict", "GET", "200")] == 3
    assert requests[("/learn", "POST", "422")] == 1
    assert requests[("none", "GET", "404")] == 1
    assert requests[("/predict", "other", "405")] == 1
    assert not any(handler == "/metrics" for handler, _, _ in requests), "scrapes are excluded"
    durations = {
        (s.labels["handler"], s.labels["method"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "http_request_duration_seconds_count"
    }
    assert durations[("/predict", "GET")] == 3
