"""Benchmark of big uploads (issue 18): the hub's processing time against bare gpg, and the
server's memory, on 256 MiB and 1 GiB files of a few huge sections or of ~60 000 small ones.

The hub runs as a separate `bdi serve` process (one fresh server per case) over a data folder
prepared here (hub key, COU010234 and CIE000311 registered with their own GnuPG homes), with
max_upload_bytes, max_decrypted_bytes and the quota raised for the 1 GiB files.

Files, made from the sample RCOU010234_00311_000001.edi (a répartition, COU010234 ->
CIE000311: header, five records, footer), every flow with its own clé (the affaire number
varied), so that the Suivi indexes as many flows as the file holds:
- few: FEW_SECTIONS sections of the sample's records repeated (footers computed), all good;
- many: the sample's section repeated (~60 000 of 4.4 KB in 256 MiB), numbered by their
  position as the 3-digit header field allows (modulo 1000): sections 1-999 are delivered,
  every later one is refused with ENTETE (section_number) and earns its `.log`, as a client
  that numbers past 999 would. So this case is 999 sections delivered and tens of thousands
  of `.log` files kept in the store.
Each is sealed beforehand by the sender with `gpg -z 0` (256 MiB travel over SFTP too).

Bare gpg ("floor"), measured just before and just after each hub run (their mean): the hub's
own OpenPGP calls on the same file, with the same keys, in this process: decrypt+verify of
the sealed file with the hub's home into a file, then sign+encrypt of that plain text to the
recipient into a file (gpg's default compression, as the hub seals). Each of the three
measures starts after `sync`: without it, bare gpg's decrypt of a gigabyte took 7-11 s right
after the file was made and sealed, against 3.4-3.9 s on an idle disk (a floor that slow made
the hub look twice as close to it).
Hub: the upload over SFTP (one session, asyncssh), then the time from the close (the upload
taken in) until its job is done (its spool file gone, the delivery in the recipient's inbox);
the server's RSS polled every 20 ms from before the upload (after one small warm-up upload)
to then, and its VmHWM. Each case's outputs are checked: the delivery, the `.log` count.

Targets: for every case, the hub's throughput >= TARGET_RATIO x bare gpg's (time of bare gpg
over the hub's processing time), and the server's RSS growth <= RSS_GROWTH_MB.

    .venv/bin/python bench/run.py --only bigfile     (BIGFILE_SIZES=256 for the 256 MiB only)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from hub_bench import (
    BDI,
    MB,
    MIB,
    RECIPIENT,
    SAMPLE,
    SENDER,
    BenchError,
    Hub,
    Party,
    PeakRss,
    inboxes,
    make_party,
    prepare,
    seal_uncompressed,
    serving,
    sessions,
    small_files,
    stop_agents,
    wait_inbox,
)

from bdi.config import load_settings
from bdi.crypto import OpenPGP
from bdi.datadir import hub_key_file
from bdi.routing.scan import CheckContext, check_bytes

Emit = Callable[[str], None]

SIZES_MIB = (256, 1024)
FEW_SECTIONS = 4
TARGET_RATIO = 0.50
RSS_GROWTH_MB = 64
MAX_BYTES = 3 << 30  # max_upload_bytes, max_decrypted_bytes and quota given to the server
DEADLINE_S = 1800.0
POLL_S = 0.02
KEY = b"MAR0001234"  # the affaire number inside the sample's clé: varied per flow
# the flows' affaire numbers, n × SCATTER modulo 10⁹ (one-to-one): a market's file lists its
# clés in no order, and the store's indexes on them are dearer to keep so than when appended
SCATTER = 7919
HEADER_NUMBER = slice(50, 53)  # header columns 51-53: section number
FOOTER = {"number": slice(32, 35), "count": slice(35, 43), "rejects": slice(43, 51),
          "total": slice(51, 69)}  # fmt: skip
NAME = "RCOU010234_00311_{:06d}.edi"


# --- files ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parts:
    """The sample's section cut up: header, the five records of its flow, footer."""

    header: bytes
    body: list[bytes]
    footer: bytes

    @classmethod
    def load(cls) -> Parts:
        lines = SAMPLE.read_bytes().splitlines(keepends=True)
        return cls(lines[0], lines[1:-1], lines[-1])

    def flow(self, n: int) -> bytes:
        key = b"M%09d" % (n * SCATTER % 10**9)
        return b"".join(line.replace(KEY, key) for line in self.body)

    def header_for(self, number: int) -> bytes:
        data = bytearray(self.header)
        data[HEADER_NUMBER] = b"%03d" % (number % 1000)
        return bytes(data)

    def footer_for(self, number: int, flows: int) -> bytes:
        """The sample's footer for `flows` repetitions of its flow: counts and total scale."""
        data = bytearray(self.footer)
        count = int(self.footer[FOOTER["count"]]) * flows
        rejects = int(self.footer[FOOTER["rejects"]]) * flows
        total = int(self.footer[FOOTER["total"]]) * flows % 10**18
        data[FOOTER["number"]] = b"%03d" % (number % 1000)
        data[FOOTER["count"]] = b"%08d" % count
        data[FOOTER["rejects"]] = b"%08d" % rejects
        data[FOOTER["total"]] = b"%018d" % total
        return bytes(data)


def write_few(path: Path, size: int, parts: Parts) -> tuple[int, int]:
    """FEW_SECTIONS big sections of about size / FEW_SECTIONS each; (sections, flows)."""
    flow_size = len(parts.flow(0))
    per_section = max(1, size // FEW_SECTIONS // flow_size)
    n = 0
    with path.open("wb") as out:
        for number in range(1, FEW_SECTIONS + 1):
            out.write(parts.header_for(number))
            for _ in range(per_section):
                out.write(parts.flow(n))
                n += 1
            out.write(parts.footer_for(number, per_section))
    return FEW_SECTIONS, n


def write_many(path: Path, size: int, parts: Parts) -> tuple[int, int]:
    """The sample's section repeated to `size`, numbered by position modulo 1000."""
    section = len(parts.header) + len(parts.flow(0)) + len(parts.footer)
    count = max(1, size // section)
    with path.open("wb") as out:
        for number in range(1, count + 1):
            out.write(parts.header_for(number) + parts.flow(number) + parts.footer_for(number, 1))
    return count, count


def check_generator(parts: Parts) -> None:
    """The generators' sections pass the hub's checks (small versions of both files)."""
    few = parts.header_for(1) + parts.flow(1) + parts.flow(2) + parts.footer_for(1, 2)
    few += parts.header_for(2) + parts.flow(3) + parts.footer_for(2, 1)
    if not check_bytes(few, CheckContext(NAME.format(1), SENDER)).fully_accepted:
        raise BenchError("the generated big sections are not valid")
    many = b"".join(parts.header_for(n) + parts.flow(n) + parts.footer_for(n, 1) for n in (1, 2, 3))
    if not check_bytes(many, CheckContext(NAME.format(1), SENDER)).fully_accepted:
        raise BenchError("the generated small sections are not valid")


@dataclass(frozen=True, slots=True)
class Case:
    kind: str  # few | many
    size_mib: int
    plain: Path
    sealed: Path
    sections: int
    flows: int

    @property
    def name(self) -> str:
        return self.plain.name

    @property
    def delivered_sections(self) -> int:
        return self.sections if self.kind == "few" else min(self.sections, 999)

    @property
    def refused(self) -> int:
        return self.sections - self.delivered_sections

    def title(self) -> str:
        what = (
            f"{self.sections} sections"
            if self.kind == "few"
            else f"{self.sections} sections of one flow ({self.refused} refused, ENTETE)"
        )
        return f"{self.size_mib} MiB {self.kind}: {what}, {self.flows} flows"


def make_case(work: Path, kind: str, size_mib: int, number: int, broker: Party, hub: Hub,
              emit: Emit) -> Case:  # fmt: skip
    parts = Parts.load()
    plain = work / NAME.format(number)
    start = time.perf_counter()
    write = write_few if kind == "few" else write_many
    sections, flows = write(plain, size_mib * MIB, parts)
    sealed = work / f"{plain.name}.pgp"
    made = time.perf_counter() - start
    start = time.perf_counter()
    seal_uncompressed(broker, plain, sealed, hub.fingerprint)
    emit(
        f"generated {plain.name} ({plain.stat().st_size} bytes) in {made:.1f} s, sealed "
        f"(-z 0, {sealed.stat().st_size} bytes) in {time.perf_counter() - start:.1f} s"
    )
    return Case(kind, size_mib, plain, sealed, sections, flows)


# --- bare gpg ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Floor:
    decrypt_s: float
    seal_s: float
    cpu_s: float = 0.0  # gpg's CPU seconds, both calls

    @property
    def total(self) -> float:
        return self.decrypt_s + self.seal_s


def bare_gpg(hub: Hub, recipient: str, case: Case, work: Path) -> Floor:
    """The hub's own OpenPGP calls on the case's file, one after the other, into files."""
    pgp = OpenPGP(hub.settings.gnupg_home)
    plain, sealed = work / "floor.plain", work / "floor.sealed"
    cpu = children_cpu()
    try:
        start = time.perf_counter()
        with plain.open("wb") as out:
            verdict = pgp.decrypt_verify_into(case.sealed, out, MAX_BYTES)
        decrypted = time.perf_counter() - start
        if not verdict.ok:
            raise BenchError(f"bare gpg refused {case.name}: {verdict.reason}")
        start = time.perf_counter()
        pgp.sign_encrypt(plain, sealed, recipient, hub.fingerprint)
        return Floor(decrypted, time.perf_counter() - start, children_cpu() - cpu)
    finally:
        plain.unlink(missing_ok=True)
        sealed.unlink(missing_ok=True)


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (the gpg runs)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


# --- the hub ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    upload_s: float
    processed_s: float  # from the close of the upload to its job's end
    idle: int  # server RSS before the upload, bytes
    peak: int  # polled
    hwm_before: int  # VmHWM before the upload and after the run
    hwm_after: int
    logs: int  # `.log` files the sender received
    stages: str  # the job's `job.stages` event: ms per step
    cpu: tuple[float, float] = (0.0, 0.0)  # the server's CPU seconds meanwhile: its own, gpg's


def stages(log: Path) -> str:
    """The last `job.stages` of the server's log, as `prepare 1234 ms, plan ...`, and the
    events it logged as warnings or errors (a job that failed and ran again, say)."""
    found, wrong = "", []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if not isinstance(event, dict):
                continue
            if event.get("event") == "job.stages":
                steps = ("prepare", "plan", "place", "flows")
                found = ", ".join(f"{s} {event[s]} ms" for s in steps if s in event)
            elif event.get("level") in ("warning", "error", "critical"):
                wrong.append(f"{event.get('event')}: {event.get('error', '')}"[:200])
    return found + (f"; SERVER WARNINGS: {wrong}" if wrong else "")


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def stored_logs(hub: Hub) -> int:
    db = sqlite3.connect(f"file:{hub.settings.data / 'bdi.sqlite3'}?mode=ro", uri=True)
    try:
        query = "SELECT count(*) FROM inboxfile WHERE participant_id = ? AND name LIKE '%.log'"
        (count,) = db.execute(query, (SENDER,)).fetchone()
        files = [p for p in hub.inbox(SENDER).iterdir() if p.name.endswith(".log")]
        return int(count) + len(files)
    finally:
        db.close()


def done(hub: Hub, delivered: Path) -> bool:
    """The delivery is in its inbox and the job is over (its spool file is gone then)."""
    return delivered.exists() and not any(hub.settings.spool.iterdir())


async def wait_done(hub: Hub, delivered: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done(hub, delivered):
        if time.monotonic() > deadline:
            raise BenchError(f"{delivered.name}: not processed after {DEADLINE_S:.0f} s")
        await asyncio.sleep(POLL_S)


async def upload(
    hub: Hub, port: int, pid: int, case: Case, warm: tuple[str, bytes], log: Path
) -> Run:
    async with sessions(port, SENDER, hub.passwords[SENDER], 1) as clients:
        sftp = clients.sftp[0]
        with inboxes(hub) as watch:
            async with sftp.open(f"/outbox/{warm[0]}", "wb") as f:
                await f.write(warm[1])
            await wait_inbox(watch, 1)
        await asyncio.sleep(1.0)
        proc = psutil.Process(pid)
        idle, hwm = proc.memory_info().rss, vm_hwm(pid)
        with PeakRss(proc) as rss, profiling(pid, case):
            start = time.perf_counter()
            await sftp.put(str(case.sealed), f"/outbox/{case.name}")
            uploaded = time.perf_counter() - start
            before = proc.cpu_times()
            await wait_done(hub, hub.inbox(RECIPIENT) / case.name)
            processed = time.perf_counter() - start - uploaded
            cpu = cpu_used(before, proc.cpu_times())
        return Run(
            uploaded, processed, idle, rss.peak, hwm, vm_hwm(pid), stored_logs(hub), stages(log),
            cpu,
        )  # fmt: skip


def cpu_used(before: object, after: object) -> tuple[float, float]:
    """CPU seconds between two `cpu_times()` of the server: its own threads', and those of
    its children once reaped (the gpg it ran): on a machine others load, wall times stretch,
    these hardly."""

    def own(t: object) -> float:
        return float(t.user + t.system)  # type: ignore[attr-defined]

    def children(t: object) -> float:
        return float(t.children_user + t.children_system)  # type: ignore[attr-defined]

    return own(after) - own(before), children(after) - children(before)


@contextlib.contextmanager
def profiling(pid: int, case: Case) -> Iterator[None]:
    """With BIGFILE_PROFILE=DIR, py-spy samples the server (its threads, not gpg) meanwhile,
    into DIR/<case>.txt (collapsed stacks: one line per stack with its count of samples);
    BIGFILE_PROFILE_ARGS adds py-spy options (`--gil`: only the thread holding the lock)."""
    folder = os.environ.get("BIGFILE_PROFILE")
    if not folder:
        yield
        return
    out = Path(folder) / f"{case.size_mib}-{case.kind}.txt"
    spy = Path(sys.executable).with_name("py-spy")
    argv = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--threads", "-o", str(out),
            *os.environ.get("BIGFILE_PROFILE_ARGS", "").split()]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # attached before the upload starts
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def hub_run(hub: Hub, case: Case, warm: tuple[str, bytes], log: Path) -> Run:
    env = {"BDI_MAX_UPLOAD_BYTES": str(MAX_BYTES), "BDI_MAX_DECRYPTED_BYTES": str(MAX_BYTES),
           "BDI_QUOTA_BYTES": str(2 * MAX_BYTES)}  # fmt: skip
    with serving(hub, log, env) as server:
        return asyncio.run(upload(hub, server.port, server.proc.pid, case, warm, log))


def clear_inboxes(hub: Hub) -> None:
    """Between cases: the delivery, the contents and the `.log` files out of the way (the
    server is stopped), so that each case starts from the same data folder."""
    for participant in (SENDER, RECIPIENT):
        for path in hub.inbox(participant).iterdir():
            path.unlink()
    shutil.rmtree(hub.settings.data / "contents", ignore_errors=True)
    db = sqlite3.connect(hub.settings.data / "bdi.sqlite3")
    try:
        db.execute("DELETE FROM inboxfile")
        db.commit()
    finally:
        db.close()


# --- report -----------------------------------------------------------------------------


def report(case: Case, before: Floor, run: Run, after: Floor, emit: Emit) -> bool:
    floor = (before.total + after.total) / 2
    ratio = floor / run.processed_s
    growth = run.peak - run.idle
    size = case.plain.stat().st_size
    emit(f"  {case.title()}")
    emit(
        f"    bare gpg: decrypt+verify {before.decrypt_s:.2f} / {after.decrypt_s:.2f} s, "
        f"sign+encrypt {before.seal_s:.2f} / {after.seal_s:.2f} s (before / after the hub): "
        f"mean {floor:.2f} s -> {size / floor / MB:.0f} MB/s; CPU {before.cpu_s:.2f} / "
        f"{after.cpu_s:.2f} s"
    )
    emit(
        f"    hub: upload {run.upload_s:.2f} s, processed {run.processed_s:.2f} s after it -> "
        f"{size / run.processed_s / MB:.0f} MB/s; {run.logs} .log files; steps: {run.stages}; "
        f"CPU: server {run.cpu[0]:.2f} s, its gpg {run.cpu[1]:.2f} s"
    )
    emit(
        f"    server RSS: idle {run.idle / MB:.1f} MB, peak {run.peak / MB:.1f} MB, growth "
        f"{growth / MB:.1f} MB (VmHWM {run.hwm_before / MB:.1f} -> {run.hwm_after / MB:.1f} MB)"
    )
    ok_ratio, ok_rss = ratio >= TARGET_RATIO, growth <= RSS_GROWTH_MB * MB
    emit(
        f"    target throughput >= {TARGET_RATIO:.0%} of bare gpg: "
        f"{'PASS' if ok_ratio else 'FAIL'} ({ratio:.0%}); RSS growth <= {RSS_GROWTH_MB} MB: "
        f"{'PASS' if ok_rss else 'FAIL'} ({growth / MB:.1f} MB)"
    )
    return ok_ratio and ok_rss


# --- run --------------------------------------------------------------------------------


def sizes() -> tuple[int, ...]:
    wanted = os.environ.get("BIGFILE_SIZES")
    return tuple(int(s) for s in wanted.split(",")) if wanted else SIZES_MIB


def kinds() -> tuple[str, ...]:
    wanted = os.environ.get("BIGFILE_KINDS")
    return tuple(wanted.split(",")) if wanted else ("few", "many")


def warm_up_file(work: Path, broker: Party, hub: Hub, n: int) -> tuple[str, bytes]:
    """A small good upload, sealed: the server's first job pays for lazy start-up costs."""
    name, data = small_files(n)[-1]
    plain, sealed = work / name, work / f"{name}.pgp"
    plain.write_bytes(data)
    seal_uncompressed(broker, plain, sealed, hub.fingerprint)
    try:
        return name, sealed.read_bytes()
    finally:
        plain.unlink()
        sealed.unlink()


def one_case(work: Path, hub: Hub, parties: dict[str, Party], case: Case, n: int,
             emit: Emit) -> bool:  # fmt: skip
    recipient = parties[RECIPIENT].fingerprint
    warm = warm_up_file(work, parties[SENDER], hub, n)
    os.sync()  # each measure starts with no dirty page of the steps before (see the docstring)
    before = bare_gpg(hub, recipient, case, work)
    os.sync()
    run = hub_run(hub, case, warm, work / f"server-{n}.log")
    os.sync()
    after = bare_gpg(hub, recipient, case, work)
    if run.logs != case.refused:
        raise BenchError(f"{case.name}: {run.logs} .log files, {case.refused} expected")
    clear_inboxes(hub)
    return report(case, before, run, after, emit)


def measure(work: Path, parties: dict[str, Party], emit: Emit) -> bool:
    settings = load_settings(None, data=work / "data", sftp_port=0, host="127.0.0.1")
    hub = asyncio.run(prepare(settings, list(parties.values())))
    parties[SENDER].pgp.import_public(hub_key_file(settings).read_text())
    check_generator(Parts.load())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    emit(f"machine load average before measuring: {load} (other work skews the figures)")
    ok, n = True, 0
    for size in sizes():
        for kind in kinds():
            n += 1
            case = make_case(work, kind, size, 900_000 + n, parties[SENDER], hub, emit)
            try:
                ok = one_case(work, hub, parties, case, n, emit) and ok
            finally:
                case.plain.unlink(missing_ok=True)
                case.sealed.unlink(missing_ok=True)
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            emit(f"    load average after: {load}")
    return ok


def run(emit: Emit) -> bool:
    if not BDI.exists():
        raise BenchError(f"{BDI} not found: run with the project's venv python")
    work = Path(tempfile.mkdtemp(prefix="bdi-bigfile-", dir="/tmp"))
    parties: dict[str, Party] = {}
    try:
        for edi_id in (SENDER, RECIPIENT):
            parties[edi_id] = make_party(edi_id)
        return measure(work, parties, emit)
    finally:
        homes = [p.pgp.home for p in parties.values()] + [work / "data" / "gnupg"]
        stop_agents(homes)
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
