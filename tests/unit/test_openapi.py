"""The OpenAPI document (`/openapi.json`): the service's own error body on every error status,
response models for every JSON answer, the API key as a security scheme on the operations
that need it under the running configuration. No server needed: the document is built from
the app's routes. tests/e2e/test_openapi_contract.py checks it against real answers."""

from __future__ import annotations

from typing import Any

import pytest

from service.http.app import create_app
from service.http.openapi import ERRORS, KEYED, SECURITY_SCHEME
from service.settings import Settings

KEY = "openapi-key-123456"
ERROR_REF = "#/components/schemas/ErrorResponse"
WRITES = {op for op, kind in KEYED.items() if kind == "write"}


def document(**settings: Any) -> dict[str, Any]:
    return create_app(Settings(**settings)).openapi()


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }


def test_the_tables_cover_exactly_the_routes() -> None:
    documented = set(operations(document()))  # FastAPI lists every route of the app
    assert documented == set(ERRORS), documented ^ set(ERRORS)
    assert set(KEYED) <= documented


def test_a_route_missing_from_the_table_stops_the_document() -> None:
    app = create_app(Settings())

    @app.get("/undocumented")
    async def undocumented() -> dict[str, str]:
        return {}

    with pytest.raises(KeyError, match="GET /undocumented: add its error statuses"):
        app.openapi()


def test_every_error_status_answers_the_service_error_body() -> None:
    doc = document(api_key=KEY, auth_read_routes=True)
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    error = schemas["ErrorResponse"]
    assert error["required"] == ["detail"] and error["properties"]["detail"]["type"] == "string"
    assert schemas["FieldError"]["required"] == ["field", "message"]
    for (method, path), op in operations(doc).items():
        documented = {int(s) for s in op["responses"] if s.startswith(("4", "5"))}
        expected = set(ERRORS[(method, path)]) | ({401} if (method, path) in KEYED else set())
        assert documented == expected, (method, path)
        for status in documented:
            content = op["responses"][str(status)]["content"]
            assert content == {"application/json": {"schema": {"$ref": ERROR_REF}}}
    assert "HTTPValidationError" not in str(doc)


@pytest.mark.parametrize(
    ("path", "model", "fields"),
    [
        ("/state", "StateResponse", {"class_frequencies", "factors", "counts", "model_version"}),
        ("/models", "ModelsResponse", {"champion", "shadows", "versions", "operations"}),
        ("/state/history", "HistoryResponse", {"interval_s", "classes", "samples"}),
        ("/readyz", "ReadyResponse", {"status", "model_version"}),
    ],
)
def test_json_answers_have_response_models(path: str, model: str, fields: set[str]) -> None:
    doc = document()
    ok = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": f"#/components/schemas/{model}"}
    schema = doc["components"]["schemas"][model]
    assert schema["type"] == "object" and fields <= set(schema["required"])


def test_the_key_is_a_security_scheme_attached_as_configured() -> None:
    scheme = {"type": "apiKey", "in": "header", "name": "X-API-Key"}

    def secured(doc: dict[str, Any]) -> set[tuple[str, str]]:
        assert scheme.items() <= doc["components"]["securitySchemes"][SECURITY_SCHEME].items()
        for op in operations(doc).values():
            names = [p["name"].lower() for p in op.get("parameters", [])]
            assert "x-api-key" not in names  # the scheme documents it, not a parameter
        return {
            key
            for key, op in operations(doc).items()
            if op.get("security") == [{SECURITY_SCHEME: []}]
        }

    assert secured(document()) == set()
    assert secured(document(api_key=KEY)) == WRITES
    assert secured(document(api_key=KEY, auth_read_routes=True)) == set(KEYED)
    assert {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/")}.isdisjoint(KEYED)
