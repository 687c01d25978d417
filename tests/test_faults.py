"""The hub's own faults are never the sender's (HUB.md, "When the hub itself fails"): with
its gpg-agent killed again and again, its disk full, its database locked by another process,
every upload still gets the answer it would have had, once, without a restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest
from dblock import LOCKER
from hubkit import FAST, HubUnderTest, Party, hub_running, make_parties
from structlog.testing import capture_logs
from support import SAMPLES

from bdi.routing.scan import CheckContext, check_bytes
from bdi.routing.writer import parse_file, write_file

SENDER, RECIPIENT = "COU010234", "CIE000311"
GOOD = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()


def name(n: int) -> str:
    return f"RCOU010234_00311_{n:06d}.edi"


def big_plain(size: int) -> bytes:
    """The good sample's section with its records repeated up to `size` bytes."""
    [section] = parse_file(GOOD)
    data = write_file([replace(section, records=section.records * (size // len(GOOD) + 1))])
    assert check_bytes(data, CheckContext(name(1), SENDER)).fully_accepted
    return data


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT, "GIE000001"]) as made:
        yield made


async def delivered_once(hub: HubUnderTest, names: list[str]) -> None:
    """Every name delivered once to the recipient, and no `.log` for the sender."""
    await hub.settled()
    assert sorted(await hub.inbox(RECIPIENT)) == sorted(names)
    assert await hub.inbox(SENDER) == {}


async def test_an_agent_killed_again_and_again_refuses_nothing(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    home = hub.settings.gnupg_home
    stop = threading.Event()

    def killer() -> None:
        while not stop.wait(0.05):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)

    names = [name(n) for n in range(1, 41)]
    sealed = {n: hub.seal(SENDER, GOOD, tmp_path) for n in names}
    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with capture_logs() as logs:
            for batch in (names[i : i + 4] for i in range(0, len(names), 4)):
                await asyncio.gather(*(hub.upload(SENDER, n, sealed[n]) for n in batch))
            await hub.settled()
    finally:
        stop.set()
        thread.join()
    await delivered_once(hub, names)
    assert not [e for e in logs if e["event"] in ("upload.refused", "job.quarantined")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A file system of its own for the data folder, small enough to fill."""
    # a folder of its own per test: on PostgreSQL the data folder's path names its database
    mount = Path(tempfile.mkdtemp(prefix="bdi-full-", dir="/tmp"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def fill(folder: Path, leave: int) -> Path:
    """A file that takes all the room of `folder`'s file system but `leave` bytes."""
    filler = folder / "filler"
    found = os.statvfs(folder)
    size = found.f_bavail * found.f_frsize - leave
    with filler.open("wb") as f:
        f.truncate(0)
        chunk = b"\0" * (1 << 20)
        while size > 0:
            size -= f.write(chunk[: min(len(chunk), size)])
    return filler


async def test_a_full_disk_delays_a_job_which_goes_once_room_is_back(
    small_disk: Path, parties: dict[str, Party], tmp_path: Path
) -> None:
    async with hub_running(small_disk / "data", parties) as hub:
        hub.server.pipeline.retries.policy = replace(FAST, max_delay_s=60)  # room, not time
        plain = big_plain(6 << 20)  # spilled to the spool when decrypted: 6 MiB to write
        sealed = hub.seal(SENDER, plain, tmp_path)
        filler = fill(small_disk, leave=len(sealed) + (2 << 20))
        with capture_logs() as logs:
            await hub.upload(SENDER, name(7), sealed)  # taken in: it fits

            async def waiting_for_room() -> bool:
                return any(e.get("fault") == "disk" for e in logs)

            async with asyncio.timeout(30):
                while not await waiting_for_room():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert await hub.inbox(RECIPIENT) == {}
            filler.unlink()  # room again: the job goes without waiting out its delay
            await delivered_once(hub, [name(7)])
        assert not [e for e in logs if e["event"] in ("upload.refused", "job.quarantined")]
        delivery = (await hub.inbox(RECIPIENT))[name(7)]
        assert hub.open_delivery(RECIPIENT, delivery, tmp_path)[0] == plain


async def test_a_write_the_disk_cannot_hold_whole_fails_and_nothing_is_taken_in(
    small_disk: Path, parties: dict[str, Party]
) -> None:
    """One write request of 600 KB with 300 KB of room: the disk takes what it can (a short
    write), and the request must fail rather than be acknowledged, its upload with it."""
    async with hub_running(small_disk / "data", parties) as hub:
        await hub.settled()
        async with hub.sftp(SENDER) as sftp:
            filler = fill(small_disk, leave=300_000)
            try:
                upload = await sftp.open(f"/outbox/{name(8)}", "wb", block_size=1 << 20)
                with pytest.raises(asyncssh.SFTPFailure):
                    await upload.write(os.urandom(600_000))
                with pytest.raises(asyncssh.SFTPFailure):
                    await upload.close()
            finally:
                filler.unlink()
        await hub.settled()
        assert await hub.inbox(SENDER) == {}  # nothing taken in: no .log of a truncated upload


@pytest.mark.slow
@pytest.mark.sqlite_only  # PostgreSQL's lock waits: tests/test_sftp_uploads.py's lock test
async def test_a_database_locked_by_another_process_for_30_s_delays_only(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    plain = big_plain(4 << 20)  # a job long enough to be caught by the lock
    sealed = hub.seal(SENDER, plain, tmp_path)
    database = hub.settings.db_url
    locker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCKER, database, "30",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert locker.stdin is not None and locker.stdout is not None
    assert (await locker.stdout.readline()).strip() == b"ready"
    with capture_logs() as logs:
        await hub.upload(SENDER, name(9), sealed)
        locker.stdin.write(b"go\n")
        await locker.stdin.drain()
        assert (await locker.stdout.readline()).strip() == b"locked"
        await locker.wait()
        await delivered_once(hub, [name(9)])
    assert [e["fault"] for e in logs if e["event"] == "job.failed"][:1] == ["database"]
    assert not [e for e in logs if e["event"] in ("upload.refused", "job.quarantined")]
