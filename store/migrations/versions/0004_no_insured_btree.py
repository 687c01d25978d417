"""Drop the B-tree index on `flowoccurrence.insured_folded`: no query of the Suivi uses it.

The insured name is only searched as a substring (`LIKE '%x%'`), which a B-tree cannot serve:
SQLite answers from its FTS5 trigram index (or scans), PostgreSQL from its pg_trgm index
(revision 0002); EXPLAIN QUERY PLAN of every Suivi query shows it unused. It cost each of the
tens of thousands of rows a big upload stores one more index to update.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_flowoccurrence_insured_folded", table_name="flowoccurrence")


def downgrade() -> None:
    op.create_index(
        "ix_flowoccurrence_insured_folded", "flowoccurrence", ["insured_folded"], unique=False
    )
