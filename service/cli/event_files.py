"""Labeled events from files: JSONL (one event object per line) or CSV with a header.

What `streambalance replay` sends. An event without an id can get one derived from content
(`replay_id`): a digest of the whole file, the line number and a digest of the event. The same
file replayed again gives the same ids, so the service adds nothing the second time; another
file (another day's `events.jsonl`, a regenerated export) gives other ids, whatever its name;
two identical lines of one file are two events.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from service.http.schemas import parse_scalar

__all__ = ["file_digest", "iter_events", "replay_id"]


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes, as hex."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def replay_id(file_sha256: str, line: int, event: Mapping[str, Any]) -> str:
    """`<file digest>:<line>:<event digest>`, 16 hex digits each: stable across reruns of the
    same bytes; the event digest is over its canonical JSON (sorted keys, compact).

    >>> replay_id("ab" * 32, 7, {"label": "fraud", "features": {"amount": 912.4}})
    'abababababababab:7:26b9489188ca4872'
    >>> replay_id("ab" * 32, 7, {"features": {"amount": 912.4}, "label": "fraud"})
    'abababababababab:7:26b9489188ca4872'
    """
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    event_digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{file_sha256[:16]}:{line}:{event_digest[:16]}"


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
    auto_id: an event without an id gets `replay_id(...)`, derived from the file's content,
    the line number and the event, so replaying the same file twice adds nothing.
    """
    if auto_id:
        digest = file_digest(path)
        for line, event in _numbered_events(path, handle, label_column, id_column):
            if event.get("id") is None:
                event["id"] = replay_id(digest, line, event)
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
