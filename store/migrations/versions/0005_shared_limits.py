"""The defender's scores and the open sessions, shared by the nodes of one database.

Reserved: filled in by the change that shares them (issue 17); a no-op until then.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
