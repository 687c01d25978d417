"""The Suivi's substring searches (clé, insured name) stay exact while the SQLite trigram
indexes lag their tables (revision 0006, `bdi.store.textindex`): rows past an index's mark
are found by a scan in the same statement, the upkeep's catch-up moves the mark, and rows
deleted or inserted under the mark keep the index exact. On PostgreSQL (pg_trgm) the same
searches give the same ids as a scan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from hubkit import HubUnderTest, Party, hub_running, until
from sqlalchemy import Connection, text
from test_suivi_support import CIRCUIT, send

from bdi.pipeline import stream
from bdi.store import textindex as marks
from bdi.store.folding import fold
from bdi.store.repo import Store
from bdi.suivi import textindex

pytestmark = pytest.mark.asyncio(loop_scope="module")
LAYOUT = "allocation"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> AsyncIterator[HubUnderTest]:
    tmp = tmp_path_factory.mktemp("textindex")
    async with hub_running(tmp / "data", parties) as running:
        for name in CIRCUIT[:5]:
            await send(running, name, tmp)
        yield running


@contextmanager
def indexing_held() -> Iterator[None]:
    """The upkeep leaves the indexes behind, as while a big upload is under way."""
    stream._ACTIVE.add(1)
    try:
        yield
    finally:
        stream._ACTIVE.add(-1)


def store_of(hub: HubUnderTest) -> Store:
    return hub.server.hub.store


async def journal(hub: HubUnderTest, statement: str, **params: object) -> None:
    def work(conn: Connection) -> None:
        conn.execute(text(statement), params)

    await hub.server.pipeline.journal.run(work)


async def lag(hub: HubUnderTest) -> int:
    if not await hub.server.pipeline.journal.run(marks.marked):
        return 0
    return await hub.server.pipeline.journal.run(marks.lag)


async def catch_up(hub: HubUnderTest) -> None:
    while await hub.server.pipeline.journal.run(marks.catch_up):
        pass


async def scan(store: Store, statement: str, **params: str) -> set[int]:
    async with store.engine.connect() as conn:
        return {int(r[0]) for r in await conn.execute(text(statement), params)}


async def patterns(store: Store) -> set[str]:
    """Substrings of every clé and insured name stored, some in lower case, one of none."""
    clés = await scan_text(store, "SELECT optiflux_key FROM flow")
    names = await scan_text(
        store, "SELECT insured_folded FROM flowoccurrence WHERE insured_folded IS NOT NULL"
    )
    cut = {v[i : i + n] for v in clés | names for n in (3, 5) for i in (0, 2, len(v) - n)}
    return {c for c in cut if len(c) >= 3} | {"ZZZQ", "mar", "armem"}


async def scan_text(store: Store, statement: str) -> set[str]:
    async with store.engine.connect() as conn:
        return {str(r[0]) for r in await conn.execute(text(statement))}


async def assert_exact(store: Store) -> int:
    """Each search's ids are those of a scan of the whole table; how many were found."""
    parts = sorted(await patterns(store))
    hits = 0
    for part in parts:
        got = await textindex.flows_by_clé(store, part)
        want = await scan(
            store, "SELECT id FROM flow WHERE optiflux_key LIKE :p", p=f"%{part.upper()}%"
        )
        assert sorted(got) == sorted(want), part
        hits += len(got)
    for part in parts:
        got = await textindex.flows_by_insured(store, part, LAYOUT)
        want = await scan(
            store,
            "SELECT DISTINCT flow_id FROM flowoccurrence WHERE layout = :l "
            "AND insured_folded LIKE :p",
            p=f"%{fold(part)}%",
            l=LAYOUT,
        )
        assert sorted(got) == sorted(want), part
        hits += len(got)
    return hits


async def test_searches_are_exact_before_and_after_the_indexes_catch_up(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    store = store_of(hub)
    sqlite = store.engine.dialect.name == "sqlite"
    assert await textindex.ready(store) == sqlite
    with indexing_held():
        if sqlite:
            await catch_up(hub)
        assert await lag(hub) == 0
        for name in CIRCUIT[5:8]:  # new flows and new occurrences of the earlier ones
            await send(hub, name, tmp_path)
        await journal(
            hub, "INSERT INTO flow (layout, flow_key, optiflux_key) VALUES (:l, 'K1', 'QXJ001')",
            l=LAYOUT,
        )  # fmt: skip
        if sqlite:
            assert await lag(hub) > 0  # the rows just stored are past the marks
        assert await assert_exact(store) > 0
        assert len(await textindex.flows_by_clé(store, "qxj0")) == 1
    if sqlite:
        await catch_up(hub)
        assert await lag(hub) == 0
    assert await assert_exact(store) > 0
    assert len(await textindex.flows_by_clé(store, "QXJ0")) == 1


async def new_flow(hub: HubUnderTest, flow_key: str, clé: str) -> int:
    """A flow row written by the journal, as a job's would be; its id."""
    insert = "INSERT INTO flow (layout, flow_key, optiflux_key) VALUES (:l, :k, :c)"
    await journal(hub, insert, l=LAYOUT, k=flow_key, c=clé)
    (last,) = await scan(store_of(hub), "SELECT max(id) FROM flow")
    return int(last)


async def test_rows_changed_under_the_mark_keep_the_index_exact(hub: HubUnderTest) -> None:
    """Deleted, updated, and inserted with an id at or under the mark (SQLite may give a new
    row the id of the last one deleted): the triggers index them as before."""
    store = store_of(hub)
    last = await new_flow(hub, "K2", "QXK002")
    if store.engine.dialect.name == "sqlite":
        await catch_up(hub)
    assert await textindex.flows_by_clé(store, "QXK0") == [last]
    await journal(hub, "UPDATE flow SET optiflux_key = 'QXL003' WHERE id = :i", i=last)
    assert await textindex.flows_by_clé(store, "QXK0") == []
    assert await textindex.flows_by_clé(store, "QXL0") == [last]
    await journal(hub, "DELETE FROM flow WHERE id = :i", i=last)
    assert await textindex.flows_by_clé(store, "QXL0") == []
    again = await new_flow(hub, "K3", "QXM004")
    if store.engine.dialect.name == "sqlite":
        assert again == last  # the id reused, under the mark
        assert await lag(hub) == 0
    assert await textindex.flows_by_clé(store, "QXM0") == [again]
    assert await assert_exact(store) > 0


async def test_the_upkeep_catches_up_once_no_big_upload_is_under_way(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    """Rows left past the marks while a big upload was under way are indexed by the hub's
    upkeep alone once it is over (its sweep: every second)."""
    with indexing_held():
        await send(hub, CIRCUIT[8], tmp_path)
        if store_of(hub).engine.dialect.name == "sqlite":
            assert await lag(hub) > 0

    async def caught_up() -> bool:
        return await lag(hub) == 0

    await until(caught_up)
    assert await assert_exact(store_of(hub)) > 0
