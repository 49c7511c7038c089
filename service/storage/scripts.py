"""The Lua scripts of the service (`service/storage/lua/*.lua`), registered once per client.

`Scripts.get(name)` hashes a script's source on first use (redis-py's `register_script`; the
server loads it on the first NOSCRIPT). `Scripts.grouped(name, keys, args)` runs one through
the client's `GroupCommit`, so the scripts of concurrent requests share one round trip.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from service.storage.group_commit import GroupCommit

__all__ = ["Scripts", "load_lua"]


def load_lua(name: str) -> str:
    """The source of `lua/<name>`, shipped as package data."""
    return resources.files("service.storage").joinpath("lua", name).read_text(encoding="utf-8")


class Scripts:
    """Script registry and group commit of one Redis client (shared by every store on it).

    `group` is an attribute, read at each call, so a test can swap in a counting one.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.group = GroupCommit(redis)
        self._scripts: dict[str, AsyncScript] = {}

    def get(self, name: str) -> AsyncScript:
        # register_script only hashes the source; EVALSHA loads it on first NOSCRIPT.
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.redis.register_script(load_lua(name))
        return script

    async def grouped(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        """The reply of script `name`, sent in one pipelined round trip with concurrent callers'."""
        script = self.get(name)
        try:
            (reply,) = await self.group.execute([("EVALSHA", script.sha, len(keys), *keys, *args)])
        except NoScriptError:  # not loaded yet (or the server restarted): load and run it
            reply = await script(keys=keys, args=args)
        return reply
