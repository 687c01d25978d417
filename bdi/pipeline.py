"""The pipeline: a pool of workers that turn spooled uploads into deliveries and `.log` files.

Every job is idempotent. Its outputs are planned (names reserved, movements and flows
recorded) in one transaction; each output is then written to a staging file and renamed
into the inbox; the job is closed in one last transaction. After a crash a planned output
whose name is already in the inbox was placed before the crash; the others are written again.
Jobs are resumed before the SFTP server accepts anyone, so no recipient can have deleted a
file in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from bdi.config import Settings
from bdi.crypto import OpenPGP
from bdi.mailbox.storage import Mailboxes, fsync_file
from bdi.plan import Upload, group_by_recipient, occurrence, plan_outputs
from bdi.routing.errors import Code, Problem
from bdi.routing.flows import iter_flows
from bdi.routing.layout import Layout
from bdi.routing.logs import LogFile, log_files, whole_upload_log
from bdi.routing.model import FileReport, Flow
from bdi.routing.scan import CheckContext, check_lines, last_report
from bdi.store.models import Job, Output, Participant
from bdi.store.repo import PlannedOutput, Store

log = structlog.get_logger("bdi.pipeline")
CHUNK = 1 << 20
MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Hub:
    """Everything the pipeline works with, built once at start-up and passed down."""

    settings: Settings
    layout: Layout
    store: Store
    mailboxes: Mailboxes
    pgp: OpenPGP
    hub_fingerprint: str

    def spool_file(self, name: str) -> Path:
        return self.settings.spool / name

    def plain_file(self, name: str) -> Path:
        return self.settings.spool / f"{name}.plain"

    def contents(self) -> Path:
        return self.settings.data / "contents"


def utcnow() -> datetime:
    return datetime.now(UTC)


def local_time(hub: Hub, at: datetime) -> datetime:
    """Wall-clock time in the hub's zone (Europe/Paris), as `.log` lines show it."""
    zone = ZoneInfo(hub.settings.timezone)
    return at.astimezone(zone).replace(tzinfo=None, microsecond=0)


def check_plain(hub: Hub, plain: Path, upload: Upload, keys: dict[str, str]) -> FileReport:
    """Blocking: read the plain text once and check it.

    `keys` maps each active participant to its OpenPGP fingerprint."""
    can_receive = partial(_can_receive, hub, keys)
    ctx = CheckContext(upload.upload_name, upload.sender, can_receive, hub.layout)
    with plain.open("rb") as stream:
        return last_report(check_lines(stream, ctx))


def _can_receive(hub: Hub, keys: dict[str, str], recipient: str) -> bool:
    """Registered, active, and with an OpenPGP key that can be encrypted to right now."""
    fingerprint = keys.get(recipient)
    return fingerprint is not None and hub.pgp.can_encrypt_to(fingerprint)


class Pipeline:
    """A pool of workers fed by a queue of job ids."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.workers: list[asyncio.Task[None]] = []
        self.plan_lock = asyncio.Lock()
        self.attempts: dict[int, int] = {}

    def start(self) -> None:
        for n in range(self.hub.settings.workers):
            self.workers.append(asyncio.create_task(self._work(), name=f"worker-{n}"))

    async def stop(self) -> None:
        for task in self.workers:
            task.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        self.workers.clear()

    def submit(self, job_id: int) -> None:
        self.queue.put_nowait(job_id)

    async def resume(self) -> int:
        """Queue every job a previous run left unfinished."""
        jobs = await self.hub.store.unfinished_jobs()
        for job in jobs:
            log.info("job.resumed", job=job.id, participant=job.participant_id, state=job.state)
            assert job.id is not None
            self.submit(job.id)
        return len(jobs)

    async def _work(self) -> None:
        while True:
            job_id = await self.queue.get()
            try:
                await process_job(self.hub, job_id, self.plan_lock)
            except Exception:
                self._retry(job_id)
            finally:
                self.queue.task_done()

    def _retry(self, job_id: int) -> None:
        """A failed job is tried again a few times (its steps are idempotent), then left
        for the next start-up, with the error in the log."""
        attempt = self.attempts.get(job_id, 0) + 1
        self.attempts[job_id] = attempt
        log.exception("job.failed", job=job_id, attempt=attempt)
        if attempt < MAX_ATTEMPTS:
            self.submit(job_id)


async def process_job(hub: Hub, job_id: int, plan_lock: asyncio.Lock) -> None:
    """received -> planned -> done. A job found `planned` (after a crash) has its flow index
    cleared and stored again, and only the outputs not yet in place written."""
    started = time.monotonic()
    job = await hub.store.job(job_id)
    if job is None or job.state == "done":
        return
    people = {p.id: p for p in await hub.store.participants()}
    sender = people[job.participant_id]
    if job.state == "received":
        outputs, movements = await _plan(hub, job, people, plan_lock)
        await _index(hub, job, sender, outputs, movements, fresh=True)
    else:
        assert job.id is not None
        outputs = await hub.store.outputs(job_id)
        movements = await hub.store.job_movements(job.id)
        await _index(hub, job, sender, outputs, movements, fresh=False)
    await _write_outputs(hub, job, outputs, people)
    outcome = _outcome(outputs)
    await hub.store.finish_job(job_id, outcome, utcnow())
    for path in (hub.spool_file(job.spool_name), hub.plain_file(job.spool_name)):
        path.unlink(missing_ok=True)
    elapsed = int((time.monotonic() - started) * 1000)
    log.info("job.done", job=job_id, participant=sender.id, file=job.upload_name,
             outcome=outcome, outputs=len(outputs), elapsed_ms=elapsed)  # fmt: skip


def _outcome(outputs: Sequence[Output]) -> str:
    deliveries = any(o.kind == "delivery" for o in outputs)
    logs = any(o.kind == "log" for o in outputs)
    return "partial" if deliveries and logs else "delivered" if deliveries else "refused"


async def _decrypt(hub: Hub, job: Job, sender: Participant) -> bool:
    result = await asyncio.to_thread(
        hub.pgp.decrypt_verify,
        hub.spool_file(job.spool_name),
        hub.plain_file(job.spool_name),
        hub.settings.max_decrypted_bytes,
    )
    if result.ok and result.signer == sender.pgp_fingerprint:
        return True
    log.info(
        "upload.refused",
        job=job.id,
        participant=sender.id,
        file=job.upload_name,
        code=Code.DECHIFFREMENT.value,
        reason=result.reason if not result.ok else "other signer",
    )
    hub.plain_file(job.spool_name).unlink(missing_ok=True)
    return False


async def _plan(
    hub: Hub, job: Job, people: dict[str, Participant], plan_lock: asyncio.Lock
) -> tuple[list[Output], dict[str, int]]:
    assert job.id is not None
    sender = people[job.participant_id]
    upload = Upload(job.id, sender.id, job.upload_name, job.received_at)
    now = local_time(hub, utcnow())
    report: FileReport | None = None
    if await _decrypt(hub, job, sender):
        keys = {p.id: p.pgp_fingerprint for p in people.values() if p.active}
        report = await asyncio.to_thread(
            check_plain, hub, hub.plain_file(job.spool_name), upload, keys
        )
        logs = log_files(report, now, hub.layout)
        _log_report(job, report)
    else:
        logs = [whole_upload_log(job.upload_name, Problem(Code.DECHIFFREMENT), now, hub.layout)]
    contents = await asyncio.to_thread(_store_contents, hub, job, report)
    async with plan_lock:
        planned = await _reserve(hub, upload, report, logs, contents)
        return await hub.store.save_plan(job.id, planned)


BATCH = 500


async def _index(
    hub: Hub,
    job: Job,
    sender: Participant,
    outputs: list[Output],
    movements: dict[str, int],
    fresh: bool,
) -> None:
    """Store the flows of the delivered sections in batches: memory stays flat whatever
    the size of the file. A half-stored index (crash) is cleared and stored again."""
    assert job.id is not None
    if not movements:
        return
    if not fresh:
        await hub.store.clear_occurrences(list(movements.values()))
    plain = hub.plain_file(job.spool_name)
    if not plain.exists():
        assert await _decrypt(hub, job, sender)
    by_recipient = {o.participant_id: o for o in outputs if o.kind == "delivery"}
    sections = await asyncio.to_thread(_delivered_sections, hub, plain, by_recipient, movements)
    upload = Upload(job.id, sender.id, job.upload_name, job.received_at)
    await _store_flows(hub, plain, upload, sections, movements)


def _delivered_sections(
    hub: Hub, plain: Path, outputs: dict[str, Output], movements: dict[str, int]
) -> dict[int, tuple[str, str]]:
    """Section number -> (flow code, recipient) of every delivered section, from the headers."""
    starts = {start: recipient for recipient in movements
              for start, _ in _ranges(outputs[recipient].ranges)}  # fmt: skip
    header = hub.layout.header
    code = header.field("flow_code")
    found: dict[int, tuple[str, str]] = {}
    number, offset = 0, 0
    with plain.open("rb") as stream:
        for raw in stream:
            if raw[:10] == b"1111111111":
                number += 1
                if offset in starts:
                    flow_code = raw[code.start : code.end].decode(hub.layout.encoding)
                    found[number] = (flow_code, starts[offset])
            offset += len(raw)
    return found


async def _store_flows(
    hub: Hub,
    plain: Path,
    upload: Upload,
    sections: dict[int, tuple[str, str]],
    movements: dict[str, int],
) -> None:
    accepted = {number: code for number, (code, _) in sections.items()}
    seq: dict[str, int] = dict.fromkeys(movements, 0)
    with plain.open("rb") as stream:
        flows = iter_flows(stream, hub.layout, accepted)
        while batch := await asyncio.to_thread(_take, flows, BATCH):
            rows = []
            for flow in batch:
                recipient = sections[flow.section][1]
                layout, key, row = occurrence(hub.layout, upload, recipient, flow, seq[recipient])
                row.movement_id = movements[recipient]
                seq[recipient] += 1
                rows.append((layout, key, row))
            await hub.store.add_occurrences(rows)


def _take(flows: Iterator[Flow], n: int) -> list[Flow]:
    return list(itertools.islice(flows, n))


def _log_report(job: Job, report: FileReport) -> None:
    if not report.accepted:
        log.info(
            "upload.refused",
            job=job.id,
            participant=job.participant_id,
            file=job.upload_name,
            codes=[p.code.value for p in report.problems],
        )
    for section in report.sections:
        if section.problems and report.accepted:
            log.info(
                "section.refused",
                job=job.id,
                participant=job.participant_id,
                file=job.upload_name,
                section=section.number,
                codes=[p.code.value for p in section.problems],
            )


async def _reserve(
    hub: Hub,
    upload: Upload,
    report: FileReport | None,
    logs: list[LogFile],
    contents: dict[str, tuple[str, str]],
) -> list[PlannedOutput]:
    """Plan the outputs, giving each a name free in its inbox and not promised elsewhere."""
    wanted = {upload.sender} | set(contents)
    reserved = await hub.store.reserved_names(wanted)

    def name_for(participant: str, name: str) -> str:
        chosen = hub.mailboxes.unique_name(participant, name, reserved[participant])
        reserved[participant].add(chosen)
        return chosen

    return plan_outputs(upload, report, logs, name_for, contents.__getitem__)


def _ranges(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (r.split("-") for r in text.split(",") if r)]


def _copy_ranges(src: Path, ranges: list[tuple[int, int]], dst: Path, durable: bool) -> str:
    """Copy byte ranges of `src` into `dst`; return their sha256."""
    digest = hashlib.sha256()
    with src.open("rb") as inp, dst.open("wb") as out:
        for start, end in ranges:
            inp.seek(start)
            left = end - start
            while left > 0:
                chunk = inp.read(min(CHUNK, left))
                if not chunk:
                    raise ValueError(f"{src} ends before byte {end}")
                digest.update(chunk)
                out.write(chunk)
                left -= len(chunk)
    if durable:
        fsync_file(dst)
    return digest.hexdigest()


def _store_contents(hub: Hub, job: Job, report: FileReport | None) -> dict[str, tuple[str, str]]:
    """Blocking: keep each recipient's plain content for the Suivi: (file name, sha256)."""
    if report is None:
        return {}
    hub.contents().mkdir(parents=True, exist_ok=True, mode=0o700)
    plain = hub.plain_file(job.spool_name)
    out = {}
    for recipient, sections in group_by_recipient(report.delivered_sections).items():
        name = f"{job.id:08d}-{recipient}-{uuid.uuid4().hex[:8]}.edi"
        ranges = [(s.start, s.end) for s in sections]
        out[recipient] = (name, _copy_ranges(plain, ranges, hub.contents() / name, durable=True))
    return out


async def _write_outputs(
    hub: Hub, job: Job, outputs: Sequence[Output], people: dict[str, Participant]
) -> None:
    for output in outputs:
        if output.delivered_at is not None or hub.mailboxes.in_inbox(
            output.participant_id, output.name
        ):
            continue
        if output.kind == "log":
            await asyncio.to_thread(_write_log, hub, output)
            log.info("log.written", job=job.id, participant=output.participant_id, file=output.name)
            continue
        await _deliver(hub, job, output, people)


def _write_log(hub: Hub, output: Output) -> None:
    staged = hub.mailboxes.staged_path(output.participant_id, f"{output.job_id}-{output.seq}.log")
    staged.write_text(output.text, encoding="utf-8")
    hub.mailboxes.place(output.participant_id, staged, output.name)


async def _deliver(hub: Hub, job: Job, output: Output, people: dict[str, Participant]) -> None:
    recipient = people[output.participant_id]
    plain = hub.plain_file(job.spool_name)
    if not plain.exists():  # resumed after the plain text was lost: decrypt it again
        assert await _decrypt(hub, job, people[job.participant_id])
    mailbox = hub.mailboxes
    part = mailbox.staged_path(output.participant_id, f"{output.job_id}-{output.seq}.plain")
    staged = mailbox.staged_path(output.participant_id, f"{output.job_id}-{output.seq}.pgp")
    await asyncio.to_thread(_copy_ranges, plain, _ranges(output.ranges), part, False)
    await asyncio.to_thread(
        hub.pgp.sign_encrypt, part, staged, recipient.pgp_fingerprint, hub.hub_fingerprint
    )
    part.unlink(missing_ok=True)
    size = staged.stat().st_size
    await asyncio.to_thread(mailbox.place, output.participant_id, staged, output.name)
    log.info(
        "delivery.done",
        job=job.id,
        sender=job.participant_id,
        participant=recipient.id,
        file=output.name,
        size=size,
    )
