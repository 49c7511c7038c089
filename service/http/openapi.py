"""The OpenAPI document: what each operation answers and which need the API key.

FastAPI documents its own 422 body (`HTTPValidationError`) and knows nothing of the errors the
routes raise, so this module states them once, from two tables: `ERRORS`, the error statuses
of each operation (all answered with `ErrorResponse`), and `KEYED`, the operations that take
the API key. The key is an `apiKey` security scheme (`X-API-Key` header), attached to the
operations that need it under the running configuration: write routes when a key is set, read
routes too with `AUTH_READ_ROUTES`. tests/unit/test_openapi.py checks both tables against
the routes, and the service's answers against the document.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from service.http.schemas import ErrorResponse, LearnBatch, LearnEvent, PredictBatch
from service.settings import Settings

__all__ = ["ERRORS", "KEYED", "SECURITY_SCHEME", "build_openapi"]

SECURITY_SCHEME = "ApiKey"

# 503 on every route that needs the model's runtime: the service is starting, or Redis is
# unreachable. 413/422 where a body or parameters are read; 429 from the rate limiter; 504
# and 500 from `wait=true` (timed out; the learner failed on the events).
ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/learn"): (413, 422, 429, 500, 503, 504),
    ("GET", "/predict"): (422, 503),
    ("POST", "/predict"): (413, 422, 503),
    ("GET", "/drift"): (503,),
    ("GET", "/state"): (503,),
    ("GET", "/state/history"): (422, 503),
    ("GET", "/models"): (503,),
    ("POST", "/models/rollback"): (404, 409, 413, 422, 503),
    ("POST", "/models/{name}/promote"): (404, 409, 503),
    ("GET", "/metrics"): (),
    ("GET", "/readyz"): (503,),
    ("GET", "/healthz"): (),
    ("GET", "/"): (),
}

# "write": needs the key whenever one is configured; "read": only with AUTH_READ_ROUTES.
KEYED: dict[tuple[str, str], Literal["write", "read"]] = {
    ("POST", "/learn"): "write",
    ("POST", "/models/rollback"): "write",
    ("POST", "/models/{name}/promote"): "write",
    ("GET", "/predict"): "read",
    ("POST", "/predict"): "read",
    ("GET", "/drift"): "read",
    ("GET", "/state"): "read",
    ("GET", "/state/history"): "read",
    ("GET", "/models"): "read",
    ("GET", "/metrics"): "read",
}

_UNUSED_DEFAULTS = ("HTTPValidationError", "ValidationError")


def needs_key(method: str, path: str, settings: Settings) -> bool:
    """Whether this operation asks for X-API-Key under `settings`."""
    kind = KEYED.get((method, path))
    if kind is None or settings.api_key is None:
        return False
    return kind == "write" or settings.auth_read_routes


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The app's OpenAPI document (FastAPI's, with the real error bodies and the key)."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    # Routes read raw bodies (orjson, size limit), so their request schemas are added here.
    _, defs = models_json_schema(
        [(LearnEvent, "validation"), (LearnBatch, "validation"), (PredictBatch, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schemas.update(defs.get("$defs", {}))
    _, error_defs = models_json_schema(
        [(ErrorResponse, "serialization")], ref_template="#/components/schemas/{model}"
    )
    schemas.update(error_defs.get("$defs", {}))
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "the key in STREAMBALANCE_API_KEY; compared in constant time",
        }
    }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            _document(method.upper(), path, operation, settings)
    for name in _UNUSED_DEFAULTS:
        schemas.pop(name, None)
    return schema


def _document(method: str, path: str, operation: dict[str, Any], settings: Settings) -> None:
    if (method, path) not in ERRORS:
        raise KeyError(f"{method} {path}: add its error statuses to service.http.openapi.ERRORS")
    statuses = list(ERRORS[(method, path)])
    keyed = needs_key(method, path, settings)
    if keyed:
        operation["security"] = [{SECURITY_SCHEME: []}]
        statuses.append(401)
    responses = operation["responses"]
    for status in [s for s in responses if s.startswith(("4", "5"))]:
        del responses[status]  # FastAPI's 422, and anything stated ad hoc
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
            },
        }
    # The key is the security scheme's; a header parameter of the same name would duplicate it.
    operation["parameters"] = [
        p for p in operation.get("parameters", []) if p.get("name", "").lower() != "x-api-key"
    ]
    if not operation["parameters"]:
        del operation["parameters"]
