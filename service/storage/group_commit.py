"""Group commit: concurrent callers' Redis commands sent together, one round trip per batch.

Used for the hot writes (the `/learn` appends, the `/predict` saves): under load each round
trip carries every request that arrived meanwhile; an idle service adds no delay.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

__all__ = ["GroupCommit"]


class GroupCommit:
    """Concurrent callers' Redis commands sent together: one pipelined round trip per batch
    of requests, not one per request.

    The first caller starts a flush (at the next event-loop iteration, so every request
    handled in this iteration joins it); callers that arrive while a flush is in flight go
    into the next one. Under load each round trip carries everything that arrived
    meanwhile; an idle service adds no delay. Each caller gets its own replies, or the
    first error among them raised; a connection error fails every caller of that batch.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._queue: list[tuple[list[tuple[Any, ...]], asyncio.Future[list[Any]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Replies of `commands` (each `(NAME, *args)`), sent with other callers' commands."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((commands, future))
        flusher = self._flusher
        if flusher is None or flusher.done() or flusher.get_loop() is not loop:
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        batch: list[tuple[list[tuple[Any, ...]], asyncio.Future[list[Any]]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                batch = [(cmds, fut) for cmds, fut in batch if not fut.done()]  # cancelled
                if not batch:
                    continue
                flat = [cmd for cmds, _ in batch for cmd in cmds]
                try:
                    replies = await self._send(flat)
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                except BaseException:  # cancelled (the loop is shutting down): nobody hangs
                    for _, fut in batch + self._queue:
                        fut.cancel()
                    self._queue = []
                    raise
                at = 0
                for cmds, fut in batch:
                    mine = replies[at : at + len(cmds)]
                    at += len(cmds)
                    if fut.done():
                        continue
                    error = next((r for r in mine if isinstance(r, Exception)), None)
                    if error is not None:
                        fut.set_exception(error)
                    else:
                        fut.set_result(mine)
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if len(commands) == 1:  # alone: a plain command is cheaper than a pipeline
            try:
                return [await self.redis.execute_command(*commands[0])]
            except ResponseError as exc:  # a command error is that caller's reply
                return [exc]
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)
