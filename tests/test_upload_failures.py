"""An upload that fails, or that leaves its name, under a handle still open (HUB.md,
"Uploading", "Limits that protect the market"), with real clients against the real server.

- A write that fails for a reason that discards the upload (too large, quota) kills its
  handle: every later write and its close fail with the same error, and nothing is taken in
  (OpenSSH's `sftp` used to exit 0 while the .part it resumed was deleted).
- A discarded upload gives its bytes back to the quota at once, not 5 s later.
- A temporary upload taken in (renamed) by one session no longer changes: the other handles
  on it, in any session, fail from then on, and while it is being taken in nobody can open,
  rename or remove it; so are they when it is renamed or removed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio
from asyncssh.constants import FXP_WRITE
from asyncssh.packet import String, UInt64
from hubkit import HubUnderTest, Party, hub_running, make_parties, until
from sqlmodel import col, select
from support import SAMPLES, Held

from bdi.store.models import Job

pytestmark = pytest.mark.asyncio(loop_scope="module")

SENDER, RECIPIENT, HOARDER = "COU010234", "CIE000311", "CIE000638"
MAX_UPLOAD, QUOTA = 1_000_000, 3_000_000
TOO_LARGE = f"fichier plus grand que le maximum de {MAX_UPLOAD} octets"
SAMPLE = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
WAIT = 10.0  # seconds: bound of every wait on a condition


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT, HOARDER]) as made:
        yield made


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("upload-failures")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(work: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    limits = {"max_upload_bytes": MAX_UPLOAD, "quota_bytes": QUOTA}
    async with hub_running(work / "data", parties, **limits) as running:
        yield running


async def put(sftp: asyncssh.SFTPClient, path: str, data: bytes, mode: str = "wb") -> None:
    async with sftp.open(path, mode) as f:
        await f.write(data)


def outbox(hub: HubUnderTest, edi_id: str = SENDER) -> set[str]:
    """The files of the outbox on disk, hidden uploads in progress included."""
    return {p.name for p in (hub.settings.mailboxes / edi_id / "outbox").iterdir()}


async def job_sizes(hub: HubUnderTest, name: str) -> list[int]:
    async with hub.server.hub.store.session() as s:
        return list((await s.exec(select(Job.size).where(col(Job.upload_name) == name))).all())


# -- A. a write failed: the handle is dead ---------------------------------------------------
@pytest.mark.parametrize("temporary", [False, True])
async def test_after_a_write_too_large_every_write_and_the_close_fail(
    hub: HubUnderTest, temporary: bool
) -> None:
    """A resumed .part (append) or a plain upload: the write past the maximum fails, then a
    small one that would fit fails alike, and so does the close; nothing is left."""
    name = f"RCOU010234_00311_00010{int(temporary)}.edi"
    path = f"/outbox/{name}.part" if temporary else f"/outbox/{name}"
    async with hub.sftp(SENDER) as sftp:
        if temporary:
            await put(sftp, path, os.urandom(500_000))
        f = await sftp.open(path, "ab" if temporary else "wb")
        await f.write(os.urandom(400_000), 0 if temporary else 500_000)
        with pytest.raises(asyncssh.SFTPFailure, match=TOO_LARGE):
            await f.write(os.urandom(200_000), 900_000)
        for offset in (0, 10):  # would fit: the handle is dead all the same
            with pytest.raises(asyncssh.SFTPFailure, match=TOO_LARGE):
                await f.write(b"x" * 10, offset)
        with pytest.raises(asyncssh.SFTPFailure, match=TOO_LARGE):
            await f.close()
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.stat(path)
        assert not outbox(hub)  # no .part, no hidden upload
    await hub.settled()
    assert await job_sizes(hub, name) == []


async def test_after_a_write_request_that_cannot_be_read_the_upload_is_given_up(
    hub: HubUnderTest,
) -> None:
    """A WRITE whose offset or data cannot be read (a broken client) is answered as a bad
    message, and what it carried is missing from the upload: its handle is dead as after a
    failed write; its later writes and its close fail, and nothing is taken in."""
    name = "RCOU010234_00311_000120.edi"
    async with hub.sftp(SENDER) as sftp:
        f = await sftp.open(f"/outbox/{name}", "wb")
        await f.write(SAMPLE[:1000])
        handler, handle = getattr(sftp, "_handler"), getattr(f, "_handle")  # noqa: B009
        with pytest.raises(asyncssh.SFTPBadMessage):  # the offset, and no data
            await handler._make_request(FXP_WRITE, String(handle), UInt64(1000))
        with pytest.raises(asyncssh.SFTPFailure, match="illisible"):
            await f.write(SAMPLE[1000:2000], 1000)
        with pytest.raises(asyncssh.SFTPFailure, match="illisible"):
            await f.close()
        assert not outbox(hub)  # no hidden upload left
    await hub.settled()
    assert await job_sizes(hub, name) == []


def known_hosts_line(hub: HubUnderTest) -> str:
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(hub.settings.host_key)],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    algo, blob = public.split()[:2]
    return f"[127.0.0.1]:{hub.port} {algo} {blob}\n"


async def openssh_batch(hub: HubUnderTest, folder: Path, batch: str) -> tuple[int, str]:
    """`sftp -b` as the sender, in `folder`: its exit code and output."""
    home = folder / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    known_hosts = home / ".ssh" / "known_hosts"
    known_hosts.write_text(known_hosts_line(hub))
    (folder / "batch").write_text(batch)
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env.update(HOME=str(home), SSHPASS=hub.parties[SENDER].password)
    proc = await asyncio.create_subprocess_exec(
        "sshpass", "-e", "sftp", "-o", "BatchMode=no", "-b", "batch", "-P", str(hub.port),
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "PubkeyAuthentication=no",
        f"{SENDER}@127.0.0.1", cwd=folder, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_openssh_reput_past_the_maximum_fails(hub: HubUnderTest, tmp_path: Path) -> None:
    """As seen: `put` of 500 KB, then `reput` of 1.2 MB (its writes pipelined, the later
    ones answered OK): sftp exited 0 and the client learnt at the rename that the .part was
    gone. Now the reput fails, and the batch stops there."""
    if not (shutil.which("sftp") and shutil.which("sshpass")):
        pytest.skip("sftp or sshpass is not installed (scripts/system-deps --test)")
    name = "RCOU010234_00311_000110.edi"
    big = os.urandom(1_200_000)
    (tmp_path / "b500k").write_bytes(big[:500_000])
    (tmp_path / "b1200k").write_bytes(big)
    code, out = await openssh_batch(hub, tmp_path, "\n".join([
        f"put b500k /outbox/{name}.part",
        f"reput b1200k /outbox/{name}.part",
        f"rename /outbox/{name}.part /outbox/{name}",
    ]) + "\n")  # fmt: skip
    assert code != 0, out
    assert f'write remote "/outbox/{name}.part": Failure' in out, out
    assert "rename" not in out.split("reput", 1)[1], out  # the batch stopped at the reput
    assert not outbox(hub)
    await hub.settled()
    assert await job_sizes(hub, name) == []


# -- A and C. quota: the handle is dead, the bytes given back --------------------------------
async def test_past_the_quota_the_handle_is_dead_and_its_bytes_count_no_more(
    hub: HubUnderTest,
) -> None:
    """The write that crosses the quota kills its handle (a later one that would fit fails
    too, and the close), and what the upload had written is room again at once."""
    async with hub.sftp(HOARDER) as sftp:
        for n in range(3):  # 2.7 MB kept of 3 MB
            await put(sftp, f"/outbox/kept{n}.part", b"k" * 900_000)
        f = await sftp.open("/outbox/over.part", "wb")
        with pytest.raises(asyncssh.SFTPFailure, match="quota dépassé"):
            await f.write(b"o" * 400_000)
        with pytest.raises(asyncssh.SFTPFailure, match="quota dépassé"):
            await f.write(b"o" * 10, 0)  # would fit
        with pytest.raises(asyncssh.SFTPFailure, match="quota dépassé"):
            await f.close()
        assert "over.part" not in outbox(hub, HOARDER)
        await put(sftp, "/outbox/fits.part", b"f" * 250_000)  # the 300 KB left, at once
        for n in range(3):
            await sftp.remove(f"/outbox/kept{n}.part")
        await sftp.remove("/outbox/fits.part")


@pytest.mark.parametrize("temporary", [False, True])
async def test_uploads_too_large_give_their_bytes_back_at_once(
    hub: HubUnderTest, temporary: bool
) -> None:
    """Three uploads of 1.5 MB refused (a 3 MB quota): the mailbox holds nothing, and an
    upload of 900 KB goes through at once (it used to get « quota dépassé » for 5 s). As
    temporary uploads, each resumed past the maximum: the bytes of the .part go back too."""
    async with hub.sftp(HOARDER) as sftp:
        for n in range(3):
            path = f"/outbox/RCIE000638_00311_00020{n}.edi" + (".part" if temporary else "")
            if temporary:
                await put(sftp, path, b"p" * 900_000)
            with pytest.raises(asyncssh.SFTPFailure, match=TOO_LARGE):
                await put(sftp, path, b"t" * (600_000 if temporary else 1_500_000),
                          "ab" if temporary else "wb")  # fmt: skip
        assert not outbox(hub, HOARDER)
        await put(sftp, "/outbox/after.part", b"a" * 900_000)
        await sftp.remove("/outbox/after.part")


@pytest.mark.parametrize("temporary", [False, True])
async def test_uploads_taken_in_leave_the_quota_at_once(hub: HubUnderTest, temporary: bool) -> None:
    """Three uploads of 900 KB taken in (at their close, or at the rename of their .part),
    then one more at once: what left the outbox for the spool counts no more (not merely
    after the next measure, 5 s later)."""
    async with hub.sftp(HOARDER) as sftp:
        for n in range(4):
            name = f"/outbox/RCIE000638_00311_0003{n}{int(temporary)}.edi"
            await put(sftp, name + (".part" if temporary else ""), b"k" * 900_000)
            if temporary:
                await sftp.rename(name + ".part", name)
        assert not outbox(hub, HOARDER)


# -- B. an upload taken in no longer changes --------------------------------------------------
@pytest.mark.parametrize("mode", ["ab", "wb"])
async def test_an_upload_taken_in_by_another_session_no_longer_changes(
    hub: HubUnderTest, work: Path, mode: str
) -> None:
    """Session A writes the start of a sealed upload; session B renames it (its take-in);
    A's later writes and close fail: what is processed is what was taken in, the start only
    (refused with a .log), never the whole message (once delivered although the log said
    `upload.accepted size 300`)."""
    name = f"RCOU010234_00311_00030{int(mode == 'wb')}.edi"
    part = f"/outbox/{name}.part"
    sealed = hub.seal(SENDER, SAMPLE, work)
    async with hub.sftp(SENDER) as a, hub.sftp(SENDER) as b:
        f = await a.open(part, mode)
        await f.write(sealed[:300], 0)
        await b.rename(part, f"/outbox/{name}")
        with pytest.raises(asyncssh.SFTPFailure, match="fichier pris en charge entre-temps"):
            await f.write(sealed[300:], 300)
        with pytest.raises(asyncssh.SFTPFailure, match="fichier pris en charge entre-temps"):
            await f.close()
        await put(a, part, b"a new upload under the same name")  # the name is free again
        await a.remove(part)
    await hub.settled()
    assert await job_sizes(hub, name) == [300]
    assert name not in await hub.inbox(RECIPIENT)
    log = (await hub.inbox(SENDER))[f"ERREUR{name.removesuffix('.edi')}.log"]
    assert b"DECHIFFREMENT" in log


async def test_one_session_writing_one_file_twice(hub: HubUnderTest) -> None:
    """Both handles die with the take-in; a write too large through one deletes the file,
    and the other handle fails from then on (it used to write into a deleted file)."""
    name = "RCOU010234_00311_000310.edi"
    part = f"/outbox/{name}.part"
    async with hub.sftp(SENDER) as sftp:
        first, second = await sftp.open(part, "wb"), await sftp.open(part, "ab")
        await first.write(b"1" * 100, 0)
        await second.write(b"2" * 100)
        await sftp.rename(part, f"/outbox/{name}")
        for f in (first, second):
            with pytest.raises(asyncssh.SFTPFailure, match="pris en charge entre-temps"):
                await f.write(b"3", 200)
            with pytest.raises(asyncssh.SFTPFailure, match="pris en charge entre-temps"):
                await f.close()
        assert await job_sizes(hub, name) == [200]

        first, second = await sftp.open(part, "wb"), await sftp.open(part, "r+b")
        await second.write(b"2" * 100, 0)
        with pytest.raises(asyncssh.SFTPFailure, match=TOO_LARGE):
            await first.write(b"1", MAX_UPLOAD)
        with pytest.raises(asyncssh.SFTPFailure, match="fichier supprimé entre-temps"):
            await second.write(b"2", 100)
        with pytest.raises(asyncssh.SFTPFailure, match=TOO_LARGE):
            await first.close()
        with pytest.raises(asyncssh.SFTPFailure, match="fichier supprimé entre-temps"):
            await second.close()
        assert f"{name}.part" not in outbox(hub)


@pytest.mark.parametrize("move", ["remove", "rename"])
async def test_a_temporary_upload_removed_or_renamed_by_another_session(
    hub: HubUnderTest, move: str
) -> None:
    part, other = "/outbox/moved.part", "/outbox/elsewhere.part"
    async with hub.sftp(SENDER) as a, hub.sftp(SENDER) as b:
        f = await a.open(part, "wb")
        await f.write(b"before", 0)
        if move == "remove":
            await b.remove(part)
            told = "fichier supprimé entre-temps"
        else:
            await b.rename(part, other)
            told = "fichier renommé entre-temps"
        with pytest.raises(asyncssh.SFTPFailure, match=told):
            await f.write(b" after", 6)
        with pytest.raises(asyncssh.SFTPFailure, match=told):
            await f.close()
        if move == "rename":  # the file renamed holds what was written before, only
            assert (await b.stat(other)).size == len(b"before")
            await b.remove(other)
    assert not outbox(hub)


async def test_a_temporary_upload_being_taken_in_cannot_be_reached(hub: HubUnderTest) -> None:
    """While its take-in waits for the store (held), its name can be neither opened, renamed
    nor removed (else a write could reach the file on its way to the spool); then it can."""
    name = "RCOU010234_00311_000320.edi"
    part = f"/outbox/{name}.part"
    async with hub.sftp(SENDER) as a, hub.sftp(SENDER) as b:
        await put(a, part, b"taken in")
        async with Held(hub.server.pipeline.journal):
            renaming = asyncio.create_task(a.rename(part, f"/outbox/{name}"))
            await until(lambda: _gone(hub, f"{name}.part"), WAIT)  # moved, not yet committed
            busy = "fichier en cours de prise en charge"
            with pytest.raises(asyncssh.SFTPFailure, match=busy):
                await b.open(part, "ab")
            with pytest.raises(asyncssh.SFTPFailure, match=busy):
                await b.remove(part)
            assert not renaming.done()
        await renaming
        assert await job_sizes(hub, name) == [len(b"taken in")]
        await put(b, part, b"again")
        await b.remove(part)


async def _gone(hub: HubUnderTest, name: str) -> bool:
    return name not in outbox(hub)
