"""Following the learner's checkpoints: API-only replicas and standby learners reload the model
when a new checkpoint is published, and advance their `wait=true` waiters with it."""

from __future__ import annotations

import asyncio
import logging

from service.learner.waiters import AppliedWaiters
from service.observability.prometheus import ServiceMetrics
from service.serving.checkpoint_loader import CheckpointLoader
from service.storage.checkpoint_store import CheckpointStore

__all__ = ["CheckpointFollower"]

log = logging.getLogger(__name__)


class CheckpointFollower:
    """Reloads the served model on each new checkpoint (pub/sub, plus a poll every `poll_s`)."""

    def __init__(
        self,
        checkpoints: CheckpointStore,
        loader: CheckpointLoader,
        waiters: AppliedWaiters,
        metrics: ServiceMetrics,
        poll_s: float = 2.0,
    ) -> None:
        self.checkpoints = checkpoints
        self.loader = loader
        self.waiters = waiters
        self.metrics = metrics
        self.poll_s = poll_s

    async def run(self) -> None:
        while True:
            try:
                async with self.checkpoints.announcements() as announcements:
                    await self.reload_if_newer()  # anything published while we were not listening
                    while True:
                        # A poll as well as pub/sub: a message lost on reconnect must not leave
                        # this replica serving an old model.
                        await announcements.get_message(
                            ignore_subscribe_messages=True, timeout=self.poll_s
                        )
                        await self.reload_if_newer()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.learner_errors.labels("watcher").inc()
                log.warning("checkpoint follower: %s; reconnecting", exc)
                await asyncio.sleep(1.0)

    async def reload_if_newer(self) -> None:
        served = self.loader.served
        if await self.checkpoints.latest_version() == served.checkpoint_version:
            return
        meta = await self.loader.load_latest()
        if meta is not None:
            self.waiters.advance(str(meta.get("stream_id") or "0-0"), served.model_version)
