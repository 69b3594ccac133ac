"""Write statements as values, and the thread that commits groups of them to a SQLite file."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL

from services.store.sqlite import BEGIN_OPTION, install_sqlite_hooks


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One write statement, its parameters, and what the caller wants back."""

    stmt: Any
    params: dict[str, Any] | None
    result: Literal["rowcount", "first", "one"]

    def extract(self, result: sa.CursorResult[Any]) -> Any:
        if self.result == "rowcount":
            return result.rowcount > 0
        if self.result == "first":
            return result.first()
        return result.one()


class GroupWriter:
    """Runs groups of writes on a SQLite file in one thread of its own, with the
    standard synchronous driver: a group costs one trip from the event loop, however
    many statements it holds (the asyncio driver makes one per statement)."""

    def __init__(self, url: URL) -> None:
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        engine = sa.create_engine(
            url.set(drivername="sqlite+pysqlite"),
            poolclass=sa.pool.SingletonThreadPool,
            pool_size=1,
        )
        install_sqlite_hooks(engine)
        self._engine = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})

    @property
    def engine(self) -> sa.Engine:
        return self._engine.engine

    def run(self, ops: list[WriteOp]) -> list[tuple[Any, Exception | None]]:
        """Each op's result or error: all in one transaction, or, if that fails, each
        in a transaction of its own."""
        try:
            with self._engine.begin() as conn:
                return [(op.extract(conn.execute(op.stmt, op.params)), None) for op in ops]
        except Exception as exc:
            if len(ops) == 1:
                return [(None, exc)]
        outcomes: list[tuple[Any, Exception | None]] = []
        for op in ops:
            try:
                with self._engine.begin() as conn:
                    outcomes.append((op.extract(conn.execute(op.stmt, op.params)), None))
            except Exception as exc:
                outcomes.append((None, exc))
        return outcomes

    def close(self) -> None:
        self.thread.submit(self._engine.engine.dispose).result()
        self.thread.shutdown(wait=True)
