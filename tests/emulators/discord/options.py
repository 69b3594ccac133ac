"""Turning ``emu.slash("name sub", options={...})`` into interaction data: options
checked against the definition the bot synced (types, choices, limits, required) and
resolved objects (users, roles, channels, attachments) filled in as Discord does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tests.emulators.discord.common import Perm
from tests.emulators.discord.model import Attachment, Channel, Guild, Role, User
from tests.emulators.discord.world import WorldMixin


class OptionsMixin(WorldMixin):
    def find_command(
        self, name: str, guild_id: int | None = None, *, type: int = 1
    ) -> dict[str, Any]:
        """The synced command ``name`` of ``type`` (1 slash, 2 user menu, 3 message menu)."""
        gid = self.guild.id if guild_id is None else guild_id
        for scope in (gid, None):
            for cmd in self._commands.get(scope, []):
                if cmd["name"] == name and cmd.get("type", 1) == type:
                    return cmd
        synced = {
            str(scope): [(c["name"], c.get("type", 1)) for c in cmds]
            for scope, cmds in self._commands.items()
        }
        raise LookupError(
            f"{name!r} (type {type}) was not synced (global or guild {gid}); "
            f"synced commands: {synced}"
        )

    def _resolve_value(
        self,
        opt: Mapping[str, Any],
        value: Any,
        resolved: dict[str, dict[str, Any]],
        channel: Channel,
    ) -> Any:
        otype, oname = opt["type"], opt["name"]

        def fail(why: str) -> ValueError:
            return ValueError(f"option {oname!r} (type {otype}): {why}; got {value!r}")

        if otype == 3:
            if not isinstance(value, str):
                raise fail("expected a string")
            if len(value) < opt.get("min_length", 0) or len(value) > opt.get("max_length", 6000):
                raise fail("length outside min_length/max_length")
        elif otype == 4:
            if not isinstance(value, int) or isinstance(value, bool):
                raise fail("expected an integer")
        elif otype == 10:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise fail("expected a number")
        elif otype == 5 and not isinstance(value, bool):
            raise fail("expected a boolean")
        if otype in (4, 10):
            if "min_value" in opt and value < opt["min_value"]:
                raise fail(f"below min_value {opt['min_value']}")
            if "max_value" in opt and value > opt["max_value"]:
                raise fail(f"above max_value {opt['max_value']}")
        if opt.get("choices") and value not in [c["value"] for c in opt["choices"]]:
            raise fail(f"not one of the choices {[c['value'] for c in opt['choices']]}")
        if otype in (6, 9) and isinstance(value, User):
            resolved.setdefault("users", {})[str(value.id)] = value.to_dict()
            member = self.guild_of(channel).members.get(value.id)
            if member is not None:
                resolved.setdefault("members", {})[str(value.id)] = member.to_dict(
                    with_user=False, permissions=self.permissions_for(value, channel)
                )
            return str(value.id)
        if otype in (8, 9) and isinstance(value, Role):
            resolved.setdefault("roles", {})[str(value.id)] = value.to_dict()
            return str(value.id)
        if otype == 7:
            if not isinstance(value, Channel):
                raise fail("expected a Channel")
            resolved.setdefault("channels", {})[str(value.id)] = {
                "id": str(value.id),
                "name": value.name,
                "type": value.type,
                "permissions": str(self.permissions_for(self.bot_user, value)),
                "parent_id": None,
            }
            return str(value.id)
        if otype == 11:
            if isinstance(value, tuple):
                value = self.create_attachment(value[0], value[1], channel=channel, ephemeral=True)
            if not isinstance(value, Attachment):
                raise fail("expected an Attachment or (filename, bytes)")
            resolved.setdefault("attachments", {})[str(value.id)] = value.to_dict()
            return str(value.id)
        if otype in (6, 8, 9):
            raise fail("expected a User or Role")
        return value

    def _build_options(
        self,
        label: str,
        definitions: list[dict[str, Any]],
        given: Mapping[str, Any],
        resolved: dict[str, dict[str, Any]],
        channel: Channel,
        focused: str | None = None,
    ) -> list[dict[str, Any]]:
        by_name = {o["name"]: o for o in definitions}
        unknown = set(given) - set(by_name)
        if unknown:
            raise ValueError(
                f"{label} has no option(s) {sorted(unknown)}; it has {sorted(by_name)}"
            )
        out: list[dict[str, Any]] = []
        for opt in definitions:
            name = opt["name"]
            if name not in given:
                if opt.get("required") and focused is None:
                    raise ValueError(f"{label}: required option {name!r} missing")
                continue
            if name == focused:
                out.append(
                    {"name": name, "type": opt["type"], "value": str(given[name]), "focused": True}
                )
                continue
            value = self._resolve_value(opt, given[name], resolved, channel)
            out.append({"name": name, "type": opt["type"], "value": value})
        return out

    def _command_data(
        self,
        command: str,
        options: Mapping[str, Any],
        channel: Channel,
        focused: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(interaction data, command definition)`` for ``"name"`` or ``"name sub"``."""
        name, _, sub = command.partition(" ")
        cmd = self.find_command(name, channel.guild_id)
        resolved: dict[str, dict[str, Any]] = {}
        defs = cmd.get("options") or []
        if sub:
            subdef = next((o for o in defs if o["name"] == sub and o["type"] == 1), None)
            if subdef is None:
                raise LookupError(f"/{name} has no subcommand {sub!r}")
            inner = self._build_options(
                f"/{command}", subdef.get("options") or [], options, resolved, channel, focused
            )
            opts = [{"name": sub, "type": 1, "options": inner}]
        else:
            opts = self._build_options(f"/{command}", defs, options, resolved, channel, focused)
        data: dict[str, Any] = {"id": cmd["id"], "name": name, "type": 1, "options": opts}
        if resolved:
            data["resolved"] = resolved
        if "guild_id" in cmd:
            data["guild_id"] = cmd["guild_id"]
        return data, cmd

    def grant_command(
        self,
        name: str,
        *,
        users: Iterable[User] = (),
        roles: Iterable[Role] = (),
        guild: Guild | None = None,
    ) -> None:
        """A server's admins let these users or roles use ``/name`` whatever its
        ``default_member_permissions`` (Server Settings > Integrations)."""
        guild = guild or self.guild
        granted = self._command_grants.setdefault((guild.id, name), set())
        granted.update(u.id for u in users)
        granted.update(r.id for r in roles)

    def _check_can_use(self, cmd: Mapping[str, Any], user: User, channel: Channel) -> None:
        needed = cmd.get("default_member_permissions")
        if needed is None:
            return
        guild = self.guild_of(channel)
        granted = self._command_grants.get((guild.id, cmd["name"]), set())
        member = guild.members.get(user.id)
        if user.id in granted or (member and {r.id for r in member.roles} & granted):
            return
        perms = self.permissions_for(user, channel)
        if perms & Perm.ADMINISTRATOR:
            return
        if int(needed) & ~perms:
            raise PermissionError(
                f"{user.name} lacks default_member_permissions {needed} of /{cmd['name']}: "
                "Discord would not offer them the command"
            )
