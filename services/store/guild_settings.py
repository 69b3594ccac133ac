"""Per-server settings (what a server's admins changed) and the record of each change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from services.store.base import Queries, advisory_lock
from services.store.columns import require_aware
from services.store.engine import shielded
from services.store.schema import guild_settings_table as _settings_t
from services.store.schema import settings_changes_table as _changes_t

#: Key of the PostgreSQL advisory lock held while settings are changed.
SETTINGS_LOCK: Final = 0x5345_5454_494E_4753


def settings_topic(guild_id: int) -> str:
    """Notice topic: a server's settings changed."""
    return f"settings:{guild_id}"


@dataclass(frozen=True, slots=True)
class SettingsChange:
    id: int
    guild_id: int
    name: str
    #: None: the setting had no server value (it followed the owner's default).
    old_value: Any
    #: None: the setting was reset to the owner's default.
    new_value: Any
    user_id: int | None
    changed_at: datetime


def _change(
    conn: sa.Connection,
    guild_id: int,
    changes: Mapping[str, Any],
    user_id: int | None,
    now: datetime,
) -> dict[str, Any]:
    advisory_lock(conn, SETTINGS_LOCK)
    row = conn.execute(
        sa.select(_settings_t.c.overrides)
        .where(_settings_t.c.guild_id == guild_id)
        .with_for_update()
    ).first()
    before: dict[str, Any] = dict(row[0] or {}) if row is not None else {}
    after = dict(before)
    history = []
    for name, value in changes.items():
        if value is None:
            after.pop(name, None)
        else:
            after[name] = value
        if before.get(name) != after.get(name):
            history.append(
                {
                    "guild_id": guild_id,
                    "name": name,
                    "old_value": before.get(name),
                    "new_value": after.get(name),
                    "user_id": user_id,
                    "changed_at": now,
                }
            )
    if not history:
        return after
    if row is None:
        conn.execute(
            sa.insert(_settings_t).values(guild_id=guild_id, overrides=after, updated_at=now)
        )
    else:
        conn.execute(
            sa.update(_settings_t)
            .where(_settings_t.c.guild_id == guild_id)
            .values(overrides=after, updated_at=now)
        )
    conn.execute(sa.insert(_changes_t), history)
    return after


class GuildSettingsQueries(Queries):
    @shielded
    async def get_guild_settings(self, guild_id: int) -> dict[str, Any]:
        """The server's own values, by setting name (empty: it follows the defaults)."""
        async with self._db.tx() as conn:
            value = await conn.scalar(
                sa.select(_settings_t.c.overrides).where(_settings_t.c.guild_id == guild_id)
            )
        return dict(value or {})

    @shielded
    async def change_guild_settings(
        self,
        guild_id: int,
        changes: Mapping[str, Any],
        *,
        user_id: int | None,
        now: datetime,
    ) -> dict[str, Any]:
        """Set (a value) or reset (``None``) settings of a server, and record who changed
        what, in one step; returns the server's values after it. Every process hears of
        the change (topic :func:`settings_topic`)."""
        require_aware(now=now)
        after = await self._db.transact(
            lambda conn: _change(conn, guild_id, dict(changes), user_id, now)
        )
        self.events.publish(settings_topic(guild_id))
        return after

    @shielded
    async def settings_changes(self, guild_id: int, limit: int = 20) -> list[SettingsChange]:
        """The server's newest setting changes first."""
        query = (
            sa.select(_changes_t)
            .where(_changes_t.c.guild_id == guild_id)
            .order_by(_changes_t.c.changed_at.desc(), _changes_t.c.id.desc())
            .limit(max(0, limit))
        )
        async with self._db.tx() as conn:
            return [SettingsChange(**dict(row._mapping)) for row in await conn.execute(query)]
