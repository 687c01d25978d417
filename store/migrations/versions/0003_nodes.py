"""Several nodes on one database: the nodes' heartbeats, the node running each job, and
the inbox names taken, unique by their primary key.

The names of the files kept in the store, and of the outputs of unfinished jobs, are taken
already: they are recorded as such.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("seen_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_node_seen_at", "node", ["seen_at"], unique=False)
    op.create_table(
        "inboxname",
        sa.Column("participant_id", sqlmodel.sql.sqltypes.AutoString(length=9), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("participant_id", "name"),
    )
    with op.batch_alter_table("job") as batch:
        batch.add_column(
            sa.Column("node", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch.create_index("ix_job_node", ["node"], unique=False)
    op.execute(
        "INSERT INTO inboxname (participant_id, name) "
        "SELECT participant_id, name FROM inboxfile UNION "
        "SELECT o.participant_id, o.name FROM output o JOIN job j ON j.id = o.job_id "
        "WHERE j.state <> 'done' AND o.delivered_at IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_index("ix_job_node")
        batch.drop_column("node")
    op.drop_table("inboxname")
    op.drop_index("ix_node_seen_at", table_name="node")
    op.drop_table("node")
