"""The processes sharing the store, so that one can tell when another on its machine is gone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from services.store.base import Queries
from services.store.columns import require_aware
from services.store.engine import shielded
from services.store.schema import processes_table as _proc_t


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    id: str
    host_key: str
    pid: int
    role: str
    started_at: datetime
    heartbeat_at: datetime


class ProcessQueries(Queries):
    @shielded
    async def register_process(
        self, process_id: str, host_key: str, pid: int, role: str, now: datetime
    ) -> None:
        require_aware(now=now)
        stmt = sa.insert(_proc_t).values(
            id=process_id, host_key=host_key, pid=pid, role=role, started_at=now, heartbeat_at=now
        )
        await self._db.transact(lambda conn: conn.execute(stmt))

    @shielded
    async def heartbeat_process(self, process_id: str, now: datetime) -> None:
        require_aware(now=now)
        stmt = sa.update(_proc_t).where(_proc_t.c.id == process_id).values(heartbeat_at=now)
        await self._db.transact(lambda conn: conn.execute(stmt))

    @shielded
    async def processes_on_host(self, host_key: str) -> list[ProcessRecord]:
        async with self._db.tx() as conn:
            rows = await conn.execute(sa.select(_proc_t).where(_proc_t.c.host_key == host_key))
            return [ProcessRecord(**r._mapping) for r in rows]

    @shielded
    async def forget_processes(self, process_ids: Sequence[str]) -> None:
        if not process_ids:
            return
        stmt = sa.delete(_proc_t).where(_proc_t.c.id.in_(list(process_ids)))
        await self._db.transact(lambda conn: conn.execute(stmt))

    @shielded
    async def forget_silent_processes(self, before: datetime) -> int:
        """Forget processes whose last heartbeat is older than ``before``."""
        require_aware(before=before)
        stmt = sa.delete(_proc_t).where(_proc_t.c.heartbeat_at < before)
        return int(await self._db.transact(lambda conn: conn.execute(stmt).rowcount))
