"""Labeled events from files: JSONL (one event object per line) or CSV with a header.

What `streambalance replay` sends; an event without an id can get a stable one
(`<file name>:<line>`), so replaying the same file twice is deduplicated by the service.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from service.http.schemas import parse_scalar

__all__ = ["iter_events"]


def iter_events(
    path: Path,
    handle: IO[str],
    label_column: str = "label",
    id_column: str = "id",
    auto_id: bool = False,
) -> Iterator[dict[str, Any]]:
    """Events of a JSONL file (one event object per line) or a CSV file with a header.

    CSV: `label_column` is the label, `id_column` (optional) the event id, every other column a
    feature; values that read as numbers are numbers, empty cells are missing features.
    auto_id: an event without an id gets `<file name>:<line number>`, stable across re-runs,
    so replaying the same file twice is deduplicated by the service.
    """
    if auto_id:
        for line, event in _numbered_events(path, handle, label_column, id_column):
            if event.get("id") is None:
                event["id"] = f"{path.name}:{line}"
            yield event
        return
    for _, event in _numbered_events(path, handle, label_column, id_column):
        yield event


def _numbered_events(
    path: Path, handle: IO[str], label_column: str, id_column: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number where the event ends, event) for a CSV or JSONL file."""
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
            yield reader.line_num, event
        return
    for number, line in enumerate(handle, 1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a JSON object ({exc})") from None
