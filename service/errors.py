"""Service exceptions: one hierarchy, each kind with the HTTP status it maps to.

Hierarchy:

    ServiceError                 status_code, JSON body {"detail": message, ...}
    ├── BadRequest      422      a field of the request is invalid (message names the field)
    ├── PayloadTooLarge 413      the body is over `max_body_bytes`
    ├── Unauthorized    401      missing or wrong X-API-Key on a write route
    ├── NotFound        404      an unknown shadow challenger or model version
    ├── Conflict        409      a promotion or rollback this process cannot do
    ├── RateLimited     429      the source spent its budget (Retry-After)
    ├── NotReady        503      model not loaded yet / Redis unreachable
    ├── WaitTimeout     504      `wait=true` and the learner did not apply the events in time
    └── LearnerFailed   500      `wait=true` and the learner failed on the events (a bug)

A leaf: no FastAPI here. `service.http.error_handlers` maps these (and Redis connection
errors, as 503) to responses, once for the whole app.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "BadRequest",
    "Conflict",
    "LearnerFailed",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceError",
    "Unauthorized",
    "WaitTimeout",
]


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


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class RateLimited(ServiceError):
    """429: the source spent its budget; `headers` carries Retry-After (whole seconds)."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: float):
        retry = None if math.isinf(retry_after_s) else max(1, math.ceil(retry_after_s))
        super().__init__(message, retry_after=retry)
        self.headers = {} if retry is None else {"Retry-After": str(retry)}


class NotReady(ServiceError):
    status_code = 503


class WaitTimeout(ServiceError):
    status_code = 504


class LearnerFailed(ServiceError):
    status_code = 500
