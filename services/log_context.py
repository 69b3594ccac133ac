"""Which shard a log line is about, so that every line about a guild names its shard.

The Discord front end sets :data:`current_shard` when it starts handling an interaction
(or a job of a guild); everything logged from that task, and from the tasks it starts,
carries it: :class:`ShardField` puts `` [shard N]`` in the record's ``shard`` field
(empty for lines about no guild).
"""

from __future__ import annotations

import contextvars
import logging

current_shard: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "current_shard", default=None
)


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """Discord's rule: the shard that carries a guild's events (0 outside guilds)."""
    if guild_id is None or shard_count <= 1:
        return 0
    return (guild_id >> 22) % shard_count


class ShardField(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        shard = current_shard.get()
        record.shard = "" if shard is None else f" [shard {shard}]"
        return True
