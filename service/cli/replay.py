"""`streambalance replay FILE --url URL`: stream a labeled file into a running service.

Batches of events go to `POST /learn` through `service.client.Client` (retried with backoff
on network errors, 5xx and 429, with the same ids), with a rich progress bar and a summary at
the end. Events without an id get one derived from the file's content, the line and the
event (`service.cli.event_files.replay_id`), so running the same file twice adds nothing the
second time, and a replay that was mostly duplicates says so. With `--predict-first` each
batch is first sent to `POST /predict` and then learned with `wait=true` (test-then-train
over HTTP), and the per-class metrics of those predictions are printed at the end.
The API key comes from STREAMBALANCE_API_KEY.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.cli.event_files import iter_events
from service.client import API_KEY_ENV, Client, ClientError

__all__ = ["Scoreboard", "run_replay"]


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


class _Replay:
    """Sends the batches through the client and keeps the totals (and the scoreboard)."""

    def __init__(self, args: argparse.Namespace, client: Client) -> None:
        self.args = args
        self.client = client
        self.totals = {"sent": 0, "accepted": 0, "duplicates": 0, "batches": 0, "retries": 0}
        self.board: Scoreboard | None = None
        self.classes: list[str] = []
        self.unscored = 0
        if args.predict_first:
            self.classes = list(client.state()["classes"])
            self.board = Scoreboard(self.classes)

    def flush(self, batch: list[dict[str, Any]]) -> None:
        if self.board is not None:
            self._predict(batch)
        result = self.client.learn(batch, wait=self.args.wait or self.board is not None)
        self.totals["retries"] += result.retries
        self.totals["accepted"] += result.accepted
        self.totals["duplicates"] += result.duplicates
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
        predictions = self.client.predict_many([e["features"] for e, _ in scored])
        predicted = [self.classes.index(p.label) for p in predictions]
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


def _api_key(args: argparse.Namespace) -> str | None:
    """The key from STREAMBALANCE_API_KEY; `--api-key` still works, with a warning: a command
    line argument is visible to every user of the machine (`ps`, /proc/<pid>/cmdline)."""
    if args.api_key is None:
        return None  # the client reads STREAMBALANCE_API_KEY
    print(
        f"streambalance replay: warning: --api-key is deprecated (other users can read it in "
        f"the process list); set {API_KEY_ENV} instead",
        file=sys.stderr,
    )
    return str(args.api_key)


def run_replay(args: argparse.Namespace) -> int:
    """Exit code: 0 when events were added (or the file had none), 3 when every event was
    already stored (a rerun of the same file), 1 on an error, 2 on a bad argument."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    path = Path(args.file)
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]replay"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[events]} events"),
    )
    console = Console()
    try:
        client = Client(
            args.url,
            api_key=_api_key(args),
            timeout=args.timeout,
            retries=args.retries,
            batch_size=args.batch_size,
        )
    except ValueError as exc:  # a bad --retries, --timeout or --batch-size, named
        print(f"streambalance replay: {exc}", file=sys.stderr)
        return 2
    replay: _Replay | None = None
    try:
        with (
            client,
            path.open(encoding="utf-8", newline="") as handle,
            Progress(*columns, disable=args.quiet, console=console) as progress,
        ):
            replay = _Replay(args, client)
            task = progress.add_task("replay", total=path.stat().st_size, events=0)
            events = iter_events(
                path, handle, args.label_column, args.id_column, auto_id=not args.no_auto_id
            )
            batch: list[dict[str, Any]] = []
            for event in events:
                batch.append(event)
                if len(batch) >= args.batch_size:
                    replay.flush(batch)
                    batch = []
                    position = os.lseek(handle.fileno(), 0, os.SEEK_CUR)  # read-ahead: close
                    progress.update(task, completed=position, events=replay.totals["sent"])
            if batch:
                replay.flush(batch)
            progress.update(task, completed=path.stat().st_size, events=replay.totals["sent"])
    except (ClientError, ValueError) as exc:  # ValueError: a line of the file is not an event
        sent = replay.totals["sent"] if replay is not None else 0
        print(
            f"streambalance replay: {exc} ({sent} events sent before it; a rerun of the same "
            "file adds only what is missing)",
            file=sys.stderr,
        )
        return 1
    assert replay is not None
    return _report(replay, time.perf_counter() - started, console)


def _report(replay: _Replay, elapsed: float, console: Any) -> int:
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
    if t["duplicates"] * 2 > t["sent"]:
        print(
            f"streambalance replay: WARNING: {t['duplicates']} of {t['sent']} events were "
            "already stored (their ids were seen before): was this file replayed already?",
            file=sys.stderr,
        )
    return 3 if t["sent"] and t["accepted"] == 0 and t["duplicates"] == t["sent"] else 0
