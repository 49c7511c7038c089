"""The `streambalance` command: `serve`, `worker` and `replay`.

streambalance serve [--host H] [--port P]   the HTTP service (+ learner unless ROLE=api)
streambalance worker                        the learner alone (needs REDIS_URL)
streambalance replay FILE --url URL         stream labeled events from JSONL/CSV into a service
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from service.schemas import parse_scalar
from service.settings import Settings, SettingsError, get_settings

__all__ = ["iter_events", "main"]

log = logging.getLogger("streambalance")


def _settings(**overrides: Any) -> Settings:
    try:
        settings = get_settings()
        if overrides:
            settings = Settings(**{**settings.model_dump(), **overrides})
    except SettingsError as exc:
        print(f"streambalance: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from service.logs import configure_logging, secrets_of

    configure_logging(settings.log_level, secrets=secrets_of(settings))
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = _settings(**overrides)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,  # keep our JSON handlers (uvicorn would install its own)
        timeout_graceful_shutdown=30,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings.redis_url is None:
        print(
            "streambalance: invalid setting REDIS_URL: a worker needs the shared Redis that "
            "the API replicas append to",
            file=sys.stderr,
        )
        return 2
    asyncio.run(_run_worker(settings))
    return 0


async def _run_worker(settings: Settings) -> None:
    from prometheus_client import start_http_server

    from service.app import open_runtime
    from service.metrics import ServiceMetrics

    metrics = ServiceMetrics()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(settings, metrics, learn=True) as rt:
        metrics.attach_model(rt.model_view)
        if settings.worker_metrics_port:
            start_http_server(settings.worker_metrics_port, registry=metrics.registry)
            log.info("worker metrics on :%d/metrics", settings.worker_metrics_port)
        log.info("learner running for model %r; Ctrl-C or SIGTERM stops it", settings.model_name)
        await stop.wait()
        log.info("stopping: draining the stream and writing a final checkpoint")


# -- replay ---------------------------------------------------------------------------------


def iter_events(
    path: Path, handle: IO[str], label_column: str = "label", id_column: str = "id"
) -> Iterator[dict[str, Any]]:
    """Events of a JSONL file (one event object per line) or a CSV file with a header.

    CSV: `label_column` is the label, `id_column` (optional) the event id, every other column a
    feature; values that read as numbers are numbers, empty cells are missing features.
    """
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or label_column not in reader.fieldnames:
            raise ValueError(f"{path}: CSV needs a header with a {label_column!r} column")
        for row in reader:
            event: dict[str, Any] = {"label": parse_scalar(row.pop(label_column))}
            event_id = row.pop(id_column, None)
            if event_id:
                event["id"] = event_id
            event["features"] = {k: parse_scalar(v) for k, v in row.items() if v not in ("", None)}
            yield event
        return
    for number, line in enumerate(handle, 1):
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a JSON object ({exc})") from None


def _post(client: Any, url: str, batch: list[dict[str, Any]], retries: int, wait: bool) -> dict:
    import httpx

    delay = 0.5
    for attempt in range(retries + 1):
        try:
            response = client.post(
                url, json={"events": batch}, params={"wait": "true"} if wait else None
            )
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code < 400:
                return response.json()
            if response.status_code < 500 and response.status_code != 429:
                raise SystemExit(f"streambalance replay: {response.status_code} {response.text}")
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
        if attempt < retries:
            log.warning("replay: %s; retry %d/%d in %.1f s", problem, attempt + 1, retries, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    raise SystemExit(f"streambalance replay: giving up after {retries} retries ({problem})")


def cmd_replay(args: argparse.Namespace) -> int:
    import httpx
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    path = Path(args.file)
    url = args.url.rstrip("/") + "/learn"
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    totals = {"accepted": 0, "duplicates": 0}
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]replay"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[events]} events"),
    )
    with (
        path.open(encoding="utf-8", newline="") as handle,
        httpx.Client(headers=headers, timeout=args.timeout) as client,
        Progress(*columns, disable=args.quiet) as progress,
    ):
        task = progress.add_task("replay", total=path.stat().st_size, events=0)
        batch: list[dict[str, Any]] = []
        sent = 0

        def flush() -> None:
            nonlocal sent
            result = _post(client, url, batch, args.retries, args.wait)
            totals["accepted"] += int(result.get("accepted", 0))
            totals["duplicates"] += int(result.get("duplicates", 0))
            sent += len(batch)
            batch.clear()
            position = os.lseek(handle.fileno(), 0, os.SEEK_CUR)  # read-ahead: close enough
            progress.update(task, completed=position, events=sent)

        for event in iter_events(path, handle, args.label_column, args.id_column):
            batch.append(event)
            if len(batch) >= args.batch_size:
                flush()
        if batch:
            flush()
        progress.update(task, completed=path.stat().st_size)
    elapsed = time.perf_counter() - started
    print(
        f"sent {sent} events in {elapsed:.1f} s: {totals['accepted']} accepted, "
        f"{totals['duplicates']} duplicates"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streambalance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (learner included unless ROLE=api)")
    serve.add_argument("--host", help="bind address (default STREAMBALANCE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default STREAMBALANCE_PORT or 8000)")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="run the learner alone against REDIS_URL")
    worker.set_defaults(func=cmd_worker)
    replay = sub.add_parser("replay", help="stream a JSONL or CSV file of labeled events")
    replay.add_argument("file", help="JSONL (one event per line) or .csv with a label column")
    replay.add_argument("--url", required=True, help="service base URL, e.g. http://127.0.0.1:8000")
    replay.add_argument("--batch-size", type=int, default=500)
    replay.add_argument("--api-key", default=None, help="X-API-Key for /learn")
    replay.add_argument("--retries", type=int, default=5, help="retries per batch on 5xx/network")
    replay.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    replay.add_argument("--wait", action="store_true", help="each batch waits until learned")
    replay.add_argument("--label-column", default="label")
    replay.add_argument("--id-column", default="id")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
