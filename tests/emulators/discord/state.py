"""Everything the emulator knows and records, and the one way to wait on it.

:class:`EmulatorState` is the base of every part of :class:`DiscordEmulator`: the
knobs a test may turn, the records it reads, the world (the application, its bot user,
the guild, messages, synced commands) and :meth:`EmulatorState._wait`, which re-checks
a probe on every state change. The mixins in the sibling modules act on this state."""

from __future__ import annotations

import asyncio
import contextvars
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tests.emulators.discord.common import (
    API_PREFIX,
    DEFAULT_ATTACHMENT_SIZE_LIMIT,
    Intent,
    Perm,
    Snowflakes,
)
from tests.emulators.discord.gateway import Gateway
from tests.emulators.discord.model import Attachment, Channel, Guild, Member, Role, User
from tests.emulators.discord.shards import SessionStartLimit
from tests.emulators.spec import SpecChecker

if TYPE_CHECKING:
    from tests.emulators.discord.interactions import InteractionHandle
    from tests.emulators.discord.messages import Message
    from tests.emulators.discord.server import FaultRule, RequestRecord

T = TypeVar("T")

# Set while a REST request is handled: state changes then wake waiters only once the
# answer is written.
IN_REQUEST: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "discord_emulator_in_request", default=False
)


class EmulatorState:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_name: str = "EmuBot",
        guild_name: str = "Emulated Guild",
        channel_name: str = "general",
        validate: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self._ids = Snowflakes()
        self.checker = SpecChecker(
            "discord", "discord-openapi.json", "https://discord.com", API_PREFIX
        )
        self.checker.enabled = validate

        # knobs a test may change
        self.bot_token = "emu-bot-token." + secrets.token_urlsafe(12)
        self.attachment_size_limit = DEFAULT_ATTACHMENT_SIZE_LIMIT
        self.token_ttl = 15 * 60.0
        self.callback_deadline: float | None = 3.0
        self.nonce_window = 5 * 60.0
        self.heartbeat_interval_ms = 41_250
        self.allowed_privileged_intents = Intent.PRIVILEGED
        self.recommended_shards = 1  # "shards" of GET /gateway/bot
        self.session_start_limit = SessionStartLimit()
        self.identify_interval = 5.0  # seconds between two IDENTIFYs of one bucket

        # records
        self.requests: list[RequestRecord] = []
        self.unknown_routes: list[tuple[str, str]] = []
        self.rejections: list[tuple[str, str, str]] = []  # (method, path, reason) of 400s
        self.internal_errors: list[str] = []
        self.attachment_downloads: list[str] = []
        self.interactions: list[InteractionHandle] = []
        self.sync_counts: Counter[int | None] = Counter()

        self._allowed_unknown: list[tuple[str, re.Pattern[str]]] = []
        self._faults: list[FaultRule] = []
        self._changed = asyncio.Condition()
        self._messages: dict[int, Message] = {}
        self._attachments: dict[int, Attachment] = {}
        self._nonces: dict[tuple[int, str], tuple[float, Message]] = {}
        self._commands: dict[int | None, list[dict[str, Any]]] = {}
        # (guild id, command name) -> user and role ids a server's admins allowed to use
        # the command whatever its default_member_permissions (Server Settings >
        # Integrations in Discord).
        self._command_grants: dict[tuple[int, str], set[int]] = {}
        self._by_id: dict[int, InteractionHandle] = {}
        self._by_token: dict[str, InteractionHandle] = {}
        self._default_users: dict[int, User] = {}  # by guild id: who acts when no user is given
        self._clock_offset = 0.0
        self._inflight = 0  # REST requests being handled

        # the application, its bot user and the default guild with one channel (more
        # guilds: WorldMixin.add_guild)
        self.application_id = self._ids.next()
        self.bot_user = User(self.application_id, bot_name, bot=True)
        self.owner = User(self._ids.next(), "guild-owner")
        self.guilds: dict[int, Guild] = {}
        self.guild = self._new_guild(self._ids.next(), guild_name, channel_name)
        self.bot_role = next(r for r in self.guild.roles.values() if r.managed)
        self.channel = self.guild.system_channel

        self.gateway = Gateway(self)

    def _new_guild(self, guild_id: int, name: str, channel_name: str) -> Guild:
        """A guild the bot has joined: @everyone, the bot's managed role, the owner and
        the bot as members, one text channel."""
        guild = Guild(guild_id, name, owner_id=self.owner.id)
        guild.roles[guild_id] = Role(guild_id, "@everyone", Perm.EVERYONE_DEFAULT, position=0)
        bot_role = Role(
            self._ids.next(), self.bot_user.name, Perm.BOT_DEFAULT, position=1, managed=True
        )
        guild.roles[bot_role.id] = bot_role
        guild.members[self.owner.id] = Member(self.owner, [])
        guild.members[self.bot_user.id] = Member(self.bot_user, [bot_role])
        channel = Channel(self._ids.next(), channel_name, guild_id, position=0)
        guild.channels[channel.id] = channel
        guild.system_channel_id = channel.id
        self.guilds[guild_id] = guild
        return guild

    # ------------------------------------------------------------------ addresses
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    # -------------------------------------------------------------------- waiting
    async def _notify(self) -> None:
        """Wake every waiter of the test API; inside a REST request this happens once
        its answer has been written (see ``RestServer._outer_middleware``)."""
        if IN_REQUEST.get():
            return
        async with self._changed:
            self._changed.notify_all()

    async def _wait(
        self,
        probe: Callable[[], T | None],
        timeout: float,  # noqa: ASYNC109 (the test API takes timeouts)
        what: str,
    ) -> T:
        """Wait until ``probe()`` returns something other than None (re-checked on every
        state change)."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    result = probe()
                    if result is not None:
                        return result
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from None

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (the test API takes timeouts)
    ) -> None:
        """Until ``predicate()`` holds, re-checked on every emulator state change (e.g.
        ``lambda: emu.resume_count == 1``)."""
        await self._wait(lambda: True if predicate() else None, timeout, "a condition")

    # ---------------------------------------------------------------------- clock
    def clock(self) -> float:
        """The emulator's clock: monotonic time plus what :meth:`advance_clock` added."""
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Let ``seconds`` pass for Discord's timers (interaction tokens, the 3 s answer
        deadline, the nonce window) without waiting. discord.py's own
        ``Interaction.is_expired()`` reads the wall clock and does not see this."""
        self._clock_offset += seconds
