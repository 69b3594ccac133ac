"""REST: application commands, global and per guild (``tree.sync()`` lands here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from tests.emulators.discord.common import (
    API_PREFIX,
    DiscordAPIError,
    invalid_form,
    json_response,
    no_content,
)
from tests.emulators.discord.rest_base import RestBase


class CommandRoutes(RestBase):
    def _add_command_routes(self, router: web.UrlDispatcher) -> None:
        for base in (
            API_PREFIX + "/applications/{application_id}/commands",
            API_PREFIX + "/applications/{application_id}/guilds/{guild_id}/commands",
        ):
            router.add_get(base, self._list_commands)
            router.add_put(base, self._put_commands)
            router.add_post(base, self._upsert_command)
            router.add_get(base + "/{command_id}", self._get_command)
            router.add_patch(base + "/{command_id}", self._patch_command)
            router.add_delete(base + "/{command_id}", self._delete_command)

    def _scope(self, request: web.Request) -> int | None:
        self._require_app(request)
        gid = request.match_info.get("guild_id")
        if gid is None:
            return None
        if not gid.isdigit() or int(gid) not in self.guilds:
            raise DiscordAPIError(403, 50001, "Missing Access")
        return int(gid)

    def _stored_command(
        self, scope: int | None, payload: Mapping[str, Any], previous: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        if not isinstance(payload, Mapping) or not payload.get("name"):
            raise invalid_form("application command without a name")
        ctype = payload.get("type", 1)
        description = payload.get("description") or ""
        if ctype == 1 and not description:
            raise invalid_form(f"slash command {payload.get('name')!r} without description")
        perms = payload.get("default_member_permissions")
        cmd: dict[str, Any] = {
            "id": previous["id"] if previous else str(self._ids.next()),
            "application_id": str(self.application_id),
            "version": str(self._ids.next()),
            "default_member_permissions": None if perms is None else str(perms),
            "type": ctype,
            "name": payload["name"],
            "description": description,
            "dm_permission": bool(payload.get("dm_permission", True)),
            "nsfw": bool(payload.get("nsfw", False)),
        }
        for key in ("name_localizations", "description_localizations"):
            if payload.get(key) is not None:
                cmd[key] = payload[key]
        if payload.get("contexts") is not None:
            cmd["contexts"] = payload["contexts"]
        cmd["integration_types"] = payload.get("integration_types") or [0]
        if payload.get("options"):
            cmd["options"] = [option_response(o) for o in payload["options"]]
        if scope is not None:
            cmd["guild_id"] = str(scope)
        return cmd

    async def _list_commands(self, request: web.Request) -> web.Response:
        return json_response(list(self._commands.get(self._scope(request), [])))

    async def _put_commands(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        payload, _ = await self._read(request)
        if not isinstance(payload, list):
            raise invalid_form("bulk overwrite body must be a list")
        old = {(c["name"], c["type"]): c for c in self._commands.get(scope, [])}
        stored = [
            self._stored_command(scope, p, old.get((p.get("name"), p.get("type", 1))))
            for p in payload
        ]
        names = [(c["name"], c["type"]) for c in stored]
        if len(set(names)) != len(names):
            raise invalid_form("duplicate application command names")
        self._commands[scope] = stored
        self.sync_counts[scope] += 1
        await self._notify()
        return json_response(stored)

    async def _upsert_command(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        payload, _ = await self._read(request)
        cmds = self._commands.setdefault(scope, [])
        prev = next(
            (
                c
                for c in cmds
                if c["name"] == payload.get("name") and c["type"] == payload.get("type", 1)
            ),
            None,
        )
        cmd = self._stored_command(scope, payload, prev)
        if prev is not None:
            cmds[cmds.index(prev)] = cmd
        else:
            cmds.append(cmd)
        await self._notify()
        return json_response(cmd, 200 if prev else 201)

    def _command_by_id(self, request: web.Request) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        cmds = self._commands.get(self._scope(request), [])
        cid = request.match_info["command_id"]
        for cmd in cmds:
            if cmd["id"] == cid:
                return cmds, cmd
        raise DiscordAPIError(404, 10063, "Unknown application command")

    async def _get_command(self, request: web.Request) -> web.Response:
        return json_response(self._command_by_id(request)[1])

    async def _patch_command(self, request: web.Request) -> web.Response:
        cmds, cmd = self._command_by_id(request)
        payload, _ = await self._read(request)
        merged = {**cmd, **payload}
        new = self._stored_command(self._scope(request), merged, cmd)
        cmds[cmds.index(cmd)] = new
        return json_response(new)

    async def _delete_command(self, request: web.Request) -> web.Response:
        cmds, cmd = self._command_by_id(request)
        cmds.remove(cmd)
        return no_content()


def option_response(option: Mapping[str, Any]) -> dict[str, Any]:
    """An option as Discord echoes it: no nulls, no ``required: false`` noise."""
    out = {k: v for k, v in option.items() if v is not None}
    if "options" in out:
        out["options"] = [option_response(o) for o in out["options"]]
    return out
