"""Big uploads take the streamed path (`pipeline/stream.py`): decrypted, checked, split and
sealed at once. Its outcome is the small path's, byte for byte; what it holds in memory does
not grow with the number of sections or flows."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import os
import subprocess
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hubkit import HubUnderTest, Party, db_rows, file_flows, hub_running
from sqlalchemy import Connection
from support import SAMPLES

from bdi.pipeline import prepare, stream
from bdi.pipeline import rows as draft_rows
from bdi.routing import scan
from bdi.routing.model import Flow, SectionReport
from bdi.routing.scan import CheckContext, FileChecked, SectionChecked, check_lines
from bdi.store import bulk
from bdi.store.jobs import Occurrence
from bdi.suivi import contents as suivi_contents
from bdi.suivi import queries as q

NAME = "RGIE000001_00311_000001.edi"  # three sections for three companies
SENDER = "GIE000001"
HEADER_NUMBER = slice(50, 53)


def renumbered(data: bytes, times: int) -> bytes:
    """The sample's sections repeated `times` times, as they are: past the first copy every
    section's number differs from its position (ENTETE), so each earns its `.log`."""
    return data * times


def big_flows(sample: bytes, flows: int) -> bytes:
    """One section of the broker's répartition with its flow repeated `flows` times."""
    lines = sample.splitlines(keepends=True)
    header, body, footer = lines[0], lines[1:-1], lines[-1]
    count = int(footer[35:43]) * flows
    end = footer[:35] + b"%08d" % count + footer[43:]
    return header + b"".join(body) * flows + end


def numbered(section: bytes, number: int) -> bytes:
    """The section's number in its header and in its footer (columns 33-35)."""
    head, _, rest = section.partition(b"\n")
    body, _, end = rest.rstrip(b"\n").rpartition(b"\n")
    head = head[: HEADER_NUMBER.start] + b"%03d" % number + head[HEADER_NUMBER.stop :]
    end = end[:32] + b"%03d" % number + end[35:]
    return head + b"\n" + body + b"\n" + end + b"\n"


# -- the checks, pure -------------------------------------------------------------------


def alive_reports() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is SectionReport)


@pytest.mark.parametrize("keep", [False, True])
def test_a_file_of_many_sections_keeps_their_reports_only_when_asked(keep: bool) -> None:
    data = renumbered((SAMPLES / NAME).read_bytes(), 100)  # 300 sections, 297 refused
    ctx = CheckContext(NAME, SENDER, keep_sections=keep)
    before, most, sections = alive_reports(), 0, 0
    for event in check_lines(io.BytesIO(data), ctx):
        if isinstance(event, SectionChecked):
            sections += 1
            most = max(most, alive_reports() - before)
        else:
            assert isinstance(event, FileChecked)
            assert len(event.report.sections) == (300 if keep else 0)
    del event
    assert sections == 300
    if keep:
        assert most >= 299  # the test can fail: a kept report per section
    else:
        assert most <= 2  # the one being handed over, and the one being checked


def test_flows_are_handed_over_as_they_complete_not_kept_with_their_section() -> None:
    sample = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
    data = big_flows(sample, 50)
    seen: list[tuple[int, str]] = []

    def on_flow(section: SectionReport, flow: Flow) -> None:
        seen.append((section.number, flow.layout))

    ctx = CheckContext("RCOU010234_00311_000001.edi", "COU010234", collect_flows=True,
                       on_flow=on_flow)  # fmt: skip
    events = list(check_lines(io.BytesIO(data), ctx))
    checked = [e for e in events if isinstance(e, SectionChecked)]
    assert [len(e.flows) for e in checked] == [0]  # none kept by the checks
    assert seen == [(1, "allocation")] * 50
    plain = CheckContext("RCOU010234_00311_000001.edi", "COU010234", collect_flows=True)
    [again] = [e for e in check_lines(io.BytesIO(data), plain) if isinstance(e, SectionChecked)]
    assert len(again.flows) == 50


def _checked(pieces: list[bytes]) -> list[tuple[Any, ...]]:
    ctx = CheckContext("RCOU010234_00311_000001.edi", "COU010234", collect_flows=True)
    return [
        (e.report, e.flows) if isinstance(e, SectionChecked) else (e.report,)
        for e in check_lines(pieces, ctx)
    ]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_a_file_in_pieces_cut_anywhere_is_checked_as_line_by_line(ending: bytes) -> None:
    """A big plaintext's chunks end anywhere: in a record, between "\\r" and "\\n". Its
    reports, flows and their offsets are those of the file read line by line, a last
    line without terminator and stray "\\r" included."""
    sample = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
    lines = sample.splitlines()
    data = ending.join(lines) + ending + lines[1] + b"\r"
    by_line = _checked(list(io.BytesIO(data)))
    sections = by_line[-1][0].sections
    assert sections[-1].end == len(data) - len(lines[1]) - 1  # its footer's terminator in
    assert [p.line for p in by_line[-1][0].problems] == [len(lines) + 1]  # the orphan
    assert any(flows for _, flows, *_ in by_line[:-1])
    for size in (1, 7, 640, 641, 642, 4096):
        assert _checked([data[i : i + size] for i in range(0, len(data), size)]) == by_line


def test_lines_read_again_are_cut_past_their_kept_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cut_lines`: each line's length in the file, its bytes whole up to LINE_KEPT (then
    cut: the rest is read and dropped, never held), whatever the reads' boundaries."""
    monkeypatch.setattr(prepare, "LINE_KEPT", 8)
    lines = [b"\n", b"abc\r\n", b"1234567\n", b"12345678\n", b"x" * 8, b"y" * 30 + b"\n", b"z" * 17]
    got = list(prepare.cut_lines(io.BytesIO(b"".join(lines))))
    assert [length for length, _ in got] == [len(line) for line in lines[:4]] + [39, 17]
    assert [raw for _, raw in got] == [*lines[:3], b"12345678", b"x" * 8, b"z" * 8]


# -- through the hub --------------------------------------------------------------------


def outcome(hub: HubUnderTest, inboxes: dict[str, dict[str, bytes]], tmp: Path) -> dict[str, Any]:
    """What each participant received: deliveries opened, `.log` lines without their time."""
    out: dict[str, Any] = {}
    for who, files in inboxes.items():
        for name, data in files.items():
            if name.endswith(".log"):
                out[f"{who}/{name}"] = [line[20:] for line in data.decode().splitlines()]
            else:
                out[f"{who}/{name}"] = hub.open_delivery(who, data, tmp)[0]
    return out


async def route(
    tmp: Path, parties: dict[str, Party], data: bytes, name: str, sender: str, streamed: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:  # fmt: skip
    """One upload through a fresh hub, streamed or not: what everyone received and the
    flows the Suivi shows."""
    monkeypatch.setattr(stream, "STREAM_ABOVE", -1 if streamed else 1 << 40)
    folder = tmp / ("streamed" if streamed else "small")
    async with hub_running(folder / "data", parties) as hub:
        await hub.upload(sender, name, hub.seal(sender, data, folder))
        await hub.settled()
        inboxes = {who: await hub.inbox(who) for who in parties}
        received = outcome(hub, inboxes, folder)
        query = (
            "SELECT m.recipient_id, m.file_name, m.size, m.sha256, o.seq, o.layout, o.flow_code,"
            " o.optiflux_key, o.control, o.comment, o.fields_json, o.lines_json, o.grid_json,"
            " o.content_start, o.content_end, o.office_codes,"
            " f.flow_key FROM flowoccurrence o JOIN movement m ON m.id = o.movement_id"
            " JOIN flow f ON f.id = o.flow_id ORDER BY m.recipient_id, o.seq"
        )
        flows = db_rows(hub.server.hub.settings, query)
        drafts = "SELECT o.id FROM output o LEFT JOIN movement m ON m.output_id = o.id WHERE" \
                 " o.kind = 'draft' OR m.recipient_id = ''"  # fmt: skip
        assert not db_rows(hub.server.hub.settings, drafts)  # every draft adopted or gone
        grids = await shown_grids(hub)
        await assert_contents(hub)
        contents = hub.server.hub.settings.data / "contents"
        staged = list(hub.server.hub.settings.mailboxes.glob("*/.staging/*"))
        assert not staged, staged  # every sealed file placed, none left over
    return received, [*flows, ("contents", sorted(p.name for p in contents.glob("*"))), grids]


async def assert_contents(hub: HubUnderTest) -> None:
    """Each file's content, as the Suivi shows it, is what its movement's sha256 says."""
    inner = hub.server.hub
    movements = db_rows(inner.settings, "SELECT id, recipient_id, sha256 FROM movement")
    for movement, recipient, sha256 in movements:
        data = await q.content(inner.store, inner.contents(), recipient, movement)
        assert data is not None and hashlib.sha256(data).hexdigest() == sha256


async def shown_grids(hub: HubUnderTest) -> tuple[Any, ...]:
    """What the Suivi's detail pages show of each répartition's grid, read from the content
    at the flow's place in it: each grid line is its flow's (the same clé)."""
    movements = db_rows(hub.server.hub.settings, "SELECT id, recipient_id FROM movement")
    shown = []
    for movement, recipient in sorted(movements):
        for flow in await file_flows(hub, recipient, movement) or []:
            clé = flow.hit.values["optiflux_key"]
            assert flow.grid and {g["optiflux_key"] for g in flow.grid} == {clé}
            shown.append((movement, clé, tuple(g["office_code"] for g in flow.grid)))
    return ("grids", *shown)


@pytest.mark.parametrize("seals", [0, 2])
async def test_a_streamed_upload_has_the_small_paths_outcome(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch, seals: int
) -> None:
    """Good sections to three companies, 12 refused ones: the same deliveries, `.log` files
    and Suivi rows either way, whether recipients are sealed while the upload is read
    (SEALS_AT_ONCE) or after it; contents past the store's bound (100 bytes here) as files."""
    monkeypatch.setattr(stream, "SEALS_AT_ONCE", seals)
    monkeypatch.setattr(stream, "AHEAD", 1000)  # sections sealed while checked, if sealers
    monkeypatch.setattr(draft_rows, "ROWS_BATCH", 2)  # several batches of flows
    monkeypatch.setattr(stream, "LOGS_BATCH", 2)  # and of `.log` files
    monkeypatch.setattr(bulk, "ROWS_PER_STATEMENT", 3)  # on SQLite, several statements
    monkeypatch.setattr(stream, "FEED", 1000)  # sealed bytes moved in several chunks
    monkeypatch.setattr(prepare, "CONTENT_IN_ROW", 100)
    data = renumbered((SAMPLES / NAME).read_bytes(), 5)
    small = await route(tmp_path, parties, data, NAME, SENDER, False, monkeypatch)
    streamed = await route(tmp_path, parties, data, NAME, SENDER, True, monkeypatch)
    assert streamed == small
    received = small[0]
    assert len([n for n in received if n.endswith(".log")]) == 12
    assert len([n for n in received if not n.endswith(".log")]) == 3


async def test_a_line_longer_than_what_is_kept_of_it_is_refused_for_its_width(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line of 5 000 bytes where 1 000 are kept (64 KiB in service: a compressed upload
    may inflate to one line of a gigabyte): its section refused for its real width, the
    others delivered, with their flows read again past it; the same either path."""
    monkeypatch.setattr(scan, "LINE_KEPT", 1000)
    monkeypatch.setattr(prepare, "LINE_KEPT", 1000)
    monkeypatch.setattr(prepare, "FLOWS_IN_ONE_PASS", 100)  # the small path reads them again
    monkeypatch.setattr(prepare, "CHUNK", 1500)  # the line over several pieces, each path
    monkeypatch.setattr(stream, "READ", 1500)
    lines = (SAMPLES / NAME).read_bytes().splitlines(keepends=True)
    second = [i for i, line in enumerate(lines) if line.startswith(b"1111111111")][1]
    data = b"".join([*lines[: second + 1], b"2" * 5000 + b"\r\n", *lines[second + 1 :]])
    small = await route(tmp_path, parties, data, NAME, SENDER, False, monkeypatch)
    streamed = await route(tmp_path, parties, data, NAME, SENDER, True, monkeypatch)
    assert streamed == small
    received, flows = small
    [log] = [text for name, text in received.items() if name.endswith(".log")]
    assert any("5000 au lieu de 640" in line for line in log), log
    assert len(received) == 3 and len(flows) > 2  # two deliveries, their flows, the .log


async def test_a_compressed_upload_of_one_huge_line_is_answered_in_bounded_memory(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """A line of 64 MiB inflated from a few hundred bytes (bzip2): the sender's `.log`, and
    the hub's Python held a few MB for it. Found from outside: the small path read it by
    file iteration, whole, then decoded it (256 MiB: the server's RSS +916 MB)."""
    plain, sealed = tmp_path / "bomb.plain", tmp_path / "bomb.pgp"
    with plain.open("wb") as out:
        out.write((SAMPLES / NAME).read_bytes())
        for _ in range(64):
            out.write(b"2" * (1 << 20))
        out.write(b"\n")
    async with hub_running(tmp_path / "data", parties) as hub:
        sender = parties[SENDER]
        argv = ["gpg", "--homedir", str(sender.pgp.home), "--batch", "--trust-model", "always",
                "--compress-algo", "bzip2", "--sign", "--encrypt", "-u", sender.fingerprint,
                "-r", hub.hub_fingerprint, "--output", str(sealed), str(plain)]  # fmt: skip
        await asyncio.to_thread(subprocess.run, argv, check=True, capture_output=True)
        assert sealed.stat().st_size < 4096  # the small path's
        tracemalloc.start()
        try:
            await hub.upload(SENDER, NAME, sealed.read_bytes())
            await hub.settled()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        inbox = await hub.inbox(SENDER)
    [log] = [data.decode("latin-1") for name, data in inbox.items() if name.endswith(".log")]
    lines = (SAMPLES / NAME).read_bytes().count(b"\n")
    assert f"line {lines + 1} HORS_SECTION" in log
    assert peak < 32 << 20, peak


@pytest.mark.parametrize("ahead", [stream.AHEAD, 1000])
async def test_a_section_refused_after_its_flows_were_made_leaves_none(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch, ahead: int
) -> None:
    """A section refused by its footer's count, after its flows were spilled, between two
    good ones (batches of 2 rows): the same deliveries, `.log` and Suivi rows as the small
    path's, numbered without the refused section's flows. With `ahead` 1000, each section's
    bytes go to the sealer while it is checked: the refused one's spoil that sealer, and the
    recipient is sealed again without them."""
    monkeypatch.setattr(draft_rows, "ROWS_BATCH", 2)
    monkeypatch.setattr(stream, "AHEAD", ahead)
    monkeypatch.setattr(prepare, "CONTENT_IN_ROW", 100)  # contents as files, sealed at once
    monkeypatch.setattr(
        suivi_contents, "GRID_WINDOW", 1 if ahead == 1000 else 1 << 20
    )  # a read a grid
    name = "RCOU010234_00311_000001.edi"
    sample = (SAMPLES / name).read_bytes()
    good, bad, last = big_flows(sample, 3), big_flows(sample, 2), big_flows(sample, 4)
    footer = bad.rstrip(b"\r\n").rsplit(b"\n", 1)[1]
    wrong = footer[:35] + b"%08d" % (int(footer[35:43]) + 1) + footer[43:]
    bad = bad.replace(footer, wrong)

    data = good + numbered(bad, 2) + numbered(last, 3)
    small = await route(tmp_path, parties, data, name, "COU010234", False, monkeypatch)
    streamed = await route(tmp_path, parties, data, name, "COU010234", True, monkeypatch)
    assert streamed == small
    received, rows = small
    logs = {n: v for n, v in received.items() if n.endswith(".log")}
    assert len(logs) == 1, logs
    assert len(rows) - 2 == 3 + 4 == len(rows[-1]) - 1  # each flow's grid shown


async def test_flow_rows_are_stored_a_bounded_batch_at_a_time(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows of a 300-flow section never all wait in memory: with ROWS_BATCH 16, they
    are stored while the upload is read, no batch bigger (the last 12 go with the plan), and
    no more than ROWS_IN_FLIGHT batches wait for the store."""
    monkeypatch.setattr(draft_rows, "ROWS_BATCH", 16)
    batches: list[int] = []
    waiting: list[int] = []
    real = bulk.add_occurrences
    real_send = draft_rows.DraftRows._send

    def spy(conn: Connection, movements: dict[str, int], batch: Sequence[Occurrence]) -> None:
        batches.append(len(batch))
        real(conn, movements, batch)

    def send(self: draft_rows.DraftRows) -> None:
        real_send(self)
        waiting.append(len(self.sent))

    monkeypatch.setattr(bulk, "add_occurrences", spy)
    monkeypatch.setattr(draft_rows.DraftRows, "_send", send)
    sample = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
    data = big_flows(sample, 300)
    received, rows = await route(tmp_path, parties, data, "RCOU010234_00311_000001.edi",
                                 "COU010234", True, monkeypatch)  # fmt: skip
    assert sum(batches) == 288 and len(rows) - 2 == 300
    assert max(batches) == 16 and max(waiting) == draft_rows.ROWS_IN_FLIGHT
    assert list(received) == ["CIE000311/RCOU010234_00311_000001.edi"]


async def test_a_streamed_upload_signed_by_another_key_leaves_only_its_log(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature is known at the end of the plaintext, after the sealing began and
    rows were stored under drafts: the refusal removes what was sealed, kept and stored."""
    monkeypatch.setattr(stream, "STREAM_ABOVE", -1)
    monkeypatch.setattr(prepare, "CONTENT_IN_ROW", 100)
    monkeypatch.setattr(draft_rows, "ROWS_BATCH", 8)
    stored: list[int] = []
    real = bulk.add_occurrences

    def spy(conn: Connection, movements: dict[str, int], batch: Sequence[Occurrence]) -> None:
        stored.append(len(batch))
        real(conn, movements, batch)

    monkeypatch.setattr(bulk, "add_occurrences", spy)
    name = "RCOU010234_00311_000001.edi"
    data = big_flows((SAMPLES / name).read_bytes(), 100)
    async with hub_running(tmp_path / "data", parties) as hub:
        sealed = hub.seal("CIE000311", data, tmp_path)  # not the uploader's key
        await hub.upload("COU010234", name, sealed)
        await hub.settled()
        assert await hub.inbox("CIE000311") == {}
        [log] = (await hub.inbox("COU010234")).values()
        assert "(clé de signature d'un autre participant)" in log.decode()
        settings = hub.server.hub.settings
        assert not list((settings.data / "contents").glob("*"))
        assert not list(settings.mailboxes.glob("*/.staging/*"))
        assert not list(settings.spool.iterdir())
        assert sum(stored) == 96  # stored while read, then removed:
        for table in ("flowoccurrence", "movement"):
            assert db_rows(settings, f"SELECT count(*) FROM {table}") == [(0,)]
        assert db_rows(settings, "SELECT kind FROM output") == [("log",)]


@pytest.mark.parametrize("linked", [True, False])
async def test_an_upload_that_is_one_recipients_content_whole_is_kept_once(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch, linked: bool
) -> None:
    """Three sections, all for one recipient, one after the other: the plaintext is its
    content, and the spill becomes the content file by a second name (else, where it cannot
    be linked, by a copy): the Suivi shows the plaintext, the delivery opens to it."""
    monkeypatch.setattr(stream, "AHEAD", 1000)  # sealed while read: the sealer's path
    monkeypatch.setattr(prepare, "CONTENT_IN_ROW", 100)
    links: list[str] = []
    real = os.link

    def link(src: str, dst: str, **kwargs: Any) -> None:
        links.append(str(dst))
        if not linked:
            raise OSError(18, "Invalid cross-device link")
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", link)
    sample = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
    data = b"".join(numbered(big_flows(sample, 10 * n), n) for n in (1, 2, 3))
    received, _ = await route(tmp_path, parties, data, "RCOU010234_00311_000001.edi",
                                 "COU010234", True, monkeypatch)  # fmt: skip
    assert received == {"CIE000311/RCOU010234_00311_000001.edi": data}
    assert len(links) == 1 and links[0].endswith("-CIE000311.edi")
    content = tmp_path / "streamed" / "data" / "contents" / Path(links[0]).name
    assert content.read_bytes() == data
