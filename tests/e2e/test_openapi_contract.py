"""The OpenAPI document against the real app's answers: the keyed operations are the ones
that refuse a request without the key, and every answer (errors included) validates against
the schema documented for its status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import jsonschema_rs

from service.settings import Settings
from tests.e2e.conftest import fraud_stream, running

KEY = "contract-key-0123456"


def _validator(doc: dict[str, Any], operation: dict[str, Any], status: int) -> Any:
    documented = operation["responses"].get(str(status))
    assert documented is not None, f"status {status} is not documented"
    schema = documented["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for({**schema, "components": doc["components"]})


def _request(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    concrete = path.replace("{name}", "nope")
    if method == "POST" and "json" not in kwargs:
        kwargs["json"] = {"events": [{"features": {"amount": 3.0}, "label": "legit"}]}
        if path == "/predict":
            kwargs["json"] = {"events": [{"features": {"amount": 3.0}}]}
        elif path == "/models/rollback":
            kwargs["json"] = {"version": 999}
    return client.request(method, concrete, **kwargs)


async def test_answers_match_the_document(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(api_key=KEY, auth_read_routes=True, shadows="weighted")
    auth = {"X-API-Key": KEY}
    async with running(settings) as (_, client):
        doc = (await client.get("/openapi.json")).json()
        learned = await client.post(
            "/learn?wait=true", json={"events": fraud_stream(200, 0.1, seed=51)}, headers=auth
        )
        assert learned.status_code == 200, learned.text
        checked: list[str] = []
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                method = method.upper()
                anonymous = await _request(client, method, path)
                if "security" in op:
                    assert anonymous.status_code == 401, (method, path, anonymous.text)
                    _validator(doc, op, 401).validate(anonymous.json())
                else:
                    assert anonymous.status_code != 401, (method, path)
                keyed = await _request(client, method, path, headers=auth)
                if keyed.headers["content-type"].startswith("application/json"):
                    _validator(doc, op, keyed.status_code).validate(keyed.json())
                    checked.append(f"{method} {path} {keyed.status_code}")
        errors = {
            "POST /learn 422": await client.post(
                "/learn", json={"events": [{"features": {"a": 1}, "label": "x"}]}, headers=auth
            ),
            "POST /learn 413": await client.post(
                "/learn", content=b"{" + b" " * settings.max_body_bytes + b"}", headers=auth
            ),
            "GET /state/history 422": await client.get("/state/history?after=x", headers=auth),
            "POST /models/{name}/promote 409": await client.post(
                f"/models/{settings.strategy}/promote", headers=auth  # already the champion
            ),
        }
        for name, response in errors.items():
            method, path, status = name.split()
            assert response.status_code == int(status), (name, response.text)
            op = doc["paths"][path][method.lower()]
            _validator(doc, op, response.status_code).validate(response.json())
    for expected in ("GET /state 200", "GET /models 200", "POST /predict 200", "GET /drift 200"):
        assert expected in checked, checked
    assert "POST /models/{name}/promote 404" in checked, checked
