"""Alembic's environment: the connection comes from `bdi.store.schema` (no alembic.ini).

`render_as_batch` lets a revision alter a SQLite table (copy and swap); on PostgreSQL the
same revision alters in place. All revisions run in the caller's one transaction.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from bdi.store import models  # noqa: F401  (the tables autogenerate compares against)


def include_name(name: str | None, kind: str, _parents: object) -> bool:
    """The SQLite FTS5 tables of revision 0002 are no model's: autogenerate leaves them."""
    return not (kind == "table" and (name or "").startswith("suivi_fts"))


context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=SQLModel.metadata,
    render_as_batch=True,
    include_name=include_name,
)
with context.begin_transaction():
    context.run_migrations()
