"""Stream entries as the learner sees them: ids, shape checks and micro-batches. Pure functions.

An entry is one `POST /learn` request: `(entry id, list of events)`, or `(id, None)` when its
payload did not decode. The learner learns whole entries, grouped into micro-batches of at
most `max_events` events (an entry larger than that alone is split later, by the step).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from service.storage.event_stream import Entry
from service.storage.frequency_store import is_class_index

__all__ = ["EntryGroup", "group_entries", "is_well_formed", "parse_entry_id"]


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """Stream ids order as (milliseconds, sequence).

    >>> parse_entry_id("1700000000000-3") < parse_entry_id("1700000000001-0")
    True
    """
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def is_well_formed(batch: list[dict[str, Any]] | None, n_classes: int) -> bool:
    """The API's event shape: a list of `{"features": {...}, "label": <class index>, ...}`.

    >>> is_well_formed([{"features": {"a": 1}, "label": 1}], 2)
    True
    >>> is_well_formed([{"features": {"a": 1}, "label": 2}], 2), is_well_formed(None, 2)
    (False, False)
    """
    if not isinstance(batch, list):
        return False
    for event in batch:
        if not isinstance(event, dict) or not isinstance(event.get("features"), dict):
            return False
        if not is_class_index(event.get("label"), n_classes):
            return False
    return True


@dataclass
class EntryGroup:
    """Whole entries learned together: their ids in stream order, their events, and which of
    the ids were malformed (not learned, not acknowledged)."""

    ids: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    malformed: set[str] = field(default_factory=set)


def group_entries(
    entries: Iterable[Entry], max_events: int, n_classes: int, skip: Container[str] = ()
) -> Iterator[EntryGroup]:
    """Entries -> groups of whole entries with at most `max_events` events (one entry larger
    than that is a group alone). Entries in `skip` (already applied) are left out; `skip` is
    read as the groups are taken, so it may grow meanwhile. An event without a timestamp
    gets its entry's arrival time (the stream id's milliseconds), in place.

    >>> ok = lambda n: [{"features": {}, "label": 0} for _ in range(n)]
    >>> entries = [("1-0", ok(1)), ("2-0", None), ("3-0", ok(2)), ("4-0", ok(1))]
    >>> [(g.ids, len(g.events), g.malformed) for g in group_entries(entries, 2, 2, {"4-0"})]
    [(['1-0', '2-0'], 1, {'2-0'}), (['3-0'], 2, set())]
    >>> next(group_entries([("1500-0", ok(1))], 2, 2)).events[0]["timestamp"]
    1.5
    """
    group = EntryGroup()
    for entry_id, batch in entries:
        if entry_id in skip:
            continue
        if not is_well_formed(batch, n_classes):
            group.ids.append(entry_id)
            group.malformed.add(entry_id)
            continue
        assert batch is not None
        if group.events and len(group.events) + len(batch) > max_events:
            yield group
            group = EntryGroup()
        arrival = parse_entry_id(entry_id)[0] / 1000.0
        for event in batch:
            if event.get("timestamp") is None:
                event["timestamp"] = arrival  # stream arrival time stands in
        group.ids.append(entry_id)
        group.events.extend(batch)
    if group.ids:
        yield group
