"""/settings show|set|reset|history: a server's own settings, for its admins.

Visible to members with Manage Server by default (a server may grant it to others in its
Integrations settings, but changing anything still needs Manage Server). The work is in
:mod:`services.guild_settings`; roles and channels are read here, where they are known.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from cogs._common import Refused
from cogs._messages import respond, send
from services.budgets import BudgetNotice
from services.costs import usd
from services.errors import UserFacingError
from services.guild_settings import SPECS, GuildConfig, GuildSettings, spec_of
from services.store.guild_settings import SettingsChange

if TYPE_CHECKING:
    from bot import ImageBot

log = logging.getLogger(__name__)

SETTING_CHOICES = [app_commands.Choice(name=spec.label, value=spec.name) for spec in SPECS]
ALL = "all"
_MENTION = re.compile(r"<[@#]&?(\d+)>|(\d{15,21})|([^\s,<>]+)")


def show_value(name: str, value: Any) -> str:
    """A setting's value as the server sees it."""
    kind = spec_of(name).kind
    if value is None:
        return "not set"
    if kind == "models":
        return ", ".join(f"`{m}`" for m in value)
    if kind == "model":
        return f"`{value}`"
    if kind == "seconds":
        return f"{float(value):g} s"
    if kind == "count":
        return "unlimited" if value == 0 else str(value)
    if kind == "usd":
        return f"{usd(float(value))} per month" if value else "none"
    if kind == "roles":
        return ", ".join(f"<@&{r}>" for r in value) or "anyone"
    if kind == "channels":
        return ", ".join(f"<#{c}>" for c in value) or "every channel"
    return f"<#{value}>"


def effective_text(config: GuildConfig, name: str) -> str:
    value = config.value(name)
    if name == "budget_channel" and value is None:
        return "the system channel"
    if name == "channels" and not value:
        return "every channel"
    if name == "train_roles" and not value:
        return "anyone the owner allows"
    return show_value(name, value)


def change_text(change: SettingsChange) -> str:
    label = spec_of(change.name).label if change.name in {s.name for s in SPECS} else change.name
    when = discord.utils.format_dt(change.changed_at, "f")
    who = f"<@{change.user_id}>" if change.user_id else "someone"
    if change.new_value is None:
        return f"{when} {who} reset **{label}** (was {show_value(change.name, change.old_value)})"
    before = "" if change.old_value is None else f"{show_value(change.name, change.old_value)} → "
    return f"{when} {who} set **{label}**: {before}{show_value(change.name, change.new_value)}"


def read_ids(text: str, known: dict[int, str], what: str, by_name: dict[str, int]) -> list[int]:
    """Ids of roles or channels written as mentions, ids or names."""
    ids: list[int] = []
    for mention, raw_id, name in _MENTION.findall(text):
        if mention or raw_id:
            found = int(mention or raw_id)
        else:
            found = by_name.get(name.lstrip("@#").lower(), 0)
        if found not in known:
            shown = name or mention or raw_id
            raise UserFacingError(f"`{shown[:50]}` is not a {what} of this server.")
        ids.append(found)
    if not ids:
        raise UserFacingError(f"Name at least one {what} (a mention, like the picker inserts).")
    return ids


class DiscordBudgetNotifier:
    """Tells a server's admins, in the channel they chose or the system channel."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    async def budget_reached(self, notice: BudgetNotice) -> bool:
        channel_id = notice.channel_id
        if channel_id is None:
            guild = self.bot.get_guild(notice.guild_id)
            system = guild.system_channel if guild is not None else None
            if system is None:
                log.warning("guild %s has no channel for budget notices", notice.guild_id)
                return False
            channel_id = system.id
        channel = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
        await send(channel, notice.text())  # type: ignore[arg-type]
        return True


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class ServerSettings(
    commands.GroupCog, group_name="settings", group_description="This server's settings"
):
    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        self.notifier = DiscordBudgetNotifier(bot)
        super().__init__()

    @property
    def service(self) -> GuildSettings:
        return self.bot.services.guild_settings

    async def cog_load(self) -> None:
        self.bot.services.budgets.notifier = self.notifier

    async def cog_unload(self) -> None:
        self.bot.services.budgets.notifier = None

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        """Changing anything needs Manage Server, whoever the command is shown to."""
        if not interaction.permissions.manage_guild:
            raise app_commands.MissingPermissions(["manage_guild"])
        return True

    @app_commands.command(name="show", description="What applies in this server and why")
    async def show(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        config = await self.service.config(interaction.guild_id)
        changes = await self.service.last_changes(interaction.guild_id)
        embed = discord.Embed(title="Settings of this server", colour=discord.Colour.blurple())
        for spec in SPECS:
            change = changes.get(spec.name)
            if config.from_server(spec.name) and change is not None:
                who = f"<@{change.user_id}>" if change.user_id else "an admin"
                source = f"set here by {who} {discord.utils.format_dt(change.changed_at, 'R')}"
            elif spec.env:
                source = f"owner's default (`{spec.env}`)"
            else:
                source = "default"
            allowed = self.service.allowed(spec.name)
            embed.add_field(
                name=f"{spec.label} · `{spec.name}`",
                value=f"{effective_text(config, spec.name)}\n-# {source} · allowed: {allowed}"[
                    :1024
                ],
                inline=False,
            )
        embed.set_footer(text="Change with /settings set, undo with /settings reset.")
        await respond(interaction, embed=embed, ephemeral=True)

    @app_commands.command(name="set", description="Change a setting of this server")
    @app_commands.describe(setting="The setting to change", value="Its new value")
    @app_commands.choices(setting=SETTING_CHOICES)
    async def set(
        self,
        interaction: discord.Interaction,
        setting: str,
        value: app_commands.Range[str, 1, 1000],
    ) -> None:
        assert interaction.guild_id is not None
        try:
            parsed = self._read(interaction, setting, value)
            config = await self.service.set(
                interaction.guild_id, setting, parsed, user_id=interaction.user.id
            )
        except UserFacingError as exc:
            raise Refused(exc.user_message) from None
        label = spec_of(setting).label
        await respond(
            interaction,
            f"✅ {label} is now {effective_text(config, setting)} in this server.",
            ephemeral=True,
        )

    def _read(self, interaction: discord.Interaction, setting: str, value: str) -> Any:
        kind = spec_of(setting).kind
        guild = interaction.guild
        if kind == "roles":
            assert guild is not None
            roles = {r.id: r.name for r in guild.roles}
            return read_ids(value, roles, "role", {n.lower(): i for i, n in roles.items()})
        if kind in ("channels", "channel"):
            assert guild is not None
            channels = {c.id: c.name for c in (*guild.channels, *guild.threads)}
            names = {n.lower(): i for i, n in channels.items()}
            ids = read_ids(value, channels, "channel", names)
            if kind == "channel" and len(ids) != 1:
                raise UserFacingError("Name one channel.")
            return ids if kind == "channels" else ids[0]
        return self.service.parse(setting, value)

    @set.autocomplete("value")
    async def value_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        setting = str(interaction.namespace.setting or "")
        if setting not in {s.name for s in SPECS} or interaction.guild_id is None:
            return []
        config = await self.service.config(interaction.guild_id)
        kind = spec_of(setting).kind
        if kind == "models":
            owner = list(self.service.settings.generate_models)
            options = [", ".join(owner), *owner]
        elif kind == "model":
            options = list(config.models)
        elif kind in ("seconds", "count", "usd"):
            options = [str(config.value(setting))]
        else:
            return []
        needle = current.lower()
        return [
            app_commands.Choice(name=o[:100], value=o[:100]) for o in options if needle in o.lower()
        ][:25]

    @app_commands.command(name="reset", description="Back to the owner's default")
    @app_commands.describe(setting="The setting to reset, or all of them")
    @app_commands.choices(
        setting=[*SETTING_CHOICES, app_commands.Choice(name="All settings", value=ALL)]
    )
    async def reset(self, interaction: discord.Interaction, setting: str) -> None:
        assert interaction.guild_id is not None
        name = None if setting == ALL else setting
        config = await self.service.reset(interaction.guild_id, name, user_id=interaction.user.id)
        if name is None:
            text = "✅ Every setting of this server is back to the owner's default."
        else:
            label = spec_of(name).label
            text = f"✅ {label} is back to the default: {effective_text(config, name)}."
        await respond(interaction, text, ephemeral=True)

    @app_commands.command(name="history", description="Who changed which setting, and when")
    async def history(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        changes = await self.service.history(interaction.guild_id, limit=15)
        if not changes:
            text = "No setting has been changed in this server: the owner's defaults apply."
        else:
            text = "**Setting changes, newest first**\n" + "\n".join(map(change_text, changes))
        await respond(interaction, text[:2000], ephemeral=True)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(ServerSettings(bot))
