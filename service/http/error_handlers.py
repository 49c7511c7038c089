"""The one mapping of exceptions to HTTP responses, installed once per app.

`ServiceError`s answer with their status and `{"detail": message, ...}`; pydantic validation
errors become 422 naming the field; Redis connection errors raised anywhere in a request
become 503 with a message saying so: nothing is dropped silently.
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
    log.warning("redis unreachable during %s %s: %s", request.method, request.url.path, exc)
    body = {"detail": f"Redis is unreachable ({type(exc).__name__}: {exc}); nothing was stored"}
    return ORJSONResponse(body, status_code=503)


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception kind to its HTTP response, once for the whole app."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(FeatureError, _feature_error)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_error)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_error)
    app.add_exception_handler(ConnectionError, _redis_error)
