"""Substring look-ups for the two criteria searched most: the clé and the insured name.

`contains` criteria are `LIKE '%x%'`, which no B-tree index serves: on a large store they scan
a whole table. On SQLite, when its FTS5 has the trigram tokenizer, two external-content
trigram indexes (kept up to date by triggers on `flow` and `flowoccurrence`) answer them in
milliseconds. On PostgreSQL, pg_trgm GIN indexes on the same two columns serve the plain
`LIKE`. Both are made by the schema's revision 0002. Everywhere else (older SQLite,
patterns shorter than 3 characters or with LIKE wildcards) a plain `LIKE` scans.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bdi.store.folding import fold
from bdi.store.repo import Store
from bdi.suivi import sql

log = structlog.get_logger("bdi.suivi.textindex")
CLÉ_INDEX = "suivi_fts_cle"
INSURED_INDEX = "suivi_fts_assure"
# (index, content table, indexed column)
INDEXES = ((CLÉ_INDEX, "flow", "optiflux_key"), (INSURED_INDEX, "flowoccurrence", "insured_folded"))
_ready: weakref.WeakKeyDictionary[AsyncEngine, bool] = weakref.WeakKeyDictionary()


async def _exists(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (:a, :b)"),
            {"a": CLÉ_INDEX, "b": INSURED_INDEX},
        )
        return int(found.scalar_one()) == len(INDEXES)


async def ready(store: Store) -> bool:
    """True when the SQLite trigram indexes (made by the schema's revision 0002 where this
    SQLite has FTS5's trigram tokenizer) serve; PostgreSQL's `LIKE` runs on its pg_trgm
    indexes without help."""
    engine = store.engine
    if engine not in _ready:
        _ready[engine] = engine.dialect.name == "sqlite" and await _exists(engine)
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
    pattern = fold(part) or ""
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
