"""Taking an upload in: make it durable in the spool and commit its job, then hand it on.
A small upload is durable as part of its job's row instead: no spool file.

The SFTP close (or rename) is acknowledged only after `take_in` returns, so from the
client's point of view an acknowledged upload is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

import structlog
from sqlalchemy import Connection

from bdi.mailbox.storage import fsync_dir, fsync_file
from bdi.routing.layout import Layout
from bdi.routing.scan import strip_upload_suffix
from bdi.store.jobs import JobRef, Party, take_in_job
from bdi.store.journal import Journal
from bdi.store.repo import Store

log = structlog.get_logger("bdi.spool")


class Spool:
    def __init__(
        self,
        folder: Path,
        store: Store,
        journal: Journal,
        submit: Callable[[JobRef, dict[str, Party]], None],
        now: Callable[[], datetime],
        layout: Layout,
    ) -> None:
        self.folder = folder
        self.layout = layout
        self.store = store
        self.journal = journal
        self.submit = submit
        self.now = now

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def take_in(self, participant: str, path: Path, file_name: str) -> int:
        """Move a complete upload into the spool, durably, and commit its job.

        The job keeps the upload name: the file name less an added .pgp/.gpg/.asc."""
        job = self._job(participant, file_name)
        keeping = asyncio.get_running_loop().run_in_executor(None, self._keep, path, job)
        return await self._taking(job, keeping)

    async def take_in_bytes(self, participant: str, data: bytes, file_name: str) -> int:
        """A small upload, held in memory: committed with its job, in its row."""
        job = self._job(participant, file_name)
        job.size, job.in_row, job.data = len(data), True, data
        return await self._taking(
            job, asyncio.wrap_future(self.journal.submit(partial(_commit, job=job)))
        )

    def _job(self, participant: str, file_name: str) -> JobRef:
        upload_name = strip_upload_suffix(file_name, self.layout)
        return JobRef(participant, upload_name, f"{uuid.uuid4().hex}.pgp", 0, self.now())

    async def _taking(self, job: JobRef, taking: asyncio.Future[dict[str, Party]]) -> int:
        """Wait until the job is committed (`taking`: work already under way, in a thread: no
        task of its own on the event loop), then hand it to the pipeline."""
        try:
            people = await asyncio.shield(taking)
        except asyncio.CancelledError:  # the client is gone: a job committed is run all the same
            taking.add_done_callback(partial(self._submit_if_kept, job))
            raise
        self._accepted(job, people)
        assert job.id is not None
        return job.id

    def _keep(self, path: Path, job: JobRef) -> dict[str, Party]:
        """In a thread: the upload durably in the spool, then its job committed. If the
        commit fails, the file goes back where it was: nothing of it stays in the spool."""
        kept = self.folder / job.spool_name
        job.size = _move_durably(path, kept)
        try:
            return self.journal.call(partial(_commit, job=job))
        except Exception:
            with contextlib.suppress(OSError):  # else swept at the next start
                kept.replace(path)
            raise

    def _submit_if_kept(self, job: JobRef, taking: asyncio.Future[dict[str, Party]]) -> None:
        if not taking.cancelled() and taking.exception() is None:
            self._accepted(job, taking.result())

    def _accepted(self, job: JobRef, people: dict[str, Party]) -> None:
        log.info("upload.accepted", participant=job.participant_id, file=job.upload_name,
                 job=job.id, size=job.size)  # fmt: skip
        self.submit(job, people)

    async def sweep(self) -> int:
        """Remove the spool files no unfinished job owns: an upload never acknowledged, or
        that of a job whose end was committed just before the server stopped."""
        owned = await self.store.spool_names()
        removed = 0
        for path in self.folder.glob("*.pgp"):
            if path.name not in owned:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _commit(conn: Connection, job: JobRef) -> dict[str, Party]:
    job.id, people = take_in_job(conn, job)
    return people


def _move_durably(source: Path, target: Path) -> int:
    fsync_file(source)
    source.replace(target)
    fsync_dir(target.parent)
    return target.stat().st_size
