"""The schema's versions: Alembic revisions (`store/migrations`), applied by `bdi init`,
`bdi serve` and `bdi db upgrade`, on SQLite and PostgreSQL alike.

Revisions run through the synchronous driver of the configured URL (Alembic is
synchronous), in one transaction. On PostgreSQL the transaction first takes an advisory
lock: several nodes starting at once upgrade one after the other, and the later ones find
nothing left to do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError

from bdi.store.journal import sync_engine

log = structlog.get_logger("bdi.store")

_LOCK = 0x6264_6900  # the advisory lock of schema upgrades ("bdi\0")


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("bdi.store") / "migrations"))
    config.attributes["connection"] = connection
    return config


@dataclass(frozen=True)
class Revision:
    id: str
    down: str | None
    doc: str


def history() -> list[Revision]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(_config())
    revisions = reversed(list(script.walk_revisions()))
    return [
        Revision(r.revision, _down(r.down_revision), " ".join(r.doc.split())) for r in revisions
    ]


def _down(down: str | Sequence[str] | None) -> str | None:
    return down if isinstance(down, str) or down is None else ",".join(down)


def head() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current(url: str) -> str | None:
    """The revision the database is at; None before its first upgrade."""
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database to `revision`, creating a PostgreSQL database that is missing."""
    ensure_database(url)
    engine = sync_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            command.upgrade(_config(conn), revision)
            after = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    if after != before:
        log.info("schema.upgraded", before=before, after=after)


async def upgrade_to_head(url: str) -> None:
    await asyncio.to_thread(upgrade, url)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of `url` when it does not exist (its role needs
    CREATEDB then); nothing to do on SQLite, whose file the first connection creates."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql") or not parsed.database:
        return
    name = parsed.database
    maintenance = sync_engine(parsed.set(database="postgres").render_as_string(False))
    try:
        with maintenance.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if found.first() is None:
                with contextlib.suppress(ProgrammingError, IntegrityError):  # another node made it
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        maintenance.dispose()
