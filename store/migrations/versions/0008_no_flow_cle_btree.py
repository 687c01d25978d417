"""Drop the B-tree index on `flow.optiflux_key`: no query of the Suivi uses it.

A flow's clé is only searched as a substring (`LIKE '%x%'`), which a B-tree cannot serve:
SQLite answers from its FTS5 trigram index (the flows past its mark by a scan), PostgreSQL
from its pg_trgm index (revision 0002). Every flow a big upload stores met it, and a market's
file lists its clés in no order: on 335 000 flows of scattered clés, 33.5 → 25.5 µs of SQLite's
work a stored flow (no change when they come ascending).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_flow_optiflux_key", table_name="flow")


def downgrade() -> None:
    op.create_index("ix_flow_optiflux_key", "flow", ["optiflux_key"], unique=False)
