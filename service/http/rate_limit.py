"""The rate limit at the HTTP edge: who sent a request, and 429 when that source is over budget.

The limiter itself (GCRA in Redis, one budget per source shared by every replica) is
`service.ingest.rate_limit.RateLimiter`; this module only names the source of a request.
"""

from __future__ import annotations

from fastapi import Request

from service.ingest.rate_limit import RateLimiter

__all__ = ["enforce", "source_of"]


def source_of(request: Request, header: str | None, api_key_configured: bool) -> tuple[str, str]:
    """(kind, identity) of the sender: the trusted header, else the API key, else the address.

    The header must be one a gateway sets (a client could otherwise rotate it). The API key
    counts only when one is configured, i.e. when it has been checked (auth runs first).
    """
    if header:
        value = request.headers.get(header)
        if value:
            return "header", value
    if api_key_configured:
        value = request.headers.get("X-API-Key")
        if value:
            return "api_key", value
    client = request.client
    return "client", client.host if client is not None else "unknown"


async def enforce(limiter: RateLimiter, request: Request, cost: int) -> None:
    """Raise `RateLimited` (429 + Retry-After) when the request's source is over budget."""
    api_key = getattr(request.app.state.settings, "api_key", None) is not None
    kind, identity = source_of(request, limiter.header, api_key)
    await limiter.check(kind, identity, cost)
