"""The one pure-ASGI layer every request passes: its request id, the log of an unhandled
exception, and the HTTP metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observability.logs import log_event, request_id_var
from service.observability.prometheus import HttpMetrics

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware"]

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is echoed into logs and headers: keep it short and printable.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Pure ASGI middleware: one request id per HTTP request, in logs and in the response,
    and (given `http_metrics`) the request's count and latency per route.

    A valid incoming `X-Request-ID` (1-128 of letters, digits, `._:-`) is kept, so an id
    set by a gateway follows the request through; anything else is replaced by a new one.
    An exception escaping the app is logged once here, with the request id, then re-raised.
    Both jobs sit in one layer because each layer wraps `send` and costs every request; the
    HTTP metrics were prometheus-fastapi-instrumentator's middleware until a py-spy profile
    put it at 18% of a `GET /predict`.
    """

    def __init__(
        self,
        app: ASGIApp,
        header: str = REQUEST_ID_HEADER,
        http_metrics: HttpMetrics | None = None,
        excluded_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.header = header
        self._header_key = header.lower().encode("latin-1")
        self._log = logging.getLogger("service.requests")
        self._metrics = http_metrics
        self._excluded = frozenset(excluded_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = None
        for key, value in scope.get("headers", ()):
            if key == self._header_key:
                candidate = value.decode("latin-1")
                rid = candidate if _VALID_ID.match(candidate) else None
                break
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k != self._header_key]
                headers.append((self._header_key, rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            status = 500
            log_event(
                self._log, "error", "unhandled exception in request", level=logging.ERROR,
                method=scope.get("method"), path=scope.get("path"), exc_info=True,
            )  # fmt: skip
            raise
        finally:
            request_id_var.reset(token)
            if self._metrics is not None and scope.get("path") not in self._excluded:
                route = scope.get("route")
                handler = getattr(route, "path", None) or "none"
                self._metrics.observe(
                    handler, scope.get("method", ""), status, time.perf_counter() - started
                )
