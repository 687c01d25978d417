"""The engine: SQLite in WAL mode by default, any SQLAlchemy async URL otherwise (the schema
is `bdi.store.schema`'s)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a committed job survives power loss too
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def connect_args(url: str) -> dict[str, Any]:
    """PostgreSQL waits for a lock at most as long as SQLite's busy_timeout: a database
    held by another process is then a fault of the hub's, waited out, not a hang."""
    return {} if url.startswith("sqlite") else {"options": "-c lock_timeout=10000"}


def make_engine(url: str) -> AsyncEngine:
    sqlite = url.startswith("sqlite")
    engine = create_async_engine(
        url, pool_pre_ping=not sqlite, connect_args=connect_args(url)
    )  # no pre-ping for a file
    if sqlite:
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    return engine
