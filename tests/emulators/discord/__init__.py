"""A wire-level emulator of the Discord API for behaviour tests.

One aiohttp server answers the REST API under ``/api/v10`` and the gateway websocket at
``/gateway``; the real discord.py talks to it over real sockets once
``cogs._discord_endpoints.point_discord_at(emu.api_base, emu.gateway_url)`` has run.
Every REST exchange is validated against Discord's OpenAPI document (see
``tests/emulators/spec.py``), so the emulator's own answers must be spec-complete too.

Tests drive it as a Discord user would: ``await emu.slash(...)`` sends an
INTERACTION_CREATE built from the commands the bot synced, ``await emu.press(...)``
clicks a button, and the returned :class:`InteractionHandle` records what the bot
answered. Waiting is event driven (an ``asyncio.Condition`` notified on every change),
never by sleeping.

Behaviour follows Discord where tests depend on it: interaction tokens expire (401,
50027), a second callback is refused (400, 40060), a callback later than 3 s is an
unknown interaction (404, 10062), uploads over the interaction's
``attachment_size_limit`` are refused (413, 40005), missing channel permissions give
403/50013, ``nonce`` + ``enforce_nonce`` deduplicate creates, the first follow-up to a
deferred reply fills its "thinking" message, and ``allowed_mentions`` decides who would
be pinged (:meth:`Message.pinged_users`).

Several guilds and shards, as Discord runs them: ``emu.add_guild(...)`` /
``emu.add_guild_on_shard(shard_id, shard_count)`` add guilds next to the default
``emu.guild``; each gateway connection runs the shard it IDENTIFYed with (``[0, 1]``
without ``shard``) and gets READY and GUILD_CREATE for that shard's guilds only, and a
guild's events and interactions go to its shard's connection (``handle.shard_id``). The
connections may come from several processes. Broken sharding rules (a shard identified
twice, counts that disagree, IDENTIFYs faster than the bucket allows) are recorded in
``emu.gateway_violations`` and fail the test at teardown; ``emu.identifies`` lists
every IDENTIFY. Example, two shards in one bucket each (``max_concurrency`` 2)::

    emu.session_start_limit.max_concurrency = 2
    guild = emu.add_guild_on_shard(1, 2)
    bot = commands.AutoShardedBot(..., shard_count=2)  # pointed at the emulator
    task = asyncio.create_task(bot.start(emu.bot_token))
    await emu.wait_ready()  # every shard of 2 is ready
    handle = await emu.slash("ask", channel=guild.system_channel)
    assert handle.shard_id == 1

Where things are:

- ``emulator.py``: :class:`DiscordEmulator`, the facade (start / close).
- ``state.py``: what the emulator knows and records, the knobs, waiting on changes.
- ``model.py``, ``messages.py``: users, roles, channels, guilds, attachments; messages
  with their versions, components and pings.
- ``world.py``: building the world (``add_user``, ``add_channel``, ...), permissions.
- ``gateway.py``, ``gateway_payloads.py``: the websocket (IDENTIFY, RESUME, heartbeats)
  and the events' bodies; ``sessions.py``: sessions per shard, which one gets an event;
  ``shards.py``: the sharding rules checked at IDENTIFY and their records.
- ``server.py``: the REST app and its middlewares (records, ``fail_next`` faults,
  errors); the routes by group: ``rest_commands.py`` (application commands),
  ``rest_interactions.py`` (callbacks, follow-ups and ``@original`` through the
  interaction webhook), ``rest_channels.py`` (channel messages), ``rest_misc.py``
  (gateway address, users, application, downloads); ``message_store.py`` (what every
  route that writes a message shares), ``rest_base.py`` (auth, bodies).
- ``driver.py``, ``options.py``: what users do (``slash``, ``message_command``,
  ``press``, ``submit_modal``, ``autocomplete``, ``user_message`` with attachments);
  ``interactions.py``: :class:`InteractionHandle`.
- ``controls.py``: what tests read, wait for and break (``wait_for_message``,
  ``fail_next``, ``expire``, ``wait_ready``, ``drop_gateway``, ``shard_of``).
"""

from tests.emulators.discord.common import (
    API_PREFIX,
    DiscordAPIError,
    Intent,
    Perm,
)
from tests.emulators.discord.emulator import DiscordEmulator
from tests.emulators.discord.interactions import Callback, InteractionHandle
from tests.emulators.discord.messages import Component, Message, MessageVersion
from tests.emulators.discord.model import Attachment, Channel, Guild, Member, Role, User
from tests.emulators.discord.server import FaultRule, RequestRecord
from tests.emulators.discord.sessions import GatewaySession
from tests.emulators.discord.shards import GatewayViolation, IdentifyRecord, SessionStartLimit

__all__ = [
    "API_PREFIX",
    "Attachment",
    "Callback",
    "Channel",
    "Component",
    "DiscordAPIError",
    "DiscordEmulator",
    "FaultRule",
    "GatewaySession",
    "GatewayViolation",
    "Guild",
    "IdentifyRecord",
    "Intent",
    "InteractionHandle",
    "Member",
    "Message",
    "MessageVersion",
    "Perm",
    "RequestRecord",
    "Role",
    "SessionStartLimit",
    "User",
]
