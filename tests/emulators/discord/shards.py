"""Sharding rules the gateway checks at every IDENTIFY, and what it records of them.

Discord's rules (see PROTOCOLS.md): a connection runs shard ``[shard_id, shard_count]``
(no ``shard``: ``[0, 1]``) and receives the events of the guilds with
``(guild_id >> 22) % shard_count == shard_id``. Shards with the same
``shard_id % max_concurrency`` form a bucket that may IDENTIFY once per 5 s, and the
IDENTIFYs of a day are counted against ``session_start_limit.total``. A bot that breaks
a rule is not refused (except an impossible shard, which Discord closes with 4010):
the break is recorded as a :class:`GatewayViolation` and the ``discord_emu`` fixture
fails the test with it, as it does for OpenAPI violations.

The bucket interval holds only between IDENTIFYs that carry ``shard``: a plain
``Client`` sends none, paces its own re-IDENTIFYs (``before_identify_hook``), and tests
restart it at will; an ``AutoShardedClient`` always sends ``shard``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class SessionStartLimit:
    """What ``GET /gateway/bot`` answers as ``session_start_limit``; ``remaining``
    goes down by one at every IDENTIFY."""

    total: int = 1000
    remaining: int = 1000
    reset_after: int = 24 * 60 * 60 * 1000  # ms until ``remaining`` is back to ``total``
    max_concurrency: int = 1

    def to_dict(self) -> dict[str, int]:
        return {k: max(0, v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class IdentifyRecord:
    """One IDENTIFY the emulator accepted."""

    at: float  # the emulator's clock (``emu.clock()``)
    shard_id: int
    shard_count: int
    session_id: str
    connection: int  # number of the websocket connection, in order of opening
    sharded: bool  # the payload carried ``shard`` (a plain ``Client`` sends none)

    @property
    def shard(self) -> tuple[int, int]:
        return self.shard_id, self.shard_count


@dataclass(frozen=True)
class GatewayViolation:
    kind: str  # "invalid-shard", "shard-count-mismatch", "duplicate-shard",
    # "identify-too-soon", "session-start-limit"
    message: str
    at: float

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def parse_shard(value: Any) -> tuple[int, int] | None:
    """``[shard_id, shard_count]`` from an IDENTIFY, or None when it is not a valid pair."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    shard_id, count = value
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    if count < 1 or not 0 <= shard_id < count:
        return None
    return shard_id, count


class ShardRules:
    """The IDENTIFY checks, and the records tests read (``emu.identifies``,
    ``emu.gateway_violations``)."""

    def __init__(self) -> None:
        self.identifies: list[IdentifyRecord] = []
        self.violations: list[GatewayViolation] = []

    def violation(self, kind: str, message: str, at: float) -> None:
        log.warning("gateway rule broken (%s): %s", kind, message)
        self.violations.append(GatewayViolation(kind, message, at))

    def check_identify(
        self,
        record: IdentifyRecord,
        live_shards: Iterable[tuple[int, int]],
        limit: SessionStartLimit,
        interval: float,
    ) -> None:
        """Record ``record`` and every rule it breaks. ``live_shards`` are the shards of
        the other connections that are open right now."""
        shard_id, count = record.shard
        for other_id, other_count in live_shards:
            if other_count != count:
                self.violation(
                    "shard-count-mismatch",
                    f"shard [{shard_id}, {count}] identified while shard "
                    f"[{other_id}, {other_count}] is connected",
                    record.at,
                )
            elif other_id == shard_id:
                self.violation(
                    "duplicate-shard",
                    f"shard [{shard_id}, {count}] identified on a second live connection",
                    record.at,
                )
        if record.sharded:
            self._check_bucket(record, limit.max_concurrency, interval)
        if limit.remaining <= 0:
            self.violation(
                "session-start-limit",
                f"IDENTIFY beyond session_start_limit.total ({limit.total}): Discord "
                "invalidates every session of the bot",
                record.at,
            )
        limit.remaining -= 1
        self.identifies.append(record)

    def _check_bucket(self, record: IdentifyRecord, max_concurrency: int, interval: float) -> None:
        bucket = record.shard_id % max_concurrency
        for earlier in reversed(self.identifies):
            if record.at - earlier.at >= interval:
                break
            if earlier.sharded and earlier.shard_id % max_concurrency == bucket:
                self.violation(
                    "identify-too-soon",
                    f"shard {record.shard_id} identified {record.at - earlier.at:.2f}s after "
                    f"shard {earlier.shard_id}, in the same bucket {bucket} (max_concurrency "
                    f"{max_concurrency} allows one IDENTIFY per bucket every {interval:g}s)",
                    record.at,
                )
                return
