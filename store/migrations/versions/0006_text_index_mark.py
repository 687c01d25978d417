"""The SQLite trigram indexes of the Suivi brought up to date after their rows, by a mark.

Revision 0002's triggers indexed every new `flow` and `flowoccurrence` row as it was
inserted: ~50 µs of SQLite's work a flow, most of a big upload's storing time. Here each
index gets a high-water mark (`suivi_fts_mark`: the rows with an id up to it are indexed);
the triggers now act only on rows at or under it (a new row above it waits for the hub's
upkeep to index it with others, ~7 µs a row; the searches read such rows with a plain
`LIKE`, `bdi.store.textindex`). At this revision every existing row is indexed: the marks
start at each table's last id. PostgreSQL (pg_trgm, maintained by PostgreSQL itself) and an
SQLite without the trigram tokenizer (no index): nothing to do.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MARK = "suivi_fts_mark"
# (index, content table, indexed column), as revision 0002 made them
INDEXES = (
    ("suivi_fts_cle", "flow", "optiflux_key"),
    ("suivi_fts_assure", "flowoccurrence", "insured_folded"),
)


def upgrade() -> None:
    bind = op.get_bind()
    present = [i for i in INDEXES if bind.dialect.name == "sqlite" and _has(bind, i[0])]
    if not present:
        return
    op.execute(f"CREATE TABLE {MARK} (name VARCHAR NOT NULL PRIMARY KEY, upto INTEGER NOT NULL)")
    for index, table, column in present:
        op.execute(
            f"INSERT INTO {MARK} (name, upto) SELECT '{index}', coalesce(max(id), 0) FROM {table}"
        )
        _drop_triggers(index)
        for statement in _triggers(index, table, column, _upto(index)):
            op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite" or not _has(bind, MARK):
        return
    for index, table, column in INDEXES:
        if not _has(bind, index):
            continue
        op.execute(
            f"INSERT INTO {index}(rowid, {column}) SELECT id, {column} FROM {table} "
            f"WHERE id > {_upto(index)}"
        )
        _drop_triggers(index)
        for statement in _triggers(index, table, column, None):
            op.execute(statement)
    op.execute(f"DROP TABLE {MARK}")


def _has(bind: sa.Connection, name: str) -> bool:
    return sa.inspect(bind).has_table(name)


def _upto(index: str) -> str:
    return f"(SELECT upto FROM {MARK} WHERE name = '{index}')"


def _drop_triggers(index: str) -> None:
    for trigger in ("ai", "ad", "au"):
        op.execute(f"DROP TRIGGER IF EXISTS {index}_{trigger}")


def _triggers(index: str, table: str, column: str, upto: str | None) -> list[str]:
    """Revision 0002's triggers; with `upto`, for the rows with an id up to it alone (ids are
    never updated: `old.id` is `new.id`)."""
    insert = f"INSERT INTO {index}(rowid, {column}) VALUES (new.id, new.{column});"
    delete = (
        f"INSERT INTO {index}({index}, rowid, {column}) VALUES ('delete', old.id, old.{column});"
    )
    when_new = f" WHEN new.id <= {upto}" if upto else ""
    when_old = f" WHEN old.id <= {upto}" if upto else ""
    return [
        f"CREATE TRIGGER {index}_ai AFTER INSERT ON {table}{when_new} BEGIN {insert} END",
        f"CREATE TRIGGER {index}_ad AFTER DELETE ON {table}{when_old} BEGIN {delete} END",
        f"CREATE TRIGGER {index}_au AFTER UPDATE OF {column} ON {table}{when_old} "
        f"BEGIN {delete} {insert} END",
    ]
