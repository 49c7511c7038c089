"""service.client under faults, against real servers: every event is learned exactly once.

- responses lost on the way back (the service stored the batch, the client saw a network
  error): the retry resends the same ids, which the service drops as duplicates;
- 429 from the rate limiter: the client waits Retry-After and resends;
- Redis stopped under the service, then restarted: 503s, then the retries go through.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.client import AsyncClient, Client, ConnectionFailed
from service.settings import Settings
from service.storage.embedded_server import EmbeddedRedis
from tests.reliability.conftest import Proc, running
from tests.reliability.helpers import make_events, state, wait_learned


class ResponseLosingTransport(httpx.HTTPTransport):
    """A network that loses the answers of chosen `POST /learn` requests: the request reaches
    the service and is handled in full, then the client gets a read error instead."""

    def __init__(self, lose: Callable[[int], bool]) -> None:
        super().__init__()
        self.lose = lose
        self.learn_requests = 0
        self.lost = 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method != "POST" or request.url.path != "/learn":
            return response
        response.read()
        with self.lock:
            number = self.learn_requests
            self.learn_requests += 1
        if self.lose(number):
            self.lost += 1
            response.close()
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        return response


def _without_ids(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "id"} for e in events]


def _counts(events: list[dict[str, Any]]) -> dict[str, int]:
    frauds = sum(e["label"] == "fraud" for e in events)
    return {"legit": len(events) - frauds, "fraud": frauds}


@pytest.mark.slow
def test_lost_responses_are_resent_with_the_same_ids_and_learned_once(
    service_factory: Callable[..., Proc],
) -> None:
    service = service_factory(None, name="lossy")
    events = _without_ids(make_events(1000, seed=71))
    # The answer of every other /learn request is lost: the first try of each batch.
    transport = ResponseLosingTransport(lose=lambda n: n % 2 == 0)
    with Client(service.url, transport=transport, batch_size=100, backoff=0.05) as sb:
        result = sb.learn(events)
        final = wait_learned(service.url, len(events), settle=2.0)
    outcome = (
        f"{transport.lost} of {transport.learn_requests} answers lost; client: accepted "
        f"{result.accepted}, duplicates {result.duplicates}, retries {result.retries}; "
        f"service learned {final.get('events_learned')} of {len(events)}"
    )
    print(outcome)
    assert transport.lost == 10 and result.retries == 10, outcome
    # Every batch was stored by its lost first try; its retry found only duplicates.
    assert (result.accepted, result.duplicates) == (0, 1000), outcome
    assert len(set(result.ids)) == 1000, outcome
    assert final["events_learned"] == 1000, outcome
    assert final["counts"] == _counts(events), outcome


@pytest.mark.slow
def test_a_network_that_never_answers_raises_connection_failed_after_the_retries(
    service_factory: Callable[..., Proc],
) -> None:
    service = service_factory(None, name="lost")
    events = _without_ids(make_events(10, seed=72))
    transport = ResponseLosingTransport(lose=lambda n: True)
    with Client(service.url, transport=transport, retries=3, backoff=0.01) as sb:
        with pytest.raises(ConnectionFailed) as caught:
            sb.learn(events)
    assert caught.value.attempts == 4 and transport.learn_requests == 4
    assert "ReadError" in str(caught.value)
    # Four tries of one batch with one set of ids: stored once.
    assert wait_learned(service.url, 10, settle=1.0)["events_learned"] == 10


@pytest.mark.slow
def test_rate_limited_batches_wait_for_retry_after_and_are_learned_once(
    service_factory: Callable[..., Proc],
) -> None:
    service = service_factory(None, name="limited", rate_limit_per_s=200, rate_limit_burst=200)
    events = _without_ids(make_events(600, seed=73))
    with Client(service.url, batch_size=150, backoff=0.05) as sb:
        result = sb.learn(events, wait=True)
    final = wait_learned(service.url, len(events), settle=1.0)
    outcome = (
        f"client: accepted {result.accepted}, duplicates {result.duplicates}, retries "
        f"{result.retries}; service learned {final['events_learned']} of 600"
    )
    print(outcome)
    assert result.retries >= 1, outcome  # 600 events over a 200-event burst at 200/s
    assert (result.accepted, result.duplicates) == (600, 0), outcome
    assert final["events_learned"] == 600 and final["counts"] == _counts(events), outcome
    assert state(service.url)["events_learned"] == 600


@pytest.mark.slow
async def test_retries_ride_out_a_redis_outage_and_learn_each_event_once(
    redis_factory: Callable[..., EmbeddedRedis],
    make_settings: Callable[..., Settings],
    tmp_path: Any,
) -> None:
    server = redis_factory(data_dir=tmp_path / "redis")
    events = _without_ids(make_events(2000, seed=74))
    settings = make_settings(redis_url=server.url, checkpoint_every_seconds=0.5)
    async with running(settings) as (app, _):
        transport = httpx.ASGITransport(app=app)
        async with AsyncClient(
            "http://sb", transport=transport, batch_size=50, retries=12, backoff=0.1,
            max_backoff=1.0,
        ) as sb:  # fmt: skip
            first = await sb.learn(events[:500], wait=True)
            await asyncio.to_thread(server.stop)  # Redis goes away between two calls
            sending = asyncio.create_task(sb.learn(events[500:], wait=True))
            await asyncio.sleep(1.5)  # the client meets 503s meanwhile
            assert not sending.done()
            await asyncio.to_thread(server.start)  # same data dir: the AOF is reloaded
            result = await asyncio.wait_for(sending, timeout=120)
            final = await sb.state()
            for _ in range(50):
                if final["events_learned"] >= len(events):
                    break
                await asyncio.sleep(0.2)
                final = await sb.state()
    outcome = (
        f"during the outage: accepted {result.accepted}, duplicates {result.duplicates}, "
        f"retries {result.retries}; service learned {final['events_learned']} of 2000, "
        f"counts {final['counts']}"
    )
    print(outcome)
    assert first.accepted == 500 and first.retries == 0, outcome
    assert result.retries >= 1, outcome
    assert result.accepted + result.duplicates == 1500, outcome
    assert final["events_learned"] == 2000, outcome
    assert final["counts"] == _counts(events), outcome
