"""Soak of the real hub (issue 13): thousands of uploads while the hub is SIGKILLed hundreds of
times, its gpg-agent killed, its disk full for a while; then every acknowledged upload must
have exactly one answer.

    .venv/bin/python bench/soak.py --uploads 2000 --kills 200 --agent-kills 20

Not part of CI. It runs as root (it mounts a tmpfs for the data folder, to fill it).

The hub is the real `bdi serve`, a subprocess over a data folder made with `bdi init` and
`bdi admin participant add --json`, on a tmpfs mounted here. The participants of the samples'
referential have their own GnuPG homes (short, under /tmp). The uploads (bench/soak_support.py:
good samples, broken samples, OpenPGP refusals, malformed and large files) go over a few
concurrent asyncssh SFTP sessions, each under a unique Optiflux name
`<type letter><EDI id>_<5 digits>_<6-digit counter>.edi`. An upload is acknowledged when the
close of its written file returned OK (and the session answered one more request after it:
asyncssh's close returns quietly when the session died before it). One that is not
acknowledged is uploaded again under a new name.

Meanwhile the hub is SIGKILLed at random moments (and restarted at once on the same data
folder; the kills are spread over the uploads), its gpg-agent is killed
(`gpgconf --kill gpg-agent` on its GnuPG home), and once the tmpfs is filled with a filler
file for a few seconds. The hub's stderr (JSON events) goes to `hub.log` in the work folder.

At the end the hub runs until nothing is waiting (`bdi admin jobs list --which waiting`) and
the inboxes have not changed for a while; quarantined jobs are reported and run again
(`bdi admin jobs retry`). Then, from the inboxes as their owners list them over SFTP:
- every acknowledged upload has each of its answers (deliveries in the recipients' inboxes
  under the upload name, `.log` files in the sender's) exactly once;
- an upload not acknowledged has all of its answers once (it was taken in anyway) or none;
- nothing else: no `_2` twin, no stray file, no INTERNE `.log` but those of quarantined jobs;
- each `.log` holds the expected problem codes; a sample of the deliveries (and every large
  one) is decrypted with the recipient's key: the hub's signature over the expected bytes.
The figures are printed; the exit status is 1 on any violation, with its evidence (the
upload, its kind, what was found, the hub's log lines about it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import asyncssh
from soak_support import (
    MIB,
    REFUSED_KINDS,
    WEIGHTS,
    Content,
    Corpus,
    Expected,
    Party,
    SoakError,
    answers,
    log_codes,
    make_party,
    participant_ids,
    without_suffix,
)

BDI = Path(sys.executable).absolute().parent / "bdi"
REPO = Path(__file__).resolve().parents[1]
SPELL_UPLOADS = 40  # uploads let go ahead of the kills during the disk-full spell
Emit = Callable[[str], None]


def emit(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f} s"


# --- the hub as a subprocess ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_bdi(bdi: Path, *args: str) -> str:
    done = subprocess.run([str(bdi), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SoakError(f"bdi {' '.join(args[:3])} failed: {done.stderr.strip()}")
    return done.stdout


async def run_bdi_async(bdi: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(bdi), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SoakError(f"bdi {' '.join(args[:3])} failed: {err.decode(errors='replace')}")
    return out.decode()


@dataclass(slots=True)
class Hub:
    """`bdi serve` on a fixed SFTP port; killed and restarted on the same data folder."""

    bdi: Path
    data: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    life: int = 0  # processes started so far
    kills: int = 0
    start_failures: list[str] = field(default_factory=list)  # exits before answering
    unexpected_exits: list[str] = field(default_factory=list)  # exits not caused by us
    restart_s: list[float] = field(default_factory=list)  # start to a login
    probe: tuple[str, str] = ("", "")  # a participant and its password
    _started_at: float = 0.0
    _answered: bool = False

    def mark(self, event: str, **fields: object) -> None:
        """A line of our own in the hub's log (JSON too, event `soak.*`)."""
        line = {"event": f"soak.{event}", "t": round(time.time(), 3), **fields}
        with self.log.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def start(self) -> None:
        self.life += 1
        argv = [str(self.bdi), "serve", "--data", str(self.data), "--sftp-port", str(self.port)]
        argv += ["--web-port", "0"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=self.log.parent,
            )  # fmt: skip
        self._started_at, self._answered = time.monotonic(), False
        self.mark("started", life=self.life, pid=self.proc.pid)

    def kill(self) -> None:
        assert self.proc is not None
        pid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # the hub's process only: its gpg children live on
        self.proc.wait()
        self.kills += 1
        self.mark("killed", life=self.life, pid=pid, kill=self.kills)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.mark("stopped", life=self.life)

    def _exited(self) -> None:
        """The process ended without our kill: count it and start another."""
        assert self.proc is not None
        what = f"life {self.life} (pid {self.proc.pid}) exited with {self.proc.returncode}"
        (self.unexpected_exits if self._answered else self.start_failures).append(what)
        self.mark("exited", life=self.life, code=self.proc.returncode)
        self.start()

    async def ready(self) -> None:
        """Wait until the SFTP port answers (a participant logs in), once per life of the hub;
        a hub that exits on its own is counted and started again."""
        deadline = time.monotonic() + 180.0
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                self._exited()
                await asyncio.sleep(0.5)
                continue
            if self._answered:
                return
            if await self._login():
                if not self._answered:
                    self._answered = True
                    self.restart_s.append(time.monotonic() - self._started_at)
                return
            await asyncio.sleep(0.05)
        raise SoakError(f"the hub did not answer on port {self.port} within 180 s")

    async def _login(self) -> bool:
        """A whole login, not a mere connection: the hub's defender scores a connection that
        goes away before its login against its address (127.0.0.1, every client here)."""
        user, password = self.probe
        try:
            async with asyncio.timeout(60):
                conn = await asyncssh.connect(
                    "127.0.0.1", self.port, username=user, password=password,
                    known_hosts=None, client_keys=None, agent_path=None,
                )  # fmt: skip
                conn.close()
        except (OSError, asyncssh.Error, TimeoutError):
            return False
        return True


def kill_agent(gnupg_home: Path) -> None:
    subprocess.run(
        ["gpgconf", "--homedir", str(gnupg_home), "--kill", "gpg-agent"],
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip


def hub_at(revision: str, folder: Path) -> Path:
    """The package tree of a commit (its files from `git archive`, laid out as the package is
    installed), so that edits in progress in the work tree do not change the hub between two
    restarts; a `bdi` command running it is written beside. Returns the tree's folder."""
    source = folder / "source"
    source.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    with (source / "pyproject.toml").open("rb") as f:
        folders = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    package = folder / "packages"
    for name, where in sorted(folders.items()):
        (package / name.replace(".", "/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source / where, package / name.replace(".", "/"))
    command = folder / "bdi"
    script = "import sys; from bdi.entry import main; sys.argv[0] = 'bdi'; main()"
    command.write_text(  # -P: not the current folder first (the work tree's bdi/ would win)
        f'#!/bin/sh\nPYTHONPATH={package} exec {sys.executable} -P -c "{script}" "$@"\n'
    )
    command.chmod(0o755)
    return package


def run_at(args: argparse.Namespace, argv: Sequence[str], work: Path) -> None:
    """Run this soak again over the tree of commit `args.at`: the hub and this process's
    own imports of bdi (the checker, OpenPGP) both come from it."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{args.at}^{{commit}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    package = hub_at(commit, work / "hub")
    env = {**os.environ, "PYTHONPATH": f"{package}:{Path(__file__).resolve().parent}"}
    env["BDI_SOAK_COMMIT"] = commit
    again = [sys.executable, "-P", str(Path(__file__).resolve()), *argv]
    again += ["--work", str(work), "--bdi", str(work / "hub" / "bdi")]
    sys.stdout.flush()
    os.execve(sys.executable, again, env)


# --- the data folder --------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    argv = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SoakError(f"cannot mount a tmpfs on {folder}: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def prepare(bdi: Path, data: Path, parties: dict[str, Party], work: Path) -> str:
    """`bdi init`, then each participant registered with its public key; returns the hub's
    fingerprint, after importing the hub's key into every participant's home."""
    run_bdi(bdi, "init", "--data", str(data))
    for party in parties.values():
        key = work / f"{party.edi_id}.asc"
        key.write_text(party.pgp.export_public(party.fingerprint))
        out = run_bdi(
            bdi, "admin", "participant", "add", party.edi_id, "--name", party.edi_id,
            "--email", f"{party.edi_id.lower()}@example.test", "--pgp-key", str(key),
            "--data", str(data), "--json",
        )  # fmt: skip
        party.password = json.loads(out)["password"]
    hub_key = (data / "hub-public-key.asc").read_text()
    for party in parties.values():
        party.pgp.import_public(hub_key)
    return (data / "hub-fingerprint").read_text().strip()


def fill(filler: Path) -> int:
    """Append to `filler` until its file system has no room left; the bytes written."""
    written = 0
    with filler.open("ab", buffering=0) as f:
        for size in (4 * MIB, 4096, 1):
            with contextlib.suppress(OSError):
                while count := f.write(b"\0" * size):
                    written += count
    return written


def hold_full(filler: Path, seconds: float) -> None:
    """Keep the file system full for `seconds`: what the hub frees is taken back at once."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        fill(filler)
        time.sleep(0.05)


# --- uploads ----------------------------------------------------------------------------


@dataclass(slots=True)
class Attempt:
    """One upload sent: a file opened in /outbox/ under a new name."""

    seq: int
    name: str
    content: Content
    upload: int  # index of the logical upload
    life: int  # the hub process running when it started
    start: float  # seconds since the soak's start
    end: float = 0.0
    stage: str = "open"  # where it stopped: open, write, close, confirm; "ack" when done
    error: str = ""
    in_spell: bool = False  # started or ended while the disk was full

    @property
    def acked(self) -> bool:
        return self.stage == "ack"


@dataclass(slots=True)
class Soak:
    """The shared state of the run."""

    args: argparse.Namespace
    hub: Hub
    parties: dict[str, Party]
    plan: list[Content]
    rng: random.Random
    t0: float = field(default_factory=time.monotonic)
    attempts: list[Attempt] = field(default_factory=list)
    acked_uploads: int = 0
    next_upload: int = 0
    sequence: int = 0
    given_up: list[int] = field(default_factory=list)
    connect_failures: Counter[str] = field(default_factory=Counter)
    agent_kills: int = 0
    spell_s: float = 0.0
    fill_s: float = 0.0
    peak_used_mib: float = 0.0
    spell_failures: int = 0
    spell: bool = False  # the disk-full spell, filling included: no kill meanwhile
    disk_full: bool = False  # the file system full
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    uploads_done: bool = False

    def now(self) -> float:
        return time.monotonic() - self.t0

    @property
    def progress(self) -> float:
        if self.uploads_done or not self.plan:
            return 1.0
        return self.acked_uploads / len(self.plan)

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with self.changed:
            await self.changed.wait_for(predicate)

    def done_at_least(self, fraction: float) -> bool:
        return self.progress >= fraction

    def attempts_at_least(self, count: int) -> bool:
        return len(self.attempts) >= count

    def may_start(self, index: int) -> bool:
        """The uploads go no further ahead of the kills than two lives of the hub, and
        SPELL_UPLOADS more while the disk is full (the hub is not killed meanwhile)."""
        kills: int = self.args.kills
        extra = SPELL_UPLOADS * kills if self.disk_full else 0
        return index * kills < (self.hub.kills + 2) * len(self.plan) + extra

    def new_name(self, content: Content) -> tuple[int, str]:
        self.sequence += 1
        if self.sequence > 999_999:
            raise SoakError("more than 999 999 names")
        return self.sequence, content.name(self.sequence)


class Sessions:
    """One worker's SFTP sessions, one per participant it uploads as, opened when needed."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.open: dict[str, tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]] = {}
        self.watches: set[asyncio.Task[None]] = set()

    async def _watch(self, edi_id: str, conn: asyncssh.SSHClientConnection) -> None:
        """Forget a session as soon as its connection is lost (the hub killed)."""
        await conn.wait_closed()
        if edi_id in self.open and self.open[edi_id][0] is conn:
            del self.open[edi_id]

    async def get(self, edi_id: str) -> asyncssh.SFTPClient:
        if edi_id in self.open:
            return self.open[edi_id][1]
        party = self.soak.parties[edi_id]
        failures = 0
        while True:
            try:
                async with asyncio.timeout(60):
                    conn = await asyncssh.connect(
                        "127.0.0.1", self.soak.hub.port, username=edi_id,
                        password=party.password, known_hosts=None, client_keys=None,
                        agent_path=None,
                    )  # fmt: skip
                    sftp = await conn.start_sftp_client()
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                self.soak.connect_failures[type(exc).__name__] += 1
                failures += 1
                if failures >= 200:
                    raise SoakError(f"cannot open a session as {edi_id}: {exc}") from exc
                await asyncio.sleep(self.soak.rng.uniform(0.1, 0.4))
                await self.soak.hub.ready()
                continue
            self.open[edi_id] = (conn, sftp)
            watch = asyncio.create_task(self._watch(edi_id, conn))
            self.watches.add(watch)
            watch.add_done_callback(self.watches.discard)
            return sftp

    def drop(self, edi_id: str) -> None:
        found = self.open.pop(edi_id, None)
        if found is not None:
            found[0].abort()

    def close(self) -> None:
        for edi_id in list(self.open):
            self.drop(edi_id)
        for watch in list(self.watches):
            watch.cancel()


async def send(sftp: asyncssh.SFTPClient, attempt: Attempt, data: bytes) -> None:
    """Open, write, close; then one more request, which fails if the session died before the
    close was answered."""
    attempt.stage = "open"
    f = await sftp.open(f"/outbox/{attempt.name}", "wb")
    try:
        attempt.stage = "write"
        await f.write(data)
    except BaseException:
        with contextlib.suppress(Exception):  # as a client does: the hub keeps nothing of it
            async with asyncio.timeout(5):
                await f.close()
        raise
    attempt.stage = "close"
    await f.close()
    attempt.stage = "confirm"
    await sftp.realpath("/outbox")
    attempt.stage = "ack"


async def uploader(soak: Soak, worker: int) -> None:
    sessions = Sessions(soak)
    kills = soak.args.kills
    try:
        while soak.next_upload < len(soak.plan):
            index = soak.next_upload
            soak.next_upload += 1
            if kills:
                await soak.until(partial(soak.may_start, index))
            await upload(soak, sessions, index)
    finally:
        sessions.close()


async def upload(soak: Soak, sessions: Sessions, index: int) -> None:
    """Upload one planned content until acknowledged, each time under a new name."""
    content = soak.plan[index]
    data = content.sealed.read_bytes()
    limit = 60 + 10 * len(data) / MIB
    for _ in range(soak.args.max_attempts):
        sftp = await sessions.get(content.sender)
        seq, name = soak.new_name(content)
        attempt = Attempt(seq, name, content, index, soak.hub.life, soak.now())
        attempt.in_spell = soak.disk_full
        soak.attempts.append(attempt)
        await soak.notify()
        try:
            async with asyncio.timeout(limit):
                await send(sftp, attempt, data)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"[:200]
            sessions.drop(content.sender)
        attempt.end = soak.now()
        attempt.in_spell = attempt.in_spell or soak.disk_full
        if attempt.acked:
            soak.acked_uploads += 1
            await soak.notify()
            return
        if attempt.in_spell:
            soak.spell_failures += 1
        await asyncio.sleep(soak.rng.uniform(0.05, 0.5))
    soak.given_up.append(index)
    soak.acked_uploads += 1  # counts as done for the pacing
    await soak.notify()


# --- chaos ------------------------------------------------------------------------------


async def killer(soak: Soak) -> None:
    """SIGKILL the hub at a random moment of each life, restart it at once. Half the kills
    come at a random time after the hub answers; the other half a few milliseconds after a
    random upload of that life started (in the middle of an upload, then). The k-th kill
    waits until k/kills of the uploads are acknowledged; none comes while the disk is full."""
    hub, kills, rng = soak.hub, soak.args.kills, soak.rng
    per_life = max(1, len(soak.plan) // max(1, kills))
    for k in range(kills):
        await soak.until(partial(soak.done_at_least, k / kills))
        await hub.ready()
        if rng.random() < 0.5:
            await asyncio.sleep(rng.uniform(0.0, soak.args.max_life))
        else:
            target = len(soak.attempts) + rng.randint(1, per_life)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2 * soak.args.max_life):
                    await soak.until(partial(soak.attempts_at_least, target))
            await asyncio.sleep(rng.uniform(0.0, 0.03))
        await soak.until(lambda: not soak.spell)
        hub.kill()
        hub.start()
        await soak.notify()
    await hub.ready()


async def agent_killer(soak: Soak) -> None:
    """Kill the hub's gpg-agent, the j-th time once j/agent_kills of the uploads are done."""
    home = soak.hub.data / "gnupg"
    count = soak.args.agent_kills
    for j in range(count):
        await soak.until(partial(soak.done_at_least, j / count))
        await asyncio.sleep(soak.rng.uniform(0.0, 3.0))
        await asyncio.to_thread(kill_agent, home)
        soak.agent_kills += 1
        soak.hub.mark("agent_killed", n=soak.agent_kills)


async def disk_spell(soak: Soak, mount: Path) -> None:
    """Once, about the middle of the uploads: fill the data folder's file system (the hub
    running), keep it full for a few seconds, then delete the filler."""
    at = soak.rng.uniform(0.35, 0.65)
    await soak.until(lambda: soak.progress >= at)
    soak.spell = True
    await soak.hub.ready()
    start = time.monotonic()
    soak.hub.mark("disk_filling")
    filler = mount / "filler"
    await asyncio.to_thread(fill, filler)
    full = time.monotonic()
    soak.hub.mark("disk_full", filled_in=round(full - start, 2))
    soak.disk_full = True
    await soak.notify()
    await asyncio.to_thread(hold_full, filler, soak.args.disk_full_s)
    filler.unlink()
    soak.fill_s, soak.spell_s = full - start, time.monotonic() - full
    soak.hub.mark("disk_room", full_for=round(soak.spell_s, 2))
    soak.disk_full = soak.spell = False
    await soak.notify()


def used_mib(folder: Path) -> float:
    found = os.statvfs(folder)
    return (found.f_blocks - found.f_bfree) * found.f_frsize / MIB


async def progress_reporter(soak: Soak, emit: Emit) -> None:
    while True:
        await asyncio.sleep(30)
        if not soak.spell:
            soak.peak_used_mib = max(soak.peak_used_mib, used_mib(soak.hub.data))
        emit(
            f"  [{soak.now():7.1f} s] uploads acknowledged {soak.acked_uploads}/"
            f"{len(soak.plan)}, attempts {len(soak.attempts)}, hub kills {soak.hub.kills}, "
            f"agent kills {soak.agent_kills}"
        )


# --- settling ---------------------------------------------------------------------------


class Inboxes:
    """The inboxes as their owners see them over SFTP (one session each, reopened if need be)."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.sessions = Sessions(soak)

    async def _retry(self, edi_id: str, op: Callable[[asyncssh.SFTPClient], Any]) -> Any:
        for _ in range(20):
            sftp = await self.sessions.get(edi_id)
            try:
                async with asyncio.timeout(120):
                    return await op(sftp)
            except (OSError, asyncssh.Error, TimeoutError):
                self.sessions.drop(edi_id)
                await self.soak.hub.ready()
        raise SoakError(f"cannot read the inbox of {edi_id}")

    async def names(self, edi_id: str) -> list[str]:
        async def listing(sftp: asyncssh.SFTPClient) -> list[str]:
            return sorted(n for n in await sftp.listdir("/inbox") if n not in (".", ".."))

        return cast(list[str], await self._retry(edi_id, listing))

    async def read(self, edi_id: str, name: str) -> bytes:
        async def reading(sftp: asyncssh.SFTPClient) -> bytes:
            async with sftp.open(f"/inbox/{name}", "rb") as f:
                return cast(bytes, await f.read())

        return cast(bytes, await self._retry(edi_id, reading))

    async def snapshot(self) -> dict[str, list[str]]:
        return {p: await self.names(p) for p in sorted(self.soak.parties)}

    def close(self) -> None:
        self.sessions.close()


async def jobs(soak: Soak, which: str) -> list[dict[str, Any]]:
    out = await run_bdi_async(
        soak.hub.bdi, "admin", "jobs", "list", "--which", which, "--data", str(soak.hub.data),
        "--json",
    )  # fmt: skip
    return cast(list[dict[str, Any]], json.loads(out))


async def settle(soak: Soak, inboxes: Inboxes, emit: Emit) -> bool:
    """Poll until nothing waits and the inboxes have not changed for `quiet_s` seconds."""
    deadline = time.monotonic() + soak.args.settle_timeout_s
    last: dict[str, list[str]] | None = None
    stable = time.monotonic()
    while time.monotonic() < deadline:
        await soak.hub.ready()
        try:
            waiting = await jobs(soak, "waiting")
        except SoakError as exc:  # the store busy: not settled yet
            waiting = [{"error": str(exc)}]
        now = await inboxes.snapshot()
        if now != last or waiting:
            last, stable = now, time.monotonic()
        elif time.monotonic() - stable >= soak.args.quiet_s:
            return True
        if waiting:
            emit(f"  [{soak.now():7.1f} s] {len(waiting)} jobs waiting")
        await asyncio.sleep(3)
    return False


# --- verification -----------------------------------------------------------------------


@dataclass(slots=True)
class Found:
    """What the inboxes hold for one attempt."""

    answers: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # exp. -> names
    interne: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Verdict:
    expected_acked: int = 0  # answers due to acknowledged uploads
    found_acked: int = 0
    taken_unacked: int = 0  # uploads not acknowledged whose answers came all the same
    answers_unacked: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    interne: list[str] = field(default_factory=list)
    unexplained_interne: list[str] = field(default_factory=list)
    decrypted: int = 0
    logs_read: int = 0
    evidence: dict[str, list[str]] = field(default_factory=dict)  # violation -> names

    @property
    def violations(self) -> int:
        return (
            len(self.missing) + len(self.duplicates) + len(self.partial) + len(self.strays)
            + len(self.wrong) + len(self.unexplained_interne)
        )  # fmt: skip


def collate(
    soak: Soak, inbox: dict[str, list[str]], interne: set[tuple[str, str]]
) -> tuple[dict[int, Found], list[tuple[str, str]]]:
    """Each name found, given to the attempt whose answer it is (exact, or a `_k` twin)."""
    expected: dict[tuple[str, str], Attempt] = {}
    for a in soak.attempts:
        for e in answers(a.content, a.name):
            expected[(e.participant, e.name)] = a
    by_name = {a.name: a for a in soak.attempts}
    by_seq: dict[int, Found] = defaultdict(Found)
    strays: list[tuple[str, str]] = []
    for participant, names in inbox.items():
        for name in names:
            key = (participant, name)
            if key in interne:  # ERREUR<upload name without .edi>.log, maybe with a _k
                stem = name.removeprefix("ERREUR").removesuffix(".log")
                twin = without_suffix(f"{stem}.edi") or ""
                sender = by_name.get(f"{stem}.edi") or by_name.get(twin)
                if sender is not None and sender.content.sender == participant:
                    by_seq[sender.seq].interne.append(key)
                    continue
            base = key if key in expected else (participant, without_suffix(name) or "")
            owner = expected.get(base)
            if owner is None:
                strays.append(key)
            else:
                by_seq[owner.seq].answers.setdefault(base, []).append(name)
    return by_seq, strays


async def read_logs(
    inboxes: Inboxes, inbox: dict[str, list[str]]
) -> dict[tuple[str, str], frozenset[str]]:
    codes = {}
    for participant, names in inbox.items():
        for name in names:
            if name.endswith(".log"):
                text = (await inboxes.read(participant, name)).decode("utf-8", "replace")
                codes[(participant, name)] = log_codes(text)
    return codes


async def check_delivery(soak: Soak, inboxes: Inboxes, e: Expected, name: str) -> str | None:
    """Decrypt a delivery with its recipient's key: None if it is the hub's signature over
    the expected bytes, else what is wrong."""
    sealed = await inboxes.read(e.participant, name)
    party = soak.parties[e.participant]
    out = io.BytesIO()
    verdict = await asyncio.to_thread(party.pgp.decrypt_verify_into, sealed, out, 1 << 31)
    if not verdict.ok:
        return f"not decryptable by {e.participant}: {verdict.reason}"
    if verdict.signer != soak.args.hub_fingerprint:
        return f"signed by {verdict.signer}, not by the hub"
    if out.getvalue() != e.plain:
        return f"content differs ({verdict.size} bytes, {len(e.plain)} expected)"
    return None


async def verify(
    soak: Soak, inboxes: Inboxes, quarantined: set[str], emit: Emit
) -> tuple[Verdict, dict[str, list[str]]]:
    inbox = await inboxes.snapshot()
    codes = await read_logs(inboxes, inbox)
    interne = {key for key, c in codes.items() if "INTERNE" in c}
    by_seq, strays = collate(soak, inbox, interne)
    v = Verdict(logs_read=len(codes))
    v.strays = [f"{p}:/inbox/{n}" for p, n in strays]
    for p, n in strays:
        v.evidence[f"{p}:/inbox/{n}"] = [n.removeprefix("ERREUR").split(".")[0]]
    rng = random.Random(soak.args.seed + 1)
    for attempt in soak.attempts:
        found = by_seq.get(attempt.seq, Found())
        expected = answers(attempt.content, attempt.name)
        label = f"{attempt.name} ({attempt.content.kind}, {attempt.content.sender})"
        present = [e for e in expected if found.answers.get((e.participant, e.name))]
        for key, names in found.answers.items():
            if len(names) > 1:
                v.duplicates.append(f"{label}: {key[0]} has {', '.join(sorted(names))}")
                v.evidence[v.duplicates[-1]] = [attempt.name]
        for p, n in found.interne:
            line = f"{label}: INTERNE {p}:/inbox/{n}"
            v.interne.append(line)
            if attempt.name not in quarantined:
                v.unexplained_interne.append(line)
                v.evidence[line] = [attempt.name]
        if attempt.acked:
            v.expected_acked += len(expected)
            v.found_acked += len(present)
            for e in expected:
                if e not in present:
                    v.missing.append(f"{label}: no {e.what} {e.participant}:/inbox/{e.name}")
                    v.evidence[v.missing[-1]] = [attempt.name]
        elif present:
            v.answers_unacked += len(present)
            if len(present) == len(expected):
                v.taken_unacked += 1
            else:
                gone = [f"{e.participant}:{e.name}" for e in expected if e not in present]
                v.partial.append(f"{label} not acknowledged ({attempt.stage}): lacks {gone}")
                v.evidence[v.partial[-1]] = [attempt.name]
        for e in present:
            actual = found.answers[(e.participant, e.name)][0]
            if e.what == "log":
                got = codes.get((e.participant, actual), frozenset())
                if got != e.codes:
                    v.wrong.append(f"{label}: {actual} codes {sorted(got)}, not {sorted(e.codes)}")
                    v.evidence[v.wrong[-1]] = [attempt.name]
            elif attempt.content.kind == "large" or rng.random() < soak.args.verify_fraction:
                problem = await check_delivery(soak, inboxes, e, actual)
                v.decrypted += 1
                if problem is not None:
                    v.wrong.append(f"{label}: delivery {e.participant}:/inbox/{actual} {problem}")
                    v.evidence[v.wrong[-1]] = [attempt.name]
    return v, inbox


def hub_lines(log: Path, needles: Sequence[str], limit: int = 30) -> list[str]:
    """The hub's log lines naming one of `needles`, and those of the jobs they name."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    hits = [line for line in lines if any(n in line for n in needles)]
    jobs_seen = set()
    for line in hits:
        with contextlib.suppress(ValueError, AttributeError):
            job = json.loads(line).get("job")
            if job is not None:
                jobs_seen.add(f'"job": {job},')
    more = [line for line in lines if any(j in line for j in jobs_seen)]
    chosen = [line for line in lines if line in set(hits) | set(more)]
    return chosen[:limit] + ([f"… {len(chosen) - limit} more"] if len(chosen) > limit else [])


def job_rows(data: Path, names: Sequence[str]) -> list[str]:
    """The store's rows of the jobs of these upload names (read-only; for evidence only)."""
    rows: list[str] = []
    with contextlib.suppress(sqlite3.Error):
        db = sqlite3.connect(f"file:{data / 'bdi.sqlite3'}?mode=ro", uri=True)
        try:
            for name in names:
                cursor = db.execute("SELECT * FROM job WHERE upload_name = ?", (name,))
                columns = [d[0] for d in cursor.description]
                for row in cursor:
                    rows.append(json.dumps(dict(zip(columns, row, strict=True)), default=str))
        finally:
            db.close()
    return rows


# --- report -----------------------------------------------------------------------------


def report(soak: Soak, v: Verdict, times: dict[str, float], settled: bool, emit: Emit) -> None:
    attempts = soak.attempts
    acked = [a for a in attempts if a.acked]
    stages = Counter(a.stage for a in attempts if not a.acked)
    kinds = Counter(c.kind for c in soak.plan)
    hub = soak.hub
    emit("== soak figures ==")
    emit(f"uploads planned: {len(soak.plan)} ({', '.join(f'{k} {n}' for k, n in kinds.items())})")
    emit(
        f"uploads attempted (a file opened): {len(attempts)}; acknowledged: {len(acked)}; "
        f"not acknowledged: {len(attempts) - len(acked)} "
        f"({', '.join(f'failed at {s} {n}' for s, n in sorted(stages.items())) or 'none'})"
    )
    emit(
        f"refused at close (the close failed): {stages.get('close', 0)}; given up after "
        f"{soak.args.max_attempts} attempts: {len(soak.given_up)}; connections that failed: "
        f"{sum(soak.connect_failures.values())} ({dict(soak.connect_failures)})"
    )
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for a in attempts:
        per_kind[a.content.kind][0] += 1
        per_kind[a.content.kind][1] += a.acked
    emit(
        "per kind, attempted/acknowledged: "
        + ", ".join(f"{k} {n}/{m}" for k, (n, m) in sorted(per_kind.items()))
    )
    refused = sum(1 for a in acked if a.content.kind in REFUSED_KINDS)
    logs = sum(1 for a in acked if a.content.outcome.logs)
    emit(
        f"acknowledged uploads expecting a .log: {logs} (of which OpenPGP refusals {refused}); "
        f"large: {sum(1 for a in acked if a.content.kind == 'large')}"
    )
    restart = sorted(hub.restart_s)
    median = restart[len(restart) // 2] if restart else 0.0
    emit(
        f"hub kills (SIGKILL): {hub.kills}; processes started: {hub.life}; start failures: "
        f"{len(hub.start_failures)}; unexpected exits: {len(hub.unexpected_exits)}; "
        f"start to a login: median {median:.2f} s, max {max(restart, default=0):.2f} s"
    )
    emit(f"gpg-agent kills: {soak.agent_kills}")
    emit(
        f"disk-full spell: full for {soak.spell_s:.1f} s after {soak.fill_s:.1f} s of filling "
        f"(a filler file on the data folder's tmpfs); uploads that failed meanwhile: "
        f"{soak.spell_failures}; data folder used: {used_mib(soak.hub.data):.0f} MiB at the "
        f"end, {soak.peak_used_mib:.0f} MiB at most in the samples taken"
    )
    emit(
        "time: " + ", ".join(f"{k} {s:.0f} s" for k, s in times.items())
        + f"; settled: {'yes' if settled else 'NO'}"
    )  # fmt: skip
    emit(
        f"answers expected for acknowledged uploads: {v.expected_acked}; found: "
        f"{v.found_acked}; uploads not acknowledged but answered in full (taken in before "
        f"the kill): {v.taken_unacked} ({v.answers_unacked} answers)"
    )
    emit(
        f".log files read: {v.logs_read}; deliveries decrypted and compared: {v.decrypted}; "
        f"INTERNE .log: {len(v.interne)} (of jobs not quarantined: "
        f"{len(v.unexplained_interne)})"
    )
    emit(
        f"duplicates: {len(v.duplicates)}; missing: {len(v.missing)}; partial: "
        f"{len(v.partial)}; strays: {len(v.strays)}; wrong content: {len(v.wrong)}"
    )


def evidence(soak: Soak, v: Verdict, emit: Emit, limit: int = 15) -> None:
    by_name = {a.name: a for a in soak.attempts}
    for what, names in list(v.evidence.items())[:limit]:
        emit(f"-- VIOLATION {what}")
        for name in names:
            attempt = by_name.get(name)
            if attempt is not None:
                content = attempt.content
                emit(
                    f"   upload {name}: kind {content.kind} ({content.detail}); sender "
                    f"{content.sender}; expected {content.outcome.describe()}"
                )
                emit(
                    f"   attempt at {attempt.start:.2f}-{attempt.end:.2f} s, hub life "
                    f"{attempt.life}, stage {attempt.stage} {attempt.error}"
                )
        for row in job_rows(soak.hub.data, names):
            emit(f"   job row: {row}")
        for line in hub_lines(soak.hub.log, names):
            emit(f"   hub: {line}")
    if len(v.evidence) > limit:
        emit(f"-- … {len(v.evidence) - limit} more violations (see the report file)")


# --- run --------------------------------------------------------------------------------


def plan_kinds(args: argparse.Namespace, rng: random.Random) -> list[str]:
    large = min(args.large, args.uploads)
    kinds = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=args.uploads - large)
    for _ in range(large):
        kinds.insert(rng.randrange(len(kinds) + 1), "large")
    return kinds


def build(
    args: argparse.Namespace, work: Path, parties: dict[str, Party], emit: Emit
) -> list[Content]:
    start = time.monotonic()
    rng = random.Random(args.seed)
    corpus = Corpus(work / "corpus", parties, args.hub_fingerprint, rng)
    kinds = plan_kinds(args, rng)
    for number, kind in enumerate(kinds):
        if kind != "large":
            corpus.small(number, kind)
    corpus.large([n for n, k in enumerate(kinds) if k == "large"], args.large_mib * MIB)
    by_number = {c.number: c for c in corpus.seal_all()}
    plan = [by_number[n] for n in range(len(kinds))]
    with_logs = sum(1 for c in plan if c.outcome.logs)
    emit(
        f"{len(plan)} uploads sealed in {elapsed(start)}: {with_logs} expect a .log, "
        f"{len(plan) - with_logs} deliveries only; sealed bytes "
        f"{sum(c.size for c in plan) / MIB:.1f} MiB"
    )
    return plan


async def chaos(soak: Soak, mount: Path | None, emit: Emit) -> float:
    """The upload phase with the kills and the disk-full spell; its seconds."""
    start = time.monotonic()
    soak.hub.start()
    await soak.hub.ready()
    tasks = [asyncio.create_task(killer(soak)), asyncio.create_task(agent_killer(soak))]
    if mount is not None and soak.args.disk_full_s > 0:
        tasks.append(asyncio.create_task(disk_spell(soak, mount)))
    reporter = asyncio.create_task(progress_reporter(soak, emit))
    try:
        await asyncio.gather(*(uploader(soak, w) for w in range(soak.args.sessions)))
        soak.uploads_done = True
        await soak.notify()
        await asyncio.gather(*tasks)
    finally:
        reporter.cancel()
        for task in tasks:
            task.cancel()
    return time.monotonic() - start


async def finish(soak: Soak, emit: Emit) -> tuple[Verdict, bool, dict[str, float]]:
    times: dict[str, float] = {}
    inboxes = Inboxes(soak)
    try:
        start = time.monotonic()
        settled = await settle(soak, inboxes, emit)
        quarantined = await jobs(soak, "quarantined")
        for job in quarantined:
            emit(f"quarantined: {json.dumps(job)}")
            await run_bdi_async(
                soak.hub.bdi, "admin", "jobs", "retry", str(job["id"]), "--data",
                str(soak.hub.data),
            )  # fmt: skip
        if quarantined:
            settled = await settle(soak, inboxes, emit) and settled
        times["settling"] = time.monotonic() - start
        start = time.monotonic()
        names = {str(j["file"]) for j in quarantined}
        verdict, inbox = await verify(soak, inboxes, names, emit)
        times["checking"] = time.monotonic() - start
        (soak.hub.log.parent / "inboxes.json").write_text(json.dumps(inbox))
        return verdict, settled, times
    finally:
        inboxes.close()


async def soak_run(args: argparse.Namespace, work: Path, mount: Path | None, emit: Emit) -> int:
    data = (mount or work) / "data"
    rng = random.Random(args.seed)
    parties: dict[str, Party] = {}
    homes: list[Path] = []
    hub = Hub(args.bdi, data, free_port(), work / "hub.log")
    try:
        start = time.monotonic()
        for edi_id in participant_ids():
            homes.append(Path(tempfile.mkdtemp(prefix="g", dir="/tmp")))
            parties[edi_id] = make_party(edi_id, homes[-1])
        args.hub_fingerprint = prepare(args.bdi, data, parties, work)
        probe = parties["GIE000001"]
        hub.probe = (probe.edi_id, probe.password)
        emit(f"data folder {data} ready, {len(parties)} participants, in {elapsed(start)}")
        plan = build(args, work, parties, emit)
        soak = Soak(args, hub, parties, plan, rng)
        emit(
            f"soak: {len(plan)} uploads over {args.sessions} sessions, {args.kills} hub kills, "
            f"{args.agent_kills} agent kills, disk full {args.disk_full_s if mount else 0} s; "
            f"hub log {hub.log}"
        )
        times = {"uploads": await chaos(soak, mount, emit)}
        verdict, settled, more = await finish(soak, emit)
        times |= more
        times["total"] = time.monotonic() - start
        dump(soak, verdict, work / "report.json")
        report(soak, verdict, times, settled, emit)
        failed = verdict.violations + (not settled) + len(hub.unexpected_exits)
        for what in hub.unexpected_exits:
            emit(f"-- VIOLATION the hub exited on its own: {what}")
        evidence(soak, verdict, emit)
        emit(f"== soak: {'FAIL' if failed else 'PASS'} ({failed} violations) ==")
        return 1 if failed else 0
    finally:
        hub.stop()
        kill_agent(data / "gnupg")
        for party in parties.values():
            party.pgp.stop_agent()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


def dump(soak: Soak, v: Verdict, path: Path) -> None:
    rows = [
        {"seq": a.seq, "name": a.name, "upload": a.upload, "life": a.life, "start": a.start,
         "end": a.end, "stage": a.stage, "error": a.error, "in_spell": a.in_spell,
         "kind": a.content.kind, "sender": a.content.sender, "detail": a.content.detail,
         "expected": a.content.outcome.describe()}
        for a in soak.attempts
    ]  # fmt: skip
    verdict = {k: val for k, val in asdict(v).items() if k != "evidence"}
    path.write_text(json.dumps({"attempts": rows, "verdict": verdict}, indent=1))


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--uploads", type=int, default=2000, help="uploads to acknowledge")
    p.add_argument("--kills", type=int, default=200, help="SIGKILLs of the hub")
    p.add_argument("--agent-kills", type=int, default=20, help="kills of the hub's gpg-agent")
    p.add_argument("--sessions", type=int, default=4, help="concurrent SFTP uploaders")
    p.add_argument("--large", type=int, default=None, help="large uploads (default 1 in 200)")
    p.add_argument("--large-mib", type=int, default=20, help="plain size of a large file")
    p.add_argument("--disk-full-s", type=float, default=5.0, help="the disk-full spell (0: none)")
    p.add_argument("--tmpfs-size", default="2g", help="size of the data folder's tmpfs")
    p.add_argument("--no-tmpfs", action="store_true", help="data folder on disk, no spell")
    p.add_argument("--max-life", type=float, default=2.0, help="max seconds before a kill")
    p.add_argument("--max-attempts", type=int, default=100, help="per upload")
    p.add_argument("--quiet-s", type=float, default=20.0, help="inboxes unchanged this long")
    p.add_argument("--settle-timeout-s", type=float, default=1800.0)
    p.add_argument("--verify-fraction", type=float, default=0.1, help="deliveries decrypted")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--work", type=Path, default=None, help="work folder (default: new, /tmp)")
    p.add_argument("--bdi", type=Path, default=BDI, help="the bdi command to run")
    p.add_argument("--at", default=None, help="run the hub of this commit (git archive)")
    args = p.parse_args(argv)
    if args.large is None:
        args.large = max(2, args.uploads // 200)
    return args


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM and SIGINT (even when started in the background, where SIGINT is ignored) stop
    the soak through its clean-ups: the hub stopped, the agents, the tmpfs unmounted."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bdi-soak-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    if args.at and "BDI_SOAK_COMMIT" not in os.environ:
        emit(f"work folder {work}")
        run_at(args, argv, work)  # does not return
    if not args.bdi.exists():
        emit(f"{args.bdi} not found: run with the project's venv python or give --bdi")
        return 2
    import bdi

    emit(f"work folder {work}; bdi from {Path(bdi.__file__).parent}")
    if "BDI_SOAK_COMMIT" in os.environ:
        emit(f"the hub and the checker run from commit {os.environ['BDI_SOAK_COMMIT']}")
    try:
        if args.no_tmpfs:
            return asyncio.run(soak_run(args, work, None, emit))
        with tmpfs(work / "fs", args.tmpfs_size) as mount:
            return asyncio.run(soak_run(args, work, mount, emit))
    except SoakError as exc:
        emit(f"soak: {exc}")
        return 2
    finally:
        shutil.rmtree(work / "corpus", ignore_errors=True)
        shutil.rmtree(work / "hub", ignore_errors=True)
        with contextlib.suppress(OSError):
            (work / "fs").rmdir()


if __name__ == "__main__":
    sys.exit(main())
