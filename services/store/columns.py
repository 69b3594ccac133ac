"""Times in the store: the UTC column type and the checks that keep naive datetimes out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


def utc_now() -> datetime:
    return datetime.now(UTC)


def require_aware(**values: Any) -> None:
    """Reject naive datetimes before they reach SQLAlchemy (which would wrap the error)."""
    for name, value in values.items():
        if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(f"{name} must be a timezone-aware datetime, e.g. datetime.now(UTC)")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no datetime type, so values are stored as
    UTC text with a fixed width (``YYYY-MM-DD HH:MM:SS.ffffff``); comparing those strings
    compares the instants, which keeps range queries correct.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
