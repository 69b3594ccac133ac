"""One interaction the emulator sent to the bot, and everything the bot answered."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.emulators.discord.messages import Message, MessageVersion
from tests.emulators.discord.model import Channel, User

if TYPE_CHECKING:
    from tests.emulators.discord.emulator import DiscordEmulator


@dataclass
class Callback:
    """The first answer the bot gave to an interaction."""

    type: int
    data: dict[str, Any]
    latency: float
    files: list[tuple[str, bytes]] = field(default_factory=list)


class InteractionHandle:
    """One interaction sent to the bot, and everything the bot answered to it."""

    def __init__(
        self,
        emu: DiscordEmulator,
        *,
        type: int,
        data: dict[str, Any],
        user: User,
        channel: Channel,
        attachment_size_limit: int,
        message: Message | None = None,
        parent: InteractionHandle | None = None,
        name: str | None = None,
    ) -> None:
        self.emu = emu
        self.id = emu._ids.next()
        self.token = "emu." + secrets.token_urlsafe(40)
        self.type = type
        self.data = data
        self.user = user
        self.channel = channel
        self.attachment_size_limit = attachment_size_limit
        self.message = message  # the message a component / modal came from
        self.parent = parent
        self.name = name
        self.created = time.monotonic()
        self.sent: float | None = None  # monotonic time the INTERACTION_CREATE went out
        self.shard_id: int | None = None  # the shard whose connection got it
        self.session_ids: list[str] = []  # its gateway session(s): two if a shard is doubled
        self.created_on_clock = emu.clock()
        self.payload: dict[str, Any] = {}
        self.callback: Callback | None = None
        self.original: Message | None = None
        self.followups: list[Message] = []
        self.expired = False
        self.refused: list[tuple[str, int]] = []  # (route, code) of calls Discord refused

    def __repr__(self) -> str:
        return f"<InteractionHandle type={self.type} {self.name or ''} id={self.id}>"

    @property
    def acknowledged(self) -> bool:
        return self.callback is not None

    @property
    def modal(self) -> dict[str, Any] | None:
        if self.callback is not None and self.callback.type == 9:
            return self.callback.data
        return None

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        if self.callback is not None and self.callback.type == 8:
            return list(self.callback.data.get("choices") or [])
        return None

    @property
    def original_history(self) -> list[MessageVersion]:
        return [] if self.original is None else self.original.history

    def is_expired(self) -> bool:
        return self.expired or self.emu.clock() - self.created_on_clock > self.emu.token_ttl

    def age(self) -> float:
        """Seconds since the interaction was sent, on the emulator's clock."""
        return self.emu.clock() - self.created_on_clock

    async def first_response(
        self,
        timeout: float = 3.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> Callback:
        """The first answer (callback) the bot gave, with its latency."""
        return await self.emu._wait(lambda: self.callback, timeout, f"a callback to {self!r}")

    async def wait_original(
        self,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> Message:
        """The @original message once ``predicate(message)`` holds; without a predicate,
        once it exists and is no longer a deferred "thinking" placeholder."""

        def probe() -> Message | None:
            msg = self.original
            if msg is None:
                return None
            if predicate(msg) if predicate is not None else not msg.loading:
                return msg
            return None

        return await self.emu._wait(probe, timeout, f"@original of {self!r} matching predicate")

    async def wait_followup(
        self,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> Message:
        def probe() -> Message | None:
            for msg in self.followups:
                if predicate is None or predicate(msg):
                    return msg
            return None

        return await self.emu._wait(probe, timeout, f"a follow-up of {self!r} matching predicate")
