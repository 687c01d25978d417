"""The pipeline: a pool of workers that turn spooled uploads into deliveries and `.log` files.

Every job is idempotent: received -> planned -> done. Its file work (decrypt, check, seal
each delivery) is done first and recorded nowhere; naming its outputs and recording them
with their movements and flows is one transaction (`planned`). Small outputs are kept in the
store's inbox by that same transaction, and a job that has only such outputs ends with it.
Other outputs are then renamed into the inboxes and the job is closed in one last
transaction. After a crash a planned output whose name is already in the inbox was placed
before the crash; the others are sealed again. Half-done jobs are finished before the SFTP
server accepts anyone, so no recipient can have deleted such a file in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection

from bdi.hub import Hub, local_time, utcnow
from bdi.mailbox.names import Names
from bdi.mailbox.stored import StoredInbox
from bdi.pipeline.fair import FairQueue
from bdi.pipeline.faults import classify, describe
from bdi.pipeline.place import log_in_place, place_outputs
from bdi.pipeline.plan import Upload, log_output, plan_outputs
from bdi.pipeline.prepare import (
    Batches,
    Plain,
    Prepared,
    Streamed,
    delivered_sections,
    occurrence_batches,
    prepare,
)
from bdi.pipeline.quarantine import set_aside
from bdi.pipeline.retries import Retries, RetryPolicy
from bdi.pipeline.stream import prepare_streamed, streams
from bdi.pipeline.upkeep import Upkeep
from bdi.routing.model import FileReport
from bdi.store.bulk import add_occurrences, add_stored_outputs
from bdi.store.jobs import (
    JobRef,
    OutputRef,
    Party,
    clear_occurrences,
    finish_job,
    job_movements,
    parties,
    planned_outputs,
    record_failure,
    retry_requests,
    save_plan,
    unfinished_jobs,
    upload_data,
)
from bdi.store.journal import Journal

log = structlog.get_logger("bdi.pipeline")
HELD_IN_MEMORY = 256  # queued jobs that keep a copy of their (small) upload in memory
BATCHES_IN_FLIGHT = 2  # flow batches handed to the journal and not yet committed, per job
LOGGED_OUTPUTS = 20  # a streamed job's `.log` files logged one by one; the rest are counted


class Pipeline:
    """Runs each job whole in one of `workers` threads: its OpenPGP and file work blocks
    there, and so does its database work (through the journal), so the event loop only
    hands jobs over. The bookkeeping of pending jobs and retries lives on the event loop."""

    def __init__(
        self, hub: Hub, journal: Journal, stored: StoredInbox, policy: RetryPolicy | None = None
    ) -> None:
        self.hub, self.journal, self.stored = hub, journal, stored
        self.executor = ThreadPoolExecutor(hub.settings.workers, thread_name_prefix="bdi-job")
        self.names = Names(hub.mailboxes, stored, {})
        self.policy = policy or RetryPolicy()
        self.retries = Retries(self.policy, self._free_space, self.submit, self._quarantine)
        self.upkeep = Upkeep(hub, journal, self.names, stored)  # redeliveries, retention
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._sweeper: asyncio.Task[None] | None = None
        self._queue: FairQueue[tuple[JobRef, dict[str, Party] | None]] = FairQueue()
        self._running = 0  # jobs handed to the threads, at most `workers` + 1 (see _feed)

    def submit(self, job: JobRef, people: dict[str, Party] | None = None) -> None:
        """Called on the event loop (by the spool, or to retry). `people`: the participants
        as read when the job was taken in; None to read them when it runs."""
        if self._stopping:
            return  # left for the next start-up
        if self._pending >= HELD_IN_MEMORY:
            job.data = None  # a long queue does not hold its uploads: each is read when it runs
        self._pending += 1
        self._idle.clear()
        self._queue.push(job.participant_id, (job, people))
        self._feed()

    def _feed(self) -> None:
        """Hand queued jobs to the threads, participants in turn. One more than the threads
        is handed over, so that no thread waits for the event loop between two jobs, and no
        more, so that a burst queues here, where the turn is kept, not in the executor."""
        loop = asyncio.get_running_loop()
        while self._running <= self.hub.settings.workers and (item := self._queue.pop()):
            job, people = item
            self._running += 1
            future = self.executor.submit(self.process, job, people)
            future.add_done_callback(partial(_report, loop, self._freed))
            future.add_done_callback(
                partial(_ran, partial(_report, loop, partial(self._finished, job)))
            )

    def _freed(self, _: Future[Any]) -> None:
        self._running -= 1
        if not self._stopping:
            self._feed()

    def _start(self, work: Callable[[], Any]) -> Future[Any]:
        self._pending += 1
        self._idle.clear()
        return self.executor.submit(work)

    def _finished(self, job: JobRef, future: Future[Any]) -> None:
        self._pending -= 1
        error = None if future.cancelled() else future.exception()
        if error is not None and not self._stopping:
            self.hub.metrics.job_failures.labels(str(classify(error) or "bug")).inc()
            attempts = self.retries.failed(job, error)
            if attempts and job.id is not None:  # for the admin; a busy database may lose it
                self.journal.submit(partial(record_failure, job_id=job.id,
                                            error=describe(error), attempts=attempts))  # fmt: skip
        elif error is None:
            self.retries.succeeded(job)
        self._settle()

    def _settle(self) -> None:
        if self._pending == 0 and self.retries.waiting == 0:
            self._idle.set()

    def _quarantine(self, job: JobRef, error: BaseException, attempts: int) -> None:
        """Set the job aside (in a worker thread); should that fail too, it waits again."""
        self.hub.metrics.quarantines.inc()
        if self.hub.alerts is not None and job.id is not None:
            self.hub.alerts.job_quarantined(job.id, job.participant_id, job.upload_name,
                                            describe(error))  # fmt: skip
        work = partial(set_aside, self.hub, self.journal, self.names, job, error,
                       attempts, utcnow())  # fmt: skip
        future = self._start(work)
        loop = asyncio.get_running_loop()
        future.add_done_callback(partial(_report, loop, partial(self._set_aside, job)))

    def _set_aside(self, job: JobRef, future: Future[Any]) -> None:
        self._pending -= 1
        error = None if future.cancelled() else future.exception()
        if error is not None and not self._stopping:
            self.retries.failed(job, error)
        self._settle()

    def _free_space(self) -> int:
        try:
            found = os.statvfs(self.hub.settings.data)
        except OSError:
            return 0
        return found.f_bavail * found.f_frsize

    def counts(self) -> tuple[int, int, int]:
        """Jobs queued, handed to the threads, waiting out a fault (for the metrics)."""
        return len(self._queue), self._running, self.retries.waiting

    async def settled(self) -> None:
        """Wait until every job submitted so far (and its retries) is over."""
        await self._idle.wait()

    async def resume(self) -> int:
        """Finish the jobs a previous run left half done before anyone can log in (a
        recipient could otherwise delete a file placed before the crash, and get it twice);
        queue the ones it only took in. Quarantined jobs stay aside. Then watch for the
        admin's retries and for the end of the faults jobs wait on."""
        self.names.reserved = await self.hub.store.reserved_names()
        jobs = await self.journal.run(unfinished_jobs)
        for job in jobs:
            log.info("job.resumed", job=job.id, participant=job.participant_id, state=job.state)
        for job in (j for j in jobs if j.state == "planned"):
            self.submit(job)
        await self.settled()
        for job in (j for j in jobs if j.state == "received"):
            self.submit(job)
        await self.journal.run(retry_requests)  # those are among the jobs just queued
        await self.upkeep.start()
        self._sweeper = asyncio.create_task(self._sweep())
        return len(jobs)

    async def _sweep(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.policy.sweep_s)
            self.retries.tick()
            self.upkeep.tick()
            try:
                jobs = await self.journal.run(retry_requests)
            except Exception as exc:  # the database may be busy: next time
                log.warning("job.retry_requests_unread", error=describe(exc))
                continue
            for job in jobs:
                assert job.id is not None
                self.retries.forget(job.id)
                log.info("job.retry", job=job.id, participant=job.participant_id,
                         file=job.upload_name, state=job.state)  # fmt: skip
                self.submit(job)

    async def stop(self) -> None:
        """Drop the queued jobs (they stay in the store), let the running ones finish."""
        self._stopping = True
        self.retries.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.upkeep.stop()
        await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)

    # -- one job, in a worker thread ------------------------------------------------------

    def process(self, job: JobRef, people: dict[str, Party] | None = None) -> Future[None]:
        """Run one job; return the commit of its end, which is not waited for: the worker
        moves on, and the commit joins the journal's next group. The upload is forgotten
        once it is committed (a job found `planned` after a crash needs it)."""
        started = time.monotonic()
        assert job.id is not None
        if people is None:
            people = self.journal.call(parties)
        if job.in_row and job.data is None:
            job.data = self.journal.call(partial(upload_data, job_id=job.id))
        sender = people[job.participant_id]
        staged: dict[str, Path] = {}
        ended, stored_logs = False, 0
        with contextlib.closing(Plain(self.hub, job, sender)) as plain:
            if job.state == "received":
                stages = _Stages(streams(job))
                with contextlib.closing(self._prepare(job, plain, people)) as prepared:
                    stages.done("prepare")
                    outputs, ended, stored_logs = self._plan(job, sender, prepared)
                    stages.done("plan")
                    staged = prepared.staged
                    if not ended:
                        place_outputs(self.hub, job, outputs, people, staged, plain)
                        stages.done("place")
                    self._store_flows(prepared.more, prepared.movements)
                    stages.done("flows")
                stages.log(job)
            else:
                outputs = self.journal.call(partial(planned_outputs, job_id=job.id))
                self._index_again(job, plain, outputs)
                place_outputs(self.hub, job, outputs, people, staged, plain)
        self.names.release(outputs)
        outcome = _outcome(outputs, stored_logs)
        if ended:  # with its plan
            finished: Future[None] = Future()
            finished.set_result(None)
        else:
            finished = self.journal.submit(
                partial(finish_job, job_id=job.id, outcome=outcome, at=utcnow())
            )
        done = partial(_log_done, self.hub, job, outcome=outcome, outputs=len(outputs),
                       started=started)  # fmt: skip
        finished.add_done_callback(partial(_forget_upload, self.hub, job, then=done))
        return finished

    def _prepare(self, job: JobRef, plain: Plain, people: dict[str, Party]) -> Prepared:
        keys = {p.id: p.fingerprint for p in people.values() if p.active}
        now = local_time(self.hub, utcnow())
        if streams(job):
            prepared = prepare_streamed(self.hub, job, plain.sender, keys, now, self.journal)
        else:
            prepared = prepare(self.hub, job, plain, keys, now)
        if prepared.report is not None:
            _log_report(job, prepared.report)
        _count_report(self.hub, prepared.report)
        return prepared

    def _plan(
        self, job: JobRef, sender: Party, prepared: Prepared
    ) -> tuple[list[OutputRef], bool, int]:
        """Name the outputs and record them, with movements and their first flows, in one
        transaction; True if that transaction also ended the job (its outputs all kept in
        the store); and how many `.log` files of a streamed upload it kept in the store
        besides the outputs returned (which are those to place)."""
        assert job.id is not None
        upload = Upload(job.id, sender.id, job.upload_name, job.received_at)
        planned = plan_outputs(
            upload, prepared.report, prepared.logs, self.names.take,
            prepared.contents.__getitem__, prepared.sealed.get,
        )  # fmt: skip
        outputs = [p.output for p in planned]
        ends = prepared.more is None and all(p.stored is not None for p in planned)
        streamed = prepared.streamed
        logs = streamed.log_count if streamed is not None else 0
        outcome = _outcome(outputs, logs) if ends else None
        save = partial(save_plan, job_id=job.id, planned=planned, at=utcnow(),
                       occurrences=prepared.flows, outcome=outcome,
                       drafts=prepared.drafts)  # fmt: skip
        first: list[str] = []  # the first `.log` names, logged
        if streamed is not None and logs:
            save = partial(_with_logs, save=save, upload=upload, streamed=streamed,
                           choose=self.names.choose_stored, first=first, seq=len(planned),
                           at=save.keywords["at"])  # fmt: skip
        try:
            prepared.movements = self.journal.call(save)
        except BaseException:  # a plan made again names them anew
            self.names.release(outputs)
            raise
        job.state = "planned"
        for item in planned:
            if item.stored is not None:
                log_in_place(job, item.output, len(item.stored))
        _log_stored(job, first, logs)
        return outputs, ends, logs

    def _store_flows(self, batches: Batches | None, movements: dict[str, int]) -> None:
        """The flows past the plan's first batch, a few batches handed to the journal at
        once: the next one is read while it stores the last."""
        if batches is None:
            return
        pending: list[Future[None]] = []
        with contextlib.closing(batches):
            for rows in batches:
                pending.append(self.journal.submit(
                    partial(add_occurrences, movements=movements, batch=rows)
                ))  # fmt: skip
                if len(pending) >= BATCHES_IN_FLIGHT:
                    pending.pop(0).result()
        for future in pending:
            future.result()

    def _index_again(self, job: JobRef, plain: Plain, outputs: list[OutputRef]) -> None:
        """A job found `planned` after a crash: its flows may be half stored; store them again."""
        assert job.id is not None
        movements = self.journal.call(partial(job_movements, job_id=job.id))
        if not movements:
            return
        self.journal.call(partial(clear_occurrences, movement_ids=list(movements.values())))
        sections = delivered_sections(self.hub, plain.checked(), outputs)
        upload = Upload(job.id, plain.sender.id, job.upload_name, job.received_at)
        self._store_flows(occurrence_batches(self.hub, plain, upload, sections), movements)


def _report(loop: asyncio.AbstractEventLoop, callback: Callable[[Future[Any]], None],
            future: Future[Any]) -> None:  # fmt: skip
    """Hand a finished job back to the event loop (gone if the server has stopped)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, future)


def _ran(report: Callable[[Future[Any]], None], run: Future[Future[None]]) -> None:
    """A job's run is over: report it once the commit of its end is (at once if it failed)."""
    if run.cancelled() or run.exception() is not None:
        report(run)
    else:
        run.result().add_done_callback(report)


def _forget_upload(hub: Hub, job: JobRef, finished: Future[None], then: Callable[[], None]) -> None:
    """In the journal's thread, once the job's end is committed (or failed to be)."""
    if finished.cancelled() or finished.exception() is not None:
        return  # the job is retried: it still needs its upload
    job.state = "done"
    if not job.in_row:
        hub.spool_file(job.spool_name).unlink(missing_ok=True)
    job.data = None
    then()


def _log_done(hub: Hub, job: JobRef, outcome: str, outputs: int, started: float) -> None:
    elapsed = int((time.monotonic() - started) * 1000)
    received = job.received_at if job.received_at.tzinfo else job.received_at.replace(tzinfo=UTC)
    hub.metrics.job_done(outcome, (utcnow() - received).total_seconds())
    log.info("job.done", job=job.id, participant=job.participant_id, file=job.upload_name,
             outcome=outcome, outputs=outputs, elapsed_ms=elapsed)  # fmt: skip


def _count_report(hub: Hub, report: FileReport | None) -> None:
    if report is None:
        hub.metrics.refused(["DECHIFFREMENT"])
    elif not report.accepted:
        hub.metrics.refused(p.code.value for p in report.problems)
    else:
        refused = [[p.code.value for p in s.problems] for s in report.sections if s.problems]
        hub.metrics.sections(len(report.delivered_sections), refused)


class _Stages:
    """How long a big (streamed) job spent in each step, logged as `job.stages`."""

    def __init__(self, wanted: bool) -> None:
        self.wanted, self.last = wanted, time.monotonic()
        self.ms: dict[str, int] = {}

    def done(self, stage: str) -> None:
        if self.wanted:
            now = time.monotonic()
            self.ms[stage] = int((now - self.last) * 1000)
            self.last = now

    def log(self, job: JobRef) -> None:
        if self.wanted:
            log.info("job.stages", job=job.id, participant=job.participant_id, **self.ms)


def _with_logs(
    conn: Connection, save: Callable[[Connection], dict[str, int]], upload: Upload,
    streamed: Streamed, choose: Callable[[Connection, str, Sequence[str]], list[str]],
    first: list[str], seq: int, at: datetime,
) -> dict[str, int]:  # fmt: skip
    """The plan (`save`), with a streamed upload's `.log` files kept in the store, named and
    recorded in batches (read again from their spill if the journal runs this twice)."""
    movements = save(conn)
    first.clear()
    done = 0
    for batch in streamed.log_batches():
        names = choose(conn, upload.sender, [log.name for log in batch])
        outputs = []
        for log, name in zip(batch, names, strict=True):
            planned = log_output(upload, log, name, seq + done)
            assert planned.stored is not None
            outputs.append((planned.output, planned.stored))
            done += 1
        add_stored_outputs(conn, outputs, at)
        first.extend(names[: LOGGED_OUTPUTS - len(first)])
    return movements


def _log_stored(job: JobRef, first: list[str], count: int) -> None:
    for name in first:
        log.info("log.written", job=job.id, participant=job.participant_id, file=name)
    if count > len(first):
        log.info("log.written_more", job=job.id, participant=job.participant_id,
                 files=count - len(first))  # fmt: skip


def _outcome(outputs: Sequence[OutputRef], stored_logs: int = 0) -> str:
    deliveries = any(o.kind == "delivery" for o in outputs)
    logs = stored_logs > 0 or any(o.kind == "log" for o in outputs)
    return "partial" if deliveries and logs else "delivered" if deliveries else "refused"


def _log_report(job: JobRef, report: FileReport) -> None:
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
