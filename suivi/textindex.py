"""Substring look-ups for the two criteria searched most: the clé and the insured name.

`contains` criteria are `LIKE '%x%'`, which no B-tree index serves: on a large store they scan
a whole table. On SQLite, when its FTS5 has the trigram tokenizer, two external-content
trigram indexes (kept up to date by triggers on `flow` and `flowoccurrence`) answer them in
milliseconds. On PostgreSQL, pg_trgm GIN indexes on the same two columns serve the plain
`LIKE`. Both are made by the schema's revision 0002. Everywhere else (older SQLite,
patterns shorter than 3 characters or with LIKE wildcards) a plain `LIKE` scans.

Since revision 0006 the SQLite indexes are brought up to date after their rows
(`bdi.store.textindex`): each index holds the rows up to its mark, and a search is one
statement (one snapshot) that asks the index for those and scans the few rows past the mark
with the same `LIKE`, so that it finds what a scan of the whole table would, whenever it runs.
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
from bdi.store.textindex import CLÉ_INDEX, INDEXES, INSURED_INDEX, MARK
from bdi.suivi import sql

log = structlog.get_logger("bdi.suivi.textindex")
_ready: weakref.WeakKeyDictionary[AsyncEngine, bool] = weakref.WeakKeyDictionary()


async def _exists(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (:a, :b, :m)"
            ),
            {"a": CLÉ_INDEX, "b": INSURED_INDEX, "m": MARK},
        )
        return int(found.scalar_one()) == len(INDEXES) + 1


async def ready(store: Store) -> bool:
    """True when the SQLite trigram indexes (made by the schema's revision 0002 where this
    SQLite has FTS5's trigram tokenizer, with their marks of revision 0006) serve;
    PostgreSQL's `LIKE` runs on its pg_trgm indexes without help."""
    engine = store.engine
    if engine not in _ready:
        _ready[engine] = engine.dialect.name == "sqlite" and await _exists(engine)
    return _ready[engine]


def _upto(index: str) -> str:
    """The last id the index holds, as a subquery of the search's own statement."""
    return f"(SELECT upto FROM {MARK} WHERE name = '{index}')"


def _trigram_ok(pattern: str) -> bool:
    return len(pattern) >= 3 and not any(c in pattern for c in '%_\\"')


async def _ids(store: Store, statement: str, params: dict[str, Any]) -> list[int]:
    async with sql.session(store) as s:
        return [int(r[0]) for r in (await s.execute(text(statement), params)).all()]


async def flows_by_clé(store: Store, part: str) -> Sequence[int]:
    """Ids of the flows whose clé contains `part` (clés are upper case)."""
    pattern = part.upper()
    if await ready(store) and _trigram_ok(pattern):
        upto = _upto(CLÉ_INDEX)
        query = (
            f"SELECT rowid FROM {CLÉ_INDEX} WHERE optiflux_key LIKE :p AND rowid <= {upto} "
            f"UNION ALL SELECT id FROM flow WHERE id > {upto} AND optiflux_key LIKE :p"
        )
        return await _ids(store, query, {"p": f"%{pattern}%"})
    query = "SELECT id FROM flow WHERE optiflux_key LIKE :p ESCAPE '\\'"
    return await _ids(store, query, {"p": f"%{sql.escape_like(pattern)}%"})


async def flows_by_insured(store: Store, part: str, layout: str) -> Sequence[int]:
    """Ids of the flows of `layout` with an occurrence whose insured name contains `part`."""
    pattern = fold(part) or ""
    if await ready(store) and _trigram_ok(pattern):
        upto = _upto(INSURED_INDEX)
        query = (  # `+layout`: the rows past the mark are found by their ids, not the layout's
            "SELECT o.flow_id FROM flowoccurrence o WHERE o.layout = :l AND o.id IN "
            f"(SELECT rowid FROM {INSURED_INDEX} WHERE insured_folded LIKE :p AND rowid <= {upto}) "
            f"UNION SELECT flow_id FROM flowoccurrence WHERE id > {upto} AND +layout = :l "
            "AND insured_folded LIKE :p"
        )
        return await _ids(store, query, {"p": f"%{pattern}%", "l": layout})
    query = (
        "SELECT DISTINCT flow_id FROM flowoccurrence WHERE layout = :l "
        "AND insured_folded LIKE :p ESCAPE '\\'"
    )
    return await _ids(store, query, {"p": f"%{sql.escape_like(pattern)}%", "l": layout})
