"""The schema of the last release made without Alembic (create_all of its models).

A data folder made by a release before Alembic already holds these tables, perhaps without
the tables and nullable columns added later: they are created and added here, and the folder
then follows the later revisions as a new one does. The tables are frozen copies, not the
current models: a later change of a model is a later revision.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

META = sa.MetaData()
sa.Table(
    "auditevent",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("action", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("target", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("address", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_auditevent_at", "at", unique=False),
)
sa.Table(
    "ban",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column("banned_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("score", sa.Integer(), nullable=False),
    sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("lifted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column("lifted_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_ban_address", "address", unique=False),
    sa.Index("ix_ban_until", "until", unique=False),
)
sa.Table(
    "flow",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("layout", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("flow_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("optiflux_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("layout", "flow_key"),
    sa.Index("ix_flow_optiflux_key", "optiflux_key", unique=False),
)
sa.Table(
    "job",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("participant_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("upload_name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("spool_name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("size", sa.Integer(), nullable=False),
    sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column("data", sa.LargeBinary(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=True),
    sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column("quarantined_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column("retry_requested_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("spool_name"),
    sa.Index("ix_job_participant_id", "participant_id", unique=False),
    sa.Index("ix_job_state", "state", unique=False),
)
sa.Table(
    "operator",
    META,
    sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column("email", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("credentials_version", sa.Integer(), nullable=False),
    sa.Column("totp_secret", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column("totp_pending", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column("totp_last_step", sa.Integer(), nullable=True),
    sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("last_login", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("name"),
)
sa.Table(
    "operatorsession",
    META,
    sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column("operator_name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("credentials_version", sa.Integer(), nullable=False),
    sa.Column("csrf", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_operatorsession_expires_at", "expires_at", unique=False),
    sa.Index("ix_operatorsession_operator_name", "operator_name", unique=False),
)
sa.Table(
    "participant",
    META,
    sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=9), nullable=False),
    sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("email", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("role", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("pgp_fingerprint", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("credentials_version", sa.Integer(), nullable=False),
    sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("last_login", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_participant_pgp_fingerprint", "pgp_fingerprint", unique=False),
)
sa.Table(
    "redelivery",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("movement_id", sa.Integer(), nullable=False),
    sa.Column("recipient_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("requested_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("requested_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column("output_id", sa.Integer(), nullable=True),
    sa.Column("new_movement_id", sa.Integer(), nullable=True),
    sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_redelivery_movement_id", "movement_id", unique=False),
    sa.Index("ix_redelivery_state", "state", unique=False),
)
sa.Table(
    "referentiallabel",
    META,
    sa.Column("table", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("code", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("label", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint("table", "code"),
)
sa.Table(
    "referentialparticipant",
    META,
    sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=5), nullable=False),
    sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=1), nullable=False),
    sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("edi_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint("code"),
    sa.Index("ix_referentialparticipant_edi_id", "edi_id", unique=False),
)
sa.Table(
    "websession",
    META,
    sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column("participant_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("credentials_version", sa.Integer(), nullable=False),
    sa.Column("csrf", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_websession_expires_at", "expires_at", unique=False),
    sa.Index("ix_websession_participant_id", "participant_id", unique=False),
)
sa.Table(
    "dismissal",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("participant_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("list_name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("flow_id", sa.Integer(), nullable=False),
    sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["flow_id"],
        ["flow.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_dismissal_flow_id", "flow_id", unique=False),
    sa.Index("ix_dismissal_participant_id", "participant_id", unique=False),
)
sa.Table(
    "output",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("job_id", sa.Integer(), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("participant_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("ranges", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("text", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("delivered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(
        ["job_id"],
        ["job.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("job_id", "seq"),
    sa.Index("ix_output_job_id", "job_id", unique=False),
    sa.Index("ix_output_participant_id", "participant_id", unique=False),
)
sa.Table(
    "sshkey",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("participant_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("public_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(
        ["participant_id"],
        ["participant.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_sshkey_participant_id", "participant_id", unique=False),
)
sa.Table(
    "inboxfile",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("participant_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("size", sa.Integer(), nullable=False),
    sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("output_id", sa.Integer(), nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(
        ["output_id"],
        ["output.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("participant_id", "name"),
)
sa.Table(
    "movement",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("job_id", sa.Integer(), nullable=False),
    sa.Column("output_id", sa.Integer(), nullable=False),
    sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column("sender_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("recipient_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("file_name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("file_type", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("size", sa.Integer(), nullable=False),
    sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("content_path", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("delivered", sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(
        ["job_id"],
        ["job.id"],
    ),
    sa.ForeignKeyConstraint(
        ["output_id"],
        ["output.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("output_id"),
    sa.Index("ix_movement_created_at", "created_at", unique=False),
    sa.Index("ix_movement_file_name", "file_name", unique=False),
    sa.Index("ix_movement_job_id", "job_id", unique=False),
    sa.Index("ix_movement_party_time", "sender_id", "recipient_id", "created_at", unique=False),
    sa.Index("ix_movement_recipient_id", "recipient_id", unique=False),
    sa.Index("ix_movement_sender_id", "sender_id", unique=False),
)
sa.Table(
    "flowoccurrence",
    META,
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("movement_id", sa.Integer(), nullable=False),
    sa.Column("flow_id", sa.Integer(), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("layout", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("flow_code", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("optiflux_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("control", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("comment", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("fields_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("lines_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("grid_json", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column("producer_code", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column("insured_folded", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(
        ["flow_id"],
        ["flow.id"],
    ),
    sa.ForeignKeyConstraint(
        ["movement_id"],
        ["movement.id"],
    ),
    sa.PrimaryKeyConstraint("id"),
    sa.Index("ix_flowoccurrence_flow_id", "flow_id", unique=False),
    sa.Index("ix_flowoccurrence_insured_folded", "insured_folded", unique=False),
    sa.Index("ix_flowoccurrence_layout", "layout", unique=False),
    sa.Index("ix_flowoccurrence_movement_id", "movement_id", unique=False),
    sa.Index("ix_flowoccurrence_optiflux_key", "optiflux_key", unique=False),
    sa.Index("ix_flowoccurrence_producer_code", "producer_code", unique=False),
)
sa.Table(
    "storedcontent",
    META,
    sa.Column("movement_id", sa.Integer(), nullable=False),
    sa.Column("data", sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(
        ["movement_id"],
        ["movement.id"],
    ),
    sa.PrimaryKeyConstraint("movement_id"),
)


def upgrade() -> None:
    bind = op.get_bind()
    META.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table in META.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))


def downgrade() -> None:
    META.drop_all(op.get_bind())
