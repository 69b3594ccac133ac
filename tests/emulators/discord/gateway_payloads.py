"""The bodies of the gateway events the emulator sends: READY, GUILD_CREATE and the
MESSAGE_* events (gateway events are not in the OpenAPI document: these follow what
discord.py reads, see PROTOCOLS.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.emulators.discord.common import Intent, iso
from tests.emulators.discord.messages import Message
from tests.emulators.discord.model import Guild

if TYPE_CHECKING:
    from tests.emulators.discord.state import EmulatorState


def ready_payload(
    emu: EmulatorState, session_id: str, guilds: list[Guild], shard: Any = None
) -> dict[str, Any]:
    ready: dict[str, Any] = {
        "v": 10,
        "user": {
            **emu.bot_user.to_dict(),
            "verified": True,
            "mfa_enabled": False,
            "email": None,
        },
        "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": emu.gateway_url,
        "application": {"id": str(emu.application_id), "flags": 0},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "user_settings": {},
        "geo_ordered_rtc_regions": ["emulated"],
        "_trace": ["discord-emulator"],
    }
    if shard is not None:
        ready["shard"] = shard
    return ready


def guild_create_payload(emu: EmulatorState, guild: Guild, *, with_members: bool) -> dict[str, Any]:
    bot_member = guild.members[emu.bot_user.id]
    members = list(guild.members.values()) if with_members else [bot_member]
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(guild.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "system_channel_id": None
        if guild.system_channel_id is None
        else str(guild.system_channel_id),
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "application_id": None,
        "vanity_url_code": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "features": [],
        "roles": [r.to_dict() for r in guild.roles.values()],
        "emojis": [],
        "stickers": [],
        "channels": [c.to_dict() for c in guild.channels.values()],
        "threads": [],
        "members": [m.to_dict() for m in members],
        "member_count": len(guild.members),
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "large": False,
        "unavailable": False,
        "lazy": True,
        "joined_at": iso(bot_member.joined_at),
    }


def message_event_payload(
    emu: EmulatorState, event: str, msg: Message, guild: Guild, intents: int
) -> dict[str, Any]:
    """MESSAGE_CREATE / UPDATE / DELETE as Discord sends them: without the
    MESSAGE_CONTENT intent the bot sees the content only of its own messages and of
    those that mention it."""
    if event == "MESSAGE_DELETE":
        return {"id": str(msg.id), "channel_id": str(msg.channel_id), "guild_id": str(guild.id)}
    data = msg.to_dict()
    data["guild_id"] = str(guild.id)
    member = guild.members.get(msg.author.id)
    if member is not None and msg.webhook_id is None:
        data["member"] = member.to_dict(with_user=False)
    visible = (
        intents & Intent.MESSAGE_CONTENT
        or msg.author.id == emu.bot_user.id
        or emu.bot_user.id in msg.pinged_user_ids()
    )
    if not visible:
        data.update(content="", embeds=[], attachments=[], components=[])
    return data
