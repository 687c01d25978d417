"""`bdi backup` while uploads stream, `bdi restore` into a new folder, and a hub served from
it (issue 15): every movement and every inbox file that existed when the backup began is
there, readable over SFTP, and nothing is delivered twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hubkit import HubUnderTest, Party, gpg, hub_running, make_parties
from support import SAMPLES

from bdi.backup import SNAPSHOT_TRIES
from bdi.pipeline.retries import RetryPolicy
from bdi.routing.writer import parse_file, write_file

SAMPLE = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
BAD = (SAMPLES / "broken" / "RCOU010234_00311_000094.edi").read_bytes()  # a `.log`
SENDER, RECIPIENT = "COU010234", "CIE000311"
BDI = Path(sys.executable).with_name("bdi")
FAST = RetryPolicy(first_delay_s=0.05, max_delay_s=0.2, sweep_s=0.1)


def name(n: int) -> str:
    return f"RCOU010234_00311_{n:06d}.edi"


def big_plain() -> bytes:
    """~100 KiB: its content is a file of contents/, its delivery a file of the inbox."""
    [section] = parse_file(SAMPLE)
    return write_file([replace(section, records=section.records * 160)])


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT, "GIE000001"]) as made:
        yield made


def seal_uncompressed(hub: HubUnderTest, plain: bytes) -> bytes:
    """Sealed without compression: over 64 KiB, so the upload goes to the spool."""
    party = hub.parties[SENDER]
    args = ["--trust-model", "always", "--compress-algo", "none", "--sign",
            "--local-user", party.fingerprint, "--encrypt", "--recipient", hub.hub_fingerprint,
            "--output", "-"]  # fmt: skip
    sealed = gpg(party.pgp.home, *args, data=plain)
    assert len(sealed) > 64 * 1024
    return sealed


@dataclass
class Stream:
    """Good files uploaded over SFTP in a loop, until stopped: every third one big."""

    hub: HubUnderTest
    tmp: Path
    done: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self) -> None:
        small = self.hub.seal(SENDER, SAMPLE, self.tmp)
        big = seal_uncompressed(self.hub, big_plain())
        async with self.hub.sftp(SENDER) as sftp:
            while not self.stop.is_set():
                sealed = big if self.done % 3 == 2 else small
                async with sftp.open(f"/outbox/{name(1000 + self.done)}", "wb") as f:
                    await f.write(sealed)
                async with self.progress:
                    self.done += 1
                    self.progress.notify_all()

    async def reach(self, count: int) -> None:
        async with asyncio.timeout(60), self.progress:
            await self.progress.wait_for(lambda: self.done >= count)


async def bdi(
    *args: str, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        str(BDI), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await proc.communicate()
    done = subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())
    assert (done.returncode == 0) == ok, done.stderr
    return done


async def snapshot(
    hub: HubUnderTest,
) -> tuple[dict[int, tuple[str, str]], dict[str, dict[str, bytes]]]:
    """Every movement, and every inbox file with its bytes, of every participant."""
    moves = {
        m.id or 0: (m.recipient_id, m.file_name) for m in await hub.server.hub.store.movements()
    }
    return moves, {p: await hub.inbox(p) for p in hub.parties}


@pytest.mark.sqlite_only  # `bdi backup` copies the SQLite database (PostgreSQL: pg_dump)
async def test_a_backup_taken_while_uploads_stream_restores_everything_once(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    data, dest, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    async with hub_running(data, parties) as hub:
        hub.server.pipeline.retries.policy = FAST
        await hub.upload(SENDER, name(1), hub.seal(SENDER, SAMPLE, tmp_path))
        await hub.upload(SENDER, name(2), seal_uncompressed(hub, big_plain()))
        await hub.upload(SENDER, name(94), hub.seal(SENDER, BAD, tmp_path))
        await hub.settled()
        stream = Stream(hub, tmp_path)
        streaming = asyncio.create_task(stream.run())
        await stream.reach(4)
        movements, inboxes = await snapshot(hub)  # just before the backup begins
        before = stream.done
        taken = json.loads((await bdi("backup", str(dest), "--data", str(data), "--json")).stdout)
        assert stream.done > before  # uploads went on during the backup
        stream.stop.set()
        await streaming
        await hub.settled()
        assert taken["counts"]["movements"] >= len(movements)
        assert taken["files"] > 0 and (dest / "backup.json").exists()
        assert not (data / "backup-hold").exists()  # the hard links are gone
        again = await bdi("backup", str(dest), "--data", str(data), ok=False)
        assert "is not an empty folder" in again.stderr

    refused = await bdi("restore", str(dest), "--data", str(data), ok=False)
    assert "is not an empty folder" in refused.stderr
    await bdi("restore", str(dest), "--data", str(restored), "--json")
    async with hub_running(restored, parties) as served:
        await served.settled()
        got_movements, got_inboxes = await snapshot(served)
        assert movements.items() <= got_movements.items()
        for participant, files in inboxes.items():
            for file, sealed in files.items():
                assert got_inboxes[participant].get(file) == sealed, (participant, file)
        received = got_inboxes[RECIPIENT]
        delivered = sorted(f for r, f in got_movements.values() if r == RECIPIENT)
        assert sorted(received) == delivered  # each movement's file once, no `_2` twin
        assert served.open_delivery(RECIPIENT, received[name(1)], tmp_path) == (
            SAMPLE, served.hub_fingerprint
        )  # fmt: skip
        assert served.open_delivery(RECIPIENT, received[name(2)], tmp_path)[0] == big_plain()


async def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    done = await bdi("restore", str(tmp_path / "nothing"), "--data", str(tmp_path / "d"), ok=False)
    assert "not a complete backup" in done.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.sqlite_only  # `bdi backup` copies the SQLite database (PostgreSQL: pg_dump)
async def test_a_file_missing_from_the_folder_itself_is_named_after_every_snapshot(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """A job unfinished at T whose upload is gone: each snapshot is taken again in case its
    job just ended, up to SNAPSHOT_TRIES; then the backup goes on and names the file."""
    data = tmp_path / "data"
    async with hub_running(data, parties) as hub:
        await hub.upload(SENDER, name(1), hub.seal(SENDER, SAMPLE, tmp_path))
        await hub.settled()
    with contextlib.closing(sqlite3.connect(data / "bdi.sqlite3")) as db, db:
        db.execute(
            "INSERT INTO job (participant_id, upload_name, spool_name, size, received_at, state)"
            " VALUES (?, ?, 'lost.pgp', 1, '2026-01-01 00:00:00', 'received')",
            (SENDER, name(2)),
        )
    done = await bdi("backup", str(tmp_path / "b"), "--data", str(data), "--json")
    taken = json.loads(done.stdout)
    assert (taken["snapshots"], taken["missing"]) == (SNAPSHOT_TRIES, ["spool/lost.pgp"])
    assert "backup.missing" in done.stderr
    other = await bdi("backup", str(tmp_path / "c"), "--data", str(data), ok=False,
                      env={"BDI_DATABASE_URL": "postgresql+asyncpg://db/bdi"})  # fmt: skip
    assert "only the embedded SQLite database" in other.stderr
