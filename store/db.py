"""Engine and schema: SQLite in WAL mode by default, any SQLAlchemy async URL otherwise."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel

from bdi.store import models  # noqa: F401  (registers the tables)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a committed job survives power loss too
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> AsyncEngine:
    sqlite = url.startswith("sqlite")
    engine = create_async_engine(url, pool_pre_ping=not sqlite)  # no network to a file
    if sqlite:
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine


async def create_schema(engine: AsyncEngine) -> None:
    """Create what is missing: tables, and the nullable columns a newer version added to
    an existing table (a data folder made by an earlier version opens as it is)."""
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
        await conn.run_sync(_add_new_columns)


def _add_new_columns(conn: Connection) -> None:
    inspector = inspect(conn)
    for table in SQLModel.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable or column.primary_key:
                raise RuntimeError(f"cannot add the required column {table.name}.{column.name}")
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'))
