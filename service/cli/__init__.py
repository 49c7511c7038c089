"""The `streambalance` command (`commands`), the replay client and the event-file reader."""

from service.cli.commands import main

__all__ = ["main"]
