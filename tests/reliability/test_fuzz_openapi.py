"""Issue 6 §6 (generated cases): schemathesis walks every operation of the running service's
/openapi.json with schema-valid and schema-violating inputs: zero 5xx, no response that
violates the schema (error bodies included); afterwards the model is finite and /state
consistent. Run twice: without an API key, and with one required everywhere (the document's
security scheme then says so, and schemathesis checks each keyed operation refuses a request
without the key or with a wrong one)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation

from tests.reliability.conftest import Proc

EXAMPLES = 25  # per operation and mode: bounded (the whole walk takes well under a minute)
KEY = "fuzz-key-5b0e7d21c4"


@pytest.mark.slow
@pytest.mark.parametrize("keyed", [False, True], ids=["open", "keyed"])
def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    service_factory: Callable[..., Proc], keyed: bool
) -> None:
    settings = {"api_key": KEY, "auth_read_routes": "true"} if keyed else {}
    service = service_factory(None, name="fuzz", **settings)
    headers = {"X-API-Key": KEY} if keyed else {}
    load_all_checks()
    schema = schemathesis.openapi.from_url(service.url + "/openapi.json")
    failures: list[str] = []
    calls: dict[str, dict[int, int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{operation.label} [{mode.value}]"
            seen = calls.setdefault(label, {})
            try:
                _walker(operation, mode, service.url, headers, seen, failures, label)()
            except Unsatisfiable:  # an operation with no inputs has no schema-violating variant
                if mode is GenerationMode.POSITIVE:
                    raise
                seen["no negative inputs"] = 0
    with httpx.Client(base_url=service.url, headers=headers, timeout=30.0) as client:
        body = client.get("/state").json()
        predicted = client.post("/predict", json={"events": [{"features": {"amount": 50.0}}]})
    summary = "; ".join(f"{k}: {v}" for k, v in calls.items())
    assert not any(isinstance(c, int) and c >= 500 for seen in calls.values() for c in seen), (
        summary
    )
    by_operation: dict[str, int] = {}
    for failure in failures:
        by_operation[failure.split(":")[0]] = by_operation.get(failure.split(":")[0], 0) + 1
    assert not failures, (
        f"{len(failures)} failures by operation {by_operation} ({summary}); first of each:\n"
        + "\n".join(next(f for f in failures if f.startswith(op + ":")) for op in by_operation)
    )
    assert body["events_learned"] == sum(body["counts"].values()), body
    assert all(
        math.isfinite(v) for v in [*body["class_frequencies"].values(), *body["factors"].values()]
    ), body
    probs = predicted.json()["predictions"][0]["probabilities"].values()
    assert predicted.status_code == 200 and all(math.isfinite(p) for p in probs), predicted.text
    print(f"schemathesis: {summary}")


def _walker(
    operation: Any,
    mode: GenerationMode,
    url: str,
    headers: dict[str, str],
    seen: dict,
    failures: list[str],
    label: str,
) -> Callable[[], None]:
    """A Hypothesis test over one operation in one mode; failures are collected, not raised."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def walk(case: schemathesis.Case) -> None:
        send = headers
        if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER):
            send = {}  # the case leaves out or mangles the key on purpose: keep it that way
        response = case.call(base_url=url, timeout=30, headers=send)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        # positive_data_acceptance is left out: the schema cannot say which labels are
        # configured or which prediction ids exist, so valid-looking data may rightly 422.
        excluded = [_check("positive_data_acceptance")]
        if operation.method.upper() == "GET" and operation.path == "/predict":
            # Free-form query features: a query value is always a string, so "null" or
            # "true" (schemathesis's "wrong type") is a legitimate categorical value.
            excluded.append(_check("negative_data_rejection"))
        try:
            case.validate_response(response, excluded_checks=excluded)
        except (Exception, FailureGroup) as exc:  # collect: one run reports every failure
            failures.append(f"{label}: {str(exc)[:600]}")

    return walk


def _check(name: str) -> Callable:
    from schemathesis import checks

    return getattr(checks, name)
