"""Indexes for the Suivi's substring searches (clé, insured name), and insured names folded
without accents.

SQLite: FTS5 trigram tables over `flow.optiflux_key` and `flowoccurrence.insured_folded`,
kept equal to their content tables by triggers (where this SQLite's FTS5 has the trigram
tokenizer: without it, searches scan). Earlier releases made them at the first search; they
are kept when present. PostgreSQL: pg_trgm GIN indexes on the same columns, which serve
`LIKE '%x%'`. Insured names stored by earlier releases were only upper-cased: they are
folded again, accents removed, as the hub now stores and searches them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (index, content table, indexed column)
INDEXES = (
    ("suivi_fts_cle", "flow", "optiflux_key"),
    ("suivi_fts_assure", "flowoccurrence", "insured_folded"),
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for _index, table, column in INDEXES:
            op.execute(
                f"CREATE INDEX IF NOT EXISTS ix_{table}_{column}_trgm ON {table} "
                f"USING gin ({column} gin_trgm_ops)"
            )
    _refold(bind)  # before the SQLite triggers: they would index every row twice
    if bind.dialect.name == "sqlite" and _sqlite_has_trigram(bind):
        for index, table, column in INDEXES:
            if not sa.inspect(bind).has_table(index):
                for statement in _fts(index, table, column):
                    op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    for index, table, column in INDEXES:
        if bind.dialect.name == "postgresql":
            op.execute(f"DROP INDEX IF EXISTS ix_{table}_{column}_trgm")
        else:
            for trigger in ("ai", "ad", "au"):
                op.execute(f"DROP TRIGGER IF EXISTS {index}_{trigger}")
            op.execute(f"DROP TABLE IF EXISTS {index}")


def _sqlite_has_trigram(bind: sa.Connection) -> bool:
    try:
        with bind.begin_nested():
            bind.exec_driver_sql(
                "CREATE VIRTUAL TABLE temp.bdi_probe USING fts5(x, tokenize='trigram')"
            )
            bind.exec_driver_sql("DROP TABLE temp.bdi_probe")
    except sa.exc.OperationalError:
        return False
    return True


def _fts(index: str, table: str, column: str) -> list[str]:
    insert = f"INSERT INTO {index}(rowid, {column}) VALUES (new.id, new.{column});"
    delete = (
        f"INSERT INTO {index}({index}, rowid, {column}) VALUES ('delete', old.id, old.{column});"
    )
    return [
        f"CREATE VIRTUAL TABLE {index} USING fts5({column}, content='{table}', "
        f"content_rowid='id', tokenize='trigram')",
        f"CREATE TRIGGER {index}_ai AFTER INSERT ON {table} BEGIN {insert} END",
        f"CREATE TRIGGER {index}_ad AFTER DELETE ON {table} BEGIN {delete} END",
        f"CREATE TRIGGER {index}_au AFTER UPDATE OF {column} ON {table} "
        f"BEGIN {delete} {insert} END",
        f"INSERT INTO {index}({index}) VALUES ('rebuild')",
    ]


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.strip())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def _refold(bind: sa.Connection) -> None:
    rows = bind.exec_driver_sql(
        "SELECT id, insured_folded FROM flowoccurrence WHERE insured_folded IS NOT NULL"
    )
    changed = [{"i": i, "v": _fold(v)} for i, v in rows if not v.isascii() and _fold(v) != v]
    if changed:
        bind.execute(
            sa.text("UPDATE flowoccurrence SET insured_folded = :v WHERE id = :i"), changed
        )
