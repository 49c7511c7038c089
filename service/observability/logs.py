"""Structured logs: one JSON object per line, each carrying the request id it belongs to.

`configure_logging` routes every logger (ours, uvicorn's) through `JsonFormatter`; the
request id of the line comes from `request_id_var`, which `service.http.middleware` sets for
each request (the caller's `X-Request-ID`, or a new one). `log_event`
writes the events of note (start-up with the effective configuration, checkpoints, drift,
promotions, errors) with their fields as JSON keys, so a log pipeline can filter on
`"event": "checkpoint"` instead of parsing prose.

Secrets never reach a line: `redacted_settings` masks secret settings and URL passwords, and
the formatter replaces any configured secret value wherever it appears (a last line of
defence against a message that interpolates one by mistake).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import orjson

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "log_event",
    "log_startup",
    "redact_url",
    "redacted_settings",
    "request_id",
    "request_id_var",
]

MASK = "***"
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName",
}  # fmt: skip

request_id_var: ContextVar[str | None] = ContextVar("streambalance_request_id", default=None)


def request_id() -> str | None:
    """The id of the request being handled in this context (None outside a request)."""
    return request_id_var.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event, message, request_id, fields.

    secrets: values replaced by "***" wherever they appear in the finished line.

    >>> record = logging.LogRecord("sb", logging.INFO, "", 0, "key is %s", ("s3cret-key",), None)
    >>> line = JsonFormatter(secrets=["s3cret-key"]).format(record)
    >>> orjson.loads(line)["message"]
    'key is ***'
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret containing another is masked whole; each also in its
        # JSON-escaped spelling (a key with a quote or backslash is escaped in the line).
        forms = {f for s in secrets if s for f in (s, orjson.dumps(s).decode()[1:-1])}
        self.secrets = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            payload["request_id"] = rid
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRS and name not in payload and name != "event":
                payload[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            payload["error"] = {
                "type": record.exc_info[0].__name__,
                "message": str(record.exc_info[1]),
                "traceback": self.formatException(record.exc_info),
            }
        line = orjson.dumps(payload, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
        for secret in self.secrets:
            line = line.replace(secret, MASK)
        return line


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure_logging(
    level: str = "info", secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record, uvicorn's included, to `stream` (stderr) as JSON lines.

    Replaces the root logger's handlers (so calling it twice does not double lines) and makes
    uvicorn's loggers propagate to it. Returns the handler.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
    return handler


def log_event(
    logger: logging.Logger,
    event: str,
    message: str = "",
    *,
    level: int = logging.INFO,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    """Write one event of note: `event` names it, `fields` become top-level JSON keys.

    Field names that clash with LogRecord attributes (e.g. "name", "msg") get a "_" suffix.
    """
    extra = {(k + "_" if k in _RECORD_ATTRS else k): v for k, v in fields.items()}
    extra["event"] = event
    logger.log(level, message or event, extra=extra, exc_info=exc_info)


def redact_url(url: str | None) -> str | None:
    """A URL with any password replaced by "***".

    >>> redact_url("redis://:hunter2@cache:6379/0")
    'redis://:***@cache:6379/0'
    >>> redact_url("unix:///tmp/redis.sock")
    'unix:///tmp/redis.sock'
    """
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redacted_settings(settings: Any) -> dict[str, Any]:
    """The effective configuration as JSON-able values, secrets masked and URL passwords hidden.

    Works on any pydantic model: `SecretStr`/`SecretBytes` fields become "***" when set.
    """
    from pydantic import SecretBytes, SecretStr

    out: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr | SecretBytes):
            out[name] = MASK
        elif name.endswith("url") and isinstance(value, str):
            out[name] = redact_url(value)
        elif isinstance(value, str | int | float | bool) or value is None:
            out[name] = value
        elif isinstance(value, Mapping):
            out[name] = {str(k): v for k, v in value.items()}
        elif isinstance(value, list | tuple):
            out[name] = list(value)
        else:
            out[name] = str(value)
    return out


def secrets_of(settings: Any) -> list[str]:
    """Every secret value set in `settings` (for `configure_logging(secrets=...)`)."""
    from pydantic import SecretBytes, SecretStr

    out = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            out.append(value.get_secret_value())
        elif isinstance(value, SecretBytes):
            out.append(value.get_secret_value().decode(errors="replace"))
        elif name.endswith("url") and isinstance(value, str):
            password = urlsplit(value).password
            if password:
                out.append(password)
    return out


def log_startup(logger: logging.Logger, settings: Any, **fields: Any) -> None:
    """The start-up line: the effective configuration minus secrets."""
    log_event(
        logger, "startup", "streambalance starting", config=redacted_settings(settings), **fields
    )
