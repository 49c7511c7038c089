"""What the learner has done since its last checkpoint: the acknowledgement ledger and its
position in the stream.

Entries are acknowledged (XACK) only by the checkpoint that covers them, in the same
transaction. Until then they are in the ledger: applied to the model, pending in Redis.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AckLedger", "Position"]


@dataclass
class Position:
    """The last stream entry applied and the class-frequency EMA raw state after it: what a
    checkpoint records, so that a restart continues from exactly there."""

    applied_id: str = "0-0"
    ema_state: dict[str, Any] = field(default_factory=dict)


class AckLedger:
    """Entries applied and not yet acknowledged, in order, and the steps taken since the last
    checkpoint.

    >>> ledger = AckLedger()
    >>> ledger.add(["1-0", "2-0"]); ledger.count_step()
    >>> "1-0" in ledger, len(ledger), ledger.dirty
    (True, 2, True)
    >>> acked, steps = ledger.take()
    >>> ledger.add(["3-0"])           # applied while the checkpoint was in flight
    >>> ledger.settle(acked, steps)
    >>> ledger.entries, ledger.steps
    (['3-0'], 0)
    """

    def __init__(self) -> None:
        self.entries: list[str] = []
        self._members: set[str] = set()
        self.steps = 0

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._members

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def dirty(self) -> bool:
        """Anything a checkpoint would cover."""
        return bool(self.entries) or self.steps > 0

    def add(self, entry_ids: Iterable[str]) -> None:
        ids = list(entry_ids)
        self.entries.extend(ids)
        self._members.update(ids)

    def count_step(self) -> None:
        self.steps += 1

    def take(self) -> tuple[list[str], int]:
        """(entries, steps) a checkpoint taken now covers; the ledger keeps them until `settle`."""
        return list(self.entries), self.steps

    def settle(self, acked: list[str], steps: int) -> None:
        """A checkpoint covering `acked` and `steps` was written."""
        done = set(acked)
        self.entries = [entry_id for entry_id in self.entries if entry_id not in done]
        self._members.difference_update(done)
        self.steps = max(0, self.steps - steps)

    def clear(self) -> None:
        """Forget everything (the lease was lost: a new leader replays these entries)."""
        self.entries.clear()
        self._members.clear()
        self.steps = 0
