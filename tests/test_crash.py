"""Crash safety: the server process is killed with SIGKILL at random moments while a client
uploads, and restarted each time. In the end every upload the hub acknowledged has produced
exactly its delivery or its `.log` — none missing, none twice — and no upload, acknowledged
or not, produced anything twice. Small deliveries are kept in the store's inbox, big ones
are files placed after their plan is committed: both are among the uploads."""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import asyncssh
import pytest
from hubkit import Party, db_rows, make_parties, prepare_data, sftp_client
from support import SAMPLES

from bdi.config import Settings, load_settings
from bdi.pipeline.prepare import CONTENT_IN_ROW
from bdi.routing.scan import CheckContext, check_bytes
from bdi.routing.writer import parse_file, write_file

BDI = Path(sys.executable).with_name("bdi")
SENDER, RECIPIENT = "COU010234", "CIE000311"
GOOD = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
BAD = (SAMPLES / "broken/RCOU010234_00311_000094.edi").read_bytes()  # SIGNATURE: a .log
UPLOADS, KILLS = 60, 20


def big_file() -> bytes:
    """The good sample's section with its records repeated: a delivery too big for the store."""
    [section] = parse_file(GOOD)
    times = 2 * CONTENT_IN_ROW // len(GOOD) + 1  # the header and footer are not repeated
    data = write_file([replace(section, records=section.records * times)])
    assert len(data) > CONTENT_IN_ROW
    assert check_bytes(data, CheckContext("RCOU010234_00311_000001.edi", SENDER)).fully_accepted
    return data


def kind_of(n: int) -> str:
    return {4: "bad", 2: "big"}.get(n % 5, "good")


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT, "COU010999"]) as made:
        yield made


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    settings: Settings
    process: subprocess.Popen[bytes] | None = None
    kills: int = 0

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(BDI), "serve", "--data", str(self.settings.data),
             "--sftp-port", str(self.settings.sftp_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@dataclass
class Ledger:
    acknowledged: set[str] = field(default_factory=set)
    attempted: list[str] = field(default_factory=list)


async def upload_once(settings: Settings, party: Party, name: str, sealed: bytes) -> None:
    async with sftp_client(settings.sftp_port, party) as sftp:
        async with sftp.open(f"/outbox/{name}", "wb") as f:
            await f.write(sealed)
        # asyncssh's client close returns quietly, sending nothing, when the session died
        # before it (a kill between the write's answer and the close): one more request
        # fails then, so only a close really sent and answered counts as acknowledged
        await sftp.realpath("/outbox")


async def client(
    settings: Settings, party: Party, sealed: dict[str, bytes], ledger: Ledger
) -> None:
    """Upload every file; a failed attempt is retried under a new name."""
    for n in range(UPLOADS):
        kind = kind_of(n)
        attempt, began = 0, time.monotonic()
        while True:
            name = f"RCOU010234_00311_{n:03d}{attempt:03d}.edi"
            ledger.attempted.append(name)
            try:
                await upload_once(settings, party, name, sealed[kind])
            except (OSError, asyncssh.Error):
                attempt += 1
                assert time.monotonic() - began < 120, f"{name}: the hub keeps refusing uploads"
                continue
            ledger.acknowledged.add(name)
            break


async def listening(port: int) -> None:
    """Wait until the restarted server accepts connections (it takes ~1 s to start)."""
    async with asyncio.timeout(60):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


async def killer(server: Server, done: asyncio.Event) -> None:
    """Kill the server at a random moment of each life, restart it, until enough kills."""
    rng = random.Random(20261128)
    while not done.is_set() or server.kills < KILLS:
        await listening(server.settings.sftp_port)
        await asyncio.sleep(rng.uniform(0.0, 0.8))  # chaos timing, not synchronisation
        server.kill()
        server.start()


def unfinished_jobs(settings: Settings) -> int:
    return int(db_rows(settings, "SELECT count(*) FROM job WHERE state != 'done'")[0][0])


def inbox_names(settings: Settings, participant: str) -> list[str]:
    """An inbox, as its owner would list it: its folder's files and those kept in the store
    (each name once: a list with a twin would fail the checks on it)."""
    on_disk = [p.name for p in (settings.mailboxes / participant / "inbox").iterdir()]
    query = "SELECT name FROM inboxfile WHERE participant_id = :p"
    kept = [row[0] for row in db_rows(settings, query, p=participant)]
    return sorted(on_disk + kept)


async def wait_until_settled(settings: Settings) -> None:
    """The server is another process: its database is the only condition to wait on."""
    async with asyncio.timeout(120):
        while unfinished_jobs(settings):  # noqa: ASYNC110
            await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_sigkill_loses_and_duplicates_nothing(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    settings = load_settings(None, data=tmp_path / "data", sftp_port=free_port())
    await prepare_data(settings, parties)
    me = parties[SENDER]
    hub_fpr = (settings.data / "hub-fingerprint").read_text().strip()
    sealed = {}
    for kind, plain in (("good", GOOD), ("bad", BAD), ("big", big_file())):
        (tmp_path / kind).write_bytes(plain)
        me.pgp.sign_encrypt(tmp_path / kind, tmp_path / f"{kind}.pgp", hub_fpr, me.fingerprint)
        sealed[kind] = (tmp_path / f"{kind}.pgp").read_bytes()

    server, ledger, done = Server(settings), Ledger(), asyncio.Event()
    server.start()
    try:
        chaos = asyncio.create_task(killer(server, done))
        await client(settings, me, sealed, ledger)
        done.set()
        await chaos
        await wait_until_settled(settings)
    finally:
        server.stop()

    assert server.kills >= KILLS
    inbox, logs = inbox_names(settings, RECIPIENT), inbox_names(settings, SENDER)
    good = {n for n in ledger.acknowledged if int(n[17:20]) % 5 != 4}
    bad = {n for n in ledger.acknowledged if int(n[17:20]) % 5 == 4}
    assert len(good) + len(bad) == UPLOADS
    # every acknowledged upload produced its output, under its own name (no suffix = no twin)
    assert good <= set(inbox)
    assert {f"ERREUR{n.removesuffix('.edi')}_1.log" for n in bad} <= set(logs)
    # nothing else than attempted uploads, each at most once
    attempted = set(ledger.attempted)
    assert set(inbox) <= attempted
    assert {f"ERREUR{n.removesuffix('.edi')}_1.log" for n in attempted} >= set(logs)
    assert not [n for n in inbox + logs if "_2." in n]
    on_disk = {p.name for p in (settings.mailboxes / RECIPIENT / "inbox").iterdir()}
    assert {n for n in inbox if kind_of(int(n[17:20])) == "big"} == on_disk  # the rest: stored
    movements = db_rows(
        settings,
        "SELECT m.file_name, m.content_path, c.movement_id IS NOT NULL FROM movement m"
        " LEFT JOIN storedcontent c ON c.movement_id = m.id",
    )
    assert sorted(m[0] for m in movements) == inbox
    # each movement's content kept once, in the store or as a file (a job run again after a
    # kill rewrote its own file), and no file left that no movement refers to
    assert all(bool(path) != bool(in_row) for _, path, in_row in movements)
    folder = settings.data / "contents"
    files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert files == sorted(path for _, path, _ in movements if path)


def many_flows(flows: int) -> bytes:
    """The good sample's section with its flow repeated: a streamed upload of `flows` flows."""
    [section] = parse_file(GOOD)
    return write_file([replace(section, records=section.records * flows)])


async def job_state(
    settings: Settings, name: str, wanted: str, stored: Callable[[list[int]], bool] = bool
) -> list[int]:
    """Wait for the upload's job to reach `wanted` with its movements' flow rows stored so
    far passing `stored` (polled: the server is another process); those rows."""
    query = "SELECT state FROM job WHERE upload_name = :n"
    async with asyncio.timeout(120):
        while True:
            rows = flow_rows(settings, name)
            if [r[0] for r in db_rows(settings, query, n=name)] == [wanted] and stored(rows):
                return rows
            await asyncio.sleep(0.005)


def flow_rows(settings: Settings, name: str) -> list[int]:
    query = (
        "SELECT count(o.id) FROM movement m LEFT JOIN flowoccurrence o ON o.movement_id = m.id"
        " WHERE m.file_name = :n GROUP BY m.id"
    )
    return [int(row[0]) for row in db_rows(settings, query, n=name)]


@pytest.mark.slow
async def test_a_streamed_upload_killed_while_its_flows_are_stored_as_drafts(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """SIGKILL while a big upload is read, some of its flow rows stored under drafts (its
    job `received`): after the restart the job runs again, its drafts of the first run
    removed, and in the end the recipient has the delivery once and the Suivi each flow
    once, under one movement and no draft left."""
    settings = load_settings(None, data=tmp_path / "data", sftp_port=free_port())
    await prepare_data(settings, parties)
    me, flows, name = parties[SENDER], 20_000, "RCOU010234_00311_777001.edi"
    hub_fpr = (settings.data / "hub-fingerprint").read_text().strip()
    (tmp_path / "plain").write_bytes(many_flows(flows))
    me.pgp.sign_encrypt(tmp_path / "plain", tmp_path / "sealed", hub_fpr, me.fingerprint)
    server = Server(settings)
    server.start()
    try:
        await listening(settings.sftp_port)
        await upload_once(settings, me, name, (tmp_path / "sealed").read_bytes())
        drafted = await drafted_rows(settings, name, lambda n: n > 0)
        server.kill()
        assert await drafted_rows(settings, name, lambda n: True) >= drafted
        server.start()
        await job_state(settings, name, "done", lambda rows: True)
    finally:
        server.stop()
    assert server.kills == 1 and 0 < drafted < flows  # caught mid-way
    assert flow_rows(settings, name) == [flows]  # one movement, each flow once
    assert db_rows(settings, "SELECT count(*) FROM output WHERE kind = 'draft'") == [(0,)]
    assert inbox_names(settings, RECIPIENT) == [name]  # placed once, under its own name
    assert inbox_names(settings, SENDER) == []
    assert_records_in_content(settings, name)


async def drafted_rows(settings: Settings, name: str, wanted: Callable[[int], bool]) -> int:
    """Wait for the upload's job, still `received`, to have flow rows under drafts passing
    `wanted`; how many."""
    query = (
        "SELECT count(o.id) FROM job j JOIN output d ON d.job_id = j.id AND d.kind = 'draft'"
        " JOIN movement m ON m.output_id = d.id JOIN flowoccurrence o ON o.movement_id = m.id"
        " WHERE j.upload_name = :n AND j.state = 'received'"
    )
    async with asyncio.timeout(120):
        while True:
            count = int(db_rows(settings, query, n=name)[0][0])
            if wanted(count):
                return count
            await asyncio.sleep(0.005)


def assert_records_in_content(settings: Settings, name: str) -> None:
    """Each flow's row points at its own records in the content, as stored again after
    the restart: its head record first, with its clé, one flow after the other."""
    query = (
        "SELECT o.content_start, o.content_end, o.optiflux_key, m.content_path FROM movement m"
        " JOIN flowoccurrence o ON o.movement_id = m.id WHERE m.file_name = :n ORDER BY o.seq"
    )
    rows = db_rows(settings, query, n=name)
    content = (settings.data / "contents" / rows[0][3]).read_bytes()
    end = content.index(b"\n") + 1  # after the section's header
    for start, stop, clé, _ in rows:
        head = content[start : start + 640]
        assert start == end and head[:10] == b"2222222222" and clé.encode() in head
        end = stop
