"""Benchmark "under attack" (issue 14): a canary participant's uploads while strangers and other
participants attack the hub, against the same canary without attack, in one run.

    .venv/bin/python bench/run.py --only attack
    .venv/bin/python bench/attack.py [--keep]     (--keep: leave the work folder, hub.log;
                                                   it is left anyway when a target fails)

The hub is the real `bdi serve`, a subprocess over a data folder made with `bdi init` and `bdi
admin participant add --json` (bench/soak.py's helpers), with the settings' defaults (HUB.md,
"Limits that protect the market"); its JSON events (stderr) go to `hub.log` in the work
folder. The participants of the samples' referential are registered, each with a GnuPG home.

The canary: COU010234 uploads one good file (bench/hub_bench.py's: the sample
RCOU010234_00311_000001.edi, its policy number varied) every second for CANARY_FILES seconds,
over one SFTP session opened before the phase, from 127.0.0.1 (no attacker uses it); its
recipient CIE000311 stats each expected name in its /inbox/ every POLL_S over its own session.
The latency is from the upload's close (sent) to the first stat that finds the file. Besides,
a "new login" probe: every PROBE_S a fresh SSH login of CIE000452 from 127.0.0.250, its time
to a session or why it failed (informative: no target).

Phase 1, without attack. Phase 2, the same canary with every attack at once, run by a child
process of this script (`--attacker`: its work must not delay the canary's own event loop):
- hoarder: AGT005120 opens SESSIONS_TRIED sessions; in each it opens `.part` handles until
  refused, then tries one more every HOARD_RETRY_S, and never closes any;
- banner: BANNER_SLOTS connections from the 60 addresses 127.0.0.2-61 send `SSH-2.0-x\\r\\n`
  and then nothing; one the hub closes is opened again RECONNECT_S later;
- flood: COU010999 uploads FLOODS messages of FLOOD_PKESKS bogus recipient packets (PKESK,
  RSA to the wildcard key id; ~1.9 MB each) and waits for their `.log`;
- burst: CIE000638 uploads BURST_FILES good files (-> GIE000001) over BURST_SESSIONS sessions;
- spray: from 127.0.0.200-203, logins under made-up user names with wrong passwords.
The attacks go on for ATTACK_S from their start, past the canary's minute and its last
delivery: long enough for the banner connections to be closed twice by the login grace (their
addresses are banned then); the new-login probe goes on meanwhile. Then they stop, and the
burst is waited for (its last delivery is reported). Meanwhile the hub's RSS, open file
descriptors and gpg processes are sampled (psutil) for their peaks, with the CPU it used and
the time its threads waited for a CPU (/proc schedstat: on a shared machine, that wait is the
noise of the figures). At the end its bans are listed (`bdi admin bans list --json`) and its
log read: the canary's files' take-in, queue and job times, the events.

Targets: canary p99 <= 1 s without attack and <= 3 s under attack, every canary file
delivered in both phases (p99: statistics.quantiles, inclusive method, over the 60 latencies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncssh
import psutil
from hub_bench import machine_busy, small_files
from soak import Hub, free_port, kill_agent, prepare, run_bdi
from soak_support import Party, load_samples, make_party, participant_ids, varied

BDI = Path(sys.executable).absolute().parent / "bdi"
SCRIPT = Path(__file__).resolve()
Emit = Callable[[str], None]
Upload = tuple[str, bytes]  # (name in /outbox/, sealed bytes)

# who does what, from where
CANARY, CANARY_TO = "COU010234", "CIE000311"
HOARDER, FLOODER, BURSTER, BURST_TO, PROBE = (
    "AGT005120", "COU010999", "CIE000638", "GIE000001", "CIE000452"
)  # fmt: skip
BURST_SAMPLE = "RCIE000638_00638_000001.edi"  # one section, CIE000638 -> GIE000001
HONEST = "127.0.0.1"  # the canary and its recipient
PROBE_ADDRESS = "127.0.0.250"
HOARD_ADDRESS, FLOOD_ADDRESS, BURST_ADDRESS = "127.0.0.100", "127.0.0.101", "127.0.0.102"
BANNER_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 62)]  # 60 x 16 > 512: both limits bite
SPRAY_ADDRESSES = [f"127.0.0.{n}" for n in range(200, 204)]

# the canary
CANARY_FILES = 60  # per phase, one a second
WARM_UPS = 2
POLL_S = 0.05
GIVE_UP_S = 120.0  # a canary file not seen this long after its close is missing
TARGET_QUIET_S, TARGET_ATTACK_S = 1.0, 3.0
PROBE_S, PROBE_TIMEOUT_S = 3.0, 30.0
# the attacks
ATTACK_S = 100.0  # the attacks last this long at least: past the canary's minute, until the
# banner connections have been closed twice by the login grace, and their addresses banned
SESSIONS_TRIED = 10  # the hoarder's sessions (8 allowed)
HOARD_RETRY_S = 0.05  # per session, once refused: ~160 refused opens a second in all
BANNER_SLOTS = 1500
RECONNECT_S = 5.0
REFUSED_S = 2.0  # a banner connection closed by the hub within this was refused at the door
FLOODS, FLOOD_PKESKS = 8, 20_000
BURST_FILES, BURST_SESSIONS = 300, 4
BURST_DEADLINE_S = 300.0  # from the attack's start
SPRAY_PER_ADDRESS = 2  # logins at once per address
SPRAY_PAUSE_S = 0.5  # after a connection dropped unanswered (banned)
SAMPLE_S = 0.1  # the hub's RSS, file descriptors, gpg processes


def emit_stdout(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def why(exc: BaseException) -> str:
    text = getattr(exc, "reason", "") or str(exc)
    return f"{type(exc).__name__}: {text}"[:120]


async def connect(
    port: int, user: str, password: str, address: str
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1", port, local_addr=(address, 0), username=user, password=password,
        known_hosts=None, client_keys=None, agent_path=None, preferred_auth="password",
    )  # fmt: skip


@contextlib.asynccontextmanager
async def sftp_session(
    port: int, user: str, password: str, address: str
) -> AsyncIterator[asyncssh.SFTPClient]:
    async with (
        await connect(port, user, password, address) as conn,
        conn.start_sftp_client() as sftp,
    ):
        yield sftp


async def until(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def stat_time(sftp: asyncssh.SFTPClient, path: str) -> float | None:
    """When the answer came (monotonic) if `path` exists, else None."""
    try:
        await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return None
    return time.monotonic()


def quantile(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def spread(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (
        f"p50 {quantile(values, 50):.2f} s, p99 {quantile(values, 99):.2f} s, "
        f"max {max(values):.2f} s"
    )


# --- the attacks (the child process) ------------------------------------------------------


@dataclass
class HoardStats:
    sessions: int = 0
    sessions_refused: int = 0
    session_refusal: str = ""
    handles: int = 0
    refused_opens: int = 0
    refusal: str = ""
    full_s: float | None = None  # every session refused, since the attack's start


@dataclass
class BannerStats:
    opened: int = 0
    connect_errors: int = 0
    connect_error: str = ""
    refused_at_once: int = 0  # closed by the hub within REFUSED_S
    held: int = 0  # still open after REFUSED_S
    held_now: int = 0
    peak_held: int = 0
    closed_after_hold: int = 0
    hold_s: list[float] = field(default_factory=list)  # of those closed by the hub
    open_at_end: int = 0


@dataclass
class FloodStats:
    bytes: int = 0
    upload_s: list[float] = field(default_factory=list)  # open -> close acknowledged
    refused_s: list[float] = field(default_factory=list)  # close -> its `.log` seen
    detail: str = ""  # the `.log`'s line
    errors: list[str] = field(default_factory=list)


@dataclass
class BurstStats:
    files: int = 0
    uploaded_s: float | None = None
    delivered: int = 0
    delivered_at_stop: int = 0
    all_delivered_s: float | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class SprayStats:
    connections: int = 0
    denied: int = 0  # answered "permission denied": guesses made
    refused: int = 0  # dropped before any answer (banned, or the door full)
    others: dict[str, int] = field(default_factory=dict)


class Told(asyncssh.SSHClient):
    """Keeps why the server closed the connection (its disconnect message)."""

    def __init__(self) -> None:
        self.lost: Exception | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


class Attack:
    """Every attack at once. The participants' sessions are opened first (`arm`): the banner
    flood keeps new logins out, theirs too."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.port: int = config["port"]
        self.passwords: dict[str, str] = config["passwords"]
        self.floods = [(name, Path(p).read_bytes()) for name, p in config["flood"]]
        self.burst = [(name, Path(p).read_bytes()) for name, p in config["burst"]]
        self.stop = asyncio.Event()
        self.start, self.start_wall = time.monotonic(), time.time()
        self.hoard, self.banner, self.flood = HoardStats(), BannerStats(), FloodStats()
        self.bursting, self.spray = BurstStats(), SprayStats()
        self.hoard_full: set[int] = set()
        self.hoarding: list[asyncssh.SFTPClient] = []
        self.flooding: asyncssh.SFTPClient | None = None
        self.bursts: list[asyncssh.SFTPClient] = []
        self.burst_watch: asyncssh.SFTPClient | None = None

    def since(self) -> float:
        return round(time.monotonic() - self.start, 3)

    async def session(
        self, stack: contextlib.AsyncExitStack, user: str, address: str
    ) -> asyncssh.SFTPClient:
        conn = await connect(self.port, user, self.passwords[user], address)
        stack.callback(conn.abort)  # no goodbye: the figures are out before it
        return await conn.start_sftp_client()

    async def arm(self, stack: contextlib.AsyncExitStack) -> None:
        """The attacking participants log in; the hoarder as many times as it may."""
        for _ in range(SESSIONS_TRIED):
            conn, told = await asyncssh.create_connection(
                Told, "127.0.0.1", self.port, local_addr=(HOARD_ADDRESS, 0), username=HOARDER,
                password=self.passwords[HOARDER], known_hosts=None, client_keys=None,
                agent_path=None, preferred_auth="password",
            )  # fmt: skip
            stack.callback(conn.abort)
            assert isinstance(told, Told)
            try:
                self.hoarding.append(await conn.start_sftp_client())
                self.hoard.sessions += 1
            except (asyncssh.Error, OSError) as exc:
                await conn.wait_closed()  # the hub's word is in its disconnect message
                self.hoard.sessions_refused += 1
                self.hoard.session_refusal = why(told.lost or exc)
        self.flooding = await self.session(stack, FLOODER, FLOOD_ADDRESS)
        for _ in range(BURST_SESSIONS):
            self.bursts.append(await self.session(stack, BURSTER, BURST_ADDRESS))
        self.burst_watch = await self.session(stack, BURST_TO, BURST_ADDRESS)

    async def run(self, started: Callable[[], None]) -> dict[str, Any]:
        async with contextlib.AsyncExitStack() as stack:
            await self.arm(stack)
            self.start, self.start_wall = time.monotonic(), time.time()
            handles: list[asyncssh.SFTPClientFile] = []
            endless = [
                asyncio.create_task(self.hoard_in(i, sftp, handles))
                for i, sftp in enumerate(self.hoarding)
            ]
            for slot in range(BANNER_SLOTS):
                address = BANNER_ADDRESSES[slot % len(BANNER_ADDRESSES)]
                endless.append(asyncio.create_task(self.banner_slot(address)))
            for address in SPRAY_ADDRESSES:
                for _ in range(SPRAY_PER_ADDRESS):
                    endless.append(asyncio.create_task(self.sprayer(address)))
            bounded = [asyncio.create_task(self.flooder()), asyncio.create_task(self.burster())]
            started()
            await asyncio.to_thread(sys.stdin.readline)  # the parent's "stop"
            self.stop.set()
            stopped = self.since()
            self.bursting.delivered_at_stop = self.bursting.delivered
            for task in endless:
                task.cancel()
            _, stuck = await asyncio.wait(endless, timeout=30)
            for task in stuck:
                sys.stderr.write(f"did not stop: {task.get_coro()}\n")
            await asyncio.wait(bounded, timeout=max(1.0, BURST_DEADLINE_S - self.since()))
        used = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "cpu_s": round(used.ru_utime + used.ru_stime, 1),
            "start_wall": self.start_wall,
            "stuck": len(stuck),  # attacks that did not stop within 30 s
            "stopped_s": stopped,
            "hoard": asdict(self.hoard),
            "banner": asdict(self.banner),
            "flood": asdict(self.flood),
            "burst": asdict(self.bursting),
            "spray": asdict(self.spray),
        }

    # a participant hoarding handles

    async def hoard_in(
        self, index: int, sftp: asyncssh.SFTPClient, handles: list[asyncssh.SFTPClientFile]
    ) -> None:
        number = 0
        while not self.stop.is_set():
            number += 1
            try:
                handles.append(await sftp.open(f"/outbox/H{index:02d}_{number:06d}.part", "wb"))
                self.hoard.handles += 1
            except asyncssh.SFTPError as exc:
                self.hoard.refused_opens += 1
                self.hoard.refusal = exc.reason
                if index not in self.hoard_full:
                    self.hoard_full.add(index)
                    if len(self.hoard_full) == self.hoard.sessions:
                        self.hoard.full_s = self.since()
                await asyncio.sleep(HOARD_RETRY_S)

    # strangers that connect and never log in

    async def banner_slot(self, address: str) -> None:
        stats = self.banner
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(address, 0)
                )
            except OSError as exc:
                stats.connect_errors += 1
                stats.connect_error = why(exc)
                await asyncio.sleep(RECONNECT_S)
                continue
            stats.opened += 1
            opened, held = time.monotonic(), False
            try:
                writer.write(b"SSH-2.0-x\r\n")
                try:  # asyncio.timeout: 3.11's wait_for may swallow a cancellation
                    async with asyncio.timeout(REFUSED_S):
                        await _drain_to_eof(reader)
                    stats.refused_at_once += 1
                except TimeoutError:
                    held = True
                    stats.held += 1
                    stats.held_now += 1
                    stats.peak_held = max(stats.peak_held, stats.held_now)
                    await _drain_to_eof(reader)
                    stats.closed_after_hold += 1
                    stats.hold_s.append(round(time.monotonic() - opened, 2))
            except asyncio.CancelledError:
                stats.open_at_end += 1
                raise
            finally:
                if held:
                    stats.held_now -= 1
                writer.transport.abort()
            await asyncio.sleep(RECONNECT_S)

    # a password spray

    async def sprayer(self, address: str) -> None:
        stats, tag = self.spray, address.rsplit(".", 1)[1]
        while not self.stop.is_set():
            stats.connections += 1
            user = f"X{tag}{stats.connections:06d}"
            try:
                async with asyncio.timeout(30):
                    conn = await connect(self.port, user, "not-the-password", address)
                conn.abort()
                stats.others["logged in!"] = stats.others.get("logged in!", 0) + 1
            except asyncssh.PermissionDenied:
                stats.denied += 1
            except (asyncssh.ConnectionLost, asyncssh.DisconnectError, OSError) as exc:
                if isinstance(exc, asyncssh.DisconnectError) and "denied" in exc.reason.lower():
                    stats.denied += 1
                    continue
                stats.refused += 1
                await asyncio.sleep(SPRAY_PAUSE_S)
            except (asyncssh.Error, TimeoutError) as exc:
                stats.others[why(exc)] = stats.others.get(why(exc), 0) + 1
                await asyncio.sleep(SPRAY_PAUSE_S)

    # a participant's packet floods

    async def flooder(self) -> None:
        assert self.flooding is not None
        sftp = self.flooding
        await asyncio.gather(*(self.flood_one(sftp, n, d) for n, d in self.floods))

    async def flood_one(self, sftp: asyncssh.SFTPClient, name: str, data: bytes) -> None:
        stats = self.flood
        stats.bytes = len(data)
        log = f"/inbox/ERREUR{name.removesuffix('.edi')}.log"
        try:
            opened = time.monotonic()
            f = await sftp.open(f"/outbox/{name}", "wb")
            await f.write(data)
            closed = time.monotonic()
            await f.close()
            stats.upload_s.append(round(time.monotonic() - opened, 3))
            while time.monotonic() - closed < GIVE_UP_S:
                seen = await stat_time(sftp, log)
                if seen is not None:
                    stats.refused_s.append(round(seen - closed, 3))
                    if not stats.detail:
                        async with sftp.open(log, "r", errors="replace") as f:
                            stats.detail = str(await f.read()).strip()
                    return
                await asyncio.sleep(POLL_S)
            stats.errors.append(f"{name}: no .log within {GIVE_UP_S:.0f} s")
        except (asyncssh.Error, OSError) as exc:
            stats.errors.append(f"{name}: {why(exc)}")

    # a participant's burst of good files

    async def burster(self) -> None:
        assert self.burst_watch is not None
        stats, sessions = self.bursting, self.bursts
        stats.files = len(self.burst)
        names = {name for name, _ in self.burst}
        try:
            shares = [self.burst[i :: len(sessions)] for i in range(len(sessions))]
            await asyncio.gather(
                *(_upload(s, share) for s, share in zip(sessions, shares, strict=True))
            )
            stats.uploaded_s = self.since()
            while self.since() < BURST_DEADLINE_S:
                stats.delivered = len(names & set(await self.burst_watch.listdir("/inbox")))
                if stats.delivered == len(names):
                    stats.all_delivered_s = self.since()
                    return
                await asyncio.sleep(0.5)
        except (asyncssh.Error, OSError) as exc:
            stats.errors.append(why(exc))


async def _drain_to_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass


async def _upload(sftp: asyncssh.SFTPClient, files: Sequence[Upload]) -> None:
    for name, data in files:
        async with sftp.open(f"/outbox/{name}", "wb") as f:
            await f.write(data)


def attacker_main(config_path: Path) -> int:
    """The child process: attack until a line on stdin, then print the figures (JSON)."""
    raise_open_files()
    config = json.loads(config_path.read_text())

    async def main() -> None:
        attack = Attack(config)
        result = await attack.run(lambda: emit_stdout(json.dumps({"event": "started"})))
        emit_stdout(json.dumps({"event": "result", **result}))  # before any clean-up

    asyncio.run(main())
    return 0


# --- the honest side (this process) ---------------------------------------------------------


@dataclass
class Canary:
    closed: dict[str, float] = field(default_factory=dict)  # close sent (monotonic)
    closed_wall: dict[str, float] = field(default_factory=dict)  # the same, epoch seconds
    seen: dict[str, float] = field(default_factory=dict)  # first found in the inbox
    upload_s: list[float] = field(default_factory=list)  # open -> close acknowledged
    errors: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    start_wall: float = 0.0  # the first upload's time (epoch seconds)

    @property
    def latencies(self) -> list[float]:
        return [self.seen[n] - self.closed[n] for n in self.names if n in self.seen]

    @property
    def missing(self) -> list[str]:
        return [n for n in self.names if n not in self.seen]


@contextlib.asynccontextmanager
async def canary_sessions(
    port: int, passwords: dict[str, str]
) -> AsyncIterator[tuple[asyncssh.SFTPClient, asyncssh.SFTPClient]]:
    """The canary's session and its recipient's, from HONEST."""
    async with (
        sftp_session(port, CANARY, passwords[CANARY], HONEST) as up,
        sftp_session(port, CANARY_TO, passwords[CANARY_TO], HONEST) as down,
    ):
        yield up, down


async def canary(
    up: asyncssh.SFTPClient, down: asyncssh.SFTPClient, files: Sequence[Upload]
) -> Canary:
    """One upload a second; each found by its recipient's stats; until all are seen, have
    failed, or have waited GIVE_UP_S."""
    result = Canary(names=[n for n, _ in files])

    async def send(name: str, data: bytes) -> None:
        opened = time.monotonic()
        try:
            async with asyncio.timeout(GIVE_UP_S):
                f = await up.open(f"/outbox/{name}", "wb")
                await f.write(data)
                result.closed[name], result.closed_wall[name] = time.monotonic(), time.time()
                await f.close()
            result.upload_s.append(time.monotonic() - opened)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            result.errors.append(f"{name}: {why(exc)}")

    def waiting() -> list[str]:
        now = time.monotonic()
        return [
            n for n, at in result.closed.items()
            if n not in result.seen and now - at < GIVE_UP_S
        ]  # fmt: skip

    async def watch(sending: asyncio.Future[list[None]]) -> None:
        while not sending.done() or waiting():
            await _look(down, waiting(), result)
            await asyncio.sleep(POLL_S)

    async def schedule() -> list[None]:
        sends = []
        start, result.start_wall = time.monotonic(), time.time()
        for i, (name, data) in enumerate(files):
            await asyncio.sleep(max(0.0, start + i - time.monotonic()))
            sends.append(asyncio.create_task(send(name, data)))
        return await asyncio.gather(*sends)

    sending = asyncio.ensure_future(schedule())
    await watch(sending)
    await sending
    return result


async def _look(sftp: asyncssh.SFTPClient, names: Sequence[str], result: Canary) -> None:
    found = await asyncio.gather(*(stat_time(sftp, f"/inbox/{n}") for n in names))
    for name, at in zip(names, found, strict=True):
        if at is not None:
            result.seen[name] = at


@dataclass
class Probe:
    start: float  # monotonic: the phase's (or the attack's) start
    login_s: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    outcomes: list[tuple[float, bool]] = field(default_factory=list)  # (tried at, logged in)

    def timeline(self) -> str:
        """Runs of logins that worked or failed, in seconds since the start."""
        runs: list[list[Any]] = []
        for at, ok in self.outcomes:
            if runs and runs[-1][0] == ok:
                runs[-1][2], runs[-1][3] = at - self.start, runs[-1][3] + 1
            else:
                runs.append([ok, at - self.start, at - self.start, 1])
        return ", ".join(
            f"{'ok' if ok else 'failed'} {a:.0f}…{b:.0f} s ({n})" for ok, a, b, n in runs
        )


async def probe_logins(port: int, password: str, stop: asyncio.Event, result: Probe) -> None:
    """A fresh login every PROBE_S, from an address no attacker uses."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                conn = await connect(port, PROBE, password, PROBE_ADDRESS)
            result.login_s.append(time.monotonic() - started)
            result.outcomes.append((started, True))
            conn.close()
            await conn.wait_closed()
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            result.failures[why(exc)] += 1
            result.outcomes.append((started, False))
        await until(stop, PROBE_S)


def run_queue_wait(pid: int) -> float:
    """Seconds the process's threads have spent runnable, waiting for a CPU (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(task.read_text().split()[1])
    return total / 1e9


class HubSampler:
    """The hub process's peaks (RSS, open file descriptors, gpg children), polled in a thread,
    and the CPU it and its reaped children used."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.rss = self.fds = self.gpg = 0
        self.cpu = self._cpu()
        self.machine = machine_busy()
        self.waited = run_queue_wait(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _cpu(self) -> tuple[float, float]:
        t = self.proc.cpu_times()
        return t.user + t.system, t.children_user + t.children_system

    def _poll(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            with contextlib.suppress(psutil.Error):
                self.rss = max(self.rss, self.proc.memory_info().rss)
                self.fds = max(self.fds, self.proc.num_fds())
                kids = [k for k in self.proc.children() if k.name() == "gpg"]
                self.gpg = max(self.gpg, len(kids))

    def __enter__(self) -> HubSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        now = self._cpu()
        self.cpu = (now[0] - self.cpu[0], now[1] - self.cpu[1])
        self.machine = machine_busy() - self.machine
        self.waited = run_queue_wait(self.proc.pid) - self.waited


@dataclass
class Phase:
    name: str
    canary: Canary
    probe: Probe
    rss: int
    fds: int
    gpg: int
    cpu: tuple[float, float]  # hub process, its reaped gpg
    machine: float  # CPU seconds of the whole machine (every process)
    waited: float  # seconds the hub's threads waited for a CPU
    seconds: float
    wall: tuple[float, float]  # epoch seconds: start, end
    attack: dict[str, Any] | None = None


async def phase(
    name: str, hub: Hub, passwords: dict[str, str], files: Sequence[Upload], attacker: Path | None
) -> Phase:
    assert hub.proc is not None
    stop, probe = asyncio.Event(), Probe(time.monotonic())
    wall_start, start = time.time(), time.monotonic()
    async with canary_sessions(hub.port, passwords) as (up, down):
        with HubSampler(hub.proc.pid) as sampler:
            probing = asyncio.create_task(probe_logins(hub.port, passwords[PROBE], stop, probe))
            if attacker is None:
                result = await canary(up, down, files)
                attack = None
            else:
                async with attacking(attacker, hub.log.parent) as outcome:
                    probe.start = time.monotonic()
                    result = await canary(up, down, files)
                    await asyncio.sleep(max(0.0, probe.start + ATTACK_S - time.monotonic()))
                attack = outcome
            stop.set()
            await probing
    return Phase(name, result, probe, sampler.rss, sampler.fds, sampler.gpg, sampler.cpu,
                 sampler.machine, sampler.waited, time.monotonic() - start,
                 (wall_start, time.time()), attack)  # fmt: skip


@contextlib.asynccontextmanager
async def attacking(config: Path, work: Path) -> AsyncIterator[dict[str, Any]]:
    """The attacker process, started (its attacks launched) on entry, stopped on exit; the
    dict yielded is filled with its figures."""
    outcome: dict[str, Any] = {}
    argv = [sys.executable, str(SCRIPT), "--attacker", str(config)]
    with (work / "attacker.log").open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
        )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if json.loads(line or b"{}").get("event") != "started":
            raise RuntimeError(f"the attacker did not start (see {work / 'attacker.log'})")
        yield outcome
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), BURST_DEADLINE_S + 120)
        outcome.update(json.loads(line or b"{}"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --- set-up -------------------------------------------------------------------------------


def seal_many(jobs: Sequence[tuple[Party, bytes]], hub: str) -> list[bytes]:
    def seal(job: tuple[Party, bytes]) -> bytes:
        party, plain = job
        out = io.BytesIO()
        party.pgp.sign_encrypt(plain, out, hub, party.fingerprint)
        return out.getvalue()

    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return list(pool.map(seal, jobs))


def bogus_pkesk() -> bytes:
    """A version-3 recipient packet to the wildcard key id (gpg would try every secret key),
    an RSA "session key" of random bits: 96 bytes, old format, as gpg writes one."""
    body = b"\x03" + bytes(8) + b"\x01" + (656).to_bytes(2, "big") + b"\x80" + os.urandom(81)
    return b"\x84" + len(body).to_bytes(1, "big") + body


def flood_message() -> bytes:
    return bogus_pkesk() * FLOOD_PKESKS + b"\xd2\x10" + bytes(16)  # + encrypted data (tag 18)


def inputs(work: Path, parties: dict[str, Party], hub: str) -> tuple[list[Upload], Path]:
    """The canary's uploads (sealed, in memory), and the attacker's configuration file with
    the flood and burst files it names (written to the work folder)."""
    canary_plain = small_files(WARM_UPS + 2 * CANARY_FILES)
    registered = frozenset(parties)
    sample = next(s for s in load_samples(registered) if s.name == BURST_SAMPLE)
    burst_plain = [
        (f"{sample.prefix}{n:06d}.edi", varied(sample, n, registered)[0])
        for n in range(1, BURST_FILES + 1)
    ]
    jobs = [(parties[CANARY], p) for _, p in canary_plain]
    jobs += [(parties[BURSTER], p) for _, p in burst_plain]
    sealed = seal_many(jobs, hub)
    uploads = [(n, s) for (n, _), s in zip(canary_plain, sealed[: len(canary_plain)], strict=True)]
    for folder in ("burst", "flood"):
        (work / folder).mkdir()
    burst = []
    for (name, _), data in zip(burst_plain, sealed[len(canary_plain) :], strict=True):
        (work / "burst" / name).write_bytes(data)
        burst.append((name, str(work / "burst" / name)))
    flood = []
    for n in range(1, FLOODS + 1):
        name = f"R{FLOODER}_00311_{n:06d}.edi"
        (work / "flood" / name).write_bytes(flood_message())
        flood.append((name, str(work / "flood" / name)))
    config = work / "attacker.json"
    passwords = {p.edi_id: p.password for p in parties.values()}
    config.write_text(json.dumps({"passwords": passwords, "burst": burst, "flood": flood}))
    return uploads, config


async def warm_up(hub: Hub, passwords: dict[str, str], files: Sequence[Upload]) -> None:
    async with canary_sessions(hub.port, passwords) as (up, down):
        done = await canary(up, down, files)
    if done.missing:
        raise RuntimeError(f"warm-up uploads not delivered: {done.missing} {done.errors}")


# --- the hub's log ------------------------------------------------------------------------


def read_log(log: Path) -> tuple[list[dict[str, Any]], int, int]:
    """The hub's JSON events (with `at`, epoch seconds), the lines that are not JSON, bytes."""
    events, bad = [], 0
    text = log.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not isinstance(event, dict):
            bad += 1
            continue
        with contextlib.suppress(KeyError, TypeError, ValueError):
            event["at"] = datetime.fromisoformat(event["timestamp"]).timestamp()
        events.append(event)
    return events, bad, len(text.encode())


STEPS = ("take in", "queued", "job", "seen after")


def breakdown(events: Sequence[dict[str, Any]], c: Canary) -> dict[str, dict[str, float]]:
    """Per canary file delivered: when it was closed (s after the first upload), its latency,
    and from the hub's log: close -> taken in (upload.accepted), taken in -> its job started
    (waiting for a worker), the job (elapsed_ms), the job's end -> seen by the recipient."""
    accepted = {e.get("file"): e for e in events if e.get("event") == "upload.accepted"}
    done = {e.get("file"): e for e in events if e.get("event") == "job.done"}
    rows = {}
    for name in c.names:
        a, d = accepted.get(name), done.get(name)
        if a is None or d is None or "at" not in a or "at" not in d or name not in c.seen:
            continue
        job = d.get("elapsed_ms", 0) / 1000
        latency = c.seen[name] - c.closed[name]
        rows[name] = {
            "at": c.closed_wall[name] - c.start_wall,
            "latency": latency,
            "take in": a["at"] - c.closed_wall[name],
            "queued": max(0.0, d["at"] - job - a["at"]),
            "job": job,
            "seen after": c.closed_wall[name] + latency - d["at"],
        }
    return rows


def jobs_of(events: Sequence[dict[str, Any]], participant: str) -> dict[str, list[float]]:
    """A participant's jobs in the hub's log: taken in -> job end, and the job itself."""
    accepted = {
        e.get("file"): e["at"]
        for e in events
        if e.get("event") == "upload.accepted" and e.get("participant") == participant
    }
    out: dict[str, list[float]] = {"taken in -> done": [], "job": []}
    for e in events:
        if e.get("event") == "job.done" and e.get("file") in accepted and "at" in e:
            out["taken in -> done"].append(e["at"] - accepted[e["file"]])
            out["job"].append(e.get("elapsed_ms", 0) / 1000)
    return out


def events_between(events: Sequence[dict[str, Any]], wall: tuple[float, float]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for e in events:
        if wall[0] <= e.get("at", 0) <= wall[1] + 1:
            name = str(e.get("event"))
            if name == "ssh.refused":
                name += f" ({e.get('reason')})"
            counts[name] += 1
    return counts


# --- report -------------------------------------------------------------------------------


def report_phase(p: Phase, events: Sequence[dict[str, Any]], emit: Emit) -> None:
    c = p.canary
    emit(f"[{p.name}] {len(c.names)} canary uploads ({CANARY} -> {CANARY_TO}, one a second):")
    emit(
        f"    close -> delivered: {spread(c.latencies)}; delivered {len(c.latencies)}"
        f"/{len(c.names)}; upload open -> close acknowledged: {spread(c.upload_s)}"
    )
    if c.errors:
        emit(f"    upload errors ({len(c.errors)}): {'; '.join(c.errors[:3])}")
    rows = breakdown(events, c)
    steps = {k: [r[k] for r in rows.values()] for k in STEPS}
    emit(
        "    hub side (its log): "
        + "; ".join(
            f"{k} p50 {quantile(v, 50):.3f} max {max(v):.3f} s" for k, v in steps.items() if v
        )
    )
    slowest = sorted(rows.items(), key=lambda item: -item[1]["latency"])[:3]
    emit(
        "    slowest: "
        + "; ".join(
            f"{name[-10:-4]} closed at {r['at']:.1f} s: {r['latency']:.2f} s ("
            + ", ".join(f"{k} {r[k]:.2f}" for k in STEPS)
            + ")"
            for name, r in slowest
        )
    )
    failures = ", ".join(f"{n} x {w}" for w, n in p.probe.failures.most_common())
    emit(
        f"    new logins ({PROBE} from {PROBE_ADDRESS}, every {PROBE_S:.0f} s): "
        f"{len(p.probe.login_s)} ok ({spread(p.probe.login_s)}), failed: {failures or 'none'}"
    )
    emit(f"      in time: {p.probe.timeline()}")
    cpu_s = p.cpu[0] + p.cpu[1]
    emit(
        f"    hub peaks: RSS {p.rss / 1e6:.0f} MB, {p.fds} open file descriptors, {p.gpg} gpg "
        f"processes; hub CPU {p.cpu[0]:.1f} s + its gpg {p.cpu[1]:.1f} s over {p.seconds:.0f} s "
        f"({cpu_s / p.seconds:.2f} cores); the whole machine {p.machine / p.seconds:.2f} of "
        f"{os.cpu_count()} cores busy; the hub's threads waited {p.waited:.1f} s for a CPU "
        f"(run queue)"
    )
    if p.attack:
        stuck = p.attack.get("stuck", 0)
        emit(
            f"    the attacker process used {p.attack['cpu_s']:.1f} s of CPU"
            + (f"; {stuck} of its tasks did not stop (attacker.log)" if stuck else "")
        )


def report_attack(p: Phase, bans: list[dict[str, Any]], events: Sequence[dict[str, Any]],
                  emit: Emit) -> None:  # fmt: skip
    a = p.attack or {}
    if not a:
        emit("    the attacker reported nothing (see attacker.log)")
        return
    h, b, f, u, s = a["hoard"], a["banner"], a["flood"], a["burst"], a["spray"]
    emit(
        f"  hoarder ({HOARDER} from {HOARD_ADDRESS}): {h['sessions']} sessions of "
        f"{SESSIONS_TRIED} tried (refused: {h['sessions_refused']}, « {h['session_refusal']} »); "
        f"{h['handles']} handles obtained, all sessions full at {h['full_s']} s, then "
        f"{h['refused_opens']} opens refused « {h['refusal']} »"
    )
    holds = b["hold_s"]
    emit(
        f"  banner-only ({BANNER_SLOTS} slots over {len(BANNER_ADDRESSES)} addresses "
        f"127.0.0.2-61, reopened {RECONNECT_S:.0f} s after a close): {b['opened']} connections, "
        f"{b['refused_at_once']} closed by the hub within {REFUSED_S:.0f} s, {b['held']} held "
        f"(at most {b['peak_held']} at once), {b['closed_after_hold']} of them closed by the hub "
        f"after {statistics.median(holds) if holds else float('nan'):.1f} s (median), "
        f"{b['open_at_end']} open at the end, {b['connect_errors']} connect errors "
        f"{b['connect_error']}"
    )
    emit(
        f"  packet flood ({FLOODER} from {FLOOD_ADDRESS}): {len(f['refused_s'])}/{FLOODS} "
        f"uploads of {f['bytes'] / 1e6:.2f} MB ({FLOOD_PKESKS} PKESK) refused; close -> .log "
        f"{spread(f['refused_s'])}; uploads {spread(f['upload_s'])}; errors "
        f"{f['errors'][:2] or 'none'}"
    )
    emit(f"    its .log: {f['detail'][:200]}")
    emit(
        "    hub side (its log): "
        + "; ".join(f"{k} {spread(v)}" for k, v in jobs_of(events, FLOODER).items())
    )
    emit(
        f"  burst ({BURSTER} -> {BURST_TO}, {BURST_SESSIONS} sessions): {u['files']} uploaded in "
        f"{u['uploaded_s']} s, {u['delivered_at_stop']} delivered when the canary was done "
        f"({a['stopped_s']:.0f} s), all {u['delivered']} at {u['all_delivered_s']} s; errors "
        f"{u['errors'][:2] or 'none'}"
    )
    emit(
        f"  password spray (from {len(SPRAY_ADDRESSES)} addresses 127.0.0.200-203, "
        f"{SPRAY_PER_ADDRESS} at once each, a made-up name per login): {s['connections']} "
        f"connections, {s['denied']} answered « denied », {s['refused']} dropped unanswered "
        f"(banned, or too many connections not logged in); other: {s['others'] or 'none'}"
    )
    report_bans(bans, a, events, emit)
    counts = events_between(events, p.wall)
    emit(
        "  hub events during the attack: "
        + ", ".join(f"{name} x {n}" for name, n in counts.most_common(12))
    )


def report_bans(
    bans: list[dict[str, Any]], a: dict[str, Any], events: Sequence[dict[str, Any]], emit: Emit
) -> None:
    """The bans by attacker, and when: during the attack, or once the attacker was stopped
    (its held connections dropped before their login count against their address)."""
    times: dict[str, list[float]] = {}
    for ban in bans:
        at = datetime.fromisoformat(ban["banned"]).timestamp() - a["start_wall"]
        times.setdefault(_group(ban["address"]), []).append(at)
    parts = []
    for group, ats in sorted(times.items()):
        during = sorted(t for t in ats if t <= a["stopped_s"])
        first = (
            f" (first at {during[0]:.1f} s, median {statistics.median(during):.1f} s)"
            if during
            else ""
        )
        parts.append(
            f"{group} {len(during)} during the attack{first} + {len(ats) - len(during)} at its stop"
        )
    reasons = Counter(str(ban.get("reason")) for ban in bans)
    emit(
        f"  bans (bdi admin bans list, after the attack): {len(bans)} addresses: "
        f"{'; '.join(parts) or 'none'}; causes "
        f"{', '.join(f'{r} x {n}' for r, n in reasons.most_common())}; "
        f"{sum(e.get('event') == 'defender.banned' for e in events)} defender.banned events "
        f"in the hub's log"
    )


def _group(address: str) -> str:
    if address in BANNER_ADDRESSES:
        return "banner"
    if address in SPRAY_ADDRESSES:
        return "spray"
    return {HONEST: "CANARY", PROBE_ADDRESS: "probe", HOARD_ADDRESS: "hoarder",
            FLOOD_ADDRESS: "flooder", BURST_ADDRESS: "burst"}.get(address, address)  # fmt: skip


def target(p: Phase, limit: float, emit: Emit) -> bool:
    lat, missing = p.canary.latencies, p.canary.missing
    p99 = quantile(lat, 99) if lat else float("inf")
    ok = not missing and p99 <= limit
    extra = f", {len(missing)} not delivered" if missing else ""
    emit(
        f"target canary p99 {p.name} <= {limit:.0f} s: {'PASS' if ok else 'FAIL'} "
        f"({p99:.2f} s{extra})"
    )
    return ok


# --- run ----------------------------------------------------------------------------------


async def measure(work: Path, parties: dict[str, Party], emit: Emit) -> bool:
    data = work / "data"
    started = time.monotonic()
    hub_fpr = prepare(BDI, data, parties, work)
    uploads, config = inputs(work, parties, hub_fpr)
    passwords = {p.edi_id: p.password for p in parties.values()}
    emit(
        f"data folder ready ({len(parties)} participants), {len(uploads)} canary and "
        f"{BURST_FILES} burst files sealed, {FLOODS} floods built, in "
        f"{time.monotonic() - started:.0f} s"
    )
    hub = Hub(BDI, data, free_port(), work / "hub.log")
    hub.probe = (CANARY, passwords[CANARY])
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "port": hub.port}))
    phases = []
    try:
        hub.start()
        await hub.ready()
        await warm_up(hub, passwords, uploads[:WARM_UPS])
        emit(
            f"the hub (`bdi serve`, defaults) on port {hub.port}, its log {hub.log}; "
            f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
            f"on {os.cpu_count()} cores"
        )
        quiet = uploads[WARM_UPS : WARM_UPS + CANARY_FILES]
        phases.append(await phase("without attack", hub, passwords, quiet, None))
        loud = uploads[WARM_UPS + CANARY_FILES :]
        phases.append(await phase("under attack", hub, passwords, loud, config))
        bans = json.loads(run_bdi(BDI, "admin", "bans", "list", "--data", str(data), "--json"))
    finally:
        hub.stop()
        kill_agent(data / "gnupg")
    events, bad, size = read_log(hub.log)
    for p in phases:
        report_phase(p, events, emit)
    report_attack(phases[1], bans, events, emit)
    limit = next((e.get("open_files") for e in events if e.get("event") == "server.started"), "?")
    emit(
        f"hub log: {size / 1e6:.1f} MB, {len(events)} JSON events, {bad} lines not JSON; the "
        f"hub's open files limit: {limit}"
    )
    quiet_ok = target(phases[0], TARGET_QUIET_S, emit)
    return target(phases[1], TARGET_ATTACK_S, emit) and quiet_ok


@dataclass
class Workplace:
    folder: Path
    homes: list[Path]  # GnuPG homes, short paths (agent sockets)
    parties: dict[str, Party] = field(default_factory=dict)
    passed: bool = False


@contextlib.contextmanager
def workplace(name: str, homes: int, keep: bool, logs: str, emit: Emit) -> Iterator[Workplace]:
    """A run's work folder and GnuPG homes: the parties' agents stopped and the homes removed
    at the end, the folder too unless asked to keep it or the run did not pass."""
    place = Workplace(
        Path(tempfile.mkdtemp(prefix=f"bdi-{name}-", dir="/tmp")),
        [Path(tempfile.mkdtemp(prefix="g", dir="/tmp")) for _ in range(homes)],
    )
    try:
        yield place
    finally:
        for party in place.parties.values():
            party.pgp.stop_agent()
        for home in place.homes:
            shutil.rmtree(home, ignore_errors=True)
        if keep or not place.passed:
            emit(f"work folder kept ({logs}): {place.folder}")
        else:
            shutil.rmtree(place.folder, ignore_errors=True)


def run(emit: Emit, keep: bool = False) -> bool:
    if not BDI.exists():
        raise RuntimeError(f"{BDI} not found: run with the project's venv python")
    emit(f"open files limit of this process: {raise_open_files()}")
    ids = participant_ids()
    with workplace("attack", len(ids), keep, "hub.log, attacker.log", emit) as place:
        for edi_id, home in zip(ids, place.homes, strict=True):
            place.parties[edi_id] = make_party(edi_id, home)
        place.passed = asyncio.run(measure(place.folder, place.parties, emit))
        return place.passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join((__doc__ or "").split("\n\n")[0].split()))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (hub.log)")
    parser.add_argument("--attacker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attacker is not None:
        return attacker_main(args.attacker)
    return 0 if run(emit_stdout, keep=args.keep) else 1


if __name__ == "__main__":
    sys.exit(main())
