"""The Grafana dashboard's queries and the alert rules find data: every series name they
select, and every label they group by, is exported by a running service's /metrics.

tests/integration/test_deploy_files.py extracts the names from the dashboard's PromQL and
checks them against the metric contract; this test checks them against the real app (real
embedded Redis, real learner task) after some traffic.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from service.http.app import create_app
from service.settings import Settings
from tests.integration.test_deploy_files import alert_exprs, dashboard_exprs, promql_metric_names

_GROUPING = re.compile(r"\b(?:by|without|on)\s*\(([^()]*)\)")
# Labels Prometheus adds to every scraped series, and the metric it makes itself.
_TARGET_LABELS = {"job", "instance", "le"}
_PROMETHEUS_OWN = {"up"}


def _events(n: int) -> list[dict[str, object]]:
    # 1 in 10 fraud, separable on amount and mcc, so both classes get recall/precision.
    return [
        {
            "id": f"tx-{i}",
            "features": {
                "amount": 900.0 + i % 7 if i % 10 == 0 else 10.0 + i % 13,
                "mcc": "4829" if i % 10 == 0 else "5411",
            },
            "label": "fraud" if i % 10 == 0 else "legit",
        }
        for i in range(n)
    ]


async def _drive_traffic(client: httpx.AsyncClient) -> str:
    events = _events(120)
    for start in range(0, len(events), 40):
        batch = {"events": events[start : start + 40]}
        response = await client.post("/learn?wait=true", json=batch)
        assert response.status_code == 200, response.text
    # Exercise the other counters: a duplicate, a rejected event, both predict kinds.
    response = await client.post("/learn?wait=true", json={"events": events[:2]})
    assert response.status_code in (200, 202), response.text
    assert response.json()["duplicates"] == 2
    response = await client.post("/learn", json={"features": {"amount": 1.0}, "label": "nope"})
    assert response.status_code == 422, response.text
    response = await client.get("/predict", params={"amount": 950.0, "mcc": "4829"})
    assert response.status_code == 200, response.text
    fraud_id = response.json()["prediction_id"]
    response = await client.post("/predict", json={"events": [{"features": {"amount": 12.0}}]})
    assert response.status_code == 200, response.text
    legit_id = response.json()["predictions"][0]["prediction_id"]
    # Late labels for both: production performance (both classes, so PR-AUC) and label delay.
    late = {"events": [{"prediction_id": fraud_id, "label": "fraud"},
                       {"prediction_id": legit_id, "label": "legit"}]}  # fmt: skip
    response = await client.post("/learn?wait=true", json=late)
    assert response.status_code == 200, response.text
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_every_dashboard_query_finds_exported_series(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(
        redis_url=redis_url,
        data_dir=tmp_path,
        classes=["legit", "fraud"],
        batch_max_wait_ms=5,
        checkpoint_every_steps=1,
    )
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://sb"
        ) as client,
    ):
        text = await _drive_traffic(client)

    labels_of: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels_of[sample.name] |= set(sample.labels)

    for what, exprs in (("dashboard", dashboard_exprs()), ("alert rules", alert_exprs())):
        queried = set().union(*(promql_metric_names(e) for e in exprs)) - _PROMETHEUS_OWN
        assert len(queried) >= 7, queried  # the extraction itself found the metrics
        missing = sorted(queried - labels_of.keys())
        assert not missing, f"queried by the {what} but not exported by the service: {missing}"
        for expr in exprs:
            names = promql_metric_names(expr) - _PROMETHEUS_OWN
            available = set().union(*(labels_of[n] for n in names))
            for group in _GROUPING.findall(expr):
                for label in (part.strip() for part in group.split(",")):
                    if label and label not in _TARGET_LABELS:
                        assert label in available, f"{expr}: no exported series has {label!r}"
