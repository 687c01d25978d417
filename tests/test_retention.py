"""Retention (issue 15): inbox files not collected after `inbox_retention_days` go to
`<data>/archive/<participant>/` (an event, a note on the movement the Suivi shows), the history
older than `history_years` is purged; nothing younger is ever touched. Through the running
hub's store with an injected `now`, through `bdi admin purge` and the admin API on aged data,
and by the daily run of `bdi serve`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
from hubkit import HubUnderTest, Party, days_earlier, db_rows, file_flows, make_parties
from support import SAMPLES

from bdi.config import Settings
from bdi.mailbox.retention import RetentionPolicy, RetentionReport, apply_retention
from bdi.pipeline import prepare
from bdi.suivi import queries as q

SAMPLE = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
BAD = (SAMPLES / "broken" / "RCOU010234_00311_000094.edi").read_bytes()  # a section refused
SENDER, RECIPIENT = "COU010234", "CIE000311"
SMALL, BIG = "RCOU010234_00311_000001.edi", "RCOU010234_00311_000002.edi"
REFUSED = "RCOU010234_00311_000094.edi"
BDI = Path(sys.executable).with_name("bdi")
ALL_TIME = q.FileCriteria(start=date(2000, 1, 1), end=date(2200, 1, 1))


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT, "GIE000001"]) as made:
        yield made


async def route(hub: HubUnderTest, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small delivery (kept in the store), a big one (a file of the inbox folder), and a
    refused section's `.log` (kept in the sender's inbox)."""
    await hub.upload(SENDER, SMALL, hub.seal(SENDER, SAMPLE, tmp))
    await hub.upload(SENDER, REFUSED, hub.seal(SENDER, BAD, tmp))
    await hub.settled()
    with monkeypatch.context() as m:
        m.setattr(prepare, "CONTENT_IN_ROW", 0)
        await hub.upload(SENDER, BIG, hub.seal(SENDER, SAMPLE, tmp))
        await hub.settled()


def policy(hub: HubUnderTest) -> RetentionPolicy:
    return RetentionPolicy.under(hub.settings.data, 30, 10)


async def retain(hub: HubUnderTest, now: datetime, dry_run: bool = False) -> RetentionReport:
    server = hub.server
    return await apply_retention(server.hub.store, server.hub.mailboxes, policy(hub), now,
                                 dry_run, remove=server.pipeline.stored.remove)  # fmt: skip


def archive(hub: HubUnderTest) -> dict[str, bytes]:
    root = hub.settings.data / "archive"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def comments(hub: HubUnderTest, user: str) -> dict[str, list[str]]:
    """Per file the Suivi lists for `user`, the comments of its flows."""
    store = hub.server.hub.store
    page = await q.file_page(store, user, ALL_TIME, 1, 100)
    out = {}
    for movement in page.items:
        flows = await file_flows(hub, user, movement.id or 0)
        out[movement.file_name] = [f.hit.comment for f in flows or []]
    return out


async def test_inbox_files_leave_for_the_archive_after_their_days_and_not_before(
    hub: HubUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await route(hub, tmp_path, monkeypatch)
    before = {RECIPIENT: await hub.inbox(RECIPIENT), SENDER: await hub.inbox(SENDER)}
    [log_name] = before[SENDER]
    assert sorted(before[RECIPIENT]) == [SMALL, BIG]
    now = datetime.now(UTC)

    kept = await retain(hub, now + timedelta(days=29, hours=23))
    assert kept.archived == [] and kept.purged.movements == 0
    planned = await retain(hub, now + timedelta(days=31), dry_run=True)
    assert sorted((a.participant, a.file) for a in planned.archived) == [
        (RECIPIENT, SMALL), (RECIPIENT, BIG), (SENDER, log_name)
    ]  # fmt: skip
    assert {RECIPIENT: await hub.inbox(RECIPIENT), SENDER: await hub.inbox(SENDER)} == before

    done = await retain(hub, now + timedelta(days=31))
    assert {(a.participant, a.file, a.stored) for a in done.archived} == {
        (RECIPIENT, SMALL, True), (RECIPIENT, BIG, False), (SENDER, log_name, True)
    }  # fmt: skip
    assert await hub.inbox(RECIPIENT) == {} and await hub.inbox(SENDER) == {}
    assert archive(hub) == {
        f"{RECIPIENT}/{SMALL}": before[RECIPIENT][SMALL],
        f"{RECIPIENT}/{BIG}": before[RECIPIENT][BIG],
        f"{SENDER}/{log_name}": before[SENDER][log_name],
    }
    noted = await comments(hub, RECIPIENT)
    assert set(noted) == {SMALL, BIG}  # the movements stay: the history is younger
    assert all("Non relevé, archivé le" in c for flows in noted.values() for c in flows)
    assert (await retain(hub, now + timedelta(days=400))).archived == []  # nothing twice


async def test_the_history_is_purged_after_its_years_and_not_before(
    hub: HubUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await route(hub, tmp_path, monkeypatch)
    contents = hub.settings.data / "contents"
    [content_file] = [p.name for p in contents.iterdir()]
    now = datetime.now(UTC)
    almost = await retain(hub, now + timedelta(days=365 * 10 - 3))
    assert almost.purged.movements == 0 and (contents / content_file).exists()
    assert len(await comments(hub, RECIPIENT)) == 2

    later = now + timedelta(days=365 * 10 + 3)
    dry = await retain(hub, later, dry_run=True)
    assert (dry.purged.movements, dry.purged.content_files) == (2, [content_file])
    assert len(await comments(hub, RECIPIENT)) == 2
    done = await retain(hub, later)
    assert done.purged.movements == 2 and done.purged.flow_occurrences >= 2
    assert done.purged.stored_contents == 1 and done.purged.content_files == [content_file]
    assert done.purged.jobs == 3 and done.purged.flows >= 1
    assert await comments(hub, RECIPIENT) == {} and not (contents / content_file).exists()
    for table in ("movement", "flowoccurrence", "storedcontent", "job", "output", "flow"):
        assert db_rows(hub.settings, f"SELECT count(*) FROM {table}") == [(0,)], table


def age(settings: Settings, days: int, *, movements_years: int = 0) -> None:
    """Make the inboxes `days` older (and the movements `movements_years` older)."""
    shifted = partial(days_earlier, settings)
    db_rows(settings, f"UPDATE inboxfile SET created_at = {shifted('created_at', days)}")
    if movements_years:
        back = movements_years * 366
        db_rows(settings, f"UPDATE movement SET created_at = {shifted('created_at', back)}")
        db_rows(settings, f"UPDATE job SET received_at = {shifted('received_at', back)}")
    for path in (settings.data / "mailboxes").glob("*/inbox/*"):
        old = path.stat().st_mtime - days * 86400
        os.utime(path, (old, old))


async def bdi(*args: str) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        str(BDI), *args, "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


async def test_bdi_admin_purge_while_the_hub_serves(
    hub: HubUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await route(hub, tmp_path, monkeypatch)
    data = str(hub.settings.data)
    age(hub.settings, 29)
    quiet = await bdi("admin", "purge", "--dry-run", "--data", data)
    assert (quiet["archived"], quiet["dry_run"]) == ([], True)

    age(hub.settings, 2, movements_years=11)
    planned = await bdi("admin", "purge", "--dry-run", "--data", data)
    assert len(planned["archived"]) == 3  # type: ignore[arg-type]
    purged = planned["purged"]
    assert isinstance(purged, dict)
    assert (purged["movements"], purged["stored_contents"], purged["content_files"]) == (2, 1, 1)
    assert len(await hub.inbox(RECIPIENT)) == 2

    done = await bdi("admin", "purge", "--data", data)
    assert len(done["archived"]) == 3 and done["dry_run"] is False  # type: ignore[arg-type]
    assert done["purged"]["movements"] == 2  # type: ignore[index]
    assert await hub.inbox(RECIPIENT) == {} and len(archive(hub)) == 3
    assert await comments(hub, RECIPIENT) == {}


async def test_the_admin_api_purges_and_bdi_serve_runs_it_daily(
    hub: HubUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await route(hub, tmp_path, monkeypatch)
    data = str(hub.settings.data)
    token = (await bdi("admin", "token", "rotate", "--data", data))["token"]
    base = f"http://127.0.0.1:{hub.server.web_port}/api/admin"
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as api:
        assert "/purge" in (await api.get("/openapi.json")).json()["paths"]
        dry = await api.post("/purge", json={"dry_run": True})
        assert dry.status_code == 200 and dry.json()["archived"] == []
        assert (await api.post("/purge", json={"dry_run": "yes"})).status_code == 400

    upkeep = hub.server.pipeline.upkeep
    upkeep.clock = lambda: datetime.now(UTC) + timedelta(days=31)
    upkeep.next_retention = 0.0  # due at the next sweep

    async def archived() -> bool:
        return len(archive(hub)) == 3

    await until(archived)
    assert await hub.inbox(RECIPIENT) == {} and await hub.inbox(SENDER) == {}
    assert upkeep.next_retention > time.monotonic() + 3600  # the next one, tomorrow


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(30):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
