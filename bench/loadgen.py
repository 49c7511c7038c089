"""Closed-loop HTTP load on loopback: `wrk` when installed, a small asyncio client otherwise.

Both drivers take the same list of prepared requests (method, path, body), cycle through
it over a fixed number of keep-alive connections for a bounded time (and, for the Python
client, a bounded count), and return a `LoadResult` with req/s and latency percentiles.
wrk is preferred because it costs far less CPU per request than any Python client, which
matters when the load generator shares two cores with the server under test.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "LoadResult",
    "Request",
    "percentile",
    "run_load",
    "run_python",
    "run_wrk",
    "wrk_available",
]


@dataclass(frozen=True)
class Request:
    """One prepared HTTP request; `body` is sent as JSON when given."""

    method: str
    path: str
    body: bytes | None = None


@dataclass
class LoadResult:
    """What one load run measured. Latencies are milliseconds."""

    driver: str
    connections: int
    duration_s: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of `values`; NaN when empty.

    >>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50)
    3.0
    >>> percentile(list(range(1, 101)), 99)
    99
    >>> math.isnan(percentile([], 99))
    True
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


# The Lua script reads prepared requests from a file (one JSON object per line: method,
# path, body), formats them once per thread in init(), and cycles through them, so the
# per-request cost inside wrk is a table lookup. done() prints the summary as JSON.
_WRK_LUA = r"""
local reqs = {}
local n = 0
local i = 0

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    -- each line: METHOD \t PATH \t BODY-or-empty (body has no raw tabs/newlines: it is JSON)
    local method, path, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = {}
    if body ~= nil and #body > 0 then
      headers["Content-Type"] = "application/json"
    else
      body = nil
    end
    n = n + 1
    reqs[n] = wrk.format(method, path, headers, body)
  end
  f:close()
  i = math.random(n) - 1
end

function request()
  i = (i % n) + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local s = summary
  local statuses = s.errors.status
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    s.requests, s.duration, s.errors.connect, s.errors.read, s.errors.write,
    statuses, s.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def _write_request_file(requests: Sequence[Request], directory: Path) -> Path:
    path = directory / "requests.tsv"
    with path.open("w", encoding="utf-8") as fh:
        for req in requests:
            body = req.body.decode("utf-8") if req.body else ""
            if "\t" in body or "\n" in body:
                raise ValueError("request bodies must be compact JSON without tabs or newlines")
            fh.write(f"{req.method}\t{req.path}\t{body}\n")
    return path


def run_wrk(
    base_url: str,
    requests: Sequence[Request],
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    timeout_s: float = 5.0,
) -> LoadResult:
    """Drive `base_url` with wrk for `duration_s` seconds over `connections` connections."""
    if not requests:
        raise ValueError("requests must not be empty")
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="sb-wrk-") as tmp:
        tmpdir = Path(tmp)
        script = tmpdir / "bench.lua"
        script.write_text(_WRK_LUA, encoding="utf-8")
        req_file = _write_request_file(requests, tmpdir)
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            "-s",
            str(script),
            base_url,
            "--",
            str(req_file),
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=False
        )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("{")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (rc={proc.returncode}): {proc.stderr.strip()[:500]}")
    data = json.loads(line)
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        driver="wrk",
        connections=connections,
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        errors=errors,
        p50_ms=data["p50_us"] / 1000.0,
        p99_ms=data["p99_us"] / 1000.0,
    )


def _encode(req: Request, host: str) -> bytes:
    head = [f"{req.method} {req.path} HTTP/1.1", f"Host: {host}"]
    if req.body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(req.body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + (req.body or b"")


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked); return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _python_load(
    host: str,
    port: int,
    requests: Sequence[Request],
    connections: int,
    duration_s: float,
    max_requests: int | None,
) -> tuple[list[float], dict[int, int], int, float]:
    payloads = [_encode(r, f"{host}:{port}") for r in requests]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    issued = 0
    deadline = time.perf_counter() + duration_s

    async def worker(offset: int) -> None:
        nonlocal errors, issued
        reader, writer = await asyncio.open_connection(host, port)
        i = offset
        try:
            while time.perf_counter() < deadline and (
                max_requests is None or issued < max_requests
            ):
                issued += 1
                payload = payloads[i % len(payloads)]
                i += 1
                t0 = time.perf_counter()
                writer.write(payload)
                try:
                    status = await _read_response(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    errors += 1
                    return
                latencies.append((time.perf_counter() - t0) * 1000.0)
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 400:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(k * 7919) for k in range(connections)))
    return latencies, statuses, errors, time.perf_counter() - start


def run_python(
    base_url: str,
    requests: Sequence[Request],
    *,
    connections: int,
    duration_s: float,
    max_requests: int | None = None,
) -> LoadResult:
    """The fallback driver: an asyncio HTTP/1.1 keep-alive client, bounded in time and count."""
    if not requests:
        raise ValueError("requests must not be empty")
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies, statuses, errors, elapsed = asyncio.run(
        _python_load(host, port, requests, connections, duration_s, max_requests)
    )
    return LoadResult(
        driver="python",
        connections=connections,
        duration_s=elapsed,
        requests=len(latencies),
        errors=errors,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        statuses=statuses,
    )


def run_load(
    base_url: str,
    requests: Sequence[Request],
    *,
    connections: int,
    duration_s: float,
    driver: str = "auto",
) -> LoadResult:
    """Run with wrk if `driver` is "wrk" or "auto" and wrk is installed, else the Python client."""
    if driver not in ("auto", "wrk", "python"):
        raise ValueError(f"driver must be 'auto', 'wrk' or 'python', got {driver!r}")
    if driver == "wrk" or (driver == "auto" and wrk_available()):
        return run_wrk(base_url, requests, connections=connections, duration_s=duration_s)
    return run_python(base_url, requests, connections=connections, duration_s=duration_s)
