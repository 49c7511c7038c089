"""Service exceptions and their one mapping to HTTP responses.

Hierarchy:

    ServiceError                 status_code, JSON body {"detail": message, ...}
    ├── BadRequest      422      a field of the request is invalid (message names the field)
    ├── PayloadTooLarge 413      the body is over `max_body_bytes`
    ├── Unauthorized    401      missing or wrong X-API-Key on a write route
    ├── NotReady        503      model not loaded yet / Redis unreachable
    ├── WaitTimeout     504      `wait=true` and the learner did not apply the events in time
    └── LearnerFailed   500      `wait=true` and the learner failed on the events (a bug)

Redis connection errors raised anywhere in a request become 503 with a message saying so;
nothing is dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.schemas import ORJSONResponse

__all__ = [
    "BadRequest",
    "LearnerFailed",
    "NotReady",
    "PayloadTooLarge",
    "ServiceError",
    "Unauthorized",
    "WaitTimeout",
    "format_errors",
    "install_error_handlers",
]

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status_code = 500

    def __init__(self, message: str, **extra: Any):
        super().__init__(message)
        self.message = message
        self.extra = extra

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, **self.extra}


class BadRequest(ServiceError):
    status_code = 422


class PayloadTooLarge(ServiceError):
    status_code = 413


class Unauthorized(ServiceError):
    status_code = 401


class NotReady(ServiceError):
    status_code = 503


class WaitTimeout(ServiceError):
    status_code = 504


class LearnerFailed(ServiceError):
    status_code = 500


def _path(loc: tuple[Any, ...]) -> str:
    """('events', 3, 'features') -> 'events[3].features'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_errors(
    errors: Iterable[Mapping[str, Any]], prefix: tuple[Any, ...] = ()
) -> list[dict[str, str]]:
    """Pydantic errors -> [{"field": "events[3].features.amount", "message": "NaN is not allowed"}].

    Feature checks report the offending feature name in `ctx["key"]` so it lands in the path.

    >>> format_errors([{"loc": ("events", 3, "label"), "msg": "Value error, unknown label 'x'"}])
    [{'field': 'events[3].label', 'message': "unknown label 'x'"}]
    """
    out = []
    for err in errors:
        loc = prefix + tuple(err.get("loc", ()))
        ctx = err.get("ctx") or {}
        if "key" in ctx:
            loc = loc + (str(ctx["key"]),)
        message = ctx.get("reason") or str(err.get("msg", "invalid"))
        out.append(
            {"field": _path(loc) or "body", "message": message.removeprefix("Value error, ")}
        )
    return out


def bad_request_from(
    errors: Iterable[Mapping[str, Any]], prefix: tuple[Any, ...] = ()
) -> BadRequest:
    formatted = format_errors(errors, prefix)[:20]
    first = formatted[0] if formatted else {"field": "body", "message": "invalid request"}
    return BadRequest(f"{first['field']}: {first['message']}", errors=formatted)


async def _service_error(request: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, ServiceError)
    headers = (
        {"WWW-Authenticate": "X-API-Key"}
        if isinstance(exc, Unauthorized)
        else getattr(exc, "headers", None)
    )
    return ORJSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> ORJSONResponse:
    assert isinstance(exc, (RequestValidationError, ValidationError))
    err = bad_request_from(exc.errors())
    return ORJSONResponse(err.body(), status_code=422)


async def _redis_error(request: Request, exc: Exception) -> ORJSONResponse:
    log.warning("redis unreachable during %s %s: %s", request.method, request.url.path, exc)
    body = {"detail": f"Redis is unreachable ({type(exc).__name__}: {exc}); nothing was stored"}
    return ORJSONResponse(body, status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception kind to its HTTP response, once for the whole app."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_error)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_error)
    app.add_exception_handler(ConnectionError, _redis_error)
