"""Structured JSON logs with request ids; no secret in a log line or in /metrics."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from service.http.middleware import RequestIdMiddleware
from service.observability.logs import (
    JsonFormatter,
    configure_logging,
    log_event,
    redacted_settings,
    secrets_of,
)
from service.settings import Settings
from tests.reliability.conftest import running

KEY = "k3y-0f-the-fraud-team-7f9e"


@pytest.fixture
def captured() -> Iterator[Callable[[], list[dict]]]:
    """Route logging to a buffer as JSON lines (as the CLI does); restore afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    configure_logging("info", secrets=[KEY], stream=buffer)

    def lines() -> list[dict]:
        return [orjson.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    lines.raw = buffer  # type: ignore[attr-defined]
    yield lines
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_one_json_object_per_line_with_fields_and_errors(
    captured: Callable[[], list[dict]],
) -> None:
    log = logging.getLogger("service.test")
    log_event(log, "checkpoint", version=3, events_learned=1200, name="clash")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("learner failed")
    first, second = captured()
    assert (
        first["event"] == "checkpoint" and first["version"] == 3 and first["events_learned"] == 1200
    )
    assert (
        first["level"] == "info" and first["logger"] == "service.test" and first["name_"] == "clash"
    )
    assert first["time"].endswith("Z")
    assert second["level"] == "error" and second["error"]["type"] == "ValueError"
    assert "boom" in second["error"]["traceback"]


def test_secret_values_are_masked_anywhere_in_a_line(captured: Callable[[], list[dict]]) -> None:
    logging.getLogger("x").warning("bad header %r from %s", KEY, {"key": KEY})
    raw = captured.raw.getvalue()  # type: ignore[attr-defined]
    assert KEY not in raw and "***" in raw


def test_secrets_needing_json_escapes_are_masked_too() -> None:
    odd = 'ke"y\\with-escapes-0123'
    record = logging.LogRecord("sb", logging.INFO, "", 0, "got %s", (odd,), None)
    line = JsonFormatter(secrets=[odd]).format(record)
    assert "escapes-0123" not in line and orjson.loads(line)["message"] == "got ***"


def test_redacted_settings_hide_the_key_and_url_passwords() -> None:
    settings = Settings(api_key=SecretStr(KEY), redis_url="redis://:pa55word@cache:6379/0")
    config = redacted_settings(settings)
    text = orjson.dumps(config).decode()
    assert KEY not in text and "pa55word" not in text
    assert config["api_key"] == "***" and config["redis_url"] == "redis://:***@cache:6379/0"
    assert config["classes"] == ["legit", "fraud"] and config["half_life"] == settings.half_life
    assert set(secrets_of(settings)) == {KEY, "pa55word"}
    assert redacted_settings(Settings())["api_key"] is None


async def test_request_id_is_propagated_generated_and_logged(
    captured: Callable[[], list[dict]],
) -> None:
    app = FastAPI()
    log = logging.getLogger("service.test")

    @app.get("/x")
    async def x() -> dict:
        log_event(log, "handled")
        return {}

    app.add_middleware(RequestIdMiddleware)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        given = await client.get("/x", headers={"X-Request-ID": "gw-123.abc"})
        fresh = await client.get("/x")
        hostile = await client.get("/x", headers={"X-Request-ID": "a b\tc" + "x" * 300})
    assert given.headers["X-Request-ID"] == "gw-123.abc"
    assert len(fresh.headers["X-Request-ID"]) == 32
    assert hostile.headers["X-Request-ID"] not in ("a b\tc" + "x" * 300, "")
    ids = [line["request_id"] for line in captured() if line["event"] == "handled"]
    assert ids == ["gw-123.abc", fresh.headers["X-Request-ID"], hostile.headers["X-Request-ID"]]


async def test_app_logs_json_with_request_ids_and_never_the_key(
    captured: Callable[[], list[dict]], redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=redis_url, api_key=KEY, checkpoint_every_seconds=0.2)
    async with running(settings) as (_, client):
        ok = await client.post(
            "/learn?wait=true",
            headers={"X-API-Key": KEY, "X-Request-ID": "req-1"},
            json={"id": "a", "features": {"x": 1.0}, "label": "fraud"},
        )
        assert ok.status_code == 200, ok.text
        assert ok.headers.get("X-Request-ID") == "req-1", "RequestIdMiddleware is not installed"
        wrong = await client.post(
            "/learn",
            headers={"X-API-Key": KEY[:-1] + "X"},
            json={"id": "b", "features": {"x": 1.0}, "label": "fraud"},
        )
        assert wrong.status_code == 401
        metrics = (await client.get("/metrics", headers={"X-API-Key": KEY})).text
        state = (await client.get("/state", headers={"X-API-Key": KEY})).text
    raw = captured.raw.getvalue()  # type: ignore[attr-defined]
    assert KEY not in raw and KEY not in metrics and KEY not in state and KEY[:-1] not in raw
    events = {line["event"] for line in captured()}
    startup = [line for line in captured() if line["event"] == "startup"]
    assert startup and startup[0]["config"]["api_key"] == "***", (
        f"no start-up line; events seen {events}"
    )
    assert "checkpoint" in events, f"no checkpoint line; events seen {events}"
