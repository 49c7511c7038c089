"""What routes depend on: the app's `Runtime` (see `service.runtime`), the API key check and
the size-limited body, with `Annotated` aliases for the routes that use FastAPI's injection.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReady, PayloadTooLarge, Unauthorized
from service.runtime import Runtime

__all__ = [
    "ApiKey",
    "ReadKey",
    "Rt",
    "check_key",
    "read_body",
    "require_api_key",
    "require_read_key",
    "runtime_of",
]

# The hot routes (/learn, /predict) call `runtime_of` and `check_key` themselves instead of
# declaring them as dependencies: FastAPI's dependency solver cost about 35 µs of a
# ~450 µs GET /predict (py-spy, cProfile), more than the check itself. The other routes use
# the `Depends` forms. OpenAPI documents the key as a security scheme (service.http.openapi).


def runtime_of(request: Request) -> Runtime:
    """The app's live `Runtime`; 503 while the service is starting up."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReady("service: starting up")
    return runtime


def check_key(request: Request, *, read: bool) -> None:
    """When an API key is configured, X-API-Key must match (constant time). Read routes need
    it only when STREAMBALANCE_AUTH_READ_ROUTES is on."""
    settings = request.app.state.settings
    expected = settings.api_key
    if expected is None or (read and not settings.auth_read_routes):
        return
    given = request.headers.get("x-api-key")
    if given is None:
        request.app.state.metrics.events_rejected.labels("unauthorized").inc()
        raise Unauthorized("X-API-Key: header missing (this route needs the API key)")
    # The header's raw bytes (Starlette decodes them as Latin-1) against the key, which the
    # settings keep to printable ASCII: no text encoding can make the right key miss.
    if not hmac.compare_digest(given.encode("latin-1"), expected.get_secret_value().encode()):
        request.app.state.metrics.events_rejected.labels("unauthorized").inc()
        raise Unauthorized("X-API-Key: wrong key")


# Dependencies are `async def`: FastAPI runs plain `def` ones in a worker thread, a thread
# hop (and GIL hand-off) per dependency per request for a few attribute reads.
async def _runtime(request: Request) -> Runtime:
    return runtime_of(request)


Rt = Annotated[Runtime, Depends(_runtime)]


async def require_api_key(request: Request) -> None:
    """Write routes: when an API key is configured, X-API-Key must match (constant time)."""
    check_key(request, read=False)


ApiKey = Depends(require_api_key)


async def require_read_key(request: Request) -> None:
    """Read routes: need the key only when STREAMBALANCE_AUTH_READ_ROUTES is on."""
    check_key(request, read=True)


ReadKey = Depends(require_read_key)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (declared or actually streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body: {declared} bytes, at most {limit} allowed")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body: more than {limit} bytes, at most {limit} allowed")
        chunks.append(chunk)
    return b"".join(chunks)
