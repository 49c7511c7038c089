"""A Python client for the streambalance HTTP API: `Client` (blocking) and `AsyncClient`.

    from service.client import Client

    with Client("http://127.0.0.1:8000") as sb:        # X-API-Key from STREAMBALANCE_API_KEY
        sb.learn([{"features": {"amount": 912.4, "mcc": "5732"}, "label": "fraud"}])
        p = sb.predict({"amount": 912.4, "mcc": "5732"})
        sb.label(p.prediction_id, "fraud")             # the chargeback, days later
        sb.state()["class_frequencies"]

Retries are safe because every event carries an id before its first try: an event without one
gets a random id (a late label gets `label:<prediction_id>`), the same on every retry, so the
service drops a resent copy as a duplicate. Network errors, timeouts, 429 (after Retry-After)
and 5xx are retried with exponential backoff and jitter; other answers raise at once.

`learn` and `predict_many` send batches of at most `batch_size` events; a batch the service
finds too large (413) is split in half and resent. Errors are exceptions that carry the
service's message, which names the offending field:

    ClientError                 anything this client raises
    ├── ConnectionFailed        no answer (network error or timeout) after the retries
    └── APIError                an error answer: status, detail, errors, field
        ├── InvalidRequest      422 (and 400): `field` says which
        ├── PayloadTooLarge     413 for a single event
        ├── Unauthorized        401: missing or wrong API key
        ├── NotFound            404
        ├── Conflict            409
        ├── RateLimited         429, still after the retries
        ├── Unavailable         500/502/503, still after the retries
        └── WaitTimedOut        504: `wait=true` timed out; the events are stored
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx

__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "InvalidRequest",
    "LearnResult",
    "NotFound",
    "PayloadTooLarge",
    "Prediction",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "WaitTimedOut",
    "assign_ids",
]

log = logging.getLogger("streambalance.client")

API_KEY_ENV = "STREAMBALANCE_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
# Statuses worth another try: the request may succeed later, and resending is safe (event ids).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_T = TypeVar("_T")


# -- errors ---------------------------------------------------------------------------------


class ClientError(Exception):
    """Anything the client raises. `attempts`: how many times the request was sent."""

    retryable = False

    def __init__(self, message: str, *, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, attempts={self.attempts})"


class ConnectionFailed(ClientError):
    """No answer: a network error or a timeout (after the retries)."""

    retryable = True


class APIError(ClientError):
    """The service answered with an error.

    status: the HTTP status. detail: the service's message (`"<field>: <problem>"`).
    errors: every problem of an invalid body, `[{"field", "message"}, ...]`.
    field: the offending field (the first one), when the service named one.
    retry_after: seconds the service asked to wait (429), if it said.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"HTTP {status}: {detail}", attempts=attempts)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.retry_after = retry_after

    @property
    def field(self) -> str | None:
        if self.errors:
            return self.errors[0].get("field")
        name, sep, _ = self.detail.partition(": ")
        return name if sep and " " not in name else None

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status in RETRY_STATUSES

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, detail={self.detail!r})"


class InvalidRequest(APIError):
    """422 (or 400): the request is invalid; `field` names what."""


class PayloadTooLarge(APIError):
    """413: even a single event is over the service's body limit."""


class Unauthorized(APIError):
    """401: the X-API-Key header is missing or wrong (set STREAMBALANCE_API_KEY)."""


class NotFound(APIError):
    """404."""


class Conflict(APIError):
    """409."""


class RateLimited(APIError):
    """429 after the retries: this source spent its budget."""


class Unavailable(APIError):
    """500/502/503 after the retries: the service or its Redis is not answering properly."""


class WaitTimedOut(APIError):
    """504: `wait=true` timed out. The events are stored and will still be learned."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    429: RateLimited,
    500: Unavailable,
    502: Unavailable,
    503: Unavailable,
    504: WaitTimedOut,
}


def _error_from(response: httpx.Response, attempts: int = 1) -> APIError:
    """The exception for an error answer, with the service's `detail` and `errors`."""
    detail = response.reason_phrase or "error"
    errors = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        detail = body["detail"]
        errors = body.get("errors") if isinstance(body.get("errors"), list) else None
    elif response.text:
        detail = response.text[:500]
    retry_after = response.headers.get("Retry-After", "")
    kind = _BY_STATUS.get(response.status_code, APIError)
    return kind(
        response.status_code,
        detail,
        errors=errors,
        retry_after=float(retry_after) if retry_after.isdigit() else None,
        attempts=attempts,
    )


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LearnResult:
    """What `learn` (or `label`) achieved.

    accepted: events newly stored. duplicates: events whose id the service had already seen
        (after a retry, that includes what an earlier try of the same request had stored).
    ids: the id of every event sent, in order (given, or assigned by the client).
    model_version: with wait=True, the model version that applied the last batch.
    retries: requests sent again after an error.
    """

    accepted: int
    duplicates: int
    ids: list[str]
    model_version: int | None = None
    retries: int = 0


@dataclass(frozen=True)
class Prediction:
    """One prediction. `data` is the whole answer, fields of newer services included."""

    label: str
    probabilities: dict[str, float]
    prediction_id: str | None
    model_version: int
    data: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        return cls(
            label=data["label"],
            probabilities=data["probabilities"],
            prediction_id=data.get("prediction_id"),
            model_version=data["model_version"],
            data=data,
        )


# -- the protocol, without I/O ----------------------------------------------------------------


def assign_ids(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `events`, each with an id: its own, `label:<prediction_id>` for a late label,
    else a random one. Send the copies to resend with the same ids after a failure.

    >>> a, b, c = assign_ids([{"id": "tx-1", "label": 0},
    ...                       {"prediction_id": "86fe", "label": "fraud"},
    ...                       {"features": {"amount": 3.5}, "label": 1}])
    >>> a["id"], b["id"], len(c["id"])
    ('tx-1', 'label:86fe', 32)
    """
    out = []
    for event in events:
        copy = dict(event)
        if copy.get("id") is None:
            pid = copy.get("prediction_id")
            copy["id"] = f"label:{pid}" if isinstance(pid, str) else uuid.uuid4().hex
        out.append(copy)
    return out


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` items (the last one shorter), without reading `items` ahead.

    >>> list(_chunks(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None

    def request_args(self) -> dict[str, Any]:
        """httpx arguments. NaN and infinity are sent as the JSON extensions `NaN` and
        `Infinity`, so the service's 422 names the field (httpx would refuse to encode them)."""
        if self.json is None:
            return {"params": self.params}
        return {
            "params": self.params,
            "content": json.dumps(self.json, separators=(",", ":")).encode(),
            "headers": {"Content-Type": "application/json"},
        }


@dataclass(frozen=True)
class _Reply:
    body: Any
    retries: int


# A plan yields the calls to make and receives each reply (or the APIError, thrown in); its
# return value is the method's result. Both clients run the same plans.
_Plan = Generator[_Call, _Reply, Any]


@dataclass
class _Tally:
    accepted: int = 0
    duplicates: int = 0
    retries: int = 0
    model_version: int | None = None
    ids: list[str] = field(default_factory=list)

    def result(self) -> LearnResult:
        return LearnResult(
            self.accepted, self.duplicates, self.ids, self.model_version, self.retries
        )


def _learn_plan(events: Iterable[Mapping[str, Any]], batch_size: int, wait: bool) -> _Plan:
    tally = _Tally()
    for chunk in _chunks(events, batch_size):
        batch = assign_ids(chunk)  # before the first try: every retry resends the same ids
        tally.ids.extend(str(event["id"]) for event in batch)
        yield from _learn_batch(batch, wait, tally)
    return tally.result()


def _learn_batch(batch: list[dict[str, Any]], wait: bool, tally: _Tally) -> _Plan:
    params = {"wait": "true"} if wait else None
    try:
        reply = yield _Call("POST", "/learn", {"events": batch}, params)
    except PayloadTooLarge:
        if len(batch) == 1:
            raise
        half = len(batch) // 2
        yield from _learn_batch(batch[:half], wait, tally)
        yield from _learn_batch(batch[half:], wait, tally)
        return
    tally.accepted += int(reply.body.get("accepted", 0))
    tally.duplicates += int(reply.body.get("duplicates", 0))
    tally.retries += reply.retries
    if reply.body.get("model_version") is not None:
        tally.model_version = int(reply.body["model_version"])


def _predict_plan(features: Iterable[Mapping[str, Any]], batch_size: int) -> _Plan:
    out: list[Prediction] = []
    for chunk in _chunks(features, batch_size):
        out.extend((yield from _predict_batch(chunk)))
    return out


def _predict_batch(chunk: list[Mapping[str, Any]]) -> _Plan:
    try:
        reply = yield _Call("POST", "/predict", {"events": [{"features": f} for f in chunk]})
    except PayloadTooLarge:
        if len(chunk) == 1:
            raise
        half = len(chunk) // 2
        first = yield from _predict_batch(chunk[:half])
        return first + (yield from _predict_batch(chunk[half:]))
    return [Prediction.from_json(p) for p in reply.body["predictions"]]


def _get_plan(path: str) -> _Plan:
    reply = yield _Call("GET", path)
    return reply.body


def _as_events(events: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> Iterable[Any]:
    return [events] if isinstance(events, Mapping) else events


class _ClientBase(Generic[_T]):
    """What both clients share: the base URL, the key header, batch size, retry policy and
    the httpx client (`_http_class`, made with the given transport)."""

    _http_class: Any

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        batch_size: int = 500,
        transport: _T | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self._http = self._http_class(
            base_url=self.url,
            headers={"X-API-Key": key} if key else {},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _delay(self, attempt: int, error: ClientError) -> float:
        """Exponential backoff with jitter, at least the service's Retry-After."""
        base = min(self.max_backoff, self.backoff * 2**attempt)
        wait = base * (0.5 + random.random() / 2)
        retry_after = getattr(error, "retry_after", None)
        return max(wait, retry_after) if retry_after is not None else wait

    def _should_retry(self, attempt: int, error: ClientError, call: _Call) -> bool:
        """Whether a failed try gets another one (logged when it does)."""
        if not error.retryable or attempt >= self.retries:
            return False
        log.warning(
            "%s %s: %s; retry %d of %d", call.method, call.path, error.message, attempt + 1,
            self.retries,
        )  # fmt: skip
        return True


def _outcome(response: httpx.Response, attempt: int) -> _Reply | APIError:
    if response.status_code < 400:
        return _Reply(response.json(), attempt)
    return _error_from(response, attempts=attempt + 1)


def _connection_failed(call: _Call, exc: httpx.TransportError, attempt: int) -> ConnectionFailed:
    return ConnectionFailed(
        f"{call.method} {call.path}: {type(exc).__name__}: {exc}", attempts=attempt + 1
    )


# -- the clients ----------------------------------------------------------------------------


class Client(_ClientBase[httpx.BaseTransport]):
    """A blocking client of one streambalance service.

    url: the service's base URL. api_key: X-API-Key (default: $STREAMBALANCE_API_KEY).
    timeout: seconds per request; keep it above the service's WAIT_TIMEOUT_S (30 s) when
        using wait=True. retries: further tries of a request after a retryable failure.
    backoff, max_backoff: the first retry waits about `backoff` s, doubling up to `max_backoff`.
    batch_size: events per request (the service takes at most MAX_BATCH_EVENTS, 1000).
    transport: an httpx transport, e.g. to reach the service through a proxy or in tests.
    """

    _http_class = httpx.Client

    def learn(
        self, events: Mapping[str, Any] | Iterable[Mapping[str, Any]], *, wait: bool = False
    ) -> LearnResult:
        """Learn one event or many (`{"id"?, "features", "label", "timestamp"?}` each), in
        batches. wait=True returns once the learner has applied them."""
        plan = _learn_plan(_as_events(events), self.batch_size, wait)
        result: LearnResult = self._run(plan)
        return result

    def label(self, prediction_id: str, label: str | int, *, wait: bool = False) -> LearnResult:
        """A late label (e.g. a chargeback) for an earlier prediction."""
        return self.learn({"prediction_id": prediction_id, "label": label}, wait=wait)

    def predict(self, features: Mapping[str, Any]) -> Prediction:
        """The prediction for one event's features."""
        (prediction,) = self.predict_many([features])
        return prediction

    def predict_many(self, features: Iterable[Mapping[str, Any]]) -> list[Prediction]:
        """Predictions for many events' features, in order, in batches."""
        result: list[Prediction] = self._run(_predict_plan(features, self.batch_size))
        return result

    def state(self) -> dict[str, Any]:
        """GET /state: class frequencies, factors, counts, versions, lag, metrics."""
        result: dict[str, Any] = self._run(_get_plan("/state"))
        return result

    def drift(self) -> dict[str, Any]:
        """GET /drift: every drift and training-health signal."""
        result: dict[str, Any] = self._run(_get_plan("/drift"))
        return result

    def ready(self) -> bool:
        """GET /readyz once, no retries: Redis reachable and the model loaded."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, plan: _Plan) -> Any:
        try:
            call = next(plan)
            while True:
                try:
                    reply = self._call(call)
                except APIError as exc:
                    call = plan.throw(exc)
                else:
                    call = plan.send(reply)
        except StopIteration as done:
            return done.value

    def _call(self, call: _Call) -> _Reply:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, **call.request_args())
                outcome: _Reply | ClientError = _outcome(response, attempt)
            except httpx.TransportError as exc:
                outcome = _connection_failed(call, exc, attempt)
            if isinstance(outcome, _Reply):
                return outcome
            if not self._should_retry(attempt, outcome, call):
                raise outcome
            time.sleep(self._delay(attempt, outcome))
            attempt += 1


class AsyncClient(_ClientBase[httpx.AsyncBaseTransport]):
    """The asyncio twin of `Client`: the same arguments, `await` on each method; `transport`
    is an async httpx transport (e.g. `httpx.ASGITransport(app)` to talk to an app in-process).
    """

    _http_class = httpx.AsyncClient

    async def learn(
        self, events: Mapping[str, Any] | Iterable[Mapping[str, Any]], *, wait: bool = False
    ) -> LearnResult:
        """See `Client.learn`."""
        plan = _learn_plan(_as_events(events), self.batch_size, wait)
        result: LearnResult = await self._run(plan)
        return result

    async def label(
        self, prediction_id: str, label: str | int, *, wait: bool = False
    ) -> LearnResult:
        """See `Client.label`."""
        return await self.learn({"prediction_id": prediction_id, "label": label}, wait=wait)

    async def predict(self, features: Mapping[str, Any]) -> Prediction:
        """See `Client.predict`."""
        (prediction,) = await self.predict_many([features])
        return prediction

    async def predict_many(self, features: Iterable[Mapping[str, Any]]) -> list[Prediction]:
        """See `Client.predict_many`."""
        plan = _predict_plan(features, self.batch_size)
        result: list[Prediction] = await self._run(plan)
        return result

    async def state(self) -> dict[str, Any]:
        """See `Client.state`."""
        result: dict[str, Any] = await self._run(_get_plan("/state"))
        return result

    async def drift(self) -> dict[str, Any]:
        """See `Client.drift`."""
        result: dict[str, Any] = await self._run(_get_plan("/drift"))
        return result

    async def ready(self) -> bool:
        """See `Client.ready`."""
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, plan: _Plan) -> Any:
        try:
            call = next(plan)
            while True:
                try:
                    reply = await self._call(call)
                except APIError as exc:
                    call = plan.throw(exc)
                else:
                    call = plan.send(reply)
        except StopIteration as done:
            return done.value

    async def _call(self, call: _Call) -> _Reply:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, **call.request_args())
                outcome: _Reply | ClientError = _outcome(response, attempt)
            except httpx.TransportError as exc:
                outcome = _connection_failed(call, exc, attempt)
            if isinstance(outcome, _Reply):
                return outcome
            if not self._should_retry(attempt, outcome, call):
                raise outcome
            await asyncio.sleep(self._delay(attempt, outcome))
            attempt += 1
