"""Checks of the deployment files that can run without Docker.

Docker is not available where the tests run, so this checks what can be checked: the
compose file's structure, the Prometheus config (with the real `promtool`), the Grafana
provisioning and the dashboard's PromQL, whose metric names must be ones the service
exports (tests/e2e/test_dashboard_metrics.py checks them against a running service).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "alerts.test.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "streambalance.json"

# The metric contract (plan "Metric names"; service/observability/prometheus.py) by Prometheus
# type, plus the per-route HTTP metrics (service.observability.prometheus.HttpMetrics).
COUNTERS = {
    "streambalance_events_learned_total",
    "streambalance_events_rejected_total",
    "streambalance_events_duplicate_total",
    "streambalance_predictions_total",
    "streambalance_steps_skipped_total",
    "streambalance_steps_clipped_total",
    "streambalance_drift_detections_total",
    "streambalance_dead_letters_total",
    "streambalance_production_scored_total",
    "streambalance_redis_evicted_keys_total",
    "http_requests_total",
}
GAUGES = {
    "streambalance_class_frequency",
    "streambalance_class_factor",
    "streambalance_class_gradient_norm",
    "streambalance_class_recall",
    "streambalance_class_precision",
    "streambalance_class_f1",
    "streambalance_g_mean",
    "streambalance_log_loss",
    "streambalance_pr_auc",
    "streambalance_roc_auc",
    "streambalance_drift_state",
    "streambalance_stream_lag_events",
    "streambalance_model_version",
    "streambalance_checkpoint_age_seconds",
    "streambalance_production_recall",
    "streambalance_production_precision",
    "streambalance_production_g_mean",
    "streambalance_production_pr_auc",
    "streambalance_redis_used_memory_bytes",
    "streambalance_redis_maxmemory_bytes",
    "streambalance_checkpoint_bytes",
    "streambalance_feature_names",
}
HISTOGRAMS = {
    "streambalance_learn_latency_seconds",
    "streambalance_predict_latency_seconds",
    "streambalance_learner_step_seconds",
    "streambalance_learner_batch_size",
    "streambalance_label_delay_seconds",
    "http_request_duration_seconds",
}
EXPORTED_SERIES = (
    COUNTERS
    | GAUGES
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)

# PromQL words that look like identifiers but are not metric names.
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "atan2", "inf", "nan",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (functions, keywords, labels excluded).

    >>> sorted(promql_metric_names(
    ...     'histogram_quantile(0.99, sum by (le, kind) '
    ...     '(rate(a_seconds_bucket{kind="get", x=~"y|z"}[$__rate_interval])))'))
    ['a_seconds_bucket']
    >>> sorted(promql_metric_names('count(max by (signal) (b_state) == 2) or vector(0)'))
    ['b_state']
    >>> sorted(promql_metric_names('sum(rate(c_sum[5m])) / sum(rate(c_count[5m] offset 1h))'))
    ['c_count', 'c_sum']
    >>> sorted(promql_metric_names('{__name__="d_total"} * 1e3 + sum without (job) (e)'))
    ['e']
    """
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    text = _VARIABLES.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in _PROMQL_WORDS:
            continue
        names.add(name)
    return names


def _load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
    return panels


def dashboard_exprs() -> list[str]:
    """Every PromQL expression the dashboard runs (panel targets and query variables)."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in _dashboard_panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var.get("type") == "query" and isinstance(query, str):
            exprs.append(query)
    return exprs


def alert_exprs() -> list[str]:
    """Every PromQL expression of deploy/alerts.yml."""
    groups = _load_yaml(ALERTS)["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_metric_names() -> set[str]:
    """The set of series names the dashboard queries (used by the e2e test too)."""
    names: set[str] = set()
    for expr in dashboard_exprs():
        names |= promql_metric_names(expr)
    return names


# --- docker-compose.yml ---------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load_yaml(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _named_volume_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
        if source and not source.startswith((".", "/", "~")):
            sources.append(source)
    return sources


def test_compose_redis_is_durable_bounded_and_healthchecked(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert re.match(r"(redis:7|valkey/valkey:)", redis["image"]), redis["image"]
    command = redis["command"]
    command = command.split() if isinstance(command, str) else [str(c) for c in command]
    pairs = dict(zip(command, command[1:], strict=False))
    assert pairs.get("--appendonly") == "yes", command
    assert pairs.get("--appendfsync") == "everysec", command
    # A memory budget whose policy evicts only keys with a TTL, as the embedded server's.
    assert re.fullmatch(r"\$\{REDIS_MAXMEMORY:-1gb\}", pairs.get("--maxmemory", "")), command
    assert pairs.get("--maxmemory-policy") == Settings().redis_maxmemory_policy, command
    health = redis["healthcheck"]
    test = " ".join(health["test"]) if isinstance(health["test"], list) else health["test"]
    assert "redis-cli" in test and "ping" in test, test
    named = _named_volume_sources(redis)
    assert named, "redis must keep /data on a named volume"
    assert all(name in (compose.get("volumes") or {}) for name in named), named
    assert any(v.endswith(":/data") for v in redis["volumes"]), redis["volumes"]


def test_compose_service_waits_for_healthy_redis(compose: dict[str, Any]) -> None:
    service = compose["services"]["streambalance"]
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert any(str(p).endswith(":8000") for p in service["ports"]), service["ports"]
    assert service["build"]["dockerfile"] == "Dockerfile"
    assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert service["command"][:2] == ["streambalance", "serve"]
    assert "0.0.0.0" in service["command"]


def test_compose_requires_an_api_key_and_publishes_on_loopback(compose: dict[str, Any]) -> None:
    """Issue 18 item 12 / audit 13: the stack does not start without an API key, and every
    published port listens on 127.0.0.1 unless BIND_ADDRESS says otherwise."""
    env = compose["x-streambalance-env"]
    assert re.fullmatch(
        r"\$\{STREAMBALANCE_API_KEY:\?[^}]*init-env\.sh[^}]*\}", env["STREAMBALANCE_API_KEY"]
    )
    for name in ("streambalance", "worker"):
        assert (
            compose["services"][name]["environment"]["STREAMBALANCE_API_KEY"]
            == (env["STREAMBALANCE_API_KEY"])
        )
    published = {
        name: service["ports"]
        for name, service in compose["services"].items()
        if "ports" in service
    }
    assert set(published) == {"streambalance", "lb", "prometheus", "grafana"}, published
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("${BIND_ADDRESS:-127.0.0.1}:"), (name, port)


def _init_env(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ROOT / "deploy" / "init-env.sh"), str(target)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_init_env_writes_a_valid_key_once_and_the_service_needs_it(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    first = _init_env(target)
    assert first.returncode == 0, first.stderr
    values = dict(line.split("=", 1) for line in target.read_text().splitlines() if "=" in line)
    key = values["STREAMBALANCE_API_KEY"]
    assert re.fullmatch(r"[0-9a-f]{48}", key), key
    assert values["BIND_ADDRESS"] == "127.0.0.1"
    assert target.stat().st_mode & 0o077 == 0, oct(target.stat().st_mode)  # owner only
    again = _init_env(target)
    assert again.returncode == 0 and "keeping it" in again.stdout
    assert target.read_text().count("STREAMBALANCE_API_KEY=") == 1
    # What the API container runs (`serve --host 0.0.0.0`) starts with the key, not without.
    assert Settings(host="0.0.0.0", api_key=key).api_key is not None
    with pytest.raises(SettingsError, match=r"STREAMBALANCE_HOST: '0.0.0.0' is reachable"):
        Settings(host="0.0.0.0")
    for path in (ROOT / ".gitignore", DOCKERIGNORE):
        assert ".env" in path.read_text().split(), f"{path.name} must keep .env out"


def test_compose_worker_runs_the_single_learner(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["profiles"] == ["scaled"]
    assert worker["command"] == ["streambalance", "worker"]
    assert worker["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    # The learner and the API replicas must describe the same model.
    api_env = compose["services"]["streambalance"]["environment"]
    per_process = {"STREAMBALANCE_ROLE", "STREAMBALANCE_WORKER_METRICS_PORT"}
    shared = {k: v for k, v in worker["environment"].items() if k not in per_process}
    assert shared == {k: v for k, v in api_env.items() if k not in per_process}
    assert "STREAMBALANCE_CLASSES" in shared
    # Its metrics port is the one its healthcheck probes and Prometheus scrapes.
    port = int(worker["environment"]["STREAMBALANCE_WORKER_METRICS_PORT"])
    assert f"127.0.0.1:{port}/metrics" in " ".join(worker["healthcheck"]["test"])
    jobs = _load_yaml(PROMETHEUS)["scrape_configs"]
    job = next(j for j in jobs if j["job_name"] == "streambalance-worker")
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    assert job["dns_sd_configs"][0]["port"] == port
    lb = compose["services"]["lb"]
    assert lb["profiles"] == ["scaled"]
    conf = compose["configs"][lb["configs"][0]["source"]]["content"]
    # `$$` is compose's escape for a literal `$` that nginx must see.
    assert "proxy_pass $$api" in conf and "http://streambalance:8000" in conf


def test_compose_bind_mounts_exist(compose: dict[str, Any]) -> None:
    mounts = [
        v.split(":")[0]
        for service in compose["services"].values()
        for v in service.get("volumes", [])
        if isinstance(v, str) and v.startswith("./")
    ]
    assert "./deploy/prometheus.yml" in mounts
    missing = [m for m in mounts if not (ROOT / m).exists()]
    assert not missing, f"bind-mounted paths missing from the repository: {missing}"


def test_compose_monitoring_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert (
        "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in (services["prometheus"]["volumes"])
    )
    assert any(
        "--config.file=/etc/prometheus/prometheus.yml" == c
        for c in services["prometheus"]["command"]
    )
    grafana_targets = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert "/etc/grafana/provisioning/datasources" in grafana_targets
    assert "/etc/grafana/provisioning/dashboards" in grafana_targets
    assert "/var/lib/grafana/dashboards" in grafana_targets


# --- Dockerfile -----------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[str]:
    """Logical Dockerfile instructions: comments dropped, `\\` continuations joined.

    >>> dockerfile_instructions("# c\\nFROM a\\nRUN x \\\\\\n && y\\nCMD [\\"z\\"]\\n")
    ['FROM a', 'RUN x && y', 'CMD ["z"]']
    """
    instructions: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        instructions.append(pending + line)
        pending = ""
    return instructions


def test_dockerfile_layers_user_and_healthcheck() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    assert instructions[0] == "FROM python:3.11-slim"

    def first(prefix: str) -> int:
        return next(i for i, ln in enumerate(instructions) if ln.startswith(prefix))

    deps = first("COPY pyproject.toml")
    torch = first("RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
    source = min(first("COPY models/"), first("COPY service/"))
    assert deps < torch < source, "dependencies must be installed before the source is copied"
    assert "-r " in instructions[torch], "the other dependencies belong in the same layer"
    user = first("USER ")
    assert instructions[user].split()[1] not in ("root", "0")
    assert source < user < first("CMD ")
    assert "/healthz" in instructions[first("HEALTHCHECK ")]
    cmd = json.loads(instructions[first("CMD ")][len("CMD ") :])
    assert cmd[:2] == ["streambalance", "serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    for copy in (ln for ln in instructions if ln.startswith("COPY ")):
        src = copy.split()[1]
        assert (ROOT / src).exists(), f"{copy!r}: {src} is not in the repository"


def test_dockerignore_keeps_context_small() -> None:
    ignored = set(DOCKERIGNORE.read_text(encoding="utf-8").split())
    assert {".git", ".venv", "tests"} <= ignored
    assert not {"models", "service", "pyproject.toml", "README.md"} & ignored


# --- Prometheus -----------------------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: install Debian's `prometheus` package "
            "(apt-get install prometheus; .ci/run does this) to check deploy/prometheus.yml"
        )
    return path


def test_promtool_accepts_prometheus_config() -> None:
    result = subprocess.run(
        [_promtool(), "check", "config", str(PROMETHEUS)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_config(tmp_path: Path) -> None:
    # Proves the check above can fail: same file with an invalid scrape interval.
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS.read_text(encoding="utf-8").replace("5s", "five seconds"))
    result = subprocess.run(
        [_promtool(), "check", "config", str(broken)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # promtool parses PromQL in recording rules: one rule per dashboard expression, with
    # Grafana's interval variables replaced by a literal duration.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": re.sub(r"\$__\w+", "1m", expr)}
        for i, expr in enumerate(dashboard_exprs())
    ]
    assert rules
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [_promtool(), "check", "rules", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout + result.stderr


def _promtool_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = _promtool_run("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool_run("test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_alert_rule_tests_fail_on_a_broken_rule(tmp_path: Path) -> None:
    # Proves the unit tests can fail: the same rules with the 5xx threshold at 50%.
    (tmp_path / "alerts.yml").write_text(
        ALERTS.read_text(encoding="utf-8").replace("> 0.01", "> 0.5")
    )
    (tmp_path / "alerts.test.yml").write_text(ALERT_TESTS.read_text(encoding="utf-8"))
    result = _promtool_run("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert result.returncode != 0, result.stdout
    assert "StreambalanceHigh5xxRate" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet_and_covers_the_issue() -> None:
    alerts = {r["alert"] for g in _load_yaml(ALERTS)["groups"] for r in g["rules"]}
    cases = [
        (case["alertname"], bool(case["exp_alerts"]))
        for test in _load_yaml(ALERT_TESTS)["tests"]
        for case in test["alert_rule_test"]
    ]
    for alert in alerts:
        assert (alert, True) in cases and (alert, False) in cases, alert
    # Issue 17 item 3: drift, minority recall, learner lag, checkpoint age, dead letters,
    # Redis memory near its limit, 5xx rate.
    wanted = {"DriftDetected", "MinorityRecallLow", "LearnerLag", "CheckpointStale",
              "DeadLetters", "RedisMemoryHigh", "High5xxRate"}  # fmt: skip
    assert {f"Streambalance{w}" for w in wanted} <= alerts
    for rule in (r for g in _load_yaml(ALERTS)["groups"] for r in g["rules"]):
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_alert_rules_select_only_exported_metrics() -> None:
    names = set().union(*(promql_metric_names(e) for e in alert_exprs()))
    unknown = names - EXPORTED_SERIES - {"up"}
    assert not unknown, f"alert rules select metrics the service does not export: {unknown}"


def test_compose_prometheus_loads_the_alert_rules(compose: dict[str, Any]) -> None:
    config = _load_yaml(PROMETHEUS)
    assert config["rule_files"] == ["alerts.yml"]  # relative to the config file
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes


def test_prometheus_scrapes_every_service_replica_every_5s() -> None:
    config = _load_yaml(PROMETHEUS)
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "streambalance")
    interval = job.get("scrape_interval", config["global"]["scrape_interval"])
    assert interval == "5s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["streambalance"] and sd["type"] == "A" and sd["port"] == 8000


# --- Grafana --------------------------------------------------------------------------


def test_grafana_datasource_is_the_compose_prometheus() -> None:
    files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
    assert files
    sources = [s for f in files for s in _load_yaml(f)["datasources"]]
    prom = [s for s in sources if s["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in _dashboard_panels(dashboard):
        if panel["type"] == "row":
            continue
        for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert ref == {"type": "prometheus", "uid": prom[0]["uid"]}, panel["title"]


def test_grafana_dashboard_provider_points_at_the_mount() -> None:
    files = sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
    providers = [p for f in files for p in _load_yaml(f)["providers"]]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
    assert providers[0]["type"] == "file"


def test_dashboard_is_valid_json_with_unique_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = _dashboard_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_dashboard_queries_only_exported_metrics() -> None:
    names = dashboard_metric_names()
    unknown = names - EXPORTED_SERIES
    assert not unknown, f"dashboard queries metrics the service does not export: {unknown}"


def test_dashboard_shows_what_operators_need() -> None:
    names = dashboard_metric_names()
    required = {
        "streambalance_class_frequency",
        "streambalance_class_factor",
        "streambalance_class_recall",
        "streambalance_class_precision",
        "streambalance_drift_state",
        "streambalance_drift_detections_total",
        "streambalance_learn_latency_seconds_bucket",
        "streambalance_predict_latency_seconds_bucket",
        "streambalance_stream_lag_events",
        "streambalance_model_version",
        "streambalance_checkpoint_age_seconds",
        "streambalance_production_recall",
        "streambalance_production_precision",
        "streambalance_label_delay_seconds_bucket",
    }
    assert not required - names, f"missing from the dashboard: {required - names}"
    exprs = dashboard_exprs()
    for hist in ("streambalance_learn_latency_seconds", "streambalance_predict_latency_seconds"):
        assert any("histogram_quantile(" in e and f"{hist}_bucket" in e for e in exprs), (
            f"no latency quantile panel for {hist}"
        )
