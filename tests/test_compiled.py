"""Statements run through `compiled` store exactly what SQLAlchemy's execute stores."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlmodel import SQLModel

from bdi.store.compiled import execute, insert_row, insert_rows
from bdi.store.jobs import JOB, OUTPUT, JobRef, insert_job
from bdi.store.journal import sync_engine
from bdi.store.models import Output

AT = datetime(2026, 11, 28, 13, 45, 7, 123456, tzinfo=UTC)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    engine = sync_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}")
    SQLModel.metadata.create_all(engine)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def job(name: str) -> JobRef:
    return JobRef(participant_id="COU010234", upload_name=name, spool_name=name, size=9,
                  received_at=AT)  # fmt: skip


def stored(conn: Connection, job_id: int) -> dict[str, object]:
    row = conn.execute(select(JOB).where(JOB.c.id == job_id)).one()
    return {k: v for k, v in row._mapping.items() if k not in ("id", "upload_name", "spool_name")}


def test_an_inserted_row_reads_back_as_through_sqlalchemy(conn: Connection) -> None:
    with conn.begin():
        fast = insert_job(conn, job("a"))
        slow = conn.execute(insert(JOB), {k: v for k, v in asdict(job("b")).items() if k != "id"})
    assert slow.inserted_primary_key is not None
    assert fast != slow.inserted_primary_key[0]
    assert stored(conn, fast) == stored(conn, slow.inserted_primary_key[0])
    assert stored(conn, fast)["received_at"] == AT


def test_values_fixed_in_the_statement_and_processed_parameters(conn: Connection) -> None:
    finish = (
        update(JOB).where(JOB.c.id == bindparam("b_job"))
        .values(state="done", finished_at=bindparam("b_at"))
    )  # fmt: skip
    with conn.begin():
        job_id = insert_job(conn, job("a"))
        execute(conn, finish, {"b_job": job_id, "b_at": AT})
    row = stored(conn, job_id)
    assert (row["state"], row["finished_at"]) == ("done", AT)


def log_row(job_id: int, seq: int, name: str) -> dict[str, object]:
    output = Output(job_id=job_id, seq=seq, kind="log", participant_id="X", name=name)
    return output.model_dump(exclude={"id"})


def test_many_rows_and_their_ids(conn: Connection) -> None:
    with conn.begin():
        job_id = insert_job(conn, job("a"))
        first = insert_row(conn, OUTPUT, log_row(job_id, 0, "a.log"))
        insert_rows(conn, OUTPUT, [log_row(job_id, n, f"{n}.log") for n in (1, 2)])
    names = conn.execute(select(OUTPUT.c.id, OUTPUT.c.name).order_by(OUTPUT.c.seq)).all()
    assert [n for _, n in names] == ["a.log", "1.log", "2.log"]
    assert names[0][0] == first


def test_expanding_parameters_are_refused(conn: Connection) -> None:
    statement = select(JOB.c.id).where(JOB.c.id.in_(bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        execute(conn, statement, {"ids": [1, 2]})
