"""Benchmark "crowds" (issue 18, item 2): a thousand sessions logging in at once, half with a
password (argon2), half with a key, while a participant logged in beforehand keeps uploading.

    .venv/bin/python bench/run.py --only crowd
    .venv/bin/python bench/crowd.py [--keep] [--clients N]   (--keep: leave the work folder,
                                                              hub.log; left anyway on a miss)

The hub is the real `bdi serve`, a subprocess (its CPU apart from the clients'), with the
settings' defaults, over a data folder made with `bdi init`; the canary COU010234 and its
recipient CIE000311 are registered with `bdi admin participant add --json` and their own GnuPG
homes (bench/soak.py's helpers), the crowd in this process through the registry (the CLI
would take a second a participant): PARTICIPANTS brokers COU800000..., each with an issued
password and an SSH key (one OpenPGP key for them all: they never upload).

The limits of the perimeter apply (HUB.md): 8 sessions per participant, 16 connections not
logged in per address, 512 in all. So the crowd is CROWD sessions, SESSIONS_EACH per
participant, each participant from an address of its own (127.0.1.1...: Linux routes all of
127/8 to the loopback), half of each participant's sessions by password and half by key; its
logins run in CLIENT_PROCESSES child processes of this script (`--clients`: an asyncssh client
costs ~4.5 ms of CPU a login, two thirds of the hub's side without argon2, and from one process
the crowd took 16 s against 10-13 s from two or four: its event loop was the bottleneck), at
nice CLIENT_NICE (they stand for a thousand machines whose CPU is not the hub's: `--nice 0` to
run them at the hub's priority, where their bursts of key exchanges delay the canary's own
client too), each allowed IN_FLIGHT // CLIENT_PROCESSES logins under way at once, all its
logins started together: at most IN_FLIGHT connections wait for their login, below the hub's
512. A login is timed from its TCP connect to the authenticated connection (`asyncssh.connect`
returning), then the SFTP session's start; every session is then held open until the canary is
done. The hub's /metrics (`bdi_sftp_sessions`, sampled every METRICS_S) shows how many it held
at once.

The canary (bench/attack.py's): COU010234 uploads one good file a second, CANARY_FILES in
all, over a session opened before the crowd (from 127.0.0.1); its recipient stats each name in
its /inbox/ every 50 ms; close -> first stat that finds it. The crowd is let go LEAD_S after
the canary's first upload, and holds its sessions until the canary's last file is delivered.

The floor: the CPU cost of one argon2 verification with the hub's parameters (measured here,
VERIFIES in a row), times the crowd's password logins, over the machine's cores: no hub can let
the crowd's passwords in faster. The crowd's login latencies are printed against it.

Targets: canary close -> delivered p99 <= TARGET_CANARY_S over the whole run, every canary
file delivered, CROWD sessions held at once by the hub, 0 errors in the crowd and no warning
or error in the hub's log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
from attack import (
    CANARY,
    CANARY_TO,
    Canary,
    HubSampler,
    breakdown,
    canary,
    canary_sessions,
    quantile,
    raise_open_files,
    read_log,
    seal_many,
    spread,
    warm_up,
    why,
    workplace,
)
from hub_bench import small_files
from soak import Hub, free_port, kill_agent, prepare
from soak_support import Party, make_party

from bdi.admin.passwords import hash_password, verify_password
from bdi.admin.registry import register
from bdi.config import load_settings
from bdi.crypto import OpenPGP
from bdi.datadir import open_hub
from bdi.routing.layout import default_layout

BDI = Path(sys.executable).absolute().parent / "bdi"
SCRIPT = Path(__file__).resolve()
Emit = Callable[[str], None]

CROWD = 1000
SESSIONS_EACH = 8  # sessions_per_participant's default: the crowd fills every participant's
PARTICIPANTS = CROWD // SESSIONS_EACH  # 125 brokers
CROWD_ID = "COU8{:05d}"
CLIENT_PROCESSES = 2
CLIENT_NICE = 10  # the crowd's clients stand for a thousand machines: below the hub's priority
IN_FLIGHT = 384  # logins under way at once, over all client processes (the hub allows 512)
LOGIN_TIMEOUT_S = 60.0  # the client's; the hub closes a connection not logged in after 30 s
CANARY_FILES = 60
WARM_UPS = 2
LEAD_S = 5.0  # the canary's uploads before the crowd is let go
METRICS_S = 0.5
METRICS_TOKEN = "bench-crowd-metrics"
CANARY_SESSIONS = 2  # the canary's and its recipient's, counted by the hub's /metrics too
VERIFIES = 30
TARGET_CANARY_S = 1.0


def emit_stdout(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def address(index: int) -> str:
    """The address of the crowd's participant `index`: 127.0.1.1, 127.0.1.2, ..."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


# --- the crowd's clients (the child processes) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Login:
    user: str
    method: str  # "password" or "key"
    secret: str  # the password, or the private key (OpenSSH format)
    address: str


@dataclass
class Outcome:
    user: str
    method: str
    started: float  # seconds after the go
    login_s: float | None = None  # connect -> logged in
    sftp_s: float | None = None  # logged in -> SFTP session started
    error: str = ""


async def log_in(
    port: int, login: Login, key: asyncssh.SSHKey | None
) -> asyncssh.SSHClientConnection:
    if key is None:
        return await asyncssh.connect(
            "127.0.0.1", port, local_addr=(login.address, 0), username=login.user,
            password=login.secret, known_hosts=None, client_keys=None, agent_path=None,
            preferred_auth="password",
        )  # fmt: skip
    return await asyncssh.connect(
        "127.0.0.1", port, local_addr=(login.address, 0), username=login.user,
        client_keys=[key], known_hosts=None, agent_path=None, preferred_auth="publickey",
    )  # fmt: skip


async def crowd_child(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    port, logins = config["port"], [Login(*row) for row in config["logins"]]
    keys = {
        login.secret: asyncssh.import_private_key(login.secret)
        for login in logins
        if login.method == "key"
    }
    gate = asyncio.Semaphore(config["in_flight"])
    held: list[asyncssh.SSHClientConnection] = []
    emit_stdout(json.dumps({"event": "ready"}))
    await lines.get()  # "go"
    go = time.monotonic()

    async def one(login: Login) -> Outcome:
        async with gate:
            started = time.monotonic()
            out = Outcome(login.user, login.method, round(started - go, 3))
            try:
                async with asyncio.timeout(LOGIN_TIMEOUT_S):
                    conn = await log_in(port, login, keys.get(login.secret))
                    held.append(conn)
                    logged_in = time.monotonic()
                    out.login_s = round(logged_in - started, 4)
                    await conn.start_sftp_client()
                    out.sftp_s = round(time.monotonic() - logged_in, 4)
            except (asyncssh.Error, OSError, TimeoutError) as exc:
                out.error = why(exc)
            return out

    outcomes = await asyncio.gather(*(one(login) for login in logins))
    emit_stdout(json.dumps({"event": "held", "outcomes": [o.__dict__ for o in outcomes]}))
    await lines.get()  # "stop"
    for conn in held:
        conn.abort()
    used = resource.getrusage(resource.RUSAGE_SELF)
    emit_stdout(json.dumps({"event": "done", "cpu_s": round(used.ru_utime + used.ru_stime, 2)}))


def clients_main(config_path: Path) -> int:
    raise_open_files()
    config = json.loads(config_path.read_text())
    os.nice(config["nice"])

    async def main() -> None:
        lines: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), lambda: lines.put_nowait(sys.stdin.readline()))
        await crowd_child(config, lines)

    asyncio.run(main())
    return 0


@dataclass
class Client:
    """A child process of the crowd, driven by lines on its stdin, answering JSON lines."""

    proc: asyncio.subprocess.Process

    async def tell(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{word}\n".encode())
        await self.proc.stdin.drain()

    async def hear(self, event: str, within_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), within_s)
        answer = json.loads(line or b"{}")
        if answer.get("event") != event:
            raise RuntimeError(f"a crowd client said {line[:200]!r}, not {event}")
        return dict(answer)


@contextlib.asynccontextmanager
async def clients(configs: Sequence[Path], work: Path) -> AsyncIterator[list[Client]]:
    started: list[Client] = []
    try:
        with (work / "clients.log").open("ab") as err:
            for config in configs:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, str(SCRIPT), "--clients-of", str(config),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                    limit=1 << 26,  # the "held" line carries every outcome
                )  # fmt: skip
                started.append(Client(proc))
        for client in started:
            await client.hear("ready", 120)
        yield started
    finally:
        for client in started:
            if client.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    client.proc.kill()
                await client.proc.wait()


# --- set-up -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    edi_id: str
    password: str
    private_key: str
    address: str


def openpgp_keys(home: Path, count: int) -> list[str]:
    """`count` public OpenPGP keys (the hub refuses a key registered for another participant;
    the crowd never uploads, so their private halves stay here)."""
    pgp = OpenPGP(home)
    try:
        uids = (f"{CROWD_ID.format(n)} <crowd{n}@example.test>" for n in range(count))
        return [pgp.export_public(pgp.generate_key(uid)) for uid in uids]
    finally:
        pgp.stop_agent()


async def register_crowd(data: Path, crowd_keys: Sequence[str]) -> list[Member]:
    """PARTICIPANTS brokers, each with its issued password, an SSH key and an OpenPGP key of
    its own."""
    hub = await open_hub(load_settings(None, data=data))
    members = []
    try:
        for index in range(PARTICIPANTS):
            key = asyncssh.generate_private_key("ssh-ed25519")
            edi_id = CROWD_ID.format(index)
            public = key.export_public_key().decode()
            registered = await register(
                hub.store, hub.pgp, hub.mailboxes, default_layout(), edi_id=edi_id,
                name=f"Foule {index}", email="", pgp_key=crowd_keys[index], role=None,
                ssh_keys=[public], now=datetime.now(UTC),
            )  # fmt: skip
            private = key.export_private_key().decode()
            members.append(Member(edi_id, registered.password, private, address(index)))
    finally:
        await hub.store.engine.dispose()
    return members


def client_configs(work: Path, port: int, members: Sequence[Member]) -> list[Path]:
    """The crowd's logins, dealt round-robin to the client processes: each participant's
    sessions, half by password and half by key, spread over them all."""
    logins = [
        Login(m.edi_id, method, m.password if method == "password" else m.private_key, m.address)
        for n in range(SESSIONS_EACH)
        for m in members
        for method in ["password" if n % 2 == 0 else "key"]
    ]
    paths = []
    for k in range(CLIENT_PROCESSES):
        path = work / f"clients-{k}.json"
        share = logins[k::CLIENT_PROCESSES]
        path.write_text(json.dumps({
            "port": port, "in_flight": IN_FLIGHT // CLIENT_PROCESSES, "nice": CLIENT_NICE,
            "logins": [[x.user, x.method, x.secret, x.address] for x in share],
        }))  # fmt: skip
        paths.append(path)
    return paths


def argon2_cost_s() -> float:
    """CPU seconds of one verification with the hub's argon2 parameters (the median of
    VERIFIES, each timed by this thread's CPU clock)."""
    stored = hash_password("x" * 24)
    times = []
    for _ in range(VERIFIES):
        started = time.thread_time()
        verify_password(stored, "x" * 24)
        times.append(time.thread_time() - started)
    return sorted(times)[len(times) // 2]


# --- the hub's /metrics -------------------------------------------------------------------


def web_port(log: Path) -> int:
    events, _, _ = read_log(log)
    return next(int(e["web_port"]) for e in events if e.get("event") == "server.started")


def sessions_now(port: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    found = re.search(r"^bdi_sftp_sessions (\S+)$", text, re.M)
    return int(float(found[1])) if found else -1


@dataclass
class Held:
    peak: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (s after the go, held)
    errors: Counter[str] = field(default_factory=Counter)


async def watch_sessions(port: int, stop: asyncio.Event, go: float, held: Held) -> None:
    while not stop.is_set():
        try:
            now = await asyncio.to_thread(sessions_now, port)
            held.peak = max(held.peak, now)
            held.samples.append((round(time.monotonic() - go, 1), now))
        except OSError as exc:
            held.errors[why(exc)] += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(METRICS_S):
                await stop.wait()


# --- the run ------------------------------------------------------------------------------


@dataclass
class Run:
    canary: Canary
    outcomes: list[Outcome]
    held: Held
    go_wall: float  # epoch seconds of the go
    all_held_s: float  # the go -> every client reported its share held
    clients_cpu_s: float
    sampler: HubSampler
    seconds: float


async def crowd_run(hub: Hub, passwords: dict[str, str], files: Sequence[tuple[str, bytes]],
                    configs: Sequence[Path], work: Path) -> Run:  # fmt: skip
    assert hub.proc is not None
    metrics_port = web_port(hub.log)
    held, stop = Held(), asyncio.Event()
    async with clients(configs, work) as crowd, canary_sessions(hub.port, passwords) as (up, down):
        start = time.monotonic()
        with HubSampler(hub.proc.pid) as sampler:
            canary_task = asyncio.create_task(canary(up, down, files))
            await asyncio.sleep(LEAD_S)
            go, go_wall = time.monotonic(), time.time()
            watching = asyncio.create_task(watch_sessions(metrics_port, stop, go, held))
            for client in crowd:
                await client.tell("go")
            answers = await asyncio.gather(
                *(c.hear("held", LOGIN_TIMEOUT_S * len(configs) + 120) for c in crowd)
            )
            all_held = time.monotonic() - go
            result = await canary_task
            await asyncio.sleep(2 * METRICS_S)
            stop.set()
            await watching
            for client in crowd:
                await client.tell("stop")
            dones = [await c.hear("done", 60) for c in crowd]
        seconds = time.monotonic() - start
    outcomes = [Outcome(**o) for answer in answers for o in answer["outcomes"]]
    cpu = sum(d["cpu_s"] for d in dones)
    return Run(result, outcomes, held, go_wall, all_held, cpu, sampler, seconds)


# --- report -------------------------------------------------------------------------------


def held(run: Run) -> int:
    """The crowd's sessions the hub held at once at most (its count less the canary's)."""
    return run.held.peak - CANARY_SESSIONS


def peak_at(run: Run) -> str:
    first = next((at for at, n in run.held.samples if n == run.held.peak), None)
    return "never" if first is None else f"{first:.1f} s after the go"


def report(run: Run, cost_s: float, events: Sequence[dict[str, Any]], emit: Emit) -> bool:
    cores = os.cpu_count() or 1
    ok = [o for o in run.outcomes if not o.error]
    errors = Counter(o.error for o in run.outcomes if o.error)
    passwords = sum(o.method == "password" for o in run.outcomes)
    floor = cost_s * passwords / cores
    emit(
        f"crowd: {len(run.outcomes)} sessions ({passwords} by password, "
        f"{len(run.outcomes) - passwords} by key) of {PARTICIPANTS} participants x "
        f"{SESSIONS_EACH}, one address each, from {CLIENT_PROCESSES} client processes (nice "
        f"{CLIENT_NICE}), at most {IN_FLIGHT} logging in at once"
    )
    for method in ("password", "key"):
        times = [o.login_s for o in ok if o.method == method and o.login_s is not None]
        emit(f"    login latency ({method}): {spread(times)}")
    logins = [o.login_s for o in ok if o.login_s is not None]
    sftp = [o.sftp_s for o in ok if o.sftp_s is not None]
    ends = [o.started + (o.login_s or 0) + (o.sftp_s or 0) for o in ok]
    emit(
        f"    login latency (all): {spread(logins)}; then the SFTP session's start: {spread(sftp)}"
    )
    logged = sorted(
        e["at"] - run.go_wall
        for e in events
        if e.get("event") == "login.ok" and str(e.get("participant")).startswith("COU8")
        and "at" in e
    )  # fmt: skip
    emit(
        f"    the floor: one argon2 verification {cost_s * 1000:.1f} ms of CPU x {passwords} "
        f"passwords / {cores} cores = {floor:.2f} s; the whole crowd logged in "
        f"{max(ends, default=float('nan')):.2f} s after the go (its SFTP sessions started); "
        f"the hub's log: first login {logged[0] if logged else float('nan'):.2f} s after the "
        f"go, half {logged[len(logged) // 2] if logged else float('nan'):.2f} s, last "
        f"{logged[-1] if logged else float('nan'):.2f} s"
    )
    emit(
        f"    held by the hub at once (/metrics bdi_sftp_sessions, less the canary's "
        f"{CANARY_SESSIONS}): {held(run)}, first at {peak_at(run)}; errors: "
        f"{sum(errors.values())} {dict(errors.most_common(4)) if errors else ''}"
        + (f"; /metrics failures {dict(run.held.errors)}" if run.held.errors else "")
    )
    c = run.canary
    during = [
        c.seen[n] - c.closed[n]
        for n in c.names
        if n in c.seen and run.go_wall <= c.closed_wall[n] <= run.go_wall + run.all_held_s
    ]
    emit(
        f"canary ({CANARY} -> {CANARY_TO}, one upload a second, logged in before the crowd): "
        f"close -> delivered {spread(c.latencies)}; delivered {len(c.latencies)}/{len(c.names)}"
        f"; during the crowd's logins ({len(during)} files): {spread(during)}"
    )
    if c.errors:
        emit(f"    upload errors ({len(c.errors)}): {'; '.join(c.errors[:3])}")
    rows = breakdown(events, c)
    slowest = sorted(rows.items(), key=lambda item: -item[1]["latency"])[:3]
    emit(
        "    slowest: "
        + "; ".join(
            f"{name[-10:-4]} at {r['at'] - LEAD_S:+.1f} s from the go: {r['latency']:.2f} s "
            f"(take in {r['take in']:.2f}, queued {r['queued']:.2f}, job {r['job']:.2f}, "
            f"seen after {r['seen after']:.2f})"
            for name, r in slowest
        )
    )
    s = run.sampler
    emit(
        f"hub: CPU {s.cpu[0]:.1f} s + its gpg {s.cpu[1]:.1f} s over {run.seconds:.0f} s; "
        f"peaks RSS {s.rss / 1e6:.0f} MB, {s.fds} open file descriptors; its threads waited "
        f"{s.waited:.1f} s for a CPU; the crowd's clients used {run.clients_cpu_s:.1f} s of CPU; "
        f"the machine {s.machine / run.seconds:.2f} of {cores} cores busy"
    )
    ours = [e for e in events if "." in str(e.get("event")) and "logger" not in e]
    counts = Counter(str(e.get("event")) for e in ours)
    emit("hub events: " + ", ".join(f"{name} x {n}" for name, n in counts.most_common(10)))
    troubles = Counter(
        str(e.get("event")) for e in events if e.get("level") in ("warning", "error", "critical")
    )
    emit(f"hub warnings and errors: {dict(troubles) or 'none'}")
    p99 = quantile(c.latencies, 99) if c.latencies else float("inf")
    canary_ok = not c.missing and not c.errors and p99 <= TARGET_CANARY_S
    held_ok = held(run) >= CROWD
    errors_ok = not errors and len(run.outcomes) == CROWD and not troubles
    emit(
        f"target canary p99 <= {TARGET_CANARY_S:.0f} s: {'PASS' if canary_ok else 'FAIL'} "
        f"({p99:.2f} s, {len(c.missing)} not delivered)"
    )
    emit(f"target {CROWD} sessions held at once: {'PASS' if held_ok else 'FAIL'} ({held(run)})")
    emit(
        f"target 0 errors: {'PASS' if errors_ok else 'FAIL'} ({sum(errors.values())} in the "
        f"crowd, {sum(troubles.values())} warnings or errors in the hub's log)"
    )
    return canary_ok and held_ok and errors_ok


# --- run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def environment(**values: str) -> Any:
    """Variables for the processes started within (the hub's `BDI_*` settings)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def measure(
    work: Path, parties: dict[str, Party], crowd_keys: Sequence[str], emit: Emit
) -> bool:
    data = work / "data"
    started = time.monotonic()
    hub_fpr = prepare(BDI, data, parties, work)
    members = await register_crowd(data, crowd_keys)
    plain = small_files(WARM_UPS + CANARY_FILES)
    sealed = seal_many([(parties[CANARY], p) for _, p in plain], hub_fpr)
    uploads = [(name, s) for (name, _), s in zip(plain, sealed, strict=True)]
    passwords = {p.edi_id: p.password for p in parties.values()}
    emit(
        f"data folder ready ({len(members)} crowd participants), {len(uploads)} canary files "
        f"sealed, in {time.monotonic() - started:.0f} s"
    )
    hub = Hub(BDI, data, free_port(), work / "hub.log")
    hub.probe = (CANARY, passwords[CANARY])
    try:
        with environment(BDI_METRICS_TOKEN=METRICS_TOKEN):
            hub.start()
        await hub.ready()
        await warm_up(hub, passwords, uploads[:WARM_UPS])
        cost = argon2_cost_s()
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        emit(
            f"the hub (`bdi serve`, defaults) on port {hub.port}, its log {hub.log}; load "
            f"average {load} on {os.cpu_count()} cores; one argon2 verification "
            f"{cost * 1000:.1f} ms of CPU here"
        )
        configs = client_configs(work, hub.port, members)
        run = await crowd_run(hub, passwords, uploads[WARM_UPS:], configs, work)
    finally:
        hub.stop()
        kill_agent(data / "gnupg")
    events, bad, _ = read_log(hub.log)
    emit(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    passed = report(run, cost, events, emit)
    if bad:
        emit(f"hub log: {bad} lines not JSON")
    return passed


def run(emit: Emit, keep: bool = False) -> bool:
    if not BDI.exists():
        raise RuntimeError(f"{BDI} not found: run with the project's venv python")
    emit(f"open files limit of this process: {raise_open_files()}")
    with workplace("crowd", 3, keep, "hub.log, clients.log", emit) as place:
        for edi_id, home in zip((CANARY, CANARY_TO), place.homes, strict=False):
            place.parties[edi_id] = make_party(edi_id, home)
        crowd_keys = openpgp_keys(place.homes[2], PARTICIPANTS)
        place.passed = asyncio.run(measure(place.folder, place.parties, crowd_keys, emit))
        return place.passed


def main(argv: Sequence[str] | None = None) -> int:
    global CLIENT_PROCESSES, CLIENT_NICE
    parser = argparse.ArgumentParser(description=" ".join((__doc__ or "").split("\n\n")[0].split()))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (hub.log)")
    parser.add_argument("--clients", type=int, default=CLIENT_PROCESSES, help="client processes")
    parser.add_argument("--nice", type=int, default=CLIENT_NICE, help="the clients' nice value")
    parser.add_argument("--clients-of", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clients_of is not None:
        return clients_main(args.clients_of)
    CLIENT_PROCESSES, CLIENT_NICE = args.clients, args.nice
    return 0 if run(emit_stdout, keep=args.keep) else 1


if __name__ == "__main__":
    sys.exit(main())
