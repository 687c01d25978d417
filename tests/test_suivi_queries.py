"""Suivi queries over the samples routed through the real hub (OPTIFLUX.md §8.1-§8.7, §8.10):
every search kind returns the expected flows for the right participant and none for others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from hubkit import HubUnderTest, Party, file_flows, hub_running
from sqlalchemy import text
from support import SAMPLES
from test_suivi_support import (
    AXA,
    BROKER,
    CESAM,
    COGEAS,
    GENERALI,
    LEADER,
    MAR,
    NAV,
    OUTSIDERS,
    route_circuit,
)

from bdi.pipeline import prepare
from bdi.routing.layout import Layout
from bdi.store.repo import Store
from bdi.suivi import queries as q
from bdi.suivi import textindex
from bdi.suivi.queries import FileCriteria, Hit, Search

pytestmark = pytest.mark.asyncio(loop_scope="module")
EVERYONE = (BROKER, LEADER, CESAM, GENERALI, AXA, COGEAS, *OUTSIDERS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def routed(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> AsyncIterator[HubUnderTest]:
    """Every well-formed sample routed in the order of the circuit, referential loaded."""
    tmp = tmp_path_factory.mktemp("suivi")
    async with hub_running(tmp / "data", parties) as hub:
        await route_circuit(hub, tmp)
        yield hub


def store_of(hub: HubUnderTest) -> Store:
    return hub.server.hub.store


def layout_of(hub: HubUnderTest) -> Layout:
    return hub.server.hub.layout


async def found(hub: HubUnderTest, search_id: str, user: str, **criteria: str) -> list[Hit]:
    search = Search.of(layout_of(hub), search_id, criteria)
    return [hit async for hit in q.search_rows(store_of(hub), search, user)]


def refs(hits: list[Hit], *fields: str) -> set[tuple[object, ...]]:
    return {tuple(h.values.get(f) for f in fields) for h in hits}


EXPECTED: list[tuple[str, tuple[str, ...], dict[str, set[tuple[object, ...]]]]] = [
    (
        "allocations",
        ("optiflux_key",),
        {
            BROKER: {(MAR,)},
            LEADER: {(MAR,)},
            GENERALI: {(MAR,)},
            AXA: {(MAR,), (NAV,)},
            COGEAS: {(NAV,)},
            CESAM: {(MAR,), (NAV,)},
        },
    ),
    (
        "premiums",
        ("act_number",),
        {
            BROKER: {("AV-2008-001",), ("AV-2008-002",)},
            LEADER: {("AV-2008-001",), ("AV-2008-002",)},
            CESAM: {("AV-2008-001",)},
        },
    ),
    (
        "claim_advices",
        ("producer_file_number",),
        {u: {("SIN-2008-0042",)} for u in (BROKER, LEADER, GENERALI, CESAM)},
    ),
    (
        "settlements",
        ("producer_file_number",),
        {
            BROKER: {("SIN-2008-0042",), ("SIN-2008-0057",)},
            LEADER: {("SIN-2008-0042",), ("SIN-2008-0057",)},
            CESAM: {("SIN-2008-0042",), ("SIN-2008-0057",)},
        },
    ),
    (
        "accounts_by_balance",
        ("account_reference",),
        {
            BROKER: {(2008030001,)},
            LEADER: {(2008030001,)},
            CESAM: {(2008030001,)},
            GENERALI: {(2008030001,)},
        },
    ),
    (
        "brokerage_diff_issued",
        ("act_number",),
        {LEADER: {("AV-2008-001",)}, CESAM: {("AV-2008-001",)}},
    ),
    (
        "brokerage_diff_paid_by_balance",
        ("account_reference",),
        {BROKER: {(2008030001,)}, CESAM: {(2008030001,)}},
    ),
]


@pytest.mark.parametrize(
    ("search_id", "fields", "expected"), EXPECTED, ids=[e[0] for e in EXPECTED]
)
async def test_each_search_returns_the_flows_of_its_participants_only(
    routed: HubUnderTest,
    search_id: str,
    fields: tuple[str, ...],
    expected: dict[str, set[tuple[object, ...]]],
) -> None:
    for user in EVERYONE:
        hits = await found(routed, search_id, user)
        assert refs(hits, *fields) == expected.get(user, set()), user
        assert len(hits) == len(expected.get(user, set())), f"one row per flow for {user}"


async def test_a_row_shows_the_latest_occurrence_of_the_users_own_movements(
    routed: HubUnderTest,
) -> None:
    broker = await found(routed, "settlements", BROKER)
    leader = await found(routed, "settlements", LEADER)
    # the leader's file number is added in the leader -> CESAM file, which the broker cannot open
    assert refs(broker, "leader_file_number") == {("",)}
    assert refs(leader, "leader_file_number") == {("AGCS-S08-0042",), ("AGCS-S08-0057",)}
    (mine,) = await found(routed, "allocations", BROKER)
    assert (mine.sender_id, mine.recipient_id) == (CESAM, BROKER)  # the distribution it got


async def test_criteria_codes_exact_text_partial_and_case_insensitive(routed: HubUnderTest) -> None:
    assert refs(
        await found(routed, "allocations", AXA, optiflux_key="nav000007"), "optiflux_key"
    ) == {(NAV,)}
    for insured in ("armement", "Arméments", "ÂRMEMENT EXEMPLE"):  # case and accents
        hits = await found(routed, "allocations", AXA, insured_name=insured)
        assert refs(hits, "optiflux_key") == ({(MAR,)} if insured != "Arméments" else set())
    assert len(await found(routed, "allocations", AXA, producer_code="10234")) == 2
    assert await found(routed, "allocations", AXA, producer_code="1023") == []  # codes are exact
    hits = await found(routed, "allocations", AXA, producer_policy_number="00456")
    assert refs(hits, "optiflux_key") == {(NAV,)}
    both = await found(routed, "premiums", BROKER, optiflux_key="MAR", act_number="-002")
    assert refs(both, "act_number") == {("AV-2008-002",)}  # criteria are ANDed
    assert await found(routed, "premiums", BROKER, act_number="-002", operation_code="02") == []
    assert len(await found(routed, "claim_advices", BROKER, claim_advice_number="001")) == 1
    assert len(await found(routed, "accounts_by_balance", BROKER, currency="eur")) == 1
    assert await found(routed, "accounts_by_balance", BROKER, currency="EU") == []


async def test_page_counts_everything_and_keeps_one_page(routed: HubUnderTest) -> None:
    search = Search.of(layout_of(routed), "premiums", {})
    page = await q.search_page(store_of(routed), search, LEADER, 1)
    assert (page.total, page.pages, len(page.items)) == (2, 1, 2)
    narrowed = Search.of(layout_of(routed), "premiums", {"insured_name": "EXEMPLE"})
    page = await q.search_page(store_of(routed), narrowed, LEADER, 1)
    assert page.total == 2 and not page.has_next and not page.has_previous
    second = await q.search_page(store_of(routed), search, LEADER, 2)
    assert second.items == [] and second.total == 2


async def test_compte_financier_line_searches(routed: HubUnderTest) -> None:
    premiums = await found(routed, "accounts_premiums_received", BROKER)
    assert {
        (h.values["act_number"], h.values["instalment_number"], h.values["operation_code"])
        for h in premiums
    } >= {
        ("AV-2008-001", 1, "01"),
        ("AV-2008-001", 2, "01"),
    }
    assert all(
        h.values["operation_code"] in {"01", "02", "03", "04", "06", "08", "09"} for h in premiums
    )
    # the latest occurrence the broker can see is the H file: its balance is shown
    assert {h.values["account.balance"] for h in premiums} == {"-3029.75"}
    assert len({q.line_identity(h.flow_id, h.values) for h in premiums}) == len(premiums)
    claims = await found(routed, "accounts_claims_paid", BROKER, settlement_number="001")
    assert {h.values["operation_code"] for h in claims} == {"31", "35"}
    assert {h.values["line.control"] for h in claims} == {"V"}
    terms = await found(routed, "accounts_premiums_received", BROKER, instalment_number="02")
    assert {h.values["instalment_number"] for h in terms} == {2}
    for user in (AXA, COGEAS, *OUTSIDERS):
        assert await found(routed, "accounts_premiums_received", user) == []
        assert await found(routed, "accounts_claims_paid", user) == []
    h_lines = await found(
        routed, "brokerage_diff_paid_by_premium", BROKER, act_number="AV-2008-001"
    )
    assert h_lines and all(h.file_type == "H" for h in h_lines)
    assert await found(routed, "brokerage_diff_paid_by_premium", LEADER) == []


async def test_search_by_clé_is_exact_and_has_one_table_per_flow_type(routed: HubUnderTest) -> None:
    tables = await q.by_key(store_of(routed), layout_of(routed), BROKER, MAR.lower(), {})
    totals = {t.search_id: t.page.total for t in tables}
    assert totals == {
        "allocations": 1,
        "claim_advices": 1,
        "settlements": 2,
        "premiums": 2,
        "accounts_by_balance": 1,
    }
    partial = await q.by_key(store_of(routed), layout_of(routed), BROKER, MAR[:-1], {})
    assert all(t.page.total == 0 for t in partial)
    for user in (COGEAS, *OUTSIDERS):
        tables = await q.by_key(store_of(routed), layout_of(routed), user, MAR, {})
        assert all(t.page.total == 0 for t in tables), user


async def flow_id_of(hub: HubUnderTest, search_id: str, user: str, **criteria: str) -> int:
    (hit,) = await found(hub, search_id, user, **criteria)
    return hit.flow_id


async def test_tracking_shows_every_movement_and_opens_only_the_users_files(
    routed: HubUnderTest,
) -> None:
    flow = await flow_id_of(routed, "allocations", BROKER)
    passages = await q.tracking(store_of(routed), BROKER, flow)
    assert passages is not None
    moves = [(p.hit.sender_id, p.hit.recipient_id, p.hit.flow_code, p.openable) for p in passages]
    assert moves == [
        (BROKER, LEADER, "REP", True),
        (BROKER, CESAM, "RCC", True),
        (LEADER, CESAM, "REP", False),  # the broker sees it passed, cannot open it
        (CESAM, LEADER, "REP", False),
        (CESAM, GENERALI, "REP", False),
        (CESAM, AXA, "REP", False),
        (CESAM, BROKER, "REP", True),
    ]
    assert [p.hit.comment for p in passages][:3] == [
        "Reçu par l'apériteur",
        "",
        "Validé par l'apériteur",
    ]
    for user in (COGEAS, *OUTSIDERS):
        assert await q.tracking(store_of(routed), user, flow) is None


async def test_tracking_comment_carries_the_reject_reason(routed: HubUnderTest) -> None:
    flow = await flow_id_of(routed, "premiums", BROKER, act_number="AV-2008-002")
    passages = await q.tracking(store_of(routed), BROKER, flow)
    assert passages is not None
    assert passages[-1].hit.control == "R"
    assert passages[-1].hit.comment == (
        "Rejeté par l'apériteur : TAUX DE COURTAGE DIFFERENT DU TAUX DE L'APERITEUR"
    )


async def test_file_search_detail_and_content_for_sender_or_recipient_only(
    routed: HubUnderTest,
) -> None:
    store = store_of(routed)
    today = q.paris_today(datetime.now(UTC))
    criteria = FileCriteria().with_default_period(today)
    page = await q.file_page(store, GENERALI, criteria, 1, 50)
    assert sorted(m.file_name for m in page.items) == [
        "BGIE000001_00311_000002.edi",
        "RGIE000001_00311_000001.edi",
        "SGIE000001_00311_000004.edi",
    ]
    named = await q.file_page(
        store, BROKER, FileCriteria(name="pcie", start=today, end=today), 1, 50
    )
    assert [m.file_name for m in named.items] == ["PCIE000311_00311_000002.edi"]
    typed = await q.file_page(
        store, BROKER, FileCriteria(file_type="h", sender=CESAM).with_default_period(today), 1, 50
    )
    assert [m.file_name for m in typed.items] == ["HGIE000001_00311_000003.edi"]
    long_ago = FileCriteria(start=date(2007, 1, 1), end=date(2007, 12, 31))
    empty = await q.file_page(store, BROKER, long_ago, 1, 50)
    assert empty.total == 0
    rgie = next(m for m in page.items if m.file_name.startswith("RGIE"))
    assert rgie.id is not None
    flows = await file_flows(routed, GENERALI, rgie.id)
    assert flows is not None and [f.hit.values["optiflux_key"] for f in flows] == [MAR]
    assert [g["office_code"] for g in flows[0].grid] == ["00311", "00452", "00638", "88889"]
    contents = routed.server.hub.contents()
    data = await q.content(store, contents, GENERALI, rgie.id)
    assert data is not None and data.startswith(b"1111111111R")
    for user in (BROKER, LEADER, AXA, COGEAS):  # LEADER and AXA got other files of that upload
        assert await q.movement(store, user, rgie.id) is None
        assert await file_flows(routed, user, rgie.id) is None
        assert await q.content(store, contents, user, rgie.id) is None


async def test_a_content_past_the_row_bound_is_read_from_its_file(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare, "CONTENT_IN_ROW", 100)  # every sample's content is larger
    name = "RCOU010234_00311_000001.edi"
    plain = (SAMPLES / name).read_bytes()
    async with hub_running(tmp_path / "data", parties) as hub:
        await hub.upload(BROKER, name, hub.seal(BROKER, plain, tmp_path))
        await hub.settled()
        [moved] = await hub.server.hub.store.movements()
        assert moved.content_path and moved.id is not None
        contents = hub.server.hub.contents()
        assert (contents / moved.content_path).read_bytes() == plain
        assert await q.content(store_of(hub), contents, BROKER, moved.id) == plain


async def test_files_never_include_logs_or_other_participants(routed: HubUnderTest) -> None:
    today = q.paris_today(datetime.now(UTC))
    for user in EVERYONE:
        page = await q.file_page(
            store_of(routed), user, FileCriteria().with_default_period(today), 1, 500
        )
        assert all(user in (m.sender_id, m.recipient_id) for m in page.items)
        assert not any(m.file_name.endswith(".log") for m in page.items)
    outsiders = [
        await q.file_page(store_of(routed), u, FileCriteria(start=today, end=today), 1, 50)
        for u in OUTSIDERS
    ]
    assert all(p.total == 0 for p in outsiders)


async def test_text_indexes_and_their_portable_fallback_agree(routed: HubUnderTest) -> None:
    store = store_of(routed)
    sqlite = store.engine.dialect.name == "sqlite"
    assert await textindex.ready(store) == sqlite  # SQLite with FTS5 trigram here
    if not sqlite:
        assert await pg_trigram_plan(store) == 2
    assert len(await textindex.flows_by_clé(store, "mar0001")) == len(
        await textindex.flows_by_clé(store, "MAR0001")
    )
    for short in ("RM", "ar"):  # under 3 characters: plain LIKE
        hits = await found(routed, "allocations", AXA, insured_name=short)
        assert refs(hits, "optiflux_key") == {(MAR,)}
    assert await found(routed, "allocations", AXA, insured_name="%") == []
    assert await found(routed, "allocations", AXA, optiflux_key="_") == []


async def pg_trigram_plan(store: Store) -> int:
    """How many of the two substring searches PostgreSQL answers from its pg_trgm indexes
    (sequential scans off: on a table this small it would rightly prefer them)."""
    statements = (
        "SELECT id FROM flow WHERE optiflux_key LIKE '%MAR0%' ESCAPE '\\'",
        "SELECT flow_id FROM flowoccurrence WHERE insured_folded LIKE '%ARMEM%' ESCAPE '\\'",
    )
    async with store.engine.connect() as conn:
        await conn.execute(text("SET enable_seqscan = off"))
        plans = [
            "\n".join(r[0] for r in await conn.execute(text(f"EXPLAIN {sql}")))
            for sql in statements
        ]
    return sum("_trgm" in plan for plan in plans)
