"""Building the world a test needs (users, roles, channels, attachments) and
Discord's permission computation."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from tests.emulators.discord.common import Intent, Perm, perm_value
from tests.emulators.discord.model import Attachment, Channel, Member, Role, User
from tests.emulators.discord.state import EmulatorState


class WorldMixin(EmulatorState):
    def add_role(self, name: str, permissions: int | Any = 0, *, mentionable: bool = False) -> Role:
        role = Role(
            self._ids.next(),
            name,
            perm_value(permissions),
            position=len(self.guild.roles),
            mentionable=mentionable,
        )
        self.guild.roles[role.id] = role
        self.gateway.dispatch_soon(
            "GUILD_ROLE_CREATE",
            {"guild_id": str(self.guild.id), "role": role.to_dict()},
            Intent.GUILDS,
        )
        return role

    def add_user(
        self,
        name: str,
        *,
        roles: Iterable[Role] = (),
        permissions: int | Any | None = None,
        bot: bool = False,
    ) -> User:
        """A guild member. ``permissions`` gives them a personal role with those bits."""
        user = User(self._ids.next(), name, bot=bot)
        member_roles = list(roles)
        if permissions is not None:
            member_roles.append(self.add_role(f"{name}-role", permissions))
        self.guild.members[user.id] = Member(user, member_roles)
        if self._default_user is None and not bot:
            self._default_user = user
        self.gateway.dispatch_soon(
            "GUILD_MEMBER_ADD",
            {"guild_id": str(self.guild.id), **self.guild.members[user.id].to_dict()},
            Intent.GUILD_MEMBERS,
        )
        return user

    def add_channel(
        self, name: str, *, bot_deny: int | Any = 0, bot_allow: int | Any = 0
    ) -> Channel:
        channel = Channel(self._ids.next(), name, self.guild.id, position=len(self.guild.channels))
        self.guild.channels[channel.id] = channel
        if bot_deny or bot_allow:
            channel.overwrites[self.bot_user.id] = (
                1,
                perm_value(bot_allow),
                perm_value(bot_deny),
            )
        self.gateway.dispatch_soon("CHANNEL_CREATE", channel.to_dict(), Intent.GUILDS)
        return channel

    def set_bot_permissions(
        self, channel: Channel, *, deny: int | Any = 0, allow: int | Any = 0
    ) -> None:
        """A member overwrite for the bot in ``channel`` (e.g. deny ``Perm.ATTACH_FILES``)."""
        if deny or allow:
            channel.overwrites[self.bot_user.id] = (1, perm_value(allow), perm_value(deny))
        else:
            channel.overwrites.pop(self.bot_user.id, None)
        self.gateway.dispatch_soon("CHANNEL_UPDATE", channel.to_dict(), Intent.GUILDS)

    def set_member_roles(self, user: User, roles: Iterable[Role]) -> None:
        member = self.guild.members[user.id]
        member.roles = list(roles)
        self.gateway.dispatch_soon(
            "GUILD_MEMBER_UPDATE",
            {"guild_id": str(self.guild.id), **member.to_dict()},
            Intent.GUILD_MEMBERS,
        )

    def permissions_for(self, user: User, channel: Channel | None = None) -> int:
        """Discord's permission computation: roles, ADMINISTRATOR, then overwrites."""
        guild = self.guild
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

    def _channel(self, channel: Channel | int | None) -> Channel:
        if channel is None:
            return self.channel
        if isinstance(channel, Channel):
            return channel
        return self.guild.channels[int(channel)]

    def _user(self, user: User | None) -> User:
        if user is not None:
            return user
        if self._default_user is None:
            self.add_user("tester")
        assert self._default_user is not None
        return self._default_user
