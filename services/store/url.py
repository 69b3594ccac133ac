"""DATABASE_URL: which URLs are accepted and what they become for SQLAlchemy's async drivers."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url


def normalize_database_url(database_url: str) -> URL:
    """Turn a DATABASE_URL into an async SQLAlchemy URL.

    Accepted: ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``sqlite://`` or
    ``:memory:`` (in-memory), ``sqlite+aiosqlite://…``, ``postgresql://…`` / ``postgres://…`` /
    ``postgresql+asyncpg://…``. A ``sslmode`` query parameter is translated for asyncpg.
    """
    raw = (database_url or "").strip()
    if raw == ":memory:":
        raw = "sqlite://"
    try:
        url = make_url(raw)
    except sa_exc.ArgumentError as e:
        raise ValueError(
            "DATABASE_URL is not a valid database URL; expected e.g. "
            "'sqlite:///data/bot.sqlite3' or 'postgresql://user:pass@host/db'"
        ) from e

    backend, _, driver = url.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "aiosqlite", "pysqlite"):
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres") and driver in ("", "asyncpg"):
        url = url.set(drivername="postgresql+asyncpg")
        if "sslmode" in url.query:
            query = dict(url.query)
            query.setdefault("ssl", query.pop("sslmode"))
            url = url.set(query=query)
        return url
    raise ValueError(
        f"DATABASE_URL has an unsupported scheme {url.drivername!r}; use 'sqlite:///path' "
        "or 'postgresql://…' (driver asyncpg)"
    )


def is_memory_sqlite(url: URL) -> bool:
    return (url.database or "") in ("", ":memory:") or url.query.get("mode") == "memory"


def prepare_sqlite_path(url: URL) -> None:
    """Create the folder of a SQLite file (relative paths are relative to the working dir)."""
    db = url.database or ""
    if is_memory_sqlite(url) or db.startswith("file:"):
        return
    Path(db).parent.mkdir(parents=True, exist_ok=True)


#: The database file and the files SQLite keeps beside it.
SQLITE_SUFFIXES = ("", "-journal", "-wal", "-shm")


def sqlite_paths(database_url: str) -> list[Path]:
    """The files of the SQLite store at ``database_url`` and its folders, deepest first
    (none for another backend, an in-memory database or an invalid URL)."""
    try:
        url = normalize_database_url(database_url)
    except ValueError:
        return []
    db = url.database or ""
    if not url.drivername.startswith("sqlite") or is_memory_sqlite(url) or db.startswith("file:"):
        return []
    path = Path(db).absolute()
    return [path.with_name(path.name + suffix) for suffix in SQLITE_SUFFIXES] + list(path.parents)


def asyncpg_dsn(url: URL) -> str:
    """The libpq-style address asyncpg connects to, for a normalised PostgreSQL URL."""
    query = dict(url.query)
    if "ssl" in query:
        query.setdefault("sslmode", query.pop("ssl"))
    plain = url.set(drivername="postgresql", query=query)
    return plain.render_as_string(hide_password=False)
