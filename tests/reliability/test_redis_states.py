"""Issue 17 item 4: a Redis that refuses work without being down. A real server is put in
each state: out of memory (maxmemory below its use, `noeviction`), a read-only replica
(`REPLICAOF`), a cluster node whose slot moved to another node (`MOVED`). Every request
answers within the contract (a JSON 503 naming the cause, never a plain-text 500),
`/readyz` fails while writes fail, predictions still answer, and the learner waits the
state out instead of dead-lettering what it could not apply."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from asgi_lifespan import LifespanManager

from service.http.app import create_app
from service.settings import Settings
from service.storage.embedded_server import EmbeddedRedis, find_server_binary
from service.storage.keys import Keys
from tests.reliability.helpers import make_events

PREDICT = {"amount": 650.0, "mcc": "5732", "ip_risk": 0.9}


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI, with app exceptions turned into responses as a server would send
    them (a plain-text 500), so a test sees what a client sees."""
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, raise_app_exceptions=False),
            base_url="http://sb",
        ) as client,
    ):
        yield client


async def _contract_answers(client: httpx.AsyncClient) -> dict[str, Any]:
    """What each kind of request answers in the current Redis state."""
    out: dict[str, Any] = {}
    learn = await client.post("/learn", json={"events": make_events(5, seed=99, prefix="in")})
    out["learn"] = (learn.status_code, learn.headers.get("content-type"), learn.text[:300])
    ready = await client.get("/readyz")
    out["readyz"] = (ready.status_code, ready.text[:300])
    out["predict"] = (await client.get("/predict", params=PREDICT)).status_code
    out["healthz"] = (await client.get("/healthz")).status_code
    out["metrics"] = (await client.get("/metrics")).status_code
    return out


def _check_refusal(answers: dict[str, Any], cause: str, words: str) -> list[str]:
    problems = []
    status, content_type, text = answers["learn"]
    if status != 503 or "application/json" not in str(content_type):
        problems.append(f"learn answered {status} {content_type}: {text}")
    else:
        body = orjson.loads(text)
        if body.get("cause") != cause or words not in body.get("detail", ""):
            problems.append(f"learn 503 does not name {cause!r} / {words!r}: {body}")
    if answers["readyz"][0] != 503 or words not in answers["readyz"][1]:
        problems.append(f"readyz {answers['readyz']}")
    for route in ("predict", "healthz", "metrics"):
        if answers[route] != 200:
            problems.append(f"{route} answered {answers[route]}")
    return problems


async def _learned(client: httpx.AsyncClient, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    learned = -1
    while time.monotonic() < deadline:
        response = await client.get("/state")
        if response.status_code == 200:
            learned = response.json()["events_learned"]
            if learned >= expected:
                return learned
        await asyncio.sleep(0.1)
    return learned


@pytest.mark.slow
async def test_out_of_memory_is_a_json_503_and_the_learner_loses_nothing(
    redis_factory: Callable[..., EmbeddedRedis], make_settings: Callable[..., Settings], tmp_path
) -> None:
    server = redis_factory(data_dir=tmp_path / "redis")
    sync = redis.Redis.from_url(server.url)
    settings = make_settings(
        redis_url=server.url, checkpoint_every_seconds=0.5, claim_idle_ms=1000, max_deliveries=3
    )
    keys = Keys(settings.model_name)
    first, stranded, after = (
        make_events(40, seed=s, prefix=p) for s, p in ((1, "a"), (2, "b"), (3, "c"))
    )
    async with serving(settings) as client:
        ok = await client.post("/learn?wait=true", json={"events": first})
        assert ok.status_code == 200, ok.text
        # Entries the learner has read but not applied when memory runs out: appended and
        # the limit lowered in one transaction, so the learner's next step meets the OOM.
        events = [{"features": e["features"], "label": 1 if e["label"] == "fraud" else 0}
                  for e in stranded]  # fmt: skip
        with sync.pipeline(transaction=True) as pipe:
            for i in range(0, len(events), 10):
                pipe.xadd(keys.events, {"e": orjson.dumps(events[i : i + 10])})
            pipe.config_set("maxmemory", "1")  # policy noeviction: every write is refused
            pipe.execute()
        await asyncio.sleep(6.0)  # > CLAIM_IDLE_MS x (MAX_DELIVERIES + 1)
        answers = await _contract_answers(client)
        sync.config_set("maxmemory", "0")
        recovered = await client.post("/learn?wait=true", json={"events": after})
        ready_after = (await client.get("/readyz")).status_code
        learned = await _learned(client, 120)
        dead = sync.xlen(keys.dead)
    sync.close()
    outcome = (
        f"while out of memory: {answers}; after: learn {recovered.status_code}, readyz "
        f"{ready_after}; learned {learned} of 120 acknowledged; dead letters {dead}"
    )
    print(outcome)
    problems = _check_refusal(answers, "out_of_memory", "out of memory")
    assert not problems, f"{problems}; {outcome}"
    assert recovered.status_code == 200 and ready_after == 200, outcome
    assert learned == 120 and dead == 0, outcome


@pytest.mark.slow
async def test_a_read_only_replica_is_a_json_503_and_readyz_fails(
    redis_factory: Callable[..., EmbeddedRedis], make_settings: Callable[..., Settings], tmp_path
) -> None:
    server = redis_factory(data_dir=tmp_path / "redis")
    primary = redis_factory(data_dir=tmp_path / "primary")
    sync, primary_client = redis.Redis.from_url(server.url), redis.Redis.from_url(primary.url)
    port = _free_port()
    primary_client.config_set("port", str(port))  # REPLICAOF needs TCP; loopback only
    settings = make_settings(redis_url=server.url)
    async with serving(settings) as client:
        ok = await client.post("/learn?wait=true", json={"events": make_events(20, seed=4)})
        assert ok.status_code == 200, ok.text
        sync.replicaof("127.0.0.1", port)
        _wait_until(lambda: sync.info("replication").get("master_link_status") == "up", 20.0)
        answers = await _contract_answers(client)
        sync.replicaof("NO", "ONE")
        recovered = await client.post("/learn", json={"events": make_events(5, seed=5)})
        ready_after = (await client.get("/readyz")).status_code
    sync.close()
    primary_client.close()
    outcome = (
        f"as a replica: {answers}; "
        f"promoted again: learn {recovered.status_code}, readyz {ready_after}"
    )
    print(outcome)
    problems = _check_refusal(answers, "read_only", "read-only replica")
    assert not problems, f"{problems}; {outcome}"
    assert recovered.status_code == 202 and ready_after == 200, outcome


@pytest.mark.slow
async def test_a_cluster_redirection_is_a_json_503_and_readyz_fails(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with _cluster_node(tmp_path / "a") as node_a, _cluster_node(tmp_path / "b") as node_b:
        a, b = redis.Redis(port=node_a), redis.Redis(port=node_b)
        a.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        _wait_until(lambda: a.cluster("info")["cluster_state"] == "ok", 20.0)
        settings = make_settings(redis_url=f"redis://127.0.0.1:{node_a}/0")
        slot = a.cluster("keyslot", Keys(settings.model_name).events)
        async with serving(settings) as client:
            ok = await client.post("/learn?wait=true", json={"events": make_events(20, seed=6)})
            assert ok.status_code == 200, ok.text
            # The model's slot moves to node b: node a answers MOVED for every one of its keys.
            b.execute_command("CLUSTER", "MEET", "127.0.0.1", node_a)
            _wait_until(lambda: len(a.cluster("nodes")) == 2, 20.0)
            a.execute_command("CLUSTER", "DELSLOTS", slot)
            b.execute_command("CLUSTER", "ADDSLOTS", slot)
            b.execute_command("CLUSTER", "BUMPEPOCH")
            _wait_until(lambda: _owner(a, slot) == node_b, 20.0)
            answers = await _contract_answers(client)
        a.close()
        b.close()
    outcome = f"slot {slot} moved to :{node_b}: {answers}"
    print(outcome)
    problems = _check_refusal(answers, "cluster_redirect", "cluster redirection")
    assert not problems, f"{problems}; {outcome}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def _owner(client: redis.Redis, slot: int) -> int | None:
    """The port of the node that `client`'s node believes serves `slot`."""
    for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(primary[1])
    return None


@contextmanager
def _cluster_node(directory: Path) -> Iterator[int]:
    """A real cluster-enabled server on a loopback port (its bus on port + 10000)."""
    directory.mkdir(parents=True)
    port = _free_port()
    while port + 10000 > 65535:
        port = _free_port()
    process = subprocess.Popen(
        [str(find_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
         "--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"),
         "--dir", str(directory), "--save", "", "--appendonly", "no",
         "--logfile", str(directory / "server.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_until(lambda: redis.Redis(port=port).ping(), 10.0)
        yield port
    finally:
        process.terminate()
        process.wait(10)
