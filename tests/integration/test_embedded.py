"""EmbeddedRedis: a real server child process, its persistence and its lifetime."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from service.storage.embedded_server import EVICTION_POLICIES, EmbeddedRedis, EmbeddedRedisError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still has a pid: treat it as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_starts_on_a_unix_socket_with_aof_everysec_and_no_tcp() -> None:
    server = EmbeddedRedis()
    url = server.start()
    try:
        assert url == f"unix://{server.socket_path}"
        assert server.startup_seconds is not None and server.startup_seconds < 10
        client = redis.Redis.from_url(url, decode_responses=True)
        assert client.ping()
        config = client.config_get("*")
        assert config["port"] == "0"
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "everysec"
        assert config["save"] == ""
        assert config["maxmemory"] == "0"  # EmbeddedRedis' own default; the service sets one
        assert config["maxmemory-policy"] == "volatile-lru"
        client.close()
        data_dir = server.socket_path.parent
        pid = server.pid
    finally:
        server.stop()
    assert not _alive(pid)
    assert not data_dir.exists()  # a temporary data dir is removed on stop
    server.stop()  # stopping twice is harmless


def test_data_survives_a_clean_restart_and_a_kill(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        client.set("clean", b"1")
        client.close()
    assert (tmp_path / "redis.log").exists()
    server = EmbeddedRedis(data_dir=tmp_path)
    client = redis.Redis.from_url(server.start())
    assert client.get("clean") == b"1"
    client.set("killed", b"2")
    client.close()
    # kill -9 of Redis itself: the write reached the AOF file (the OS page cache) before
    # the reply, so only a machine crash could lose the last second under everysec
    server.kill()
    with EmbeddedRedis(data_dir=tmp_path) as again:
        client = redis.Redis.from_url(again.url)
        assert client.mget("clean", "killed") == [b"1", b"2"]
        client.close()


def test_without_appendonly_nothing_persists(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path, appendonly=False) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.set("k", "v")
        client.close()
    with EmbeddedRedis(data_dir=tmp_path, appendonly=False) as server:
        client = redis.Redis.from_url(server.url)
        assert client.get("k") is None
        client.close()


def test_two_servers_never_share_a_data_dir(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path):
        second = EmbeddedRedis(data_dir=tmp_path, start_timeout=0.3)
        with pytest.raises(EmbeddedRedisError, match="already answers"):
            second.start()


def test_a_failed_start_reports_the_server_log(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path, binary=Path("/bin/false"), start_timeout=2.0)
    with pytest.raises(EmbeddedRedisError, match="exited with code 1"):
        server.start()


_CHILD = textwrap.dedent(
    """
    import sys, time
    from service.storage.embedded_server import EmbeddedRedis
    server = EmbeddedRedis(data_dir=sys.argv[2] if sys.argv[2:] else None)
    server.start()
    print(server.pid, flush=True)
    if sys.argv[1] == "hang":
        time.sleep(60)
    """
)


@pytest.mark.parametrize("how", ["normal-exit", "kill-9"])
def test_the_server_never_outlives_its_parent(how: str, tmp_path: Path) -> None:
    # normal exit: a temporary data dir, removed by the parent's atexit; kill -9: nothing
    # in the parent can clean up, so the data dir is the test's
    args = ["exit"] if how == "normal-exit" else ["hang", str(tmp_path)]
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD, *args],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    if how == "kill-9":
        parent.kill()  # no atexit: the parent-death signal makes Redis shut down cleanly
    parent.wait(10)
    parent.stdout.close()
    assert _wait_gone(child, 10.0), f"redis child {child} survived its parent ({how})"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"appendfsync": "sometimes"}, "appendfsync must be one of"),
        ({"start_timeout": 0}, "start_timeout must be > 0, got 0"),
        ({"maxmemory": "lots"}, "maxmemory must be bytes or like"),
        ({"maxmemory_policy": "allkeys-lru"}, "maxmemory_policy must be one of"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmbeddedRedis(**kwargs)


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(EmbeddedRedisError, match="not running"):
        _ = EmbeddedRedis().url


def test_the_memory_budget_reaches_the_server(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path, maxmemory="64MB", maxmemory_policy="volatile-ttl") as s:
        client = redis.Redis.from_url(s.url, decode_responses=True)
        config = client.config_get("maxmemory*")
        client.close()
    assert config["maxmemory"] == str(64 * 2**20) and config["maxmemory-policy"] == "volatile-ttl"


def test_the_settings_offer_exactly_the_policies_that_spare_durable_keys() -> None:
    from typing import get_args

    from service.settings import Settings

    offered = get_args(Settings.model_fields["redis_maxmemory_policy"].annotation)
    assert offered == EVICTION_POLICIES
    assert not [p for p in offered if p.startswith("allkeys")]
