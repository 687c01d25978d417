"""Opening a data folder made by an earlier version: what a newer one added is created."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import inspect, text

from bdi.store.db import create_schema, make_engine
from bdi.store.jobs import JobRef, insert_job
from bdi.store.journal import Journal


async def test_missing_tables_and_nullable_columns_are_added(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bdi.sqlite3'}"
    engine = make_engine(url)
    await create_schema(engine)
    async with engine.begin() as conn:  # as an earlier version left it
        await conn.execute(text("ALTER TABLE job DROP COLUMN data"))
        await conn.execute(text("DROP TABLE storedcontent"))
    await create_schema(engine)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        columns = await conn.run_sync(lambda c: [x["name"] for x in inspect(c).get_columns("job")])
    assert "storedcontent" in tables and "data" in columns
    await engine.dispose()
    journal = Journal.open(url)
    try:
        job = JobRef("COU010234", "A.edi", "a.pgp", 3, datetime.now(UTC), data=b"abc")
        job_id = journal.call(lambda conn: insert_job(conn, job))
        stored = journal.call(
            lambda conn: conn.execute(
                text("SELECT data FROM job WHERE id = :i"), {"i": job_id}
            ).scalar_one()
        )
        assert stored == b"abc"
    finally:
        await journal.close()
