"""The Suivi's SQLite trigram indexes, brought up to date after the rows they index.

Revision 0002 kept the two FTS5 trigram indexes (the clé of `flow`, the insured name of
`flowoccurrence`) equal to their tables by triggers: ~50 µs of SQLite's work for each flow a
job stored (measured on 20 000 rows: 68 µs a flow with the triggers, 19 µs without), most of
a big upload's storing time, on its critical path. The same rows indexed by one `INSERT …
SELECT` cost ~7 µs each. Since revision 0006 each index has a high-water mark
(`suivi_fts_mark`): the rows with an id up to it are indexed (and kept so by the triggers,
which only act on such rows); the rows above it are not yet, and the searches read them with
a plain `LIKE` (`suivi/textindex.py`), in the same statement, so that a search is exact at
every moment. `catch_up` moves a mark forward by a batch, from the hub's upkeep, in the
journal's transactions.

A row inserted with an id at or under the mark (SQLite may reuse the highest id after a
delete) is indexed by the insert trigger at once. PostgreSQL's pg_trgm indexes stay as they
are (maintained by PostgreSQL with each row): none of this runs there.
"""

from __future__ import annotations

import structlog
from sqlalchemy import Connection, text

log = structlog.get_logger("bdi.store")
CLÉ_INDEX = "suivi_fts_cle"
INSURED_INDEX = "suivi_fts_assure"
MARK = "suivi_fts_mark"  # (name, upto): the rows of each index's table indexed so far
# (index, content table, indexed column)
INDEXES = ((CLÉ_INDEX, "flow", "optiflux_key"), (INSURED_INDEX, "flowoccurrence", "insured_folded"))
BATCH = 5000  # rows of one table indexed per transaction (~35 ms): the journal's others wait


def marked(conn: Connection) -> bool:
    """Whether this store's trigram indexes follow their tables by a mark (SQLite where
    FTS5 has the trigram tokenizer, revision 0006 applied)."""
    if conn.dialect.name != "sqlite":
        return False
    found = conn.execute(
        text("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = :m"), {"m": MARK}
    )
    return int(found.scalar_one()) == 1


def catch_up(conn: Connection, batch: int = BATCH) -> int:
    """Index up to `batch` rows of each table past its mark, and move the mark past them;
    how many rows were indexed (none: both are up to date)."""
    done = 0
    marks = _marks(conn)
    for index, table, column in INDEXES:
        if index not in marks:
            continue
        upto = marks[index]
        end, count = _batch_end(conn, table, upto, batch)
        if end is None:
            continue
        conn.execute(
            text(f"INSERT INTO {index}(rowid, {column}) "
                 f"SELECT id, {column} FROM {table} WHERE id > :a AND id <= :b"),
            {"a": upto, "b": end},
        )  # fmt: skip
        conn.execute(text(f"UPDATE {MARK} SET upto = :b WHERE name = :n"), {"b": end, "n": index})
        done += count
    return done


def lag(conn: Connection) -> int:
    """Ids of both tables past their marks: the rows not yet indexed, or more where ids
    were skipped (counting the rows themselves would read them all)."""
    marks = _marks(conn)
    return sum(_last_id(conn, table) - marks[index] for index, table, _ in INDEXES
               if index in marks)  # fmt: skip


def _marks(conn: Connection) -> dict[str, int]:
    return {str(n): int(u) for n, u in conn.execute(text(f"SELECT name, upto FROM {MARK}"))}


def _batch_end(conn: Connection, table: str, upto: int, batch: int) -> tuple[int | None, int]:
    """The id of the `batch`-th row past `upto` (or of the last row), None if no row is
    past it; and how many rows that is."""
    last, count = conn.execute(
        text(f"SELECT max(id), count(*) FROM (SELECT id FROM {table} WHERE id > :a "
             "ORDER BY id LIMIT :n)"),
        {"a": upto, "n": batch},
    ).one()  # fmt: skip
    return (None if last is None else int(last)), int(count)


def _last_id(conn: Connection, table: str) -> int:
    return int(conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one())
