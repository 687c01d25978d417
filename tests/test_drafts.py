"""Flow rows stored under drafts before the plan (`store.drafts`): fenced like the job's
other writes, adopted by the plan for the recipients delivered, removed for the others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from bdi.store.db import make_engine
from bdi.store.drafts import add_draft_rows, drop_draft_rows
from bdi.store.jobs import (
    JobRef,
    MovementRef,
    Occurrence,
    OutputRef,
    PlannedOutput,
    clear_drafts,
    insert_job,
    save_plan,
)
from bdi.store.journal import Journal
from bdi.store.nodes import JobTaken, bind
from bdi.store.schema import upgrade_to_head

AT = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bdi.db'}"
    await upgrade_to_head(url)
    await make_engine(url).dispose()
    journal = Journal.open(url)
    yield journal
    await journal.close()


def a_job(conn: Connection, node: str | None = None) -> int:
    job = JobRef("COU010234", "RCOU010234_00311_000001.edi", "spool", 10, AT)
    job_id = insert_job(conn, job)
    conn.execute(text("UPDATE job SET node = :n WHERE id = :i"), {"n": node, "i": job_id})
    return job_id


def rows(recipient: str, first: int, count: int) -> list[Occurrence]:
    def row(seq: int) -> dict[str, Any]:
        return {"seq": seq, "layout": "repartition", "flow_code": "R", "optiflux_key": f"K{seq}",
                "control": "S", "comment": "", "fields_json": "{}", "lines_json": "[]",
                "grid_json": "[]", "content_start": seq, "content_end": seq + 1,
                "office_codes": "", "producer_code": None, "insured_folded": None}  # fmt: skip

    return [(recipient, f"{recipient}-{seq}", row(seq)) for seq in range(first, first + count)]


def delivery(job_id: int, recipient: str) -> PlannedOutput:
    output = OutputRef(job_id, 0, "delivery", recipient, "RCOU010234_00311_000001.edi")
    movement = MovementRef(job_id, AT, "COU010234", recipient, output.name, "R", 10, "00", "")
    return PlannedOutput(output, movement)


def table(conn: Connection, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(text(sql))]


async def test_the_plan_adopts_the_drafts_of_its_recipients_and_removes_the_others(
    journal: Journal,
) -> None:
    """Rows of two recipients stored while read, one section's taken back: the plan makes
    CIE000311's draft its movement (same id, rows kept), CIE000452's (all refused) goes."""
    job_id = await journal.run(a_job)
    numbers = {"CIE000311": 0, "CIE000452": 1}
    store = partial(add_draft_rows, job_id=job_id, numbers=numbers, at=AT)
    await journal.run(partial(store, batch=rows("CIE000311", 0, 3) + rows("CIE000452", 0, 2)))
    await journal.run(partial(store, batch=rows("CIE000311", 3, 2)))
    await journal.run(partial(drop_draft_rows, job_id=job_id, number=0, first_seq=3))
    drafts = await journal.run(lambda c: table(c, (
        "SELECT m.id FROM movement m JOIN output o ON o.id = m.output_id ORDER BY o.seq DESC"
    )))  # fmt: skip
    assert len(drafts) == 2  # CIE000311's (number 0: seq -1000) first
    plan = partial(save_plan, job_id=job_id, planned=[delivery(job_id, "CIE000311")], at=AT,
                   occurrences=rows("CIE000311", 3, 1), drafts=numbers)  # fmt: skip
    movements = await journal.run(plan)
    assert movements == {"CIE000311": drafts[0][0]}
    found = await journal.run(lambda c: table(c, (
        "SELECT m.id, m.recipient_id, o.kind, o.seq, count(f.id) FROM movement m"
        " JOIN output o ON o.id = m.output_id LEFT JOIN flowoccurrence f ON f.movement_id = m.id"
        " GROUP BY m.id"
    )))  # fmt: skip
    assert found == [(drafts[0][0], "CIE000311", "delivery", 0, 4)]
    seqs = await journal.run(lambda c: table(c, "SELECT seq FROM flowoccurrence ORDER BY seq"))
    assert seqs == [(0,), (1,), (2,), (3,)]


async def test_a_write_for_a_job_of_another_node_or_already_planned_writes_nothing(
    journal: Journal,
) -> None:
    job_id = await journal.run(partial(a_job, node="node-a"))
    store = partial(add_draft_rows, job_id=job_id, numbers={"CIE000311": 0},
                    batch=rows("CIE000311", 0, 2), at=AT)  # fmt: skip

    def as_node(conn: Connection, node: str) -> None:
        bind(conn, node)
        try:
            store(conn)
        finally:
            conn.info.clear()

    with pytest.raises(JobTaken):
        await journal.run(partial(as_node, node="node-b"))
    await journal.run(partial(as_node, node="node-a"))
    await journal.run(lambda c: c.execute(text("UPDATE job SET state = 'planned'")))
    with pytest.raises(JobTaken):
        await journal.run(partial(as_node, node="node-a"))
    count = "SELECT count(*) FROM flowoccurrence"
    assert await journal.run(lambda c: table(c, count)) == [(2,)]  # node-a's first write only


async def test_a_job_run_again_removes_the_drafts_of_its_last_run(journal: Journal) -> None:
    job_id = await journal.run(a_job)
    store = partial(add_draft_rows, job_id=job_id, numbers={"CIE000311": 0},
                    batch=rows("CIE000311", 0, 2), at=AT)  # fmt: skip
    await journal.run(store)
    await journal.run(partial(clear_drafts, job_id=job_id))
    for name in ("flowoccurrence", "movement", "output"):
        assert await journal.run(partial(table, sql=f"SELECT * FROM {name}")) == []
