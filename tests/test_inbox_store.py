"""Inboxes whose small files are kept in the store: over SFTP they are files like the others
(listed, stat'ed, read, downloaded, deleted), their names stay taken until they are deleted,
across a restart too, and a delivery too big for the store is a file of the inbox folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import asyncssh
import pytest
from hubkit import HubUnderTest, Party, db_rows, hub_running
from sqlalchemy import Table
from structlog.testing import capture_logs
from support import SAMPLES

from bdi.mailbox.names import Names
from bdi.mailbox.storage import Mailboxes
from bdi.mailbox.stored import StoredInbox
from bdi.mailbox.view import BytesHandle
from bdi.pipeline import prepare
from bdi.store.db import make_engine
from bdi.store.inbox import hold_names
from bdi.store.journal import Journal, sync_engine
from bdi.store.models import InboxName
from bdi.store.repo import Store

SENDER, RECIPIENT = "COU010234", "CIE000311"
NAME = "RCOU010234_00311_000001.edi"
PLAIN = (SAMPLES / NAME).read_bytes()
REFUSED = "RCOU010234_00311_000094.edi"  # broken: SIGNATURE, refused with a .log


def kept(hub: HubUnderTest, participant: str) -> dict[str, int]:
    """Name -> size of the participant's files kept in the store."""
    query = "SELECT name, size FROM inboxfile WHERE participant_id = :p"
    return {name: size for name, size in db_rows(hub.settings, query, p=participant)}


def folder(hub: HubUnderTest, participant: str) -> list[str]:
    return sorted(p.name for p in (hub.settings.mailboxes / participant / "inbox").iterdir())


async def test_a_small_delivery_is_kept_in_the_store_and_served_as_a_file(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with hub_running(tmp_path / "data", parties) as hub:
        with capture_logs() as logs:
            await hub.upload(SENDER, NAME, hub.seal(SENDER, PLAIN, tmp_path))
            await hub.settled()
        assert folder(hub, RECIPIENT) == []
        [(name, size)] = kept(hub, RECIPIENT).items()
        assert name == NAME
        events = {e["event"]: e for e in logs}
        assert {"upload.accepted", "delivery.done", "job.done"} <= set(events)
        assert events["delivery.done"]["file"] == NAME and events["delivery.done"]["size"] == size
        async with hub.sftp(RECIPIENT) as sftp:
            [entry] = [e for e in await sftp.readdir("/inbox") if e.filename == NAME]
            assert entry.attrs.size == size and entry.attrs.mtime
            assert (await sftp.stat(f"/inbox/{NAME}")).size == size
            await sftp.get(f"/inbox/{NAME}", str(tmp_path / "got.pgp"))
            got, signer = hub.open_delivery(
                RECIPIENT, (tmp_path / "got.pgp").read_bytes(), tmp_path
            )
            assert got == PLAIN and signer == hub.hub_fingerprint
            await sftp.remove(f"/inbox/{NAME}")
            assert NAME not in await sftp.listdir("/inbox")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.remove(f"/inbox/{NAME}")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.stat(f"/inbox/{NAME}")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.open(f"/inbox/{NAME}", "rb")
        assert kept(hub, RECIPIENT) == {}


async def test_a_log_is_kept_in_the_store_and_its_owner_alone_sees_it(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with hub_running(tmp_path / "data", parties) as hub:
        plain = (SAMPLES / "broken" / REFUSED).read_bytes()
        with capture_logs() as logs:
            await hub.upload(SENDER, REFUSED, hub.seal(SENDER, plain, tmp_path))
            await hub.settled()
        log_name = f"ERREUR{REFUSED.removesuffix('.edi')}_1.log"
        assert [e["file"] for e in logs if e["event"] == "log.written"] == [log_name]
        assert list(kept(hub, SENDER)) == [log_name] and folder(hub, SENDER) == []
        assert "SIGNATURE" in (await hub.inbox(SENDER))[log_name].decode()
        assert await hub.inbox(RECIPIENT) == {}
        async with hub.sftp(RECIPIENT) as sftp:
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.open(f"/inbox/{log_name}", "rb")
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.remove(f"/inbox/{log_name}")
        assert list(kept(hub, SENDER)) == [log_name]


async def test_a_delivery_too_big_for_the_store_is_a_file_listed_with_the_others(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with hub_running(tmp_path / "data", parties) as hub:
        await hub.upload(SENDER, NAME, hub.seal(SENDER, PLAIN, tmp_path))
        await hub.settled()
        monkeypatch.setattr(prepare, "CONTENT_IN_ROW", 0)  # every content is "big" now
        big = NAME.replace("000001", "000002")
        await hub.upload(SENDER, big, hub.seal(SENDER, PLAIN, tmp_path))
        await hub.settled()
        assert list(kept(hub, RECIPIENT)) == [NAME] and folder(hub, RECIPIENT) == [big]
        inbox = await hub.inbox(RECIPIENT)
        assert list(inbox) == [NAME, big]
        for sealed in inbox.values():
            assert hub.open_delivery(RECIPIENT, sealed, tmp_path)[0] == PLAIN
        async with hub.sftp(RECIPIENT) as sftp:
            await sftp.remove(f"/inbox/{big}")
        assert folder(hub, RECIPIENT) == [] and list(kept(hub, RECIPIENT)) == [NAME]


async def test_a_kept_name_stays_taken_until_deleted_across_a_restart(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    data = tmp_path / "data"
    async with hub_running(data, parties) as hub:
        await hub.upload(SENDER, NAME, hub.seal(SENDER, PLAIN, tmp_path))
        await hub.settled()
    async with hub_running(data, parties) as hub:  # the names are read back from the store
        await hub.upload(SENDER, NAME, hub.seal(SENDER, PLAIN, tmp_path))
        await hub.settled()
        second = NAME.replace(".edi", "_2.edi")
        assert sorted(kept(hub, RECIPIENT)) == [NAME, second]
        async with hub.sftp(RECIPIENT) as sftp:
            await sftp.remove(f"/inbox/{NAME}")
        await hub.upload(SENDER, NAME, hub.seal(SENDER, PLAIN, tmp_path))  # the name is free
        await hub.settled()
        assert sorted(await hub.inbox(RECIPIENT)) == [NAME, second]


def test_a_kept_file_open_for_reading_has_data_and_no_hole_before_its_end() -> None:
    """What asyncssh's sparse-range query asks of an open file (SEEK_DATA / SEEK_HOLE)."""
    handle = BytesHandle(b"12345")
    assert handle.seek(0, os.SEEK_DATA) == 0 and handle.seek(3, os.SEEK_DATA) == 3
    assert handle.seek(0, os.SEEK_HOLE) == 5 and handle.seek(5, os.SEEK_HOLE) == 5
    with pytest.raises(OSError, match="no data"):
        handle.seek(5, os.SEEK_DATA)


async def test_a_job_with_a_delivery_file_and_a_kept_log_places_the_one_and_keeps_the_other(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Section 1 is delivered (a file here: every content is "big"), section 2 refused (its
    `.log` kept in the store): the job is planned, its delivery placed, then it ends."""
    monkeypatch.setattr(prepare, "CONTENT_IN_ROW", 0)
    name = "PCOU010234_00311_000090.edi"
    plain = (SAMPLES / "broken" / name).read_bytes()
    async with hub_running(tmp_path / "data", parties) as hub:
        await hub.upload(SENDER, name, hub.seal(SENDER, plain, tmp_path))
        await hub.settled()
        assert folder(hub, RECIPIENT) == [name] and kept(hub, RECIPIENT) == {}
        log_name = f"ERREUR{name.removesuffix('.edi')}_2.log"
        assert folder(hub, SENDER) == [] and list(kept(hub, SENDER)) == [log_name]
        jobs = db_rows(hub.settings, "SELECT state, outcome FROM job")
        placed = db_rows(hub.settings, "SELECT count(*) FROM output WHERE delivered_at IS NULL")
        assert jobs == [("done", "partial")] and placed == [(0,)]


async def test_many_kept_names_skip_the_inbox_files_the_held_the_promised_and_each_other(
    tmp_path: Path,
) -> None:
    """A streamed upload's `.log` names, chosen in batches inside the transaction that holds
    them: a file of the folder (one arrived between two batches too), a name the store holds
    (a batch before, in the same transaction, too) or promised is passed over, no name is
    given twice; once committed, the store's rows keep them from any other output."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'names.db'}"
    readers = sync_engine(url, readers=True)
    cast(Table, cast(Any, InboxName).__table__).create(readers)
    journal = Journal.open(url)
    try:
        mailboxes = Mailboxes(tmp_path / "mailboxes")
        mailboxes.ensure(SENDER)
        (mailboxes.inbox(SENDER) / "a.log").write_bytes(b"")
        names = Names(mailboxes, StoredInbox(Store(make_engine(url)), journal, readers),
                      {SENDER: {"c.log"}})  # fmt: skip
        with readers.begin() as conn:
            hold_names(conn, [(SENDER, "b.log")])
        with readers.begin() as conn:
            first = names.choose_stored(conn, SENDER, ["a.log", "b.log"])
            assert first == ["a_2.log", "b_2.log"]
            hold_names(conn, [(SENDER, name) for name in first])
            (mailboxes.inbox(SENDER) / "e.log").write_bytes(b"")  # before the next batch
            wanted = ["c.log", "e.log", "d.log", "d.log", "a.log"]
            second = names.choose_stored(conn, SENDER, wanted)
            assert second == ["c_2.log", "e_2.log", "d.log", "d_2.log", "a_3.log"]
            hold_names(conn, [(SENDER, name) for name in second])
        assert names.take(SENDER, "d.log") == "d_3.log"  # the store is asked
        assert names.take(SENDER, "d.log") == "d_4.log"  # the promise too
    finally:
        await journal.close()
        readers.dispose()
