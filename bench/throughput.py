"""Throughput and latency benchmark: the service against its ceiling and against river.

One command, `python -m bench.throughput` (`--quick` for a short run), does in one run:

* river in-process (StandardScaler | LogisticRegression, predict_proba_one then learn_one)
  and the models/ learner step alone (StreamTrainer.process on micro-batches of 256) on the
  same synthetic events;
* the service (`service.http.app:create_app`, embedded Redis) and the reference app
  (`bench.reference_app`, validate and answer only) as separate uvicorn processes
  (1 worker, uvloop + httptools), driven by the same closed-loop load on loopback
  (wrk when installed, else the asyncio client in bench.loadgen), scenario by scenario,
  alternating which app goes first, repeated; medians of per-round ratios are reported;
* freshness (wait=true round trip under single-event load), resident memory after 100k
  and 1M learned events, start-up time to ready;

and writes docs/benchmarks/throughput.md (a Markdown table of the targets of issue 5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from bench.loadgen import LoadResult, Request, percentile, run_load, wrk_available

__all__ = ["Row", "Settings", "main", "make_events", "river_events_per_s", "run"]

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "benchmarks" / "throughput.md"
CLASSES = ("legit", "fraud")
N_NUMERIC = 10


# --------------------------------------------------------------------------- events


def make_events(n: int, seed: int = 0, fraud_rate: float = 0.02) -> list[dict[str, Any]]:
    """Synthetic card-payment events: 12 numeric features, ~2% "fraud" with shifted means.

    >>> ev = make_events(3, seed=1)
    >>> len(ev), sorted(ev[0]) == ["features", "label"], len(ev[0]["features"])
    (3, True, 12)
    >>> make_events(5, seed=7) == make_events(5, seed=7)
    True
    """
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        fraud = rng.random() < fraud_rate
        shift = 1.5 if fraud else 0.0
        feats: dict[str, Any] = {
            "amount": round(rng.lognormvariate(3.5 + shift, 1.0), 2),
            "hour": rng.randrange(24),
        }
        for j in range(N_NUMERIC):
            feats[f"v{j}"] = round(rng.gauss(shift if j % 3 == 0 else 0.0, 1.0), 4)
        events.append({"features": feats, "label": CLASSES[1] if fraud else CLASSES[0]})
    return events


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def learn_single_requests(events: Sequence[dict[str, Any]]) -> list[Request]:
    return [Request("POST", "/learn", _dumps(ev)) for ev in events]


def learn_batch_requests(events: Sequence[dict[str, Any]], size: int) -> list[Request]:
    return [
        Request("POST", "/learn", _dumps({"events": list(events[i : i + size])}))
        for i in range(0, len(events) - size + 1, size)
    ]


def predict_get_requests(events: Sequence[dict[str, Any]]) -> list[Request]:
    return [Request("GET", "/predict?" + urlencode(ev["features"])) for ev in events]


def predict_post_requests(events: Sequence[dict[str, Any]], size: int) -> list[Request]:
    return [
        Request(
            "POST",
            "/predict",
            _dumps({"events": [{"features": ev["features"]} for ev in events[i : i + size]]}),
        )
        for i in range(0, len(events) - size + 1, size)
    ]


# --------------------------------------------------------------------------- in-process baselines


def river_events_per_s(events: Sequence[dict[str, Any]]) -> float:
    """river StandardScaler | LogisticRegression, predict_proba_one then learn_one per event."""
    from river import compose, linear_model, preprocessing

    model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    pairs = [(ev["features"], ev["label"] == CLASSES[1]) for ev in events]
    t0 = time.perf_counter()
    for x, y in pairs:
        model.predict_proba_one(x)
        model.learn_one(x, y)
    return len(pairs) / (time.perf_counter() - t0)


def trainer_events_per_s(
    events: Sequence[dict[str, Any]], batch: int = 256, threads: int | None = None
) -> float:
    """The models/ learner step alone: StreamTrainer.process on micro-batches of `batch`,
    configured as the service configures it (service.settings defaults); `threads` sets
    torch's intra-op threads for the measurement (None: torch's default)."""
    import torch

    from models.trainer import StreamTrainer
    from service.settings import Settings as ServiceSettings

    trainer = StreamTrainer(ServiceSettings(classes=list(CLASSES)).trainer_config())
    index = {c: i for i, c in enumerate(CLASSES)}
    chunks = [
        (
            [ev["features"] for ev in events[i : i + batch]],
            [index[ev["label"]] for ev in events[i : i + batch]],
        )
        for i in range(0, len(events) - batch + 1, batch)
    ]
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        trainer.process(*chunks[0])  # warm-up: first-call allocations, lazy imports
        t0 = time.perf_counter()
        for feats, labels in chunks[1:]:
            trainer.process(feats, labels)
        return (len(chunks) - 1) * batch / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- server processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident set size of `pid` in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far (its own threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Child processes of `pid` (of any of its threads: the embedded Redis is started from one)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            out += [int(p) for p in children.read_text().split()]
    return out


@dataclass
class Server:
    """A uvicorn process serving one app; `ready_s` is spawn-to-ready wall time."""

    name: str
    target: str
    factory: bool = False
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"
    learns: bool = False
    # The source tree to serve from (another checkout, for an A/B: bench/cpu_ab.py).
    cwd: Path = ROOT
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float = float("nan")
    ready_cpu_s: float = float("nan")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> float:
        self.port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            self.target,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        if self.factory:
            cmd.append("--factory")
        env = {**os.environ, **self.env}
        self._log = tempfile.TemporaryFile()
        t0 = time.perf_counter()
        if self.cwd != ROOT:
            env["PYTHONPATH"] = str(self.cwd)
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, env=env, stdout=self._log, stderr=self._log
        )
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code == 200:
                    self.ready_s = time.perf_counter() - t0
                    self.ready_cpu_s = cpu_seconds(self.proc.pid)
                    return self.ready_s
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout_s} s:\n{tail}")

    def log_tail(self, n: int = 4000) -> str:
        if self._log.closed:
            return "(log closed: the server was stopped)"
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-n:]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """Stop the server (SIGINT, then SIGKILL after 20 s) and close its log file."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        log_file = getattr(self, "_log", None)
        if log_file is not None and not log_file.closed:
            log_file.close()


def app_factory_of(tree: Path) -> str | None:
    """The service's ASGI app factory in source tree `tree` (trees from before the service/http
    package have it in service/app.py); None if `tree` is no streambalance source tree."""
    for path, factory in (
        ("service/http/app.py", "service.http.app:create_app"),
        ("service/app.py", "service.app:create_app"),
    ):
        if (tree / path).is_file():
            return factory
    return None


def service_server(data_dir: Path, tree: Path = ROOT) -> Server:
    factory = app_factory_of(tree)
    if factory is None:
        raise ValueError(f"{tree}: not a streambalance source tree (no service app)")
    env = {
        "STREAMBALANCE_CLASSES": '["legit","fraud"]',
        "STREAMBALANCE_DATA_DIR": str(data_dir),
        "STREAMBALANCE_LOG_LEVEL": "warning",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("SB_BENCH_ENV_")})
    return Server("service", factory, factory=True, env=env, learns=True, cwd=tree)


def reference_server() -> Server:
    return Server("reference", "bench.reference_app:app")


# --------------------------------------------------------------------------- settings and results


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    duration_s: float = 6.0
    connections: int = 16
    batch_connections: int = 4
    n_events: int = 20_000
    river_events: int = 20_000
    mem_low: int = 100_000
    mem_high: int = 1_000_000
    driver: str = "auto"
    quick: bool = False
    memory: bool = True
    profile: bool = False


QUICK = Settings(
    rounds=1,
    duration_s=3.0,
    n_events=6_000,
    river_events=6_000,
    mem_low=20_000,
    mem_high=200_000,
    quick=True,
)


@dataclass
class Row:
    scenario: str
    ours: str
    other: str
    ratio: float | None
    target: str
    met: bool | None

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        met = "" if self.met is None else ("yes" if self.met else "**no**")
        return [self.scenario, self.ours, self.other, ratio, self.target, met]


def median(xs: Sequence[float]) -> float:
    """Median, NaN for an empty sequence.

    >>> median([3.0, 1.0, 2.0])
    2.0
    """
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    key: str
    requests: list[Request]
    connections: int
    events_per_request: int = 1


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _run_pair(
    scen: Scenario, servers: dict[str, Server], order: Sequence[str], cfg: Settings, res: Results
) -> None:
    for name in order:
        srv = servers[name]
        if srv.learns:
            settle(srv)
            learned0, t0 = _events_learned(srv.url), time.perf_counter()
        load = run_load(
            srv.url,
            scen.requests,
            connections=scen.connections,
            duration_s=cfg.duration_s,
            driver=cfg.driver,
        )
        _log(
            f"{scen.key:>14} {name:>9}: {load.rps:8.0f} req/s  p50 {load.p50_ms:6.2f} ms  "
            f"p99 {load.p99_ms:6.2f} ms  errors {load.errors}"
        )
        res.loads.setdefault(scen.key, {}).setdefault(name, []).append(load)
        if srv.learns and scen.key.startswith("learn"):
            # Sustained rate: acknowledged events over the time until the learner applied
            # them all (an ack rate alone would hide a learner falling behind).
            sent = load.requests * scen.events_per_request
            learned = _wait_learned(srv.url, learned0 + sent, timeout_s=120.0) - learned0
            if learned < sent:
                res.notes.append(
                    f"{scen.key}: the learner had applied {learned} of {sent} "
                    "acknowledged events after 120 s; the rate counts those"
                )
            rate = min(learned, sent) / (time.perf_counter() - t0)
            res.learned_eps.setdefault(scen.key, []).append(rate)
            _log(f"{scen.key:>14} {name:>9}: learned {rate:8.0f} events/s sustained")


def _wait_learned(url: str, target: int, timeout_s: float) -> int:
    """Poll until `target` events are learned or `timeout_s` passes; the last count seen."""
    deadline = time.perf_counter() + timeout_s
    learned = _events_learned(url)
    while learned < target and time.perf_counter() < deadline:
        time.sleep(0.1)  # /state computes the prequential report: do not poll it hot
        learned = _events_learned(url)
    return learned


def settle(srv: Server, quiet_s: float = 0.3, timeout_s: float = 120.0) -> None:
    """Wait until the learner's count stops moving (its backlog from earlier runs is drained)."""
    deadline = time.perf_counter() + timeout_s
    last = _events_learned(srv.url)
    while time.perf_counter() < deadline:
        time.sleep(quiet_s)
        now = _events_learned(srv.url)
        if now == last:
            return
        last = now
    _log(f"{srv.name}: learner still busy after {timeout_s} s; measuring anyway")


async def _probe_wait(url: str, bodies: Sequence[bytes], duration_s: float) -> list[float]:
    """Sequential POST /learn?wait=true for `duration_s`; round-trip times in ms.

    A failed wait (504 when the learner missed the service's wait timeout) is kept as a
    sample with its round-trip time: dropping it would flatter the percentile.
    """
    out: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        deadline = time.perf_counter() + duration_s
        i = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            r = await client.post(
                "/learn",
                params={"wait": "true"},
                content=bodies[i % len(bodies)],
                headers={"content-type": "application/json"},
            )
            out.append((time.perf_counter() - t0) * 1000.0)
            if r.status_code != 200:
                _log(f"freshness probe: HTTP {r.status_code} {r.text[:200]}")
            i += 1
            await asyncio.sleep(0.01)
    return out


def freshness_under_load(
    server: Server, load: Scenario, probe_bodies: Sequence[bytes], cfg: Settings
) -> tuple[list[float], LoadResult]:
    """wait=true round trips sampled while the single-event load runs against `server`."""
    box: dict[str, LoadResult] = {}
    th = threading.Thread(
        target=lambda: box.update(
            res=run_load(
                server.url,
                load.requests,
                connections=load.connections,
                duration_s=cfg.duration_s,
                driver=cfg.driver,
            )
        )
    )
    th.start()
    time.sleep(0.5)
    samples = asyncio.run(_probe_wait(server.url, probe_bodies, max(1.0, cfg.duration_s - 1.0)))
    th.join()
    return samples, box["res"]


# --------------------------------------------------------------------------- memory


async def _fill(url: str, bodies: Sequence[bytes], per_body: int, target: int, conc: int) -> None:
    sent = 0
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:

        async def worker(k: int) -> None:
            nonlocal sent
            i = k
            while sent < target:
                sent += per_body
                r = await client.post(
                    "/learn",
                    content=bodies[i % len(bodies)],
                    headers={"content-type": "application/json"},
                )
                r.raise_for_status()
                i += conc

        await asyncio.gather(*(worker(k) for k in range(conc)))


def _events_learned(url: str) -> int:
    return int(httpx.get(url + "/state", timeout=10.0).json()["events_learned"])


def learn_until(
    server: Server, bodies: Sequence[bytes], per_body: int, target: int, timeout_s: float
) -> float:
    """POST batches until `target` events are learned; return the seconds it took."""
    t0 = time.perf_counter()
    have = _events_learned(server.url)
    if have < target:
        asyncio.run(_fill(server.url, bodies, per_body, target - have, 2))
    while _events_learned(server.url) < target:
        if time.perf_counter() - t0 > timeout_s:
            raise RuntimeError(f"learner did not reach {target} events in {timeout_s} s")
        time.sleep(0.1)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- profile

# Frames that only say "a request is being served" or "the loop is running": leaving them
# out makes the table show where the time actually goes.
_FRAMEWORK = (
    "uvicorn/", "fastapi/", "starlette/", "click/", "anyio/", "asyncio/", "<frozen runpy>",
)  # fmt: skip


def _pyspy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def profile_under_load(
    srv: Server, scen: Scenario, cfg: Settings, top: int = 25
) -> list[tuple[str, float]]:
    """py-spy samples of `srv` while `scen` runs: (function (file), % of samples), inclusive."""
    spy = _pyspy()
    if spy is None:
        raise RuntimeError("py-spy not found (pip install py-spy)")
    with tempfile.TemporaryDirectory(prefix="sb-spy-") as tmp:
        out = Path(tmp) / "stacks.txt"
        cmd = [
            spy,
            "record",
            "-p",
            str(srv.pid),
            "-d",
            str(max(2, round(cfg.duration_s))),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(out),
            "--nonblocking",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # py-spy attaches before the load starts
        run_load(
            srv.url,
            scen.requests,
            connections=scen.connections,
            duration_s=cfg.duration_s,
            driver=cfg.driver,
        )
        _, err = proc.communicate(timeout=60)
        if not out.exists():
            raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-300:]}")
        return aggregate_stacks(out.read_text().splitlines(), top)


def aggregate_stacks(lines: Sequence[str], top: int) -> list[tuple[str, float]]:
    """Collapsed stacks ("f (file:line);g (file:line) count") -> top inclusive shares, after
    one first row: the samples whose innermost frame is in the framework (the stack's own
    cost: HTTP parsing, routing, middleware, the event loop), when there are any.

    >>> aggregate_stacks(["a (x.py:1);b (y.py:2) 3", "a (x.py:1) 1"], 5)
    [('a (x.py)', 100.0), ('b (y.py)', 75.0)]
    >>> aggregate_stacks(["a (x.py:1);run (asyncio/base.py:9) 1", "a (x.py:1) 3"], 5)[0]
    ('(framework: the innermost frame is in uvicorn/starlette/fastapi/asyncio)', 25.0)
    """
    incl: dict[str, int] = {}
    total = framework = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        leaf_path = stack.rsplit(";", 1)[-1].partition(" (")[2].rsplit(":", 1)[0]
        if leaf_path.startswith(_FRAMEWORK):
            framework += int(count)
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            path = where.rsplit(":", 1)[0]
            # Middleware wraps every request: inclusive, it would only say "a request ran".
            if path.startswith(_FRAMEWORK) or name.endswith("Middleware.__call__"):
                continue
            key = f"{name} ({path.rsplit('/', 1)[-1]})"
            if key not in seen:
                seen.add(key)
                incl[key] = incl.get(key, 0) + int(count)
    ranked = sorted(incl.items(), key=lambda kv: -kv[1])[:top]
    if framework:
        label = "(framework: the innermost frame is in uvicorn/starlette/fastapi/asyncio)"
        ranked.insert(0, (label, framework))
    return [(k, round(100.0 * v / total, 1)) for k, v in ranked]


# --------------------------------------------------------------------------- the run


@dataclass
class Results:
    loads: dict[str, dict[str, list[LoadResult]]] = field(default_factory=dict)
    learned_eps: dict[str, list[float]] = field(default_factory=dict)
    river: list[float] = field(default_factory=list)
    trainer: list[float] = field(default_factory=list)
    trainer_1t: list[float] = field(default_factory=list)
    trainer_service: list[float] = field(default_factory=list)  # the service's batch size
    service_batch: int = 0
    trainer_error: str | None = None
    freshness_ms: list[float] = field(default_factory=list)
    freshness_load: list[LoadResult] = field(default_factory=list)
    startup_s: list[float] = field(default_factory=list)
    startup_cpu_s: list[float] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)
    redis_rss: dict[str, float] = field(default_factory=dict)
    mem_error: str | None = None
    memory_run: bool = False
    profiles: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    mem_targets: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)


def _baselines(events: list[dict[str, Any]], cfg: Settings, res: Results) -> None:
    res.river.append(river_events_per_s(events[: cfg.river_events]))
    _log(f"river in-process: {res.river[-1]:.0f} events/s")
    try:
        res.trainer.append(trainer_events_per_s(events))
        _log(f"StreamTrainer.process (256): {res.trainer[-1]:.0f} events/s")
        res.trainer_1t.append(trainer_events_per_s(events, threads=1))
        _log(f"StreamTrainer.process (256), 1 torch thread: {res.trainer_1t[-1]:.0f} events/s")
        # The service steps micro-batches of batch_max_size (a model-quality choice).
        from service.settings import Settings as ServiceSettings

        res.service_batch = ServiceSettings(classes=list(CLASSES)).batch_max_size
        res.trainer_service.append(
            trainer_events_per_s(events, batch=res.service_batch, threads=1)
        )
        _log(
            f"StreamTrainer.process ({res.service_batch}), 1 torch thread: "
            f"{res.trainer_service[-1]:.0f} events/s"
        )
    except Exception as exc:  # report, never hide: the table says what failed
        res.trainer_error = f"{type(exc).__name__}: {exc}"
        _log(f"trainer baseline failed: {res.trainer_error}")


def _scenarios(events: list[dict[str, Any]], cfg: Settings) -> list[Scenario]:
    return [
        Scenario("learn_batch500", learn_batch_requests(events, 500), cfg.batch_connections, 500),
        Scenario("learn_single", learn_single_requests(events), cfg.connections),
        Scenario("predict_get", predict_get_requests(events), cfg.connections),
        Scenario("predict_get_c1", predict_get_requests(events), 1),
        Scenario("predict_post100_c1", predict_post_requests(events, 100), 1, 100),
    ]


def _memory(events: list[dict[str, Any]], cfg: Settings, res: Results, data_dir: Path) -> None:
    srv = service_server(data_dir / "mem")
    try:
        res.startup_s.append(srv.start())
        res.startup_cpu_s.append(srv.ready_cpu_s)
        bodies = [r.body or b"" for r in learn_batch_requests(events, 500)]
        for label, target in (("low", cfg.mem_low), ("high", cfg.mem_high)):
            took = learn_until(srv, bodies, 500, target, timeout_s=max(120.0, target / 2000.0))
            time.sleep(1.0)
            res.rss[label] = rss_mib(srv.pid)
            kids = _children(srv.pid)
            res.redis_rss[label] = sum(rss_mib(k) for k in kids)
            _log(
                f"memory after {target} learned events: service {res.rss[label]:.1f} MiB, "
                f"redis {res.redis_rss[label]:.1f} MiB ({took:.1f} s)"
            )
    except Exception as exc:
        res.mem_error = f"{type(exc).__name__}: {exc}"
        _log(f"memory scenario failed: {res.mem_error}\n{srv.log_tail()}")
    finally:
        srv.stop()


def _profiles(srv: Server, scenarios: list[Scenario], cfg: Settings, res: Results) -> None:
    for scen in scenarios:
        if scen.key not in ("learn_batch500", "learn_single", "predict_get"):
            continue
        settle(srv)
        try:
            res.profiles[scen.key] = profile_under_load(srv, scen, cfg)
            _log(f"profiled {scen.key}: {res.profiles[scen.key][:3]}")
        except Exception as exc:
            res.notes.append(f"profile of {scen.key} failed: {type(exc).__name__}: {exc}")


def run(cfg: Settings) -> Results:
    """Run every measurement of the benchmark; see the module docstring."""
    res = Results()
    events = make_events(cfg.n_events, seed=0)
    _baselines(events, cfg, res)
    scenarios = _scenarios(events, cfg)
    probe = [_dumps(ev) for ev in make_events(500, seed=99)]
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        data_dir = Path(tmp)
        servers = {"reference": reference_server(), "ours": service_server(data_dir / "main")}
        try:
            servers["reference"].start()
            res.startup_s.append(servers["ours"].start())
            res.startup_cpu_s.append(servers["ours"].ready_cpu_s)
            _log(f"service ready in {res.startup_s[-1]:.2f} s")
            for rnd in range(cfg.rounds):
                order = ["ours", "reference"] if rnd % 2 == 0 else ["reference", "ours"]
                for scen in scenarios:
                    _run_pair(scen, servers, order, cfg, res)
                samples, load = freshness_under_load(servers["ours"], scenarios[1], probe, cfg)
                res.freshness_ms.extend(samples)
                res.freshness_load.append(load)
                _log(f"freshness: {len(samples)} samples, p99 {percentile(samples, 99):.1f} ms")
                # river again between rounds, so its figure shares the machine's state with ours
                res.river.append(river_events_per_s(events[: cfg.river_events]))
            if cfg.profile:
                _profiles(servers["ours"], scenarios, cfg, res)
        finally:
            for srv in servers.values():
                srv.stop()
        if cfg.memory:
            res.memory_run = True
            res.mem_targets = (cfg.mem_low, cfg.mem_high)
            _memory(events, cfg, res, data_dir)
    return res


# --------------------------------------------------------------------------- report


def _ratios(
    res: Results, key: str, metric: Callable[[LoadResult], float]
) -> tuple[float, float, float]:
    """(median ours, median reference, median of per-round ours/reference)."""
    ours = [metric(r) for r in res.loads[key]["ours"]]
    ref = [metric(r) for r in res.loads[key]["reference"]]
    per_round = [o / r for o, r in zip(ours, ref, strict=True) if r > 0]
    return median(ours), median(ref), median(per_round)


def _fmt(x: float, unit: str) -> str:
    if x != x:  # NaN
        return "n/a"
    return f"{x:,.0f} {unit}" if x >= 100 else f"{x:.2f} {unit}"


def build_rows(res: Results) -> list[Row]:
    rows: list[Row] = []
    rps = lambda r: r.rps  # noqa: E731
    p99 = lambda r: r.p99_ms  # noqa: E731
    eps = [r.rps * 500 for r in res.loads["learn_batch500"]["ours"]]
    ref_eps = [r.rps * 500 for r in res.loads["learn_batch500"]["reference"]]
    learned = res.learned_eps.get("learn_batch500", [])
    river = median(res.river)
    ratio = median(learned) / river
    rows.append(
        Row(
            "Batched learning: POST /learn, 500-event batches, events/s acknowledged AND "
            "learned (until the learner applied them all) vs river in-process",
            _fmt(median(learned), "ev/s"),
            _fmt(river, "ev/s"),
            ratio,
            ">= 2x",
            ratio >= 2.0,
        )
    )
    rows.append(
        Row(
            "(info) batched POST /learn, acknowledged events/s only, vs the reference app",
            _fmt(median(eps), "ev/s"),
            _fmt(median(ref_eps), "ev/s"),
            median([o / r for o, r in zip(eps, ref_eps, strict=True)]),
            "",
            None,
        )
    )
    rows.append(
        Row(
            "(info) the reference app's batched events/s vs river: the ceiling of target 1",
            _fmt(median(ref_eps), "ev/s"),
            _fmt(river, "ev/s"),
            median(ref_eps) / river,
            "",
            None,
        )
    )
    for key, label in (
        ("learn_single", "Single-event POST /learn, 16 conn"),
        ("predict_get", "GET /predict, 16 conn"),
    ):
        o, r, k = _ratios(res, key, rps)
        rows.append(
            Row(f"{label}: req/s", _fmt(o, "req/s"), _fmt(r, "req/s"), k, ">= 0.8x", k >= 0.8)
        )
        o, r, k = _ratios(res, key, p99)
        rows.append(Row(f"{label}: p99", _fmt(o, "ms"), _fmt(r, "ms"), k, "<= 1.5x", k <= 1.5))
        if res.learned_eps.get(key):
            learned = median(res.learned_eps[key])
            rows.append(
                Row(
                    f"(info) {label}: events learned/s, sustained (until the learner caught up)",
                    _fmt(learned, "ev/s"),
                    "",
                    None,
                    "",
                    None,
                )
            )
    get1 = [r.p99_ms for r in res.loads["predict_get_c1"]["ours"]]
    post = [r.p99_ms for r in res.loads["predict_post100_c1"]["ours"]]
    k = median([p / g for p, g in zip(post, get1, strict=True)])
    rows.append(
        Row(
            "POST /predict, 100 events, p99 vs our single GET /predict p99 (1 conn)",
            _fmt(median(post), "ms"),
            _fmt(median(get1), "ms"),
            k,
            "<= 3x",
            k <= 3.0,
        )
    )
    f99 = percentile(res.freshness_ms, 99)
    rows.append(
        Row(
            "Freshness: p99 of POST /learn?wait=true under the single-event load "
            "(upper bound of ack -> model version with the event)",
            _fmt(f99, "ms"),
            "",
            None,
            "<= 50 ms",
            f99 <= 50.0 if f99 == f99 else False,
        )
    )
    low, high = (f"{n:,}" for n in res.mem_targets)
    if not res.memory_run:
        pass
    elif res.rss:
        k = res.rss["high"] / res.rss["low"]
        rows.append(
            Row(
                f"Resident memory of the service after {high} vs {low} learned events",
                _fmt(res.rss["high"], "MiB"),
                _fmt(res.rss["low"], "MiB"),
                k,
                "<= 1.10x",
                k <= 1.10,
            )
        )
    else:
        rows.append(
            Row(
                f"Resident memory after {high} vs {low} learned events",
                "failed",
                res.mem_error or "",
                None,
                "<= 1.10x",
                False,
            )
        )
    s = median(res.startup_s)
    rows.append(
        Row(
            "Start-up to ready (spawn -> GET /readyz 200), median wall time",
            _fmt(s, "s"),
            "",
            None,
            "<= 3 s",
            s <= 3.0,
        )
    )
    rows.append(
        Row(
            "(info) CPU time the service process used until ready (robust to a loaded machine)",
            _fmt(median(res.startup_cpu_s), "s"),
            "",
            None,
            "",
            None,
        )
    )
    learner_rows = (
        (
            "(info) models/ learner step alone: StreamTrainer.process, 256-event batches, "
            "torch default threads",
            res.trainer,
        ),
        ("(info) the same with torch.set_num_threads(1)", res.trainer_1t),
        (
            f"(info) the same at the service's micro-batch size ({res.service_batch} events, "
            "batch_max_size), one thread",
            res.trainer_service,
        ),
    )
    for label, samples in learner_rows:
        if samples:
            eps = median(samples)
            rows.append(Row(label, _fmt(eps, "ev/s"), _fmt(river, "ev/s"), eps / river, "", None))
    return rows


_DETAIL_FIELDS = ("rps", "p50_ms", "p99_ms")


def _render_profiles(res: Results) -> str:
    if not res.profiles:
        return ""
    parts = [
        "\n## Where the service's time goes (py-spy, `--profile`)\n\n"
        "Share of py-spy samples of the service process (all threads) in which each function "
        "is on the stack, while the named load runs; framework frames (uvicorn, starlette, "
        "FastAPI routing, the event loop) are left out, so the rows are the service's own "
        "work and the libraries it calls; the first row gives the framework's own share "
        "(samples whose innermost frame is framework code). py-spy does not see time spent "
        "in C below the event loop with no Python frame (socket I/O in uvloop), so shares "
        "are of the samples it took.\n"
    ]
    for key, rows in res.profiles.items():
        parts.append(f"\n### {key}\n\n| function (file) | % of samples |\n|---|---|\n")
        parts.extend(f"| `{name}` | {share:.1f} |\n" for name, share in rows)
    return "".join(parts)


def render(res: Results, cfg: Settings, started: str) -> str:
    rows = build_rows(res)
    header = ["scenario", "ours", "reference / river", "ratio", "target", "met?"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    detail = [
        "| scenario | app | req/s (median) | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for key, by_app in res.loads.items():
        for app, runs in by_app.items():
            rps, p50, p99 = (median([getattr(r, k) for r in runs]) for k in _DETAIL_FIELDS)
            errors = sum(r.errors for r in runs)
            detail.append(f"| {key} | {app} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors} |")
    driver = "wrk" if (cfg.driver in ("auto", "wrk") and wrk_available()) else "python (asyncio)"
    mem = ""
    if res.rss:
        mem = (
            f"Embedded Redis resident memory (the stream and checkpoints live there): "
            f"{res.redis_rss.get('low', 0):.0f} MiB after {cfg.mem_low:,} events, "
            f"{res.redis_rss.get('high', 0):.0f} MiB after {cfg.mem_high:,}.\n"
        )
    notes = "".join(f"- {n}\n" for n in res.notes)
    profile = _render_profiles(res)
    if res.trainer_error:
        notes += f"- learner-step baseline failed: {res.trainer_error}\n"
    return f"""# Throughput and latency

Generated by `python -m bench.throughput{" --quick" if cfg.quick else ""}` on {started}
({platform.machine()}, {os.cpu_count()} CPUs shared by the servers and the load generator;
load average at start {os.getloadavg()[0]:.2f}). Absolute figures are noise on a shared
2-core box; the ratios are measured in the same run, scenario by scenario, alternating which
app is driven first, {cfg.rounds} round(s) of {cfg.duration_s:.0f} s each; the table shows
medians of the per-round values and ratios.

Load: {driver}, closed loop on loopback; servers are uvicorn, 1 worker, uvloop + httptools.
"Reference" is `bench/reference_app.py`: the same FastAPI routes and pydantic event model,
validating and answering only (the ceiling of the stack). Events: synthetic payments with
12 numeric features and ~2% "fraud"; river runs StandardScaler | LogisticRegression with
predict_proba_one then learn_one on the same events, in-process.

{chr(10).join(lines)}

{mem}
## Every run (medians over rounds)

{chr(10).join(detail)}

Freshness samples: {len(res.freshness_ms)}; p50 {percentile(res.freshness_ms, 50):.1f} ms; the
single-event load ran meanwhile at {median([r.rps for r in res.freshness_load]):,.0f} req/s.
Start-up samples (s): {", ".join(f"{s:.2f}" for s in res.startup_s)}; CPU seconds used
until ready: {", ".join(f"{s:.2f}" for s in res.startup_cpu_s)}.
River samples (events/s): {", ".join(f"{x:,.0f}" for x in res.river)}.

{notes}{profile}"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="one short round, smaller memory run")
    parser.add_argument("--driver", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None, help="seconds per load run")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the service under three of the loads"
    )
    parser.add_argument("--skip-memory", action="store_true", help="skip the 100k/1M memory run")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Settings()
    cfg = Settings(
        **{
            **cfg.__dict__,
            "driver": args.driver,
            "memory": not args.skip_memory,
            "profile": args.profile,
            **({"rounds": args.rounds} if args.rounds else {}),
            **({"duration_s": args.duration} if args.duration else {}),
        }
    )
    if cfg.rounds < 1 or cfg.duration_s < 1:
        raise ValueError(
            f"rounds must be >= 1 and duration >= 1 s, got {cfg.rounds}, {cfg.duration_s}"
        )
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    res = run(cfg)
    text = render(res, cfg, started)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
