"""`streambalance replay FILE --url URL`: stream a labeled file into a running service.

Batches of events go to `POST /learn` (retried with exponential backoff on network errors,
5xx and 429), with a rich progress bar and a summary at the end. Events without an id get a
stable one (`<file name>:<line>`), so running the same file twice adds nothing the second
time. With `--predict-first` each batch is first sent to `POST /predict` and then learned
with `wait=true` (test-then-train over HTTP), and the per-class metrics of those
predictions are printed at the end.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.cli.event_files import iter_events

__all__ = ["Scoreboard", "run_replay"]

log = logging.getLogger("streambalance")


class Scoreboard:
    """A confusion matrix of (true, predicted) class indices and the metrics read from it.

    >>> board = Scoreboard(["legit", "fraud"])
    >>> board.update([0, 0, 1, 1], [0, 1, 1, 1])
    >>> r = board.report()
    >>> r["recall"], r["precision"]["fraud"], round(r["g_mean"], 4)
    ({'legit': 0.5, 'fraud': 1.0}, 0.6666666666666666, 0.7071)
    """

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        k = len(self.classes)
        self.matrix = [[0] * k for _ in range(k)]

    def update(self, y_true: Sequence[int], y_pred: Sequence[int]) -> None:
        for t, p in zip(y_true, y_pred, strict=True):
            self.matrix[t][p] += 1

    def report(self) -> dict[str, Any]:
        k, m = len(self.classes), self.matrix
        recall: dict[str, float | None] = {}
        precision: dict[str, float | None] = {}
        support: dict[str, int] = {}
        for c, name in enumerate(self.classes):
            tp = m[c][c]
            actual = sum(m[c])
            predicted = sum(m[r][c] for r in range(k))
            support[name] = actual
            recall[name] = tp / actual if actual else None
            precision[name] = tp / predicted if predicted else None
        present = [r for r in recall.values() if r is not None]
        g_mean = None
        if present:
            g_mean = 0.0 if min(present) == 0 else math.prod(present) ** (1 / len(present))
        return {
            "n": sum(map(sum, m)),
            "recall": recall,
            "precision": precision,
            "support": support,
            "g_mean": g_mean,
            "balanced_accuracy": sum(present) / len(present) if present else None,
        }


def _label_index(label: Any, classes: list[str]) -> int | None:
    if isinstance(label, str):
        if label in classes:
            return classes.index(label)
        try:
            label = int(label)
        except ValueError:
            return None
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(classes):
        return label
    return None


def _request(
    client: Any, method: str, url: str, body: dict[str, Any], retries: int, params: Any = None
) -> tuple[dict[str, Any], int]:
    """(JSON answer, retries used); backoff 0.5 s doubling to 10 s (at least the server's
    Retry-After on a 429); a 4xx other than 429 is final."""
    import httpx

    delay = 0.5
    problem = ""
    for attempt in range(retries + 1):
        wait = delay
        try:
            response = client.request(method, url, json=body, params=params)
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code < 400:
                return response.json(), attempt
            if response.status_code < 500 and response.status_code != 429:
                raise SystemExit(
                    f"streambalance replay: {url} answered {response.status_code} {response.text}"
                )
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                wait = max(delay, float(retry_after))
        if attempt < retries:
            log.warning("replay: %s; retry %d/%d in %.1f s", problem, attempt + 1, retries, wait)
            time.sleep(wait)
            delay = min(delay * 2, 10.0)
    raise SystemExit(f"streambalance replay: giving up after {retries} retries ({problem})")


class _Replay:
    def __init__(self, args: argparse.Namespace, client: Any) -> None:
        self.args = args
        self.client = client
        self.base = args.url.rstrip("/")
        self.totals = {"sent": 0, "accepted": 0, "duplicates": 0, "batches": 0, "retries": 0}
        self.board: Scoreboard | None = None
        self.classes: list[str] = []
        self.unscored = 0
        if args.predict_first:
            state, _ = _request(client, "GET", self.base + "/state", {}, args.retries)
            self.classes = list(state["classes"])
            self.board = Scoreboard(self.classes)

    def flush(self, batch: list[dict[str, Any]]) -> None:
        args = self.args
        if self.board is not None:
            self._predict(batch)
        wait = args.wait or self.board is not None
        result, retried = _request(
            self.client,
            "POST",
            self.base + "/learn",
            {"events": batch},
            args.retries,
            params={"wait": "true"} if wait else None,
        )
        self.totals["retries"] += retried
        self.totals["accepted"] += int(result.get("accepted", 0))
        self.totals["duplicates"] += int(result.get("duplicates", 0))
        self.totals["sent"] += len(batch)
        self.totals["batches"] += 1

    def _predict(self, batch: list[dict[str, Any]]) -> None:
        assert self.board is not None
        scored = [
            (e, t)
            for e in batch
            if isinstance(e.get("features"), dict)
            and (t := _label_index(e.get("label"), self.classes)) is not None
        ]
        self.unscored += len(batch) - len(scored)
        if not scored:
            return
        body = {"events": [{"features": e["features"]} for e, _ in scored]}
        result, retried = _request(
            self.client, "POST", self.base + "/predict", body, self.args.retries
        )
        self.totals["retries"] += retried
        predicted = [self.classes.index(p["label"]) for p in result["predictions"]]
        self.board.update([t for _, t in scored], predicted)


def _metrics_table(board: Scoreboard) -> Any:
    from rich.table import Table

    report = board.report()
    table = Table(title=f"prequential scores of {report['n']} predictions (predict, then learn)")
    for column in ("class", "support", "recall", "precision"):
        table.add_column(column, justify="left" if column == "class" else "right")

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    for name in board.classes:
        table.add_row(
            name,
            str(report["support"][name]),
            fmt(report["recall"][name]),
            fmt(report["precision"][name]),
        )
    table.caption = (
        f"G-mean {fmt(report['g_mean'])}   balanced accuracy {fmt(report['balanced_accuracy'])}"
    )
    return table


def run_replay(args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    path = Path(args.file)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]replay"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[events]} events"),
    )
    console = Console()
    with (
        path.open(encoding="utf-8", newline="") as handle,
        httpx.Client(headers=headers, timeout=args.timeout) as client,
        Progress(*columns, disable=args.quiet, console=console) as progress,
    ):
        replay = _Replay(args, client)
        task = progress.add_task("replay", total=path.stat().st_size, events=0)
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            replay.flush(batch)
            batch.clear()
            position = os.lseek(handle.fileno(), 0, os.SEEK_CUR)  # read-ahead: close enough
            progress.update(task, completed=position, events=replay.totals["sent"])

        events = iter_events(
            path, handle, args.label_column, args.id_column, auto_id=not args.no_auto_id
        )
        for event in events:
            batch.append(event)
            if len(batch) >= args.batch_size:
                flush()
        if batch:
            flush()
        progress.update(task, completed=path.stat().st_size)
    elapsed = time.perf_counter() - started
    t = replay.totals
    rate = t["sent"] / elapsed if elapsed > 0 else 0.0
    print(
        f"sent {t['sent']} events in {t['batches']} batches in {elapsed:.1f} s ({rate:.0f}/s): "
        f"{t['accepted']} accepted, {t['duplicates']} duplicates, {t['retries']} retries"
    )
    if replay.board is not None:
        console.print(_metrics_table(replay.board))
        if replay.unscored:
            print(f"{replay.unscored} events not scored (late labels or unknown label)")
    return 0
