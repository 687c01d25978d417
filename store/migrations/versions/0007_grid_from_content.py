"""A flow occurrence's répartition grid is read from its movement's content, not stored.

The grid's JSON was most of a row (2.8 of 3.4 KB for the sample's four lines), and writing it
most of what a big upload's flows cost the hub. A row now says where its flow's records are in
its movement's content (`content_start`, `content_end`: the content is kept as long as the
row) and, for the AASO search (OPTIFLUX.md §8.9), its grid's office codes (`office_codes`,
' 00311 00452 '). Rows recorded before keep their `grid_json`, whose office codes are copied
here; later rows have `grid_json` '[]'.

Downgrading drops the new columns: the grids of rows recorded since then are no longer shown.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BATCH = 5_000


def upgrade() -> None:
    op.add_column("flowoccurrence", sa.Column("content_start", sa.Integer(), nullable=True))
    op.add_column("flowoccurrence", sa.Column("content_end", sa.Integer(), nullable=True))
    op.add_column(
        "flowoccurrence",
        sa.Column("office_codes", sa.String(), nullable=False, server_default=""),
    )
    _copy_office_codes(op.get_bind())


def _copy_office_codes(conn: sa.Connection) -> None:
    """The office codes of the grids already stored, a batch of rows at a time."""
    read = sa.text(
        "SELECT id, grid_json FROM flowoccurrence WHERE id > :after AND grid_json != '[]' "
        "ORDER BY id LIMIT :n"
    )
    write = sa.text("UPDATE flowoccurrence SET office_codes = :codes WHERE id = :id")
    after = 0
    while rows := conn.execute(read, {"after": after, "n": BATCH}).all():
        changes = [{"id": row_id, "codes": _codes(text)} for row_id, text in rows]
        if changed := [c for c in changes if c["codes"]]:
            conn.execute(write, changed)
        after = rows[-1][0]


def _codes(grid_json: str) -> str:
    codes = [str(line.get("office_code") or "").strip() for line in json.loads(grid_json)]
    return f" {' '.join(codes)} " if codes else ""


def downgrade() -> None:
    with op.batch_alter_table("flowoccurrence") as batch:
        batch.drop_column("office_codes")
        batch.drop_column("content_end")
        batch.drop_column("content_start")
