"""Waiting for the learner: `POST /learn?wait=true` answers once its entry is applied.

Stream ids grow monotonically and one learner applies entries in order, so "applied" is one
high-water mark. The learner (or, on an API-only replica, each reloaded checkpoint) advances
it with the model version that applied the entries.
"""

from __future__ import annotations

import asyncio

from service.errors import LearnerFailed, NotReady, WaitTimeout
from service.learner.entries import parse_entry_id

__all__ = ["AppliedWaiters"]


class AppliedWaiters:
    """Futures keyed by stream entry id, resolved once the model has applied that entry."""

    def __init__(self) -> None:
        self.applied: tuple[int, int] = (0, 0)
        self.version = 0
        self._waiting: dict[asyncio.Future[int], tuple[int, int]] = {}

    async def wait(self, entry_id: str, timeout: float) -> int:
        """The model version that applied `entry_id` (at once if it already has)."""
        key = parse_entry_id(entry_id)
        if key <= self.applied:
            return self.version
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[future] = key
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise WaitTimeout(
                f"wait: the learner did not apply entry {entry_id} within {timeout:g} s; "
                "the events are stored and will still be learned"
            ) from None
        finally:
            self._waiting.pop(future, None)

    def advance(self, entry_id: str, version: int, failed: set[str] | None = None) -> None:
        """Everything up to `entry_id` is applied, except the `failed` entries."""
        key = parse_entry_id(entry_id)
        if key >= self.applied:
            self.applied = key
        self.version = version
        bad = {parse_entry_id(f) for f in failed} if failed else set()
        done = [f for f, k in self._waiting.items() if k <= self.applied]
        for future in done:
            key = self._waiting.pop(future)
            if future.done():
                continue
            if key in bad:
                future.set_exception(
                    LearnerFailed(
                        "learn: the learner could not apply these events; they stay in the stream "
                        "and are retried, then dead-lettered"
                    )
                )
            else:
                future.set_result(version)

    def fail_all(self, message: str) -> None:
        for future in list(self._waiting):
            if not future.done():
                future.set_exception(NotReady(message))
        self._waiting.clear()
