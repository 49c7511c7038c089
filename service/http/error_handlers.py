"""The one mapping of exceptions to HTTP responses, installed once per app.

`ServiceError`s answer with their status and `{"detail": message, ...}`; pydantic validation
errors become 422 naming the field; a Redis failure raised anywhere in a request (unreachable,
out of memory, a read-only replica, a cluster redirection, ...) becomes a 503 whose detail and
`cause` name it: nothing is dropped silently.
"""

from __future__ import annotations

import logging

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from models.features import FeatureError
from service.errors import ServiceError, Unauthorized
from service.http.responses import ORJSONResponse
from service.http.schemas import bad_request_from
from service.storage.redis_errors import describe_redis_error

__all__ = ["install_error_handlers"]

log = logging.getLogger(__name__)


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


async def _feature_error(request: Request, exc: Exception) -> ORJSONResponse:
    # A backstop: the request validators refuse what the featurizer would, so reaching here
    # means they missed a case; still the client's input, still a 422 naming the field.
    assert isinstance(exc, FeatureError)
    log.warning("featurizer refused input the validators passed: %s", exc)
    field = f"features.{exc.field}"
    body = {"detail": f"{field}: {exc.reason}", "errors": [{"field": field, "message": exc.reason}]}
    return ORJSONResponse(body, status_code=422)


async def _redis_error(request: Request, exc: Exception) -> ORJSONResponse:
    # Unreachable, out of memory, a read-only replica, a cluster redirection: a state of the
    # server, not of the request, so a JSON 503 that names it. Any other refusal (a script
    # error, an ACL) is ours: a JSON 500 that still says what Redis answered.
    cause, message = describe_redis_error(exc)
    log.warning("redis %s during %s %s: %s", cause, request.method, request.url.path, exc)
    status = 500 if cause == "error" else 503
    return ORJSONResponse({"detail": message, "cause": cause}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception kind to its HTTP response, once for the whole app."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(FeatureError, _feature_error)
    app.add_exception_handler(redis.exceptions.RedisError, _redis_error)
    app.add_exception_handler(ConnectionError, _redis_error)
