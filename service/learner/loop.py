"""The learner loop: reads the event stream in micro-batches and trains the model, test-then-train.

`LearnerLoop` orchestrates its parts: the lease (one active learner per model), recovery on
start-up, the read loop with backoff and linger, the micro-batch step and the checkpoints.

A restart restores the checkpoint, puts the EMA hash back to the checkpoint's raw state, and
replays this consumer's pending (delivered, unacknowledged) entries: nothing lost, nothing
counted twice. A learner that does not hold the lease stands by, following the leader's
checkpoints, and takes over when the lease is free.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from service.learner.checkpointer import AfterCheckpoint, Checkpointer
from service.learner.entries import group_entries
from service.learner.follower import CheckpointFollower
from service.learner.lease import LearnerLease
from service.learner.ledger import AckLedger, Position
from service.learner.step import LearnerStep
from service.learner.waiters import AppliedWaiters
from service.observability.logs import log_event
from service.observability.prometheus import ServiceMetrics
from service.serving.checkpoint_loader import CheckpointLoader
from service.serving.production_scoring import ProductionScorer
from service.serving.served_model import ServedModel
from service.serving.shadows import Shadows
from service.settings import Settings
from service.storage.event_stream import Entry
from service.storage.frequency_store import initial_ema_state
from service.storage.model_storage import ModelStorage

__all__ = ["LearnerLoop"]

log = logging.getLogger(__name__)


class LearnerLoop:
    """The one active learner of a model (in-process task or `streambalance worker`).

    after_checkpoint: awaited after each checkpoint is written (e.g. archiving the version).
    """

    def __init__(
        self,
        settings: Settings,
        storage: ModelStorage,
        served: ServedModel,
        loader: CheckpointLoader,
        shadows: Shadows,
        production: ProductionScorer,
        waiters: AppliedWaiters,
        metrics: ServiceMetrics,
        after_checkpoint: Sequence[AfterCheckpoint] = (),
    ) -> None:
        self.settings = settings
        self.stream = storage.stream
        self.frequencies = storage.frequencies
        self.served = served
        self.loader = loader
        self.waiters = waiters
        self.metrics = metrics
        self.consumer = settings.consumer
        self.n_classes = len(settings.classes)
        self.max_batch = settings.batch_max_size
        self.block_ms = settings.batch_max_wait_ms
        self.linger_s = settings.batch_linger_ms / 1000.0
        self._stopping = False
        # set after a Redis error: re-read our pending entries before reading new ones
        self._resync_pending = False
        self._last_claim = time.monotonic()
        self.position = Position(ema_state=initial_ema_state(self.n_classes))
        self.ledger = AckLedger()
        self.lease = LearnerLease(
            storage.redis,
            storage.keys.leader,
            settings.lease_ttl_s,
            self.consumer,
            on_lost=self._step_down,
        )
        self.step = LearnerStep(
            settings,
            storage.frequencies,
            served,
            shadows,
            production,
            metrics,
            self.position,
            stopping=lambda: self._stopping,
        )
        self.checkpointer = Checkpointer(
            storage.checkpoints,
            served,
            shadows,
            production,
            metrics,
            self.ledger,
            self.position,
            renew=self.lease.renew,
            every_steps=settings.checkpoint_every_steps,
            every_seconds=settings.checkpoint_every_seconds,
            after_checkpoint=after_checkpoint,
        )
        self.follower = CheckpointFollower(storage.checkpoints, loader, waiters, metrics)

    # -- what operations and the HTTP layer may ask -------------------------------------------

    @property
    def leader(self) -> bool:
        """This learner holds the lease."""
        return self.lease.held

    @property
    def applied_unacked(self) -> int:
        """Entries applied to the model, to be acknowledged by the next checkpoint."""
        return len(self.ledger)

    async def checkpoint(self) -> int:
        """Write a checkpoint now (see `Checkpointer.checkpoint`); returns its version."""
        return await self.checkpointer.checkpoint()

    async def reset_frequencies(self, state: dict[str, Any]) -> None:
        """Continue from EMA raw `state` (a rollback puts an archived version's EMA back)."""
        await self.frequencies.set_state(state)
        self.position.ema_state = state

    # -- leadership -------------------------------------------------------------------------

    async def start(self) -> None:
        """Lead (restore + replay) if the lease is free; else serve checkpoints as a standby."""
        await self.stream.ensure_group()
        if await self.lease.try_acquire():
            await self.restore()
        else:
            await self.loader.load_latest()
            log_event(
                log,
                "standby",
                "another learner holds the lease; standing by",
                consumer=self.consumer,
            )

    def _step_down(self) -> None:
        # What we applied but did not checkpoint stays pending; the new leader replays it.
        self.ledger.clear()
        self.served.checkpoint_version = -1  # serve the leader's next checkpoint, not ours
        self.metrics.learner_errors.labels("lease_lost").inc()
        log_event(
            log,
            "lease_lost",
            "another learner took the lease; standing by",
            level=logging.WARNING,
            consumer=self.consumer,
        )

    async def _standby_tick(self) -> None:
        await asyncio.sleep(min(1.0, self.lease.ttl_s / 3))
        if not await self.lease.try_acquire():
            await self.follower.reload_if_newer()
            return
        try:
            await self.restore()
        except BaseException:
            # half restored: let another learner (or our next try) do it
            await self.lease.release()
            raise

    # -- start-up ---------------------------------------------------------------------------

    async def restore(self) -> None:
        """Latest checkpoint -> model and EMA hash; then replay our pending entries."""
        await self.stream.ensure_group()
        loaded = await self.loader.load_latest()
        position = self.position
        if loaded is None:  # never checkpointed: start from nothing (a standby may hold more)
            self.loader.start_fresh()
            position.ema_state = initial_ema_state(self.n_classes)
            position.applied_id = "0-0"
        else:
            position.ema_state = loaded.get("ema") or initial_ema_state(self.n_classes)
            position.applied_id = str(loaded.get("stream_id") or "0-0")
        # Put the EMA back where the checkpoint had it: entries applied after it (whose labels
        # already moved the hash) are pending and about to be replayed.
        await self.frequencies.set_state(position.ema_state)
        self.waiters.advance(position.applied_id, self.served.model_version)
        pending = await self.stream.pending(self.consumer)
        if pending:
            log.info("replaying %d pending stream entries after the checkpoint", len(pending))
            await self.apply(pending)
            await self.checkpoint()
        # Entries a previous leader (another consumer name) applied but never checkpointed:
        # we hold the lease, so it is gone. Each pass acknowledges what it applied; a poison
        # entry is dead-lettered after max_deliveries, so this ends.
        while True:
            claimed = await self.stream.claim_stale(self.consumer, 0, self.settings.max_deliveries)
            if not any(entry_id not in self.ledger for entry_id, _ in claimed):
                break
            log.info("replaying %d stream entries of a previous learner", len(claimed))
            await self.apply(claimed)
            await self.checkpoint()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Read, learn, checkpoint, until `stop()`; errors are logged, counted and retried."""
        backoff = 0.1
        while not self._stopping:
            try:
                if not self.leader:
                    await self._standby_tick()
                    continue
                if not await self.lease.renew():
                    continue
                if self._resync_pending:
                    # A read whose reply was lost in a connection drop left its entries in
                    # our pending list, where '>' never returns them: take them back first.
                    entries = await self.stream.pending(self.consumer)
                    self._resync_pending = False
                    if entries:
                        await self.apply(entries)
                entries = await self.stream.read_batch(self.consumer, self.max_batch, self.block_ms)
                learned = await self.apply(entries) if entries else 0
                await self._maybe_claim()
                if self.checkpointer.due():
                    self.checkpointer.start()
                if 0 < learned < self.max_batch and self.linger_s > 0:
                    # Part-full: events trickle in. Let the next micro-batch fill a little,
                    # so the step's fixed cost is shared by more events.
                    await asyncio.sleep(self.linger_s)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._resync_pending = True
                self.metrics.learner_errors.labels("redis").inc()
                log.warning("learner: Redis error (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                self.metrics.learner_errors.labels("loop").inc()
                log.exception("learner: unexpected error; continuing")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self._stopping = True

    async def finish(self, budget_s: float = 10.0) -> None:
        """After `run` returned: apply what is already in the stream, then a final checkpoint,
        then hand the lease over (a restart or a standby takes over at once)."""
        await self.checkpointer.settled()
        if not self.leader:
            return
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            entries = await self.stream.read_batch(self.consumer, self.max_batch, 0)
            if not entries:
                break
            await self.apply(entries)
        if self.ledger.dirty:
            await self.checkpoint()
        if self.leader:
            await self.lease.release()

    # -- one read ---------------------------------------------------------------------------

    async def apply(self, entries: list[Entry]) -> int:
        """Learn every event of `entries`, in micro-batches of whole entries (at most
        `batch_max_size` events, unless one entry alone is larger: it is then split).
        Returns how many events were in well-formed entries.

        A malformed entry (undecodable, or not the API's event shape) is not learned and not
        acknowledged: claimed again later, it ends in the dead-letter stream."""
        total = 0
        # Entries already in the ledger were applied (claimed back after a stall): skipped.
        for group in group_entries(entries, self.max_batch, self.n_classes, skip=self.ledger):
            for entry_id in group.malformed:
                self.metrics.learner_errors.labels("decode").inc()
                log.error("learner: stream entry %s is malformed; not learned", entry_id)
            total += len(group.events)
            await self._apply_group(group.ids, group.events, group.malformed)
        return total

    async def _apply_group(
        self, ids: list[str], events: list[dict[str, Any]], bad: set[str]
    ) -> None:
        if not await self.lease.renew():  # long replays must not let the lease lapse
            return  # another learner leads now; the entries stay pending for it
        ok = True
        for start in range(0, len(events), self.max_batch):
            stepped = await self.step(events[start : start + self.max_batch])
            if stepped:
                self.ledger.count_step()
            ok = stepped and ok
        # Not acknowledged: claimed again later and, after `max_deliveries`, dead-lettered.
        failed = set(ids) if not ok else bad
        good = [entry_id for entry_id in ids if entry_id not in failed]
        self.ledger.add(good)
        self.position.applied_id = ids[-1]
        self.waiters.advance(self.position.applied_id, self.served.model_version, failed)

    async def _maybe_claim(self) -> None:
        """Take over entries a dead learner left pending (standby takeover)."""
        settings = self.settings
        if time.monotonic() - self._last_claim < settings.claim_idle_ms / 2000.0:
            return
        self._last_claim = time.monotonic()
        claimed = await self.stream.claim_stale(
            self.consumer, settings.claim_idle_ms, settings.max_deliveries
        )
        if claimed:
            log.info("claimed %d stale stream entries", len(claimed))
            await self.apply(claimed)
