"""What ordinary clients need of an upload (HUB.md, "Uploading"), probed with a real asyncssh
client against the real server.

- For a while after its take-in, the name still answers `stat` and `setstat` (not listed).
- lftp's temporary name `.in.NAME` is taken in at the rename to NAME.
- A temporary upload can be resumed: appended to, or written at its current end; `stat`
  answers how far it went; one untouched for `temporary_upload_max_age_s` is deleted.
- A close (or rename) whose take-in fails leaves nothing behind, and the client reads a short
  French message, never the hub's internals (SQL, traceback, paths): those go to the log.
- The SSH algorithms are OpenSSH's defaults; a failed handshake is logged with the client's
  version and address.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import cast

import asyncssh
import pytest
import pytest_asyncio
from dblock import database_locked
from hubkit import HubUnderTest, Party, db_rows, hub_running, make_parties
from sqlalchemy.exc import OperationalError
from sqlmodel import select
from structlog.testing import capture_logs
from support import SAMPLES

from bdi.config import Settings
from bdi.mailbox.view import MAX_NAME_BYTES
from bdi.sftp import client_error
from bdi.store.models import Job

pytestmark = pytest.mark.asyncio(loop_scope="module")

SENDER, OTHER = "COU010234", "CIE000311"
SAMPLE = SAMPLES / "RCOU010234_00311_000001.edi"
GARBAGE = b"not an OpenPGP message"
BIG = os.urandom(200 * 1024)  # past what an upload may hold in memory: written to a file
WAIT = 10.0  # seconds: bound of every wait on a condition
LEAKS = ("sqlite", "traceback", "select", "insert", "database", "/tmp", "/work", ".py")


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, OTHER]) as made:
        yield made


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sftp-uploads")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(work: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    async with hub_running(work / "data", parties) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sftp(hub: HubUnderTest) -> AsyncIterator[asyncssh.SFTPClient]:
    async with hub.sftp(SENDER) as client:
        yield client


async def put(sftp: asyncssh.SFTPClient, path: str, data: bytes, mode: str = "wb") -> None:
    async with sftp.open(path, mode) as f:
        await f.write(data)


async def listed(sftp: asyncssh.SFTPClient, folder: str = "/outbox") -> set[str]:
    return {n for n in await sftp.listdir(folder) if n not in (".", "..")}


async def jobs(hub: HubUnderTest) -> list[str]:
    async with hub.server.hub.store.session() as s:
        return [job.upload_name for job in (await s.exec(select(Job))).all()]


def outbox_files(hub: HubUnderTest) -> set[str]:
    return {p.name for p in (hub.settings.mailboxes / SENDER / "outbox").iterdir()}


def spool_files(hub: HubUnderTest) -> set[str]:
    return {p.name for p in hub.settings.spool.iterdir()}


# -- 1. a name just taken in ------------------------------------------------------------------
@pytest.mark.parametrize("by_rename", [False, True])
async def test_a_name_taken_in_still_answers_stat_and_setstat(
    hub: HubUnderTest, sftp: asyncssh.SFTPClient, by_rename: bool
) -> None:
    name = f"RCOU010234_00311_00070{int(by_rename)}.edi"
    before = time.time()
    if by_rename:
        await put(sftp, f"/outbox/{name}.part", GARBAGE)
        await sftp.rename(f"/outbox/{name}.part", f"/outbox/{name}")
    else:
        await put(sftp, f"/outbox/{name}", GARBAGE)
    assert name in await jobs(hub)  # taken in
    assert name not in await listed(sftp)
    for attrs in (await sftp.stat(f"/outbox/{name}"), await sftp.lstat(f"/outbox/{name}")):
        assert attrs.size == len(GARBAGE) and attrs.type == asyncssh.FILEXFER_TYPE_REGULAR
        assert attrs.mtime is not None and int(before) <= attrs.mtime <= time.time()
    await sftp.utime(f"/outbox/{name}", (1_700_000_000, 1_700_000_000))
    await sftp.chmod(f"/outbox/{name}", 0o644)
    assert (await sftp.stat(f"/outbox/{name}")).mtime != 1_700_000_000  # changed nothing
    assert (await jobs(hub)).count(name) == 1
    with pytest.raises(asyncssh.SFTPPermissionDenied):  # still no reading back
        await sftp.open(f"/outbox/{name}", "rb")
    async with hub.sftp(OTHER) as other:  # another participant knows nothing of it
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await other.stat(f"/outbox/{name}")
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await other.utime(f"/outbox/{name}", (0, 0))


# -- 2. lftp's temporary name -----------------------------------------------------------------
async def test_lftp_temporary_name_is_taken_in_at_the_rename(
    hub: HubUnderTest, sftp: asyncssh.SFTPClient
) -> None:
    name = "RCOU010234_00311_000710.edi"
    temp = f"/outbox/.in.{name}"
    await put(sftp, temp, GARBAGE)
    assert f".in.{name}" in await listed(sftp)
    assert (await sftp.stat(temp)).size == len(GARBAGE)
    assert name not in await jobs(hub)
    await sftp.rename(temp, f"/outbox/{name}")
    assert name in await jobs(hub) and f".in.{name}" not in await jobs(hub)
    assert not {name, f".in.{name}"} & await listed(sftp)
    for hidden in ("/outbox/.in.", "/outbox/.up-0123", "/outbox/.x.part", "/inbox/.in.x.edi"):
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await put(sftp, hidden, b"x")


# -- 3. resuming a temporary upload -----------------------------------------------------------
@pytest.mark.parametrize("mode", ["ab", "r+b"])
async def test_a_temporary_upload_resumes_where_it_stopped(
    hub: HubUnderTest, sftp: asyncssh.SFTPClient, mode: str
) -> None:
    part = f"/outbox/resumed-{mode.replace('+', 'plus')}.part"
    await put(sftp, part, BIG[:1000])
    done = (await sftp.stat(part)).size
    assert done == 1000
    async with sftp.open(part, mode) as f:  # append, or write (no truncation) at the end
        assert (await f.stat()).size == done
        await f.write(BIG[done:], done if mode == "r+b" else 0)  # an append ignores offsets
    assert (await sftp.stat(part)).size == len(BIG)
    disk = hub.settings.mailboxes / SENDER / "outbox" / part.removeprefix("/outbox/")
    assert disk.read_bytes() == BIG
    await sftp.remove(part)


async def test_stat_answers_how_far_a_temporary_upload_went(
    hub: HubUnderTest, sftp: asyncssh.SFTPClient
) -> None:
    """While it is written, even from another session, and after its connection was lost."""
    part = "/outbox/cut.filepart"
    async with hub.sftp(SENDER) as writer:
        f = await writer.open(part, "wb")
        await f.write(BIG[:5000])
        assert (await sftp.stat(part)).size == 5000
    assert (await sftp.stat(part)).size == 5000  # the session ended, the upload stays
    await put(sftp, part, BIG[5000:], "ab")
    assert (hub.settings.mailboxes / SENDER / "outbox" / "cut.filepart").read_bytes() == BIG
    await sftp.remove(part)


async def test_the_server_sweeps_old_temporary_uploads(tmp_path: Path) -> None:
    """A hub of its own (its own participants: registering them issues new passwords)."""
    data = tmp_path / "data"
    with make_parties([SENDER]) as own:
        async with (
            hub_running(data, own, temporary_upload_max_age_s=0) as zero,
            zero.sftp(SENDER) as client,
        ):
            await put(client, "/outbox/forgotten.part", b"half")
            held = await client.open("/outbox/RCOU010234_00311_000777.edi.part", "wb")
            await held.write(BIG[:100])  # an upload still open in a session: not swept
            assert await zero.server.sweep_temporary_uploads() == 1
            assert "forgotten.part" not in await listed(client)
            await held.write(BIG[100:], 100)
            await held.close()
            part = "/outbox/RCOU010234_00311_000777.edi"
            await client.rename(f"{part}.part", part)  # taken in whole, at its rename
            sizes = db_rows(zero.settings, "SELECT size FROM job WHERE upload_name = :n",
                            n="RCOU010234_00311_000777.edi")  # fmt: skip
            assert sizes == [(len(BIG),)]
    assert Settings().temporary_upload_max_age_s == 24 * 3600


async def test_a_temporary_upload_opened_while_the_sweep_ran_is_not_written_into_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep looks at the handles open, then removes files in a thread: a session opening
    one in between (played here by a sweep that saw no handle) must not write on into a file
    gone from its name. Its handle dies with a clear error; the name starts afresh."""
    data = tmp_path / "data"
    part = "/outbox/RCOU010234_00311_000778.edi.part"
    with make_parties([SENDER]) as own:
        async with (
            hub_running(data, own, temporary_upload_max_age_s=0) as zero,
            zero.sftp(SENDER) as client,
        ):
            late = await client.open(part, "wb")
            await late.write(BIG[:100])
            writing = zero.server.recent.writing
            monkeypatch.setattr(writing, "held", frozenset)  # the sweep looked before the open
            assert await zero.server.sweep_temporary_uploads() == 1
            with pytest.raises(asyncssh.SFTPFailure, match="inactif depuis trop longtemps"):
                await late.write(BIG[100:200], 100)
            with pytest.raises(asyncssh.SFTPError):
                await late.close()
            assert await listed(client) == set()  # nothing of it left, nothing taken in
            await put(client, part, BIG)  # the name starts afresh
            await client.rename(part, part.removesuffix(".part"))
            sizes = db_rows(zero.settings, "SELECT size FROM job WHERE upload_name = :n",
                            n="RCOU010234_00311_000778.edi")  # fmt: skip
            assert sizes == [(len(BIG),)]


# -- 4 and 5. failures: nothing left, nothing leaked ------------------------------------------
def leaks(message: str) -> list[str]:
    return [word for word in LEAKS if word in message.lower()]


async def test_a_take_in_failing_on_a_locked_database_leaves_nothing_and_tells_little(
    hub: HubUnderTest, sftp: asyncssh.SFTPClient
) -> None:
    name, part = "RCOU010234_00311_000720.edi", "/outbox/locked.part"
    await put(sftp, part, BIG)
    await hub.settled()  # the jobs before are done with their spool files
    known_jobs, on_disk, spooled = await jobs(hub), outbox_files(hub), spool_files(hub)
    with capture_logs() as logs, database_locked(hub.settings):
        with pytest.raises(asyncssh.SFTPFailure) as closing:
            await put(sftp, f"/outbox/{name}", BIG)  # a file-backed upload: its close fails
        with pytest.raises(asyncssh.SFTPFailure) as renaming:
            await sftp.rename(part, f"/outbox/{name}")
    for failed in (closing.value, renaming.value):
        assert "réessayez" in failed.reason and not leaks(failed.reason), failed.reason
    for failed in (closing.value, renaming.value):
        assert failed.reason == "hub occupé, réessayez plus tard"  # the hub's, not the file's
    failures = [e for e in logs if e["event"] == "sftp.fault"]
    assert [(e["op"], e["fault"]) for e in failures] == [
        ("close", "database"),
        ("rename", "database"),
    ]
    assert all("lock" in e["error"] for e in failures)  # the details: in the log
    # nothing was taken in, nothing stayed: no hidden upload, no spool file, the .part intact
    assert await jobs(hub) == known_jobs
    assert outbox_files(hub) == on_disk and spool_files(hub) == spooled
    assert (await sftp.stat(part)).size == len(BIG)
    # the lock gone, the same rename takes it in
    await sftp.rename(part, f"/outbox/{name}")
    assert await jobs(hub) == [*known_jobs, name]


async def test_a_take_in_failing_leaves_the_other_sessions_handles_writing(
    hub: HubUnderTest, sftp: asyncssh.SFTPClient
) -> None:
    """A rename whose take-in fails (the database locked) leaves the temporary upload as it
    was, and the handles other sessions hold on it too: they write on, and the rename that
    later takes it in has their bytes."""
    name, part = "RCOU010234_00311_000721.edi", "/outbox/held.part"
    await put(sftp, part, BIG[:100_000])
    async with hub.sftp(SENDER) as other:
        held = await other.open(part, "ab")
        with database_locked(hub.settings), pytest.raises(asyncssh.SFTPFailure):
            await sftp.rename(part, f"/outbox/{name}")
        await held.write(BIG[100_000:])
        await held.close()
    assert (await sftp.stat(part)).size == len(BIG)
    await sftp.rename(part, f"/outbox/{name}")
    assert (await jobs(hub))[-1] == name
    sizes = db_rows(hub.settings, "SELECT size FROM job WHERE upload_name = :n", n=name)
    assert sizes == [(len(BIG),)]


async def test_a_name_too_long_for_a_file_is_refused_cleanly(
    hub: HubUnderTest, sftp: asyncssh.SFTPClient
) -> None:
    long = "R" + "x" * MAX_NAME_BYTES + ".edi"
    part = "/outbox/long.part"
    await put(sftp, part, BIG)
    await hub.settled()  # the jobs before are done with their spool files
    known_jobs, on_disk, spooled = await jobs(hub), outbox_files(hub), spool_files(hub)
    with pytest.raises(asyncssh.SFTPFailure) as renaming:
        await sftp.rename(part, f"/outbox/{long}")
    with pytest.raises(asyncssh.SFTPFailure) as opening:
        await put(sftp, f"/outbox/{long}", BIG)
    for failed in (renaming.value, opening.value):
        assert failed.reason == f"nom de plus de {MAX_NAME_BYTES} octets"
    assert await jobs(hub) == known_jobs
    assert outbox_files(hub) == on_disk and spool_files(hub) == spooled
    await sftp.remove(part)


async def test_errors_are_short_and_french(sftp: asyncssh.SFTPClient) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: sftp.stat("/outbox/nothing.edi"),
        lambda: sftp.open("/inbox/x.edi", "wb"),
        lambda: sftp.mkdir("/outbox/sub"),
        lambda: sftp.remove("/hub-public-key.asc"),
        lambda: sftp.rename("/inbox/a", "/outbox/b"),
        lambda: sftp.readlink("/outbox"),
        lambda: sftp.listdir("/elsewhere"),
    ]
    for call in calls:
        with pytest.raises(asyncssh.SFTPError) as raised:
            await call()
        reason = raised.value.reason
        assert reason and len(reason) < 60 and not leaks(reason), reason
        assert not any(w in reason for w in ("not ", "only", "cannot")), reason


# -- 6. SSH algorithms ------------------------------------------------------------------------
async def connect_with(hub: HubUnderTest, cipher: str) -> str:
    async with asyncssh.connect(
        "127.0.0.1", hub.port, username=SENDER, password=hub.parties[SENDER].password,
        known_hosts=None, client_keys=None, agent_path=None, encryption_algs=[cipher],
    ) as conn:  # fmt: skip
        return cast(str, conn.get_extra_info("send_cipher"))


async def test_openssh_default_ciphers_aes_gcm_first(hub: HubUnderTest) -> None:
    offered = Settings().ssh_ciphers
    assert offered[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert set(offered) == {"aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                            "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr",
                            "aes256-ctr"}  # fmt: skip
    for cipher in offered:
        assert await connect_with(hub, cipher) == cipher


async def test_a_failed_handshake_is_logged_with_the_client(hub: HubUnderTest) -> None:
    with capture_logs() as logs:
        with pytest.raises(asyncssh.Error):
            await connect_with(hub, "aes128-cbc")  # not offered
        async with asyncio.timeout(WAIT):  # the server sees the loss a moment later
            while not (failed := [e for e in logs if e["event"] == "ssh.handshake_failed"]):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    assert failed[0]["client_version"].startswith("SSH-2.0-AsyncSSH_")
    assert failed[0]["address"] == "127.0.0.1" and failed[0]["stage"] == "kex"


async def test_a_full_disk_under_sqlite_is_told_as_a_full_disk() -> None:
    """SQLite says "disk I/O error" when its journal cannot grow: the client reads that the
    hub's disk is full, not an internal error (seen in the soak's disk-full spell)."""
    full = OperationalError("INSERT …", {}, sqlite3.OperationalError("disk I/O error"))
    told = client_error(full, "close", "COU010234")
    assert isinstance(told, asyncssh.SFTPNoSpaceOnFilesystem)
    assert told.reason == "espace disque du hub plein, réessayez plus tard"
    assert client_error(ValueError("bug"), "close", "COU010234").reason.startswith("erreur interne")
