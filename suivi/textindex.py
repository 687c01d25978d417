"""Substring look-ups for the two criteria searched most: the clé and the insured name.

`contains` criteria are `LIKE '%x%'`, which no B-tree index serves: on a large store they scan
a whole table. On SQLite, when its FTS5 has the trigram tokenizer, two external-content
trigram indexes (kept up to date by triggers on `flow` and `flowoccurrence`) answer them in
milliseconds. Everywhere else (PostgreSQL, older SQLite, patterns shorter than 3 characters
or with LIKE wildcards) the same functions fall back to plain portable `LIKE`.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bdi.store.repo import Store
from bdi.suivi import sql

log = structlog.get_logger("bdi.suivi.textindex")
CLÉ_INDEX = "suivi_fts_cle"
INSURED_INDEX = "suivi_fts_assure"
# (index, content table, indexed column)
INDEXES = ((CLÉ_INDEX, "flow", "optiflux_key"), (INSURED_INDEX, "flowoccurrence", "insured_folded"))
_ready: weakref.WeakKeyDictionary[AsyncEngine, bool] = weakref.WeakKeyDictionary()
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _ddl(index: str, table: str, column: str) -> list[str]:
    """The FTS5 table and the triggers that keep it equal to its content table."""
    insert = f"INSERT INTO {index}(rowid, {column}) VALUES (new.id, new.{column});"
    delete = (
        f"INSERT INTO {index}({index}, rowid, {column}) VALUES ('delete', old.id, old.{column});"
    )
    return [
        f"CREATE VIRTUAL TABLE {index} USING fts5({column}, content='{table}', "
        f"content_rowid='id', tokenize='trigram')",
        f"CREATE TRIGGER IF NOT EXISTS {index}_ai AFTER INSERT ON {table} BEGIN {insert} END",
        f"CREATE TRIGGER IF NOT EXISTS {index}_ad AFTER DELETE ON {table} BEGIN {delete} END",
        f"CREATE TRIGGER IF NOT EXISTS {index}_au AFTER UPDATE OF {column} ON {table} "
        f"BEGIN {delete} {insert} END",
        f"INSERT INTO {index}({index}) VALUES ('rebuild')",
    ]


async def _exists(conn: AsyncConnection, name: str) -> bool:
    found = await conn.execute(
        text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :n"), {"n": name}
    )
    return found.first() is not None


async def _create(engine: AsyncEngine) -> bool:
    started = time.perf_counter()
    try:
        async with engine.begin() as conn:
            for index, table, column in INDEXES:
                if not await _exists(conn, index):
                    for statement in _ddl(index, table, column):
                        await conn.execute(text(statement))
    except OperationalError as exc:  # no FTS5 or no trigram tokenizer in this SQLite
        log.warning("textindex.unavailable", reason=str(exc.orig))
        return False
    log.info("textindex.ready", seconds=round(time.perf_counter() - started, 3))
    return True


async def ready(store: Store) -> bool:
    """Create the trigram indexes once per engine (SQLite only); True when they serve."""
    engine = store.engine
    if engine not in _ready:
        async with _locks.setdefault(asyncio.get_running_loop(), asyncio.Lock()):
            if engine not in _ready:
                _ready[engine] = engine.dialect.name == "sqlite" and await _create(engine)
    return _ready[engine]


def _trigram_ok(pattern: str) -> bool:
    return len(pattern) >= 3 and not any(c in pattern for c in '%_\\"')


async def _ids(store: Store, statement: str, params: dict[str, Any]) -> list[int]:
    async with sql.session(store) as s:
        return [int(r[0]) for r in (await s.execute(text(statement), params)).all()]


async def flows_by_clé(store: Store, part: str) -> Sequence[int]:
    """Ids of the flows whose clé contains `part` (clés are upper case)."""
    pattern = part.upper()
    if await ready(store) and _trigram_ok(pattern):
        query = f"SELECT rowid FROM {CLÉ_INDEX} WHERE optiflux_key LIKE :p"
        return await _ids(store, query, {"p": f"%{pattern}%"})
    query = "SELECT id FROM flow WHERE optiflux_key LIKE :p ESCAPE '\\'"
    return await _ids(store, query, {"p": f"%{sql.escape_like(pattern)}%"})


async def flows_by_insured(store: Store, part: str, layout: str) -> Sequence[int]:
    """Ids of the flows of `layout` with an occurrence whose insured name contains `part`."""
    pattern = part.strip().upper()
    if await ready(store) and _trigram_ok(pattern):
        query = (
            "SELECT DISTINCT o.flow_id FROM flowoccurrence o WHERE o.layout = :l AND o.id IN "
            f"(SELECT rowid FROM {INSURED_INDEX} WHERE insured_folded LIKE :p)"
        )
        return await _ids(store, query, {"p": f"%{pattern}%", "l": layout})
    query = (
        "SELECT DISTINCT flow_id FROM flowoccurrence WHERE layout = :l "
        "AND insured_folded LIKE :p ESCAPE '\\'"
    )
    return await _ids(store, query, {"p": f"%{sql.escape_like(pattern)}%", "l": layout})
