"""The `streambalance` command: `serve`, `worker` and `replay`.

streambalance serve [--host H] [--port P]   the HTTP service (+ learner unless ROLE=api)
streambalance worker                        the learner alone (needs REDIS_URL)
streambalance replay FILE --url URL         stream labeled events from JSONL/CSV into a service
                                            (API key from STREAMBALANCE_API_KEY; exit code 3:
                                            every event was already stored)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from service import __version__
from service.observability.logs import configure_logging, secrets_of
from service.settings import Settings, SettingsError, get_settings, is_loopback

__all__ = ["build_parser", "main"]

log = logging.getLogger("streambalance")


def _settings(**overrides: Any) -> Settings:
    try:
        settings = get_settings()
        if overrides:
            settings = Settings(**{**settings.model_dump(), **overrides})
    except SettingsError as exc:
        print(f"streambalance: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, secrets=secrets_of(settings))
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.http.app import create_app

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = _settings(**overrides)
    if settings.api_key is None and not is_loopback(settings.host):
        log.warning(
            "serving %s without an API key (STREAMBALANCE_ALLOW_UNAUTHENTICATED=true): every "
            "request must come through a gateway that authenticates it",
            settings.host,
        )
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

    from service.lifecycle import open_runtime
    from service.observability.prometheus import ServiceMetrics

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
        gauges = asyncio.create_task(_refresh_gauges(rt.refresh_gauges), name="metrics-gauges")
        await stop.wait()
        gauges.cancel()
        log.info("stopping: draining the stream and writing a final checkpoint")


async def _refresh_gauges(refresh: Callable[[], Awaitable[None]], every_s: float = 5.0) -> None:
    """The worker has no /metrics route that reads Redis on a scrape: read it on a timer."""
    while True:
        await refresh()
        await asyncio.sleep(every_s)


def cmd_replay(args: argparse.Namespace) -> int:
    from service.cli.replay import run_replay

    return run_replay(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streambalance",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"streambalance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (learner included unless ROLE=api)")
    serve.add_argument("--host", help="bind address (default STREAMBALANCE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default STREAMBALANCE_PORT or 8000)")
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help="run the learner alone against REDIS_URL")
    worker.set_defaults(func=cmd_worker)
    replay = sub.add_parser(
        "replay",
        help="stream a JSONL or CSV file of labeled events",
        description="Stream a JSONL or CSV file of labeled events into a running service. "
        "The API key (X-API-Key) is read from STREAMBALANCE_API_KEY. Exit code 0: events "
        "added; 3: every event was already stored (the file was replayed before); 1: error.",
    )
    replay.add_argument("file", help="JSONL (one event per line) or .csv with a label column")
    replay.add_argument("--url", required=True, help="service base URL, e.g. http://127.0.0.1:8000")
    replay.add_argument("--batch-size", type=int, default=500)
    # Deprecated: an argument shows in the process list. The key is read from the environment.
    replay.add_argument("--api-key", default=None, help=argparse.SUPPRESS)
    replay.add_argument(
        "--retries", type=int, default=5, help="retries per request on 429/5xx/network errors"
    )
    replay.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per request (default 60)"
    )
    replay.add_argument("--wait", action="store_true", help="each batch waits until learned")
    replay.add_argument("--label-column", default="label")
    replay.add_argument("--id-column", default="id")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.add_argument(
        "--predict-first",
        action="store_true",
        help="predict each batch before learning it (implies --wait); print per-class metrics",
    )
    replay.add_argument(
        "--no-auto-id",
        action="store_true",
        help="send id-less events without an id (by default each gets one derived from the "
        "file's content, its line and the event, so a rerun of the file adds nothing)",
    )
    replay.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
