"""Alembic's environment: the connection comes from `bdi.store.schema` (no alembic.ini).

`render_as_batch` lets a revision alter a SQLite table (copy and swap); on PostgreSQL the
same revision alters in place.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from bdi.store import models  # noqa: F401  (the tables autogenerate compares against)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
