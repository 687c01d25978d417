"""Pending lists (OPTIFLUX.md §8.8) and incomplete répartitions (§8.9), step by step through
the real hub: each upload is one transition of the seed's tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hubkit import HubUnderTest, Party, hub_running
from test_suivi_support import (
    AXA,
    BROKER,
    CESAM,
    COGEAS,
    GENERALI,
    LEADER,
    NAV,
    OUTSIDERS,
    cesam_rejects_to_leader,
    craft,
    load_referential,
    only_flow,
    readdress,
    sample,
    send,
)

from bdi.suivi import pending as p
from bdi.suivi import queries as q

AV1, AV2 = "AV-2008-001", "AV-2008-002"
P_BROKER = "PCOU010234_00311_000003.edi"
P_REJECT = "PCIE000311_00311_000002.edi"
P_TO_CESAM = "PCIE000311_00311_000003.edi"
P_DISTRIBUTED = "PGIE000001_00311_000001.edi"


@pytest.fixture
async def hub(tmp_path: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    async with hub_running(tmp_path / "data", parties) as running:
        await load_referential(running)
        yield running


async def lists(hub: HubUnderTest, user: str, layout: str = "premium") -> dict[str, set[str]]:
    """Each pending list of the user: the act numbers (or clés) in it."""
    store, lay = hub.server.hub.store, hub.server.hub.layout
    out: dict[str, set[str]] = {}
    for pending in p.lists_for(user):
        hits = p.pending_rows(store, lay, user, layout, pending)
        out[pending.name] = {
            str(h.values.get("act_number") or h.values["optiflux_key"]) async for h in hits
        }
    return out


async def premium_flow(hub: HubUnderTest, act: str) -> int:
    search = q.Search.of(hub.server.hub.layout, "premiums", {"act_number": act})
    (hit,) = [h async for h in q.search_rows(hub.server.hub.store, search, BROKER)]
    return hit.flow_id


async def dismiss(hub: HubUnderTest, user: str, name: str, flow: int) -> bool:
    hub_ = hub.server.hub
    now = datetime.now(UTC)
    return await p.dismiss(hub_.store, hub_.layout, user, "premium", name, flow, now)


async def test_producer_and_leader_lists_follow_every_transition(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    # send: the broker waits for an answer, the leader has received both premiums
    await send(hub, P_BROKER, tmp_path)
    assert await lists(hub, BROKER) == {"en-cours": {AV1, AV2}, "rejetes": set()}
    assert (await lists(hub, LEADER))["recus-apporteur"] == {AV1, AV2}

    # reject: AV2 goes back to the broker in state R
    await send(hub, P_REJECT, tmp_path)
    assert await lists(hub, BROKER) == {"en-cours": {AV1}, "rejetes": {AV2}}
    assert await lists(hub, LEADER) == {
        "recus-apporteur": {AV1},
        "envoyes-cesam": set(),
        "rejetes-cesam": set(),
        "rejetes-apporteur": {AV2},
    }

    # validate and send to the CESAM: AV1 waits there; the broker has still had no answer
    await send(hub, P_TO_CESAM, tmp_path)
    assert (await lists(hub, LEADER))["envoyes-cesam"] == {AV1}
    assert (await lists(hub, LEADER))["recus-apporteur"] == set()
    assert await lists(hub, CESAM) == {"recus": {AV1}}
    assert (await lists(hub, BROKER))["en-cours"] == {AV1}

    # the leader sends AV2 to the CESAM as well: it leaves « rejetés vers l'apporteur »
    to_cesam = craft(P_REJECT, readdress(LEADER, CESAM))
    await send(hub, "PCIE000311_00311_000007.edi", tmp_path, to_cesam)
    leader = await lists(hub, LEADER)
    assert (leader["envoyes-cesam"], leader["rejetes-apporteur"]) == ({AV1, AV2}, set())

    # the CESAM rejects AV2: list 2 -> list 3; corrected and re-sent: list 3 -> list 2
    rejected = craft(P_REJECT, cesam_rejects_to_leader)
    await send(hub, "PGIE000001_00311_000008.edi", tmp_path, rejected)
    leader = await lists(hub, LEADER)
    assert (leader["rejetes-cesam"], leader["envoyes-cesam"]) == ({AV2}, {AV1})
    await send(hub, "PCIE000311_00311_000009.edi", tmp_path, to_cesam)
    leader = await lists(hub, LEADER)
    assert (leader["rejetes-cesam"], leader["envoyes-cesam"]) == (set(), {AV1, AV2})
    await send(hub, "PGIE000001_00311_000010.edi", tmp_path, rejected)
    assert (await lists(hub, LEADER))["rejetes-cesam"] == {AV2}

    # the CESAM distributes AV1: the leader and the CESAM no longer wait for it
    await send(hub, P_DISTRIBUTED, tmp_path)
    assert (await lists(hub, LEADER))["envoyes-cesam"] == set()
    assert await lists(hub, CESAM) == {"recus": set()}

    # the leader passes the CESAM's rejection on to the producer: list 3 -> list 4
    await send(hub, "PCIE000311_00311_000011.edi", tmp_path, sample(P_REJECT))
    leader = await lists(hub, LEADER)
    assert (leader["rejetes-cesam"], leader["rejetes-apporteur"]) == (set(), {AV2})
    assert await lists(hub, BROKER) == {"en-cours": {AV1}, "rejetes": {AV2}}

    # re-send: the broker corrects AV2 and sends it again (same clé)
    resent = craft(P_BROKER, only_flow(1))
    await send(hub, "PCOU010234_00311_000012.edi", tmp_path, resent)
    assert await lists(hub, BROKER) == {"en-cours": {AV1, AV2}, "rejetes": set()}
    leader = await lists(hub, LEADER)
    assert (leader["recus-apporteur"], leader["rejetes-apporteur"]) == ({AV2}, set())


async def test_dismissal_hides_a_rejection_until_it_is_rejected_again(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    await send(hub, P_BROKER, tmp_path)
    await send(hub, P_REJECT, tmp_path)
    av2, av1 = await premium_flow(hub, AV2), await premium_flow(hub, AV1)
    assert not await dismiss(hub, BROKER, "en-cours", av1)  # not a rejected list
    assert not await dismiss(hub, BROKER, "rejetes", av1)  # not in the list
    assert not await dismiss(hub, GENERALI, "rejetes-apporteur", av2)  # not its flow
    assert await dismiss(hub, BROKER, "rejetes", av2)
    assert (await lists(hub, BROKER))["rejetes"] == set()
    assert (await lists(hub, LEADER))["rejetes-apporteur"] == {AV2}  # dismissals are per user
    assert await dismiss(hub, LEADER, "rejetes-apporteur", av2)
    assert (await lists(hub, LEADER))["rejetes-apporteur"] == set()
    passages = await q.tracking(hub.server.hub.store, BROKER, av2)
    assert passages is not None and len(passages) == 2  # it stays in the tracking

    await send(hub, "PCOU010234_00311_000012.edi", tmp_path, craft(P_BROKER, only_flow(1)))
    await send(hub, "PCIE000311_00311_000013.edi", tmp_path, sample(P_REJECT))
    assert (await lists(hub, BROKER))["rejetes"] == {AV2}
    assert (await lists(hub, LEADER))["rejetes-apporteur"] == {AV2}


async def incomplete(hub: HubUnderTest, user: str) -> list[str]:
    rows = p.incomplete_rows(hub.server.hub.store, hub.server.hub.layout, user)
    return [str(h.values["optiflux_key"]) async for h in rows]


async def test_incomplete_répartition_until_the_cesam_distributes(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    store, layout = hub.server.hub.store, hub.server.hub.layout
    await send(hub, "RCIE000638_00638_000001.edi", tmp_path)
    await send(hub, "RCIE000311_00311_000001.edi", tmp_path)  # complete: not listed
    for user in (AXA, BROKER, COGEAS):
        assert await incomplete(hub, user) == [NAV], user
    for user in (LEADER, GENERALI, CESAM, *OUTSIDERS):
        assert await incomplete(hub, user) == [], user
    (hit,) = [h async for h in p.incomplete_rows(store, layout, COGEAS)]
    # the exception opens the tracking to the AASO, never the content of the file
    assert await q.tracking(store, COGEAS, hit.flow_id) is None
    assert hit.flow_id in await p.incomplete_flow_ids(store, layout, COGEAS)
    passages = await q.tracking(store, COGEAS, hit.flow_id, granted=True)
    assert passages is not None and not any(x.openable for x in passages)

    await send(hub, "RAPE007566_00638_000001.edi", tmp_path)  # the AASO's complement
    assert await incomplete(hub, BROKER) == [NAV]
    distribution = craft("RCIE000638_00638_000001.edi", readdress(CESAM, AXA))
    await send(hub, "RGIE000001_00638_000014.edi", tmp_path, distribution)
    for user in (AXA, BROKER, COGEAS):
        assert await incomplete(hub, user) == [], user
