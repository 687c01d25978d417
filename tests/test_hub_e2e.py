"""End to end through a real `bdi serve` stack: real SFTP, real GnuPG, real SQLite.

Every sample is signed and encrypted by its `uploaded_by`, uploaded, and must produce exactly
the deliveries and `.log` files of `samples/manifest.toml`.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hubkit import HubUnderTest, Party, hub_running
from sqlalchemy import select, text
from support import SAMPLES, manifest

from bdi.mailbox import view
from bdi.pipeline import prepare, workers
from bdi.routing.scan import CheckContext, SectionChecked, check_bytes, check_lines
from bdi.store.jobs import JOB


@pytest.fixture
async def hub(tmp_path: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    async with hub_running(tmp_path / "data", parties) as running:
        yield running


def flow_keys(data: bytes, name: str) -> dict[int, list[tuple[str, str]]]:
    ctx = CheckContext(name, collect_flows=True)
    events = [e for e in check_lines(io.BytesIO(data), ctx) if isinstance(e, SectionChecked)]
    return {e.report.number: [(f.layout, f.control) for f in e.flows] for e in events}


def section_bytes(data: bytes, name: str) -> dict[int, bytes]:
    report = check_bytes(data, CheckContext(name))
    return {s.number: data[s.start : s.end] for s in report.sections}


@pytest.mark.parametrize("sample", manifest(), ids=lambda s: s["path"])
async def test_sample_is_routed_as_the_manifest_says(
    hub: HubUnderTest, sample: dict[str, Any], tmp_path: Path
) -> None:
    plain = (SAMPLES / sample["path"]).read_bytes()
    name = Path(sample["path"]).name
    sender = sample["uploaded_by"]
    await hub.upload(sender, name, hub.seal(sender, plain, tmp_path))
    await hub.settled()

    sections = section_bytes(plain, name)
    expected: dict[str, bytes] = {}
    for s in sample["sections"]:
        if s["expect"] == "deliver":
            expected[s["recipient"]] = expected.get(s["recipient"], b"") + sections[s["number"]]
    for recipient, content in expected.items():
        inbox = await hub.inbox(recipient)
        assert list(inbox) == [name]
        got, signer = hub.open_delivery(recipient, inbox[name], tmp_path)
        assert signer == hub.hub_fingerprint
        assert got == content

    refused = [s for s in sample["sections"] if s["expect"] == "refuse"]
    logs = {n: c for n, c in (await hub.inbox(sender)).items() if n.endswith(".log")}
    stem = name.removesuffix(".edi")
    assert sorted(logs) == sorted(f"ERREUR{stem}_{s['number']}.log" for s in refused)
    for s in refused:
        text = logs[f"ERREUR{stem}_{s['number']}.log"].decode("utf-8")
        codes = [line.split()[7] for line in text.splitlines()]
        assert codes == s["problems"]
        assert all(f" {name} section {s['number']} line " in line for line in text.splitlines())

    movements = await hub.server.hub.store.movements()
    assert sorted(m.recipient_id for m in movements) == sorted(expected)
    assert all(m.delivered and m.sender_id == sender for m in movements)
    flows = flow_keys(plain, name)
    for movement in movements:
        assert movement.id is not None
        stored = await hub.server.hub.store.occurrences(movement.id)
        mine = [s for s in sample["sections"] if s["recipient"] == movement.recipient_id]
        wanted = [k for s in mine if s["expect"] == "deliver" for k in flows[s["number"]]]
        assert [(o.layout, o.control) for o in stored] == wanted


async def test_same_name_twice_gets_a_suffix(hub: HubUnderTest, tmp_path: Path) -> None:
    name = "RCOU010234_00311_000001.edi"
    plain = (SAMPLES / name).read_bytes()
    for _ in range(3):
        await hub.upload("COU010234", name, hub.seal("COU010234", plain, tmp_path))
    await hub.settled()
    inbox = await hub.inbox("CIE000311")
    assert sorted(inbox) == [
        "RCOU010234_00311_000001.edi",
        "RCOU010234_00311_000001_2.edi",
        "RCOU010234_00311_000001_3.edi",
    ]


async def test_two_sections_for_one_recipient_travel_together(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    one = (SAMPLES / "PCOU010234_00311_000003.edi").read_bytes()
    # the same section twice, renumbered 2 in the second copy (header and footer)
    second = one.replace(b"0010200P", b"0020200P", 1)
    footer_at = second.rindex(b"9999999999")
    second = second[: footer_at + 32] + b"002" + second[footer_at + 35 :]
    name = "PCOU010234_00311_000077.edi"
    await hub.upload("COU010234", name, hub.seal("COU010234", one + second, tmp_path))
    await hub.settled()
    inbox = await hub.inbox("CIE000311")
    assert list(inbox) == [name]
    got, _ = hub.open_delivery("CIE000311", inbox[name], tmp_path)
    assert got == one + second
    movements = await hub.server.hub.store.movements()
    assert len(movements) == 1


async def test_concurrent_uploads_of_one_flow_make_one_flow(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    plain = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
    sealed = hub.seal("COU010234", plain, tmp_path)
    names = [f"RCOU010234_00311_1000{n:02d}.edi" for n in range(10)]
    # concurrent files over one session: a participant may hold 8 sessions at once (HUB.md)
    async with hub.sftp("COU010234") as sftp:

        async def put(name: str) -> None:
            async with sftp.open(f"/outbox/{name}", "wb") as f:
                await f.write(sealed)

        await asyncio.gather(*(put(name) for name in names))
    await hub.settled()
    assert sorted(await hub.inbox("CIE000311")) == names
    movements = await hub.server.hub.store.movements()
    occurrences = [o for m in movements for o in await hub.server.hub.store.occurrences(m.id or 0)]
    assert len(occurrences) == 10
    assert len({o.flow_id for o in occurrences}) == 1


async def route_back(hub: HubUnderTest, tmp_path: Path, name: str, sealed: bytes) -> bytes:
    """Upload `sealed` as COU010234's `name`; what CIE000311 then finds under that name."""
    await hub.upload("COU010234", name, sealed)
    await hub.settled()
    got, _ = hub.open_delivery("CIE000311", (await hub.inbox("CIE000311"))[name], tmp_path)
    return got


async def test_a_plaintext_past_the_memory_bound_spills_to_an_anonymous_file(
    hub: HubUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare, "PLAIN_IN_MEMORY", 512)  # every sample is larger
    name = "PCOU010234_00311_000003.edi"
    plain = (SAMPLES / name).read_bytes()
    assert len(plain) > 512
    assert await route_back(hub, tmp_path, name, hub.seal("COU010234", plain, tmp_path)) == plain
    spool = hub.server.hub.settings.spool
    assert list(spool.iterdir()) == []  # no plaintext was ever named there, the upload is gone


async def test_a_small_upload_lives_in_its_job_row_until_the_job_ends(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    name = "RCOU010234_00311_000001.edi"
    plain = (SAMPLES / name).read_bytes()
    sealed = hub.seal("COU010234", plain, tmp_path)
    assert len(sealed) <= view.UPLOAD_IN_MEMORY
    assert await route_back(hub, tmp_path, name, sealed) == plain
    assert list(hub.server.hub.settings.spool.iterdir()) == []  # never there
    async with hub.server.hub.store.engine.connect() as conn:
        rows = (await conn.execute(select(JOB.c.state, JOB.c.size, JOB.c.data))).all()
    assert [tuple(r) for r in rows] == [("done", len(sealed), None)]  # kept until the end only


async def test_an_upload_past_the_memory_bound_goes_through_a_spool_file(
    hub: HubUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(view, "UPLOAD_IN_MEMORY", 100)  # every sealed sample is larger
    name = "PCOU010234_00311_000003.edi"
    plain = (SAMPLES / name).read_bytes()
    sealed = hub.seal("COU010234", plain, tmp_path)
    assert len(sealed) > 100
    assert await route_back(hub, tmp_path, name, sealed) == plain
    assert list(hub.server.hub.settings.spool.iterdir()) == []  # the upload is gone


@pytest.mark.parametrize(
    ("name", "sender"),
    [("RGIE000001_00311_000001.edi", "GIE000001"), ("PCOU010234_00311_000003.edi", "COU010234")],
)
async def test_flows_collected_by_the_checks_equal_those_read_again(
    hub: HubUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, sender: str
) -> None:
    """A small plaintext's flows come from the checks' pass; a big one's are read again."""
    plain = (SAMPLES / name).read_bytes()
    await hub.upload(sender, name, hub.seal(sender, plain, tmp_path))
    await hub.settled()
    monkeypatch.setattr(prepare, "FLOWS_IN_ONE_PASS", 0)  # every plaintext is "big" now
    await hub.upload(sender, name, hub.seal(sender, plain, tmp_path))
    await hub.settled()
    columns = "o.seq, o.layout, o.flow_code, o.optiflux_key, o.control, o.comment, o.fields_json"
    query = (
        f"SELECT m.job_id, m.recipient_id, {columns}, o.lines_json, o.grid_json"
        " FROM flowoccurrence o JOIN movement m ON m.id = o.movement_id ORDER BY m.id, o.seq"
    )
    async with hub.server.hub.store.engine.connect() as conn:
        rows = (await conn.execute(text(query))).all()
    by_job: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_job.setdefault(row[0], []).append(tuple(row[1:]))
    first, second = by_job.values()
    assert first and first == second


async def test_a_queued_job_reads_its_upload_from_its_row(
    hub: HubUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past HELD_IN_MEMORY queued jobs, a job keeps no copy of its upload in memory."""
    monkeypatch.setattr(workers, "HELD_IN_MEMORY", 0)  # no job keeps its copy
    name = "RCOU010234_00311_000001.edi"
    plain = (SAMPLES / name).read_bytes()
    assert await route_back(hub, tmp_path, name, hub.seal("COU010234", plain, tmp_path)) == plain
