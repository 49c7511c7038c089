"""Prometheus metrics of one app (or worker), on its own `CollectorRegistry`.

Two kinds:

* instruments updated as things happen (request latencies, rejected events, learner step
  time, batch sizes), and
* a collector that reads the model at scrape time (class frequencies, factors, rolling
  recall/precision/F1, drift states, counters restored from the checkpoint), so an API
  replica that hot-reloads checkpoints exports the same model view as the learner.

A per-app registry (not the global one) lets tests build many apps in one process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "DRIFT_STATE_VALUES",
    "PRODUCTION_METRICS",
    "HttpMetrics",
    "ModelView",
    "ServiceMetrics",
    "production_families",
]

DRIFT_STATE_VALUES = {"ok": 0, "warning": 1, "drift": 2}
# Every series name production_families exports (the dashboard tests read this).
PRODUCTION_METRICS = (
    "streambalance_production_scored_total",
    "streambalance_production_recall",
    "streambalance_production_precision",
    "streambalance_production_g_mean",
    "streambalance_production_pr_auc",
)
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

# Late labels: seconds to weeks (chargebacks arrive days later).
_DELAY_BUCKETS = (1.0, 10.0, 60.0, 600.0, 3600.0, 21600.0, 86400.0, 259200.0, 604800.0, 1209600.0)

ModelView = dict[str, Any]  # see serving.served_model.ServedModel.view: what the collector reads

_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """Requests and latency per route, under the names prometheus-fastapi-instrumentator
    used (`http_requests_total{handler,method,status}`,
    `http_request_duration_seconds{handler,method}`), so dashboards carry over.

    Recorded by `service.http.middleware.RequestIdMiddleware` once the response is sent.
    `handler` is the route's path template, or "none" when no route matched, and unknown
    methods count as "other": a client cannot grow the number of series. Each label set's
    children are cached: `.labels()` costs more than the increment itself on the hot path.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["handler", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request handling time, by route template and method.",
            ["handler", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, handler: str, method: str, status: int, seconds: float) -> None:
        if method not in _HTTP_METHODS:
            method = "other"
        key = (handler, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(handler, method, str(status)),
                self.duration.labels(handler, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class _ModelCollector(Collector):
    """Reads the current model view at scrape time."""

    def __init__(
        self, view: Callable[[], ModelView | None], dead_letters: Callable[[], int | None]
    ) -> None:
        self._view = view
        self._dead_letters = dead_letters

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are dynamic per class/signal; skip duplicate checks

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        if view is None:
            return
        classes: list[str] = view["classes"]
        yield _per_class(
            CounterMetricFamily,
            "streambalance_events_learned",
            "Events learned, per class.",
            classes,
            view["counts"],
        )
        yield _per_class(
            GaugeMetricFamily,
            "streambalance_class_frequency",
            "EMA class frequency p_c (bias corrected, floored).",
            classes,
            view["frequencies"],
        )
        yield _per_class(
            GaugeMetricFamily,
            "streambalance_class_factor",
            "Smoothed rescaling factor w_c (sum_c p_c w_c = 1).",
            classes,
            view["factors"],
        )
        yield _per_class(
            GaugeMetricFamily,
            "streambalance_class_gradient_norm",
            "Per-class gradient norm of the last learner step.",
            classes,
            view["grad_norms"],
        )
        yield _scalar(
            CounterMetricFamily,
            "streambalance_steps_skipped",
            "Learner steps skipped (non-finite loss or gradient).",
            view["skipped_steps"],
        )
        yield _scalar(
            CounterMetricFamily,
            "streambalance_steps_clipped",
            "Learner steps whose gradient was clipped.",
            view["clipped_steps"],
        )
        quality = view["quality"]
        for key, name, text in (
            ("recall", "streambalance_class_recall", "Rolling prequential recall per class."),
            (
                "precision",
                "streambalance_class_precision",
                "Rolling prequential precision per class.",
            ),
            ("f1", "streambalance_class_f1", "Rolling prequential F1 per class."),
        ):
            yield _per_class(GaugeMetricFamily, name, text, classes, quality.get(key))
        for key, text in (
            ("g_mean", "Rolling prequential G-mean (geometric mean of class recalls)."),
            ("log_loss", "Rolling prequential log-loss."),
            ("pr_auc", "Rolling prequential PR-AUC (minority class vs rest)."),
            ("roc_auc", "Rolling prequential ROC-AUC (minority class vs rest)."),
        ):
            yield _scalar(GaugeMetricFamily, f"streambalance_{key}", text, quality.get(key))
        state = GaugeMetricFamily(
            "streambalance_drift_state",
            "Drift signal state: 0 ok, 1 warning, 2 drift.",
            labels=["signal"],
        )
        detections = CounterMetricFamily(
            "streambalance_drift_detections", "Drift detections per signal.", labels=["signal"]
        )
        for signal in view["signals"]:
            state.add_metric([signal["name"]], DRIFT_STATE_VALUES.get(signal["state"], 0))
            detections.add_metric([signal["name"]], signal["detections"])
        yield state
        yield detections
        yield _scalar(
            CounterMetricFamily,
            "streambalance_dead_letters",
            "Stream entries moved to the dead-letter stream.",
            self._dead_letters(),
        )
        yield _scalar(
            GaugeMetricFamily,
            "streambalance_model_version",
            "Learner updates applied to the served model.",
            view["model_version"],
        )
        yield from production_families(view.get("production"), classes)
        last = view["checkpoint_time"]
        yield _scalar(
            GaugeMetricFamily,
            "streambalance_checkpoint_age_seconds",
            "Seconds since the served model's checkpoint was written.",
            None if last is None else max(0.0, time.time() - last),
        )
        yield _scalar(
            GaugeMetricFamily,
            "streambalance_checkpoint_bytes",
            "Size of the served model's snapshot as last written or loaded (checkpoint bytes).",
            view.get("checkpoint_bytes"),
        )
        yield _scalar(
            GaugeMetricFamily,
            "streambalance_feature_names",
            "Distinct feature names the model has learned from (HyperLogLog estimate, ~2%).",
            view.get("feature_names"),
        )


class _RedisMemoryCollector(Collector):
    """The Redis server's memory and evictions, as last read from INFO."""

    def __init__(self, memory: Callable[[], dict[str, int] | None]) -> None:
        self._memory = memory

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        memory = self._memory()
        if memory is None:
            return
        yield GaugeMetricFamily(
            "streambalance_redis_used_memory_bytes",
            "Bytes the Redis server has allocated (INFO used_memory).",
            value=memory["used_memory"],
        )
        yield GaugeMetricFamily(
            "streambalance_redis_maxmemory_bytes",
            "The Redis server's memory budget (INFO maxmemory; 0: no limit).",
            value=memory["maxmemory"],
        )
        yield CounterMetricFamily(
            "streambalance_redis_evicted_keys",
            "Keys the Redis server evicted at its memory budget (stored predictions, "
            "idempotency keys: only keys with a TTL, under a volatile-* policy).",
            value=memory["evicted_keys"],
        )


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _per_class(kind: type, name: str, text: str, classes: list[str], values: Any) -> Metric:
    family = kind(name, text, labels=["class"])
    if values is not None:
        if isinstance(values, dict):
            values = [values.get(c) for c in classes]
        for cls, value in zip(classes, values, strict=False):
            value = _finite(value)
            if value is not None:
                family.add_metric([cls], value)
    return family


def _scalar(kind: type, name: str, text: str, value: Any) -> Metric:
    family = kind(name, text)
    value = _finite(value)
    if value is not None:
        family.add_metric([], value)
    return family


class ServiceMetrics:
    """Every metric of one app; `render()` is the /metrics body."""

    def __init__(self) -> None:
        # `_created` samples double the series count and no dashboard reads them.
        disable_created_metrics()
        r = self.registry = CollectorRegistry()
        # The default process_*, python_info and python_gc_* series, on this registry (the
        # global one is not exported): memory, CPU, open files and GC of this process.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        # Entries in the dead-letter stream, as last read by a /metrics scrape (None: not yet).
        self.dead_letters: int | None = None
        # The Redis server's used_memory, maxmemory and evicted_keys, as last read.
        self.redis_memory: dict[str, int] | None = None
        r.register(_RedisMemoryCollector(lambda: self.redis_memory))
        self.http = HttpMetrics(r)
        self.events_rejected = Counter(
            "streambalance_events_rejected",
            "Events rejected before reaching the stream.",
            ["reason"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "streambalance_events_duplicate", "Events dropped as duplicates (id seen).", registry=r
        )
        self.predictions = Counter("streambalance_predictions", "Predictions served.", registry=r)
        self.learn_latency = Histogram(
            "streambalance_learn_latency_seconds",
            "POST /learn handling time.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.predict_latency = Histogram(
            "streambalance_predict_latency_seconds",
            "Prediction handling time.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.learner_step = Histogram(
            "streambalance_learner_step_seconds",
            "One learner micro-batch: EMA update in Redis plus the model step.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.learner_batch = Histogram(
            "streambalance_learner_batch_size",
            "Events per learner micro-batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.learner_errors = Counter(
            "streambalance_learner_errors",
            "Exceptions caught by the learner loop.",
            ["stage"],
            registry=r,
        )
        self.checkpoints = Counter(
            "streambalance_checkpoints", "Checkpoints written by this process.", registry=r
        )
        self.label_delay = Histogram(
            "streambalance_label_delay_seconds",
            "Time from a prediction being served to its late label arriving at POST /learn.",
            buckets=_DELAY_BUCKETS,
            registry=r,
        )
        self.stream_lag = Gauge(
            "streambalance_stream_lag_events",
            "Stream entries not yet acknowledged by the learner.",
            registry=r,
        )
        # For the predictable label value set on first scrape.
        for reason in (
            "validation",
            "too_large",
            "unauthorized",
            "unknown_prediction",
            "rate_limited",
        ):
            self.events_rejected.labels(reason)
        for kind in ("get", "post"):
            self.predict_latency.labels(kind)

    def attach_model(self, view: Callable[[], ModelView | None]) -> None:
        self.registry.register(_ModelCollector(view, lambda: self.dead_letters))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def production_families(report: dict[str, Any] | None, classes: list[str]) -> Iterator[Metric]:
    """Prometheus families of a `ProductionScorer.report()` (nothing before the first label)."""
    if report is None:
        return
    scored = CounterMetricFamily(
        "streambalance_production_scored",
        "Served predictions scored against their late label.",
    )
    scored.add_metric([], float(report.get("scored", 0)))
    yield scored
    for key, text in (
        ("recall", "Rolling recall per class of the predictions actually served."),
        ("precision", "Rolling precision per class of the predictions actually served."),
    ):
        family = GaugeMetricFamily(f"streambalance_production_{key}", text, labels=["class"])
        for name in classes:
            value = (report.get(key) or {}).get(name)
            if value is not None:
                family.add_metric([name], float(value))
        yield family
    for key, text in (
        ("g_mean", "Rolling G-mean of the predictions actually served."),
        ("pr_auc", "Rolling PR-AUC (minority vs rest) of the predictions actually served."),
    ):
        family = GaugeMetricFamily(f"streambalance_production_{key}", text)
        value = report.get(key)
        if value is not None:
            family.add_metric([], float(value))
        yield family
