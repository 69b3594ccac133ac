"""REST: the rest of what the bot asks (gateway address, users, its application),
attachment downloads, and unknown routes (recorded: the fixture fails on them)."""

from __future__ import annotations

import logging

from aiohttp import web

from tests.emulators.discord.common import API_PREFIX, DiscordAPIError, json_response, skip_spec
from tests.emulators.discord.rest_base import RestBase

log = logging.getLogger(__name__)


class MiscRoutes(RestBase):
    def _add_misc_routes(self, router: web.UrlDispatcher) -> None:
        p = API_PREFIX
        router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._download)
        router.add_get(p + "/gateway", self._get_gateway)
        router.add_get(p + "/gateway/bot", self._get_gateway)
        router.add_get(p + "/users/@me", self._get_me)
        router.add_get(p + "/users/{user_id}", self._get_user)
        router.add_get(p + "/oauth2/applications/@me", self._get_application)

    async def _get_gateway(self, request: web.Request) -> web.Response:
        """``GET /gateway`` and ``/gateway/bot`` (an AutoShardedBot asks for the latter)."""
        if not request.path.endswith("/bot"):
            return json_response({"url": self.gateway_url})
        self._require_bot(request)
        return json_response(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": self.session_start_limit.to_dict(),
            }
        )

    async def _get_me(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        return json_response(
            {
                **self.bot_user.to_dict(),
                "bot": True,
                "mfa_enabled": False,
                "locale": "en-US",
                "premium_type": 0,
                "email": None,
                "verified": True,
                "bio": "",
            }
        )

    async def _get_user(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        uid = request.match_info["user_id"]
        members = (g.members.get(int(uid)) for g in self.guilds.values()) if uid.isdigit() else ()
        member = next((m for m in members if m is not None), None)
        if member is None:
            raise DiscordAPIError(404, 10013, "Unknown User")
        return json_response(member.user.to_dict())

    async def _get_application(self, request: web.Request) -> web.Response:
        self._require_bot(request)
        return json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_user.name,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot": self.bot_user.to_dict(),
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "flags_new": "0",
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "owner": self.owner.to_dict(),
                "approximate_guild_count": len(self.guilds),
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "team": None,
                "eligible_oauth2_scopes": ["applications.commands", "bot"],
                "tags": [],
                "rpc_origins": [],
            }
        )

    async def _unknown(self, request: web.Request) -> web.Response:
        skip_spec(request)
        path = (
            request.path[len(API_PREFIX) :] if request.path.startswith(API_PREFIX) else request.path
        )
        self.unknown_routes.append((request.method, path))
        log.warning("discord emulator: unknown route %s %s", request.method, request.path)
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    async def _download(self, request: web.Request) -> web.Response:
        att_id = request.match_info["attachment_id"]
        att = self._attachments.get(int(att_id)) if att_id.isdigit() else None
        if att is None or att.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        self.attachment_downloads.append(att.filename)
        return web.Response(body=att.data, headers={"Content-Type": att.content_type})
