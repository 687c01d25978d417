"""The pipeline: a pool of workers that turn spooled uploads into deliveries and `.log` files.

Every job is idempotent: received -> planned -> done. Its file work (decrypt, check, seal
each delivery into staging) is done first and recorded nowhere; naming its outputs and
recording them with their movements and flows is one transaction (`planned`); the outputs
are then renamed into the inboxes and the job is closed in one last transaction. After a
crash a planned output whose name is already in the inbox was placed before the crash; the
others are sealed again. Jobs are resumed before the SFTP server accepts anyone, so no
recipient can have deleted a file in between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog

from bdi.hub import Hub, local_time, utcnow
from bdi.jobfiles import (
    Batches,
    Prepared,
    decrypt,
    delivered_sections,
    next_batch,
    occurrence_batches,
    place_outputs,
    prepare,
)
from bdi.plan import Upload, plan_outputs
from bdi.routing.model import FileReport
from bdi.store.jobs import (
    Party,
    add_occurrences,
    clear_occurrences,
    finish_job,
    parties,
    save_plan,
)
from bdi.store.journal import Journal
from bdi.store.models import Job, Output

log = structlog.get_logger("bdi.pipeline")
MAX_ATTEMPTS = 3
T = TypeVar("T")


class Names:
    """Inbox names promised to outputs not yet placed; this process is the only one placing."""

    def __init__(self, hub: Hub, reserved: dict[str, set[str]]) -> None:
        self.hub, self.reserved = hub, reserved

    def take(self, participant: str, name: str) -> str:
        taken = self.reserved.setdefault(participant, set())
        chosen = self.hub.mailboxes.unique_name(participant, name, taken)
        taken.add(chosen)
        return chosen

    def release(self, outputs: Sequence[Output]) -> None:
        for output in outputs:
            self.reserved.get(output.participant_id, set()).discard(output.name)


class Pipeline:
    """A pool of workers fed by a queue of jobs."""

    def __init__(self, hub: Hub, journal: Journal) -> None:
        self.hub, self.journal = hub, journal
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.workers: list[asyncio.Task[None]] = []
        self.attempts: dict[int, int] = {}
        self.names = Names(hub, {})
        # its own threads: sharing the loop's default pool with the SFTP side would let
        # six long jobs hold every thread while uploads wait to be spooled
        self.executor = ThreadPoolExecutor(hub.settings.workers, thread_name_prefix="bdi-job")

    def start(self) -> None:
        for n in range(self.hub.settings.workers):
            self.workers.append(asyncio.create_task(self._work(), name=f"worker-{n}"))

    async def stop(self) -> None:
        for task in self.workers:
            task.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        self.workers.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def submit(self, job: Job) -> None:
        self.queue.put_nowait(job)

    async def resume(self) -> int:
        """Queue every job a previous run left unfinished."""
        self.names.reserved = await self.hub.store.reserved_names()
        jobs = await self.hub.store.unfinished_jobs()
        for job in jobs:
            log.info("job.resumed", job=job.id, participant=job.participant_id, state=job.state)
            self.submit(job)
        return len(jobs)

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self.process(job)
            except Exception:
                self._retry(job)
            finally:
                self.queue.task_done()

    def _retry(self, job: Job) -> None:
        """A failed job is tried again a few times (its steps are idempotent), then left
        for the next start-up, with the error in the log."""
        assert job.id is not None
        attempt = self.attempts.get(job.id, 0) + 1
        self.attempts[job.id] = attempt
        log.exception("job.failed", job=job.id, attempt=attempt)
        if attempt < MAX_ATTEMPTS:
            self.submit(job)

    async def process(self, job: Job) -> None:
        started = time.monotonic()
        assert job.id is not None
        people = await self.journal.run(parties)
        sender = people[job.participant_id]
        staged: dict[str, Path] = {}
        if job.state == "received":
            prepared = await self._prepare(job, sender, people)
            outputs = await self._plan(job, sender, prepared)
            staged = dict(prepared.staged)
        else:
            outputs = await self.hub.store.outputs(job.id)
            await self._index_again(job, sender, outputs)
        await self._blocking(place_outputs, self.hub, job, outputs, people, staged)
        outcome = _outcome(outputs)
        await self.journal.run(partial(finish_job, job_id=job.id, outcome=outcome, at=utcnow()))
        job.state = "done"
        self.names.release(outputs)
        _forget_upload(self.hub, job)  # two unlinks: cheaper than a thread hop
        elapsed = int((time.monotonic() - started) * 1000)
        log.info("job.done", job=job.id, participant=sender.id, file=job.upload_name,
                 outcome=outcome, outputs=len(outputs), elapsed_ms=elapsed)  # fmt: skip

    async def _prepare(self, job: Job, sender: Party, people: dict[str, Party]) -> Prepared:
        keys = {p.id: p.fingerprint for p in people.values() if p.active}
        now = local_time(self.hub, utcnow())
        prepared = await self._blocking(prepare, self.hub, job, sender, keys, now)
        if prepared.report is not None:
            _log_report(job, prepared.report)
        return prepared

    async def _plan(self, job: Job, sender: Party, prepared: Prepared) -> list[Output]:
        """Name the outputs and record them, with movements and flows, in one transaction."""
        assert job.id is not None
        upload = Upload(job.id, sender.id, job.upload_name, job.received_at)
        planned = plan_outputs(
            upload, prepared.report, prepared.logs, self.names.take, prepared.contents.__getitem__
        )
        outputs = [p.output for p in planned]
        try:
            movements = await self.journal.run(
                partial(save_plan, job_id=job.id, planned=planned, occurrences=prepared.flows)
            )
        except BaseException:
            self.names.release(outputs)
            if prepared.more is not None:
                prepared.more.close()
            raise
        job.state = "planned"
        if prepared.more is not None:
            await self._store_batches(prepared.more, movements)
        return outputs

    async def _store_batches(self, batches: Batches, movements: dict[str, int]) -> None:
        try:
            while rows := await self._blocking(next_batch, batches):
                await self.journal.run(partial(add_occurrences, movements=movements, batch=rows))
        finally:
            batches.close()

    async def _index_again(self, job: Job, sender: Party, outputs: list[Output]) -> None:
        """A job found `planned` after a crash: its flows may be half stored; store them again."""
        assert job.id is not None
        movements = await self.hub.store.job_movements(job.id)
        if not movements:
            return
        ids = list(movements.values())
        await self.journal.run(partial(clear_occurrences, movement_ids=ids))
        plain = self.hub.plain_file(job.spool_name)
        if not plain.exists():
            assert await self._blocking(decrypt, self.hub, job, sender)
        sections = await self._blocking(delivered_sections, self.hub, plain, outputs)
        upload = Upload(job.id, sender.id, job.upload_name, job.received_at)
        await self._store_batches(occurrence_batches(self.hub, plain, upload, sections), movements)


def _forget_upload(hub: Hub, job: Job) -> None:
    for path in (hub.spool_file(job.spool_name), hub.plain_file(job.spool_name)):
        path.unlink(missing_ok=True)


def _outcome(outputs: Sequence[Output]) -> str:
    deliveries = any(o.kind == "delivery" for o in outputs)
    logs = any(o.kind == "log" for o in outputs)
    return "partial" if deliveries and logs else "delivered" if deliveries else "refused"


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
