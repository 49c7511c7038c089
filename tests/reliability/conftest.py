"""Fault-test harness: the real `streambalance` CLI as child processes on loopback.

`Proc` runs `streambalance serve` (or `worker`) with a given environment, its output in a log
file, and can SIGKILL or SIGTERM it. `service_factory` starts them and stops whatever is left
after the test. Every test here prints its measured outcome in its assertion messages, and
the table in docs/reliability.md is copied from those.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# The in-process app harness (`running`, `make_settings`) is the end-to-end suite's: one copy.
from tests.e2e.conftest import make_settings, running  # noqa: F401

BIN = Path(sys.executable).parent / "streambalance"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Proc:
    """One `streambalance serve|worker` child process."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log_path
        self.port = int(env["STREAMBALANCE_PORT"]) if command == "serve" else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, ready_timeout: float = 90.0) -> Proc:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN), self.command], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        if self.command == "serve":
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.command} exited with {self.process.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                if httpx.get(self.url + "/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.command} not ready within {timeout} s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no final checkpoint."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def service_env(redis_url: str | None, data_dir: Path, **settings: Any) -> dict[str, str]:
    """Environment of a child: only what the test sets, plus PATH/HOME; loopback only."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STREAMBALANCE_") and k != "REDIS_URL"
    }
    env.update({
        "STREAMBALANCE_HOST": "127.0.0.1",
        "STREAMBALANCE_PORT": str(free_port()),
        "STREAMBALANCE_DATA_DIR": str(data_dir),
        "STREAMBALANCE_BATCH_MAX_WAIT_MS": "5",
        "STREAMBALANCE_WORKER_METRICS_PORT": "0",
        "OMP_NUM_THREADS": "1",  # 2 shared cores: one torch thread per process
    })  # fmt: skip
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    for name, value in settings.items():
        env[f"STREAMBALANCE_{name.upper()}"] = str(value)
    return env


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """service_factory(redis_url, command="serve", start=True, **settings) -> a started Proc."""
    procs: list[Proc] = []

    def make(
        redis_url: str | None,
        command: str = "serve",
        start: bool = True,
        name: str | None = None,
        **settings: Any,
    ) -> Proc:
        name = name or f"{command}{len(procs)}"
        env = service_env(redis_url, tmp_path / f"data-{name}", **settings)
        proc = Proc(command, env, tmp_path / f"{name}.log")
        procs.append(proc)
        return proc.start() if start else proc

    yield make
    for proc in procs:
        proc.stop(timeout=20)


