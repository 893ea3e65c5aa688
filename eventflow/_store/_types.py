"""Column types shared by the schema and the migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine


class Timestamp(sa.types.TypeDecorator[datetime]):
    """A UTC timestamp: `timestamptz` in PostgreSQL, epoch seconds (REAL) in SQLite.

    SQLite has no time type; SQLAlchemy's text encoding of one costs the writer
    microseconds per value, epoch seconds cost nothing and sort and compare the
    same. Reads return aware `datetime`s on both databases.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Float())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return value.timestamp() if isinstance(value, datetime) else float(value)
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, UTC)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, (int, float)):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        assert isinstance(value, datetime)
        return value
