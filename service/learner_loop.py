"""The learner: reads the event stream in micro-batches and trains the model, test-then-train.

Per micro-batch: the class-frequency EMA is updated in Redis by one Lua call (labels in
order), then `StreamTrainer.process` predicts first (prequential metrics, drift), computes
the smoothed factors and takes the gradient step. Every `checkpoint_every_steps` steps or
`checkpoint_every_seconds` (and on shutdown) the model is checkpointed to Redis together with
the XACK of the entries it covers, in one transaction, and the new version is published.

A restart restores the checkpoint, puts the EMA hash back to the checkpoint's raw state, and
replays this consumer's pending (delivered, unacknowledged) entries: nothing lost, nothing
counted twice. `AppliedWaiters` lets `POST /learn?wait=true` wait until its entry is applied;
`VersionWatcher` hot-reloads checkpoints in API-only replicas and advances their waiters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.errors import LearnerFailed, NotReady, WaitTimeout
from service.observability.logs import log_event

if TYPE_CHECKING:
    from models.trainer import BatchReport
    from service.deps import Runtime
    from service.storage.event_stream import Entry

__all__ = ["AppliedWaiters", "Learner", "VersionWatcher", "initial_ema_state", "parse_entry_id"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """Stream ids order as (milliseconds, sequence).

    >>> parse_entry_id("1700000000000-3") < parse_entry_id("1700000000001-0")
    True
    """
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def initial_ema_state(n_classes: int) -> dict[str, Any]:
    """The EMA raw state before any label (what a fresh estimator holds)."""
    return {"m": [0.0] * n_classes, "norm": 0.0, "count": 0, "last_time": None}


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


class Learner:
    """The one active learner of a model (in-process task or `streambalance worker`)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        settings = runtime.settings
        self.consumer = settings.consumer
        self.max_batch = settings.batch_max_size
        self.block_ms = settings.batch_max_wait_ms
        self.linger_s = settings.batch_linger_ms / 1000.0
        self.decay = 2.0 ** (-1.0 / settings.half_life)
        self._stopping = False
        self._unacked: list[str] = []
        self._unacked_set: set[str] = set()
        self._steps_since_checkpoint = 0
        # set after a Redis error: re-read our pending entries before reading new ones
        self._resync_pending = False
        self._last_checkpoint = time.monotonic()
        # Checkpoints one at a time; the loop's own run in the background (see _run_checkpoint).
        self._checkpoint_lock = asyncio.Lock()
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpoint_backoff_s = 0.1
        self._last_claim = time.monotonic()
        self.ema_state: dict[str, Any] = initial_ema_state(len(settings.classes))
        self.applied_id = "0-0"
        # One active learner per model: a lease in Redis (SET NX PX, renewed while leading).
        self.leader = False
        self.lease_ttl_s = settings.lease_ttl_s
        self._lease = runtime.redis.lock(
            runtime.storage.keys.leader,
            timeout=self.lease_ttl_s,
            blocking=False,
            thread_local=False,
        )
        self._last_renew = 0.0
        self._watcher = VersionWatcher(runtime)

    # -- leadership -------------------------------------------------------------------------

    async def start(self) -> None:
        """Lead (restore + replay) if the lease is free; else serve checkpoints as a standby."""
        await self.rt.storage.stream.ensure_group()
        if await self._try_lead():
            await self.restore()
        else:
            await self.rt.load_checkpoint_into_runtime()
            log_event(
                log,
                "standby",
                "another learner holds the lease; standing by",
                consumer=self.consumer,
            )

    async def _try_lead(self) -> bool:
        if not await self._lease.acquire(blocking=False):
            return False
        self.leader = True
        self._last_renew = time.monotonic()
        log_event(log, "leader", "this process is the model's learner", consumer=self.consumer)
        return True

    async def _renew(self, force: bool = False) -> bool:
        """Keep the lease; False (and step down) if another learner took it."""
        if not force and time.monotonic() - self._last_renew < self.lease_ttl_s / 3:
            return True
        try:
            await self._lease.reacquire()
        except LockError:
            # Expired while we were busy: if nobody took it meanwhile, nobody else learned
            # anything, so taking it back with the same token is safe.
            token = self._lease.local.token
            if token is None or not await self._lease.acquire(blocking=False, token=token):
                self._step_down()
                return False
        self._last_renew = time.monotonic()
        return True

    def _step_down(self) -> None:
        # What we applied but did not checkpoint stays pending; the new leader replays it.
        self.leader = False
        self._unacked.clear()
        self._unacked_set.clear()
        self._steps_since_checkpoint = 0
        self.rt.checkpoint_version = -1  # serve the leader's next checkpoint, not ours
        self.rt.metrics.learner_errors.labels("lease_lost").inc()
        log_event(
            log,
            "lease_lost",
            "another learner took the lease; standing by",
            level=logging.WARNING,
            consumer=self.consumer,
        )

    async def _standby_tick(self) -> None:
        await asyncio.sleep(min(1.0, self.lease_ttl_s / 3))
        if not await self._try_lead():
            await self._watcher.reload_if_newer()
            return
        try:
            await self.restore()
        except BaseException:
            self.leader = False  # half restored: let another learner (or our next try) do it
            try:
                await self._lease.release()
            except LockError:
                pass
            raise

    # -- start-up ---------------------------------------------------------------------------

    async def restore(self) -> None:
        """Latest checkpoint -> model and EMA hash; then replay our pending entries."""
        rt = self.rt
        await rt.storage.stream.ensure_group()
        loaded = await rt.load_checkpoint_into_runtime()
        if loaded is None:  # never checkpointed: start from nothing (a standby may hold more)
            rt.trainer = rt.new_trainer()
            rt.model_version = 0
            self.ema_state = initial_ema_state(len(rt.classes))
            self.applied_id = "0-0"
        else:
            self.ema_state = loaded.get("ema") or initial_ema_state(len(rt.classes))
            self.applied_id = str(loaded.get("stream_id") or "0-0")
        # Put the EMA back where the checkpoint had it: entries applied after it (whose labels
        # already moved the hash) are pending and about to be replayed.
        await rt.storage.frequencies.set_state(self.ema_state)
        rt.waiters.advance(self.applied_id, rt.model_version)
        pending = await rt.storage.stream.pending(self.consumer)
        if pending:
            log.info("replaying %d pending stream entries after the checkpoint", len(pending))
            await self.apply(pending)
            await self.checkpoint()
        # Entries a previous leader (another consumer name) applied but never checkpointed:
        # we hold the lease, so it is gone. Each pass acknowledges what it applied; a poison
        # entry is dead-lettered after max_deliveries, so this ends.
        while True:
            claimed = await rt.storage.stream.claim_stale(
                self.consumer, 0, rt.settings.max_deliveries
            )
            if not any(entry_id not in self._unacked_set for entry_id, _ in claimed):
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
                if not await self._renew():
                    continue
                if self._resync_pending:
                    # A read whose reply was lost in a connection drop left its entries in
                    # our pending list, where '>' never returns them: take them back first.
                    entries = await self.rt.storage.stream.pending(self.consumer)
                    self._resync_pending = False
                    if entries:
                        await self.apply(entries)
                entries = await self.rt.storage.stream.read_batch(
                    self.consumer, self.max_batch, self.block_ms
                )
                learned = await self.apply(entries) if entries else 0
                await self._maybe_claim()
                if self._checkpoint_due():
                    self._start_checkpoint()
                if 0 < learned < self.max_batch and self.linger_s > 0:
                    # Part-full: events trickle in. Let the next micro-batch fill a little,
                    # so the step's fixed cost is shared by more events.
                    await asyncio.sleep(self.linger_s)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._resync_pending = True
                self.rt.metrics.learner_errors.labels("redis").inc()
                log.warning("learner: Redis error (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                self.rt.metrics.learner_errors.labels("loop").inc()
                log.exception("learner: unexpected error; continuing")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self._stopping = True

    @property
    def applied_unacked(self) -> int:
        """Entries applied to the model, to be acknowledged by the next checkpoint."""
        return len(self._unacked)

    async def finish(self, budget_s: float = 10.0) -> None:
        """After `run` returned: apply what is already in the stream, then a final checkpoint,
        then hand the lease over (a restart or a standby takes over at once)."""
        await self._checkpoint_settled()
        if not self.leader:
            return
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            entries = await self.rt.storage.stream.read_batch(self.consumer, self.max_batch, 0)
            if not entries:
                break
            await self.apply(entries)
        if self._unacked or self._steps_since_checkpoint:
            await self.checkpoint()
        if self.leader:
            try:
                await self._lease.release()
            except LockError:
                pass
            self.leader = False

    # -- one read ---------------------------------------------------------------------------

    async def apply(self, entries: list[Entry]) -> int:
        """Learn every event of `entries`, in micro-batches of whole entries (at most
        `batch_max_size` events, unless one entry alone is larger: it is then split).
        Returns how many events were in well-formed entries.

        A malformed entry (undecodable, or not the API's event shape) is not learned and not
        acknowledged: claimed again later, it ends in the dead-letter stream."""
        ids: list[str] = []
        bad: set[str] = set()
        events: list[dict[str, Any]] = []
        total = 0
        for entry_id, batch in entries:
            if entry_id in self._unacked_set:  # already applied (claimed back after a stall)
                continue
            if not self._well_formed(batch):
                self.rt.metrics.learner_errors.labels("decode").inc()
                log.error("learner: stream entry %s is malformed; not learned", entry_id)
                ids.append(entry_id)
                bad.add(entry_id)
                continue
            assert batch is not None
            if events and len(events) + len(batch) > self.max_batch:
                await self._apply_entries(ids, events, bad)
                ids, events, bad = [], [], set()
            arrival = parse_entry_id(entry_id)[0] / 1000.0
            for event in batch:
                if event.get("timestamp") is None:
                    event["timestamp"] = arrival  # stream arrival time stands in
            ids.append(entry_id)
            events.extend(batch)
            total += len(batch)
        if ids:
            await self._apply_entries(ids, events, bad)
        return total

    def _well_formed(self, batch: list[dict[str, Any]] | None) -> bool:
        if not isinstance(batch, list):
            return False
        k = len(self.rt.classes)
        for event in batch:
            if not isinstance(event, dict) or not isinstance(event.get("features"), dict):
                return False
            label = event.get("label")
            if type(label) is not int or not 0 <= label < k:
                return False
        return True

    async def _apply_entries(
        self, ids: list[str], events: list[dict[str, Any]], bad: set[str]
    ) -> None:
        if not await self._renew():  # long replays must not let the lease lapse
            return  # another learner leads now; the entries stay pending for it
        ok = True
        for start in range(0, len(events), self.max_batch):
            ok = await self._step(events[start : start + self.max_batch]) and ok
        # Not acknowledged: claimed again later and, after `max_deliveries`, dead-lettered.
        failed = set(ids) if not ok else bad
        good = [entry_id for entry_id in ids if entry_id not in failed]
        self._unacked.extend(good)
        self._unacked_set.update(good)
        self.applied_id = ids[-1]
        self.rt.waiters.advance(self.applied_id, self.rt.model_version, failed)

    async def _step(self, chunk: list[dict[str, Any]]) -> bool:
        """One micro-batch: EMA in Redis, then test-then-train. False if it failed."""
        rt, settings = self.rt, self.rt.settings
        if not chunk:
            return True
        features = [e["features"] for e in chunk]
        labels = [int(e["label"]) for e in chunk]
        timestamps = [float(e["timestamp"]) for e in chunk]
        started = time.perf_counter()
        try:
            frequencies, state = await self._redis_retry(
                lambda: rt.storage.frequencies.update(
                    labels, timestamps, self.decay, settings.time_half_life, settings.floor
                )
            )
        except (RedisConnectionError, RedisTimeoutError, OSError):
            raise  # only while stopping: the entries stay pending and are replayed
        except RedisError:
            rt.metrics.learner_errors.labels("redis").inc()
            log.exception("learner: the EMA update failed for %d events", len(chunk))
            return False
        self.ema_state = state
        trainer = rt.require_trainer()

        def process() -> BatchReport:
            with rt.model_lock:
                return trainer.process(features, labels, timestamps, frequencies=frequencies)

        try:
            # On the event loop, not a thread: the step is mostly GIL-holding Python (metrics,
            # drift), so a thread only adds switch-interval stalls to every request.
            report = process()
        except Exception:
            # A poison batch (a bug: the API validated these events). The EMA already
            # counted its labels; the entries stay pending for a retry, then the dead letters.
            rt.metrics.learner_errors.labels("process").inc()
            log.exception("learner: a micro-batch of %d events failed", len(chunk))
            return False
        rt.metrics.learner_step.observe(time.perf_counter() - started)
        rt.metrics.learner_batch.observe(len(chunk))
        # Operations: challengers learn the same batch; late labels score what was served.
        rt.shadows.process(features, labels, timestamps, frequencies)
        rt.production.observe(chunk)
        rt.model_version += 1
        rt.last_step = report.step
        self._steps_since_checkpoint += 1
        if report.new_drift:
            log_event(
                log,
                "drift",
                "drift detected: " + ", ".join(report.new_drift),
                signals=report.new_drift,
                model_version=rt.model_version,
            )
        return True

    async def _redis_retry(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry while Redis is unreachable: a batch must not be half applied."""
        backoff = 0.1
        while True:
            try:
                return await call()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if self._stopping:
                    raise
                self.rt.metrics.learner_errors.labels("redis").inc()
                log.warning("learner: Redis unreachable (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    # -- checkpoints and recovery -----------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        if self._checkpointing is not None and not self._checkpointing.done():
            return False
        if not self._unacked and self._steps_since_checkpoint == 0:
            return False
        if self._steps_since_checkpoint >= self.rt.settings.checkpoint_every_steps:
            return True
        return time.monotonic() - self._last_checkpoint >= self.rt.settings.checkpoint_every_seconds

    def _start_checkpoint(self) -> None:
        """Checkpoint in a task next to the loop, not inside it.

        Its round trips (lease renewal, MULTI, publish, trim, archive: five or six, each
        waiting a whole event-loop cycle under HTTP load) no longer hold up the next
        micro-batch; they put the freshness p99 at 60-110 ms. The snapshot's few ms of CPU
        still run on the same loop."""
        self._checkpointing = asyncio.create_task(self._run_checkpoint(), name="checkpoint")

    async def _run_checkpoint(self) -> None:
        try:
            await self.checkpoint()
            self._checkpoint_backoff_s = 0.1
            return
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            # Nothing is lost: the entries stay pending and go into the next checkpoint.
            self.rt.metrics.learner_errors.labels("redis").inc()
            log.warning("learner: checkpoint failed (%s); the next one covers its entries", exc)
        except Exception:
            self.rt.metrics.learner_errors.labels("checkpoint").inc()
            log.exception("learner: checkpoint failed; the next one covers its entries")
        # Still "in flight" while it waits, so the loop does not retry at every step.
        await asyncio.sleep(self._checkpoint_backoff_s)
        self._checkpoint_backoff_s = min(self._checkpoint_backoff_s * 2, 5.0)

    async def _checkpoint_settled(self) -> None:
        """Wait for a background checkpoint in flight, if any."""
        task = self._checkpointing
        if task is not None and not task.done():
            await asyncio.wait({task})

    async def checkpoint(self) -> int:
        """Snapshot the model and XACK the entries it covers, atomically; publish the version.

        One at a time (a lock). The learner may apply more entries while the round trips are
        in flight: those are not in this snapshot and stay unacknowledged for the next."""
        async with self._checkpoint_lock:
            return await self._checkpoint()

    async def _checkpoint(self) -> int:
        rt = self.rt
        if not await self._renew(force=True):
            return rt.checkpoint_version  # no longer the learner: write nothing
        trainer = rt.require_trainer()

        def snapshot() -> bytes:
            with rt.model_lock:
                return trainer.to_bytes()

        data = snapshot()
        now = time.time()
        meta = {
            "model_version": rt.model_version,
            "stream_id": self.applied_id,
            "events_learned": int(trainer.events_learned),
            "time": now,
            "ema": self.ema_state,
            "strategy": rt.champion_strategy,
            "production": rt.production.state_dict(),
        }
        # Taken with the snapshot, no await in between: exactly what the snapshot holds.
        acked = list(self._unacked)
        steps = self._steps_since_checkpoint
        version = await rt.storage.checkpoints.save(
            data, meta, acked, shadows=rt.shadows.snapshots()
        )
        from service.versions import archive

        await archive(rt, version, data, meta)
        done = set(acked)
        self._unacked = [entry_id for entry_id in self._unacked if entry_id not in done]
        self._unacked_set.difference_update(done)
        self._steps_since_checkpoint = max(0, self._steps_since_checkpoint - steps)
        self._last_checkpoint = time.monotonic()
        rt.checkpoint_version = version
        rt.checkpoint_time = now
        rt.metrics.checkpoints.inc()
        log_event(
            log,
            "checkpoint",
            version=version,
            model_version=rt.model_version,
            events_learned=int(trainer.events_learned),
            acked_entries=len(acked),
            stream_id=self.applied_id,
        )
        return version

    async def _maybe_claim(self) -> None:
        """Take over entries a dead learner left pending (standby takeover)."""
        settings = self.rt.settings
        if time.monotonic() - self._last_claim < settings.claim_idle_ms / 2000.0:
            return
        self._last_claim = time.monotonic()
        claimed = await self.rt.storage.stream.claim_stale(
            self.consumer, settings.claim_idle_ms, settings.max_deliveries
        )
        if claimed:
            log.info("claimed %d stale stream entries", len(claimed))
            await self.apply(claimed)


class VersionWatcher:
    """API-only replicas: reload the model when the learner publishes a new checkpoint."""

    def __init__(self, runtime: Runtime, poll_s: float = 2.0) -> None:
        self.rt = runtime
        self.poll_s = poll_s

    async def run(self) -> None:
        rt = self.rt
        while True:
            pubsub = rt.redis.pubsub()
            try:
                await pubsub.subscribe(rt.storage.keys.channel)
                await self.reload_if_newer()  # anything published while we were not listening
                while True:
                    # A poll as well as pub/sub: a message lost on reconnect must not leave
                    # this replica serving an old model.
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.poll_s)
                    await self.reload_if_newer()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                rt.metrics.learner_errors.labels("watcher").inc()
                log.warning("version watcher: %s; reconnecting", exc)
                await asyncio.sleep(1.0)
            finally:
                await pubsub.aclose()

    async def reload_if_newer(self) -> None:
        rt = self.rt
        if await rt.storage.checkpoints.latest_version() == rt.checkpoint_version:
            return
        meta = await rt.load_checkpoint_into_runtime()
        if meta is not None:
            rt.waiters.advance(str(meta.get("stream_id") or "0-0"), rt.model_version)
