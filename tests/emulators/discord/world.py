"""Building the world a test needs (users, roles, channels, attachments) and
Discord's permission computation."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from tests.emulators.discord.common import Intent, Perm, perm_value
from tests.emulators.discord.model import Attachment, Channel, Guild, Member, Role, User
from tests.emulators.discord.state import EmulatorState


class WorldMixin(EmulatorState):
    # ------------------------------------------------------------------- guilds
    def add_guild(
        self, name: str = "Another Guild", guild_id: int | None = None, *, channel: str = "general"
    ) -> Guild:
        """Another guild the bot is in, with one text channel (``guild.system_channel``).
        A bot already running the guild's shard gets its GUILD_CREATE."""
        gid = self._ids.next() if guild_id is None else guild_id
        if gid in self.guilds:
            raise ValueError(f"guild {gid} exists already")
        guild = self._new_guild(gid, name, channel)
        self.gateway.guild_joined(guild)
        return guild

    def add_guild_on_shard(self, shard_id: int, shard_count: int, name: str | None = None) -> Guild:
        """A guild whose id puts it on ``shard_id`` of ``shard_count``."""
        if not 0 <= shard_id < shard_count:
            raise ValueError(f"no shard {shard_id} among {shard_count}")
        gid = self._ids.next_on_shard(shard_id, shard_count)
        return self.add_guild(name or f"Guild on shard {shard_id}/{shard_count}", gid)

    def guild_of(self, channel: Channel | int) -> Guild:
        return self.guilds[self._channel(channel).guild_id]

    # ---------------------------------------------------- members, roles, channels
    def add_role(
        self,
        name: str,
        permissions: int | Any = 0,
        *,
        mentionable: bool = False,
        guild: Guild | None = None,
    ) -> Role:
        guild = guild or self.guild
        role = Role(
            self._ids.next(),
            name,
            perm_value(permissions),
            position=len(guild.roles),
            mentionable=mentionable,
        )
        guild.roles[role.id] = role
        self.gateway.dispatch_soon(
            "GUILD_ROLE_CREATE",
            {"guild_id": str(guild.id), "role": role.to_dict()},
            Intent.GUILDS,
            guild,
        )
        return role

    def add_user(
        self,
        name: str,
        *,
        roles: Iterable[Role] = (),
        permissions: int | Any | None = None,
        bot: bool = False,
        guild: Guild | None = None,
    ) -> User:
        """A member of ``guild`` (default: the default guild). ``permissions`` gives them
        a personal role with those bits."""
        guild = guild or self.guild
        user = User(self._ids.next(), name, bot=bot)
        member_roles = list(roles)
        if permissions is not None:
            member_roles.append(self.add_role(f"{name}-role", permissions, guild=guild))
        self.add_member(user, guild, roles=member_roles)
        return user

    def add_member(self, user: User, guild: Guild, *, roles: Iterable[Role] = ()) -> Member:
        """``user`` (say, from ``add_user``) joins another guild."""
        member = Member(user, list(roles))
        guild.members[user.id] = member
        if not user.bot:
            self._default_users.setdefault(guild.id, user)
        self.gateway.dispatch_soon(
            "GUILD_MEMBER_ADD",
            {"guild_id": str(guild.id), **member.to_dict()},
            Intent.GUILD_MEMBERS,
            guild,
        )
        return member

    def add_channel(
        self,
        name: str,
        *,
        bot_deny: int | Any = 0,
        bot_allow: int | Any = 0,
        guild: Guild | None = None,
    ) -> Channel:
        guild = guild or self.guild
        channel = Channel(self._ids.next(), name, guild.id, position=len(guild.channels))
        guild.channels[channel.id] = channel
        if bot_deny or bot_allow:
            channel.overwrites[self.bot_user.id] = (
                1,
                perm_value(bot_allow),
                perm_value(bot_deny),
            )
        self.gateway.dispatch_soon("CHANNEL_CREATE", channel.to_dict(), Intent.GUILDS, guild)
        return channel

    def set_bot_permissions(
        self, channel: Channel, *, deny: int | Any = 0, allow: int | Any = 0
    ) -> None:
        """A member overwrite for the bot in ``channel`` (e.g. deny ``Perm.ATTACH_FILES``)."""
        if deny or allow:
            channel.overwrites[self.bot_user.id] = (1, perm_value(allow), perm_value(deny))
        else:
            channel.overwrites.pop(self.bot_user.id, None)
        guild = self.guild_of(channel)
        self.gateway.dispatch_soon("CHANNEL_UPDATE", channel.to_dict(), Intent.GUILDS, guild)

    def set_member_roles(
        self, user: User, roles: Iterable[Role], *, guild: Guild | None = None
    ) -> None:
        guild = guild or self.guild
        member = guild.members[user.id]
        member.roles = list(roles)
        self.gateway.dispatch_soon(
            "GUILD_MEMBER_UPDATE",
            {"guild_id": str(guild.id), **member.to_dict()},
            Intent.GUILD_MEMBERS,
            guild,
        )

    def permissions_for(
        self, user: User, channel: Channel | None = None, *, guild: Guild | None = None
    ) -> int:
        """Discord's permission computation: roles, ADMINISTRATOR, then overwrites (in
        ``channel``'s guild, or in ``guild``, default the default guild)."""
        if channel is not None:
            guild = self.guild_of(channel)
        guild = guild or self.guild
        if user.id == guild.owner_id:
            return Perm.ALL
        member = guild.members.get(user.id)
        if member is None:
            return 0
        perms = guild.everyone.permissions
        for role in member.roles:
            perms |= role.permissions
        if perms & Perm.ADMINISTRATOR:
            return Perm.ALL
        if channel is None:
            return perms
        ow = channel.overwrites
        if guild.id in ow:
            _, allow, deny = ow[guild.id]
            perms = (perms & ~deny) | allow
        allow = deny = 0
        for role in member.roles:
            if role.id in ow:
                allow |= ow[role.id][1]
                deny |= ow[role.id][2]
        perms = (perms & ~deny) | allow
        if user.id in ow:
            _, allow, deny = ow[user.id]
            perms = (perms & ~deny) | allow
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        if not perms & Perm.SEND_MESSAGES:
            perms &= ~(
                Perm.SEND_TTS_MESSAGES
                | Perm.MENTION_EVERYONE
                | Perm.EMBED_LINKS
                | Perm.ATTACH_FILES
            )
        return perms

    def create_attachment(
        self,
        filename: str,
        data: bytes,
        *,
        channel: Channel | None = None,
        content_type: str | None = None,
        ephemeral: bool = False,
    ) -> Attachment:
        """A stored attachment served at a localhost URL (a user's upload, for example)."""
        channel_id = (channel or self.channel).id
        att_id = self._ids.next()
        url = f"{self.base_url}/attachments/{channel_id}/{att_id}/{quote(filename, safe='')}"
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        att = Attachment(att_id, filename, bytes(data), ctype, url, ephemeral=ephemeral)
        self._attachments[att_id] = att
        return att

    def _find_channel(self, channel_id: int) -> Channel | None:
        for guild in self.guilds.values():
            if channel_id in guild.channels:
                return guild.channels[channel_id]
        return None

    def _channel(self, channel: Channel | int | None) -> Channel:
        if channel is None:
            return self.channel
        if isinstance(channel, Channel):
            return channel
        found = self._find_channel(int(channel))
        if found is None:
            raise KeyError(int(channel))
        return found

    def _user(self, user: User | None, guild: Guild | None = None) -> User:
        """``user``, or the guild's first user (a "tester" made on first use)."""
        guild = guild or self.guild
        if user is not None:
            return user
        if guild.id not in self._default_users:
            self.add_user("tester", guild=guild)
        return self._default_users[guild.id]
