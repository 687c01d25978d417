"""What leaves the hub with time (issue 15), run daily by `bdi serve` and by `bdi admin purge`.

- An inbox file not collected `inbox_days` after it arrived leaves the inbox for
  `<data>/archive/<participant>/` (a file of the inbox folder is moved there, one kept in the
  store written there, then removed): the market keeps it, its recipient no longer sees it.
  Each gives an `inbox.archived` event and, for a delivery, a note on its movement's flows
  that the Suivi shows.
- The history older than `history_years` (movements, their flows, their contents: rows and
  files) is purged (`store/retention.py`).

Every age is measured against the `now` given, never a clock of its own: what is within
its retention period is never touched. Archiving writes the archive copy, durably, before
it removes the inbox file: a crash in between leaves both, never neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import Connection

from bdi.mailbox.storage import Mailboxes, fsync_dir, suffixed
from bdi.store import retention as history
from bdi.store.repo import Store

log = structlog.get_logger("bdi.retention")
T = TypeVar("T")
# removes a file kept in the store's inbox (the running hub's StoredInbox.remove keeps its
# names in step); False if it was gone already
RemoveStored = Callable[[str, str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    inbox_days: int
    history_years: int
    archive: Path  # <data>/archive
    contents: Path  # <data>/contents

    @classmethod
    def under(cls, data: Path, inbox_days: int, history_years: int) -> RetentionPolicy:
        """The policy of the data folder `data`."""
        return cls(inbox_days, history_years, data / "archive", data / "contents")

    def inbox_cutoff(self, now: datetime) -> datetime:
        return now - timedelta(days=self.inbox_days)

    def history_cutoff(self, now: datetime) -> datetime:
        year = now.year - self.history_years
        try:
            return now.replace(year=year)
        except ValueError:  # 29 February
            return now.replace(year=year, day=28)


@dataclass(slots=True)
class Archived:
    participant: str
    file: str
    stored: bool  # kept in the store (else a file of the inbox folder)
    movement: int | None  # None for a `.log`
    archive: str = ""  # its path under the data folder, once archived


@dataclass(slots=True)
class RetentionReport:
    dry_run: bool
    now: str
    inbox_before: str
    history_before: str
    archived: list[Archived] = field(default_factory=list)
    purged: history.Purged = field(default_factory=history.Purged)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["purged"]["content_files"] = len(self.purged.content_files)
        return out


async def apply_retention(
    store: Store,
    mailboxes: Mailboxes,
    policy: RetentionPolicy,
    now: datetime,
    dry_run: bool = False,
    remove: RemoveStored | None = None,
) -> RetentionReport:
    """Archive the inbox files past their time, purge the history past its own; report."""
    inbox_before, history_before = policy.inbox_cutoff(now), policy.history_cutoff(now)
    report = RetentionReport(dry_run, now.isoformat(), inbox_before.isoformat(),
                             history_before.isoformat())  # fmt: skip
    archiver = _Archiver(store, mailboxes, policy, now, dry_run, remove)
    report.archived = await archiver.folders(inbox_before) + await archiver.stored(inbox_before)
    report.purged = await _purge(store, policy, history_before, dry_run)
    if not dry_run and (report.archived or report.purged.movements or report.purged.jobs):
        log.info("retention.done", archived=len(report.archived),
                 movements=report.purged.movements, jobs=report.purged.jobs,
                 content_files=len(report.purged.content_files))  # fmt: skip
    return report


async def _run(store: Store, work: Callable[[Connection], T]) -> T:
    async with store.engine.begin() as conn:
        return await conn.run_sync(work)


class _Archiver:
    def __init__(
        self, store: Store, mailboxes: Mailboxes, policy: RetentionPolicy, now: datetime,
        dry_run: bool, remove: RemoveStored | None,
    ) -> None:  # fmt: skip
        self.store, self.mailboxes, self.policy, self.now = store, mailboxes, policy, now
        self.dry_run, self.remove = dry_run, remove

    async def folders(self, before: datetime) -> list[Archived]:
        """Files of the inbox folders older than `before` (their time: when they were placed)."""
        old = await asyncio.to_thread(_old_files, self.mailboxes, before.timestamp())
        done = []
        for participant, name in old:
            movement = await _run(
                self.store, partial(history.movement_of_name, participant=participant, name=name)
            )
            item = Archived(participant, name, False, movement)
            if not self.dry_run:
                src = self.mailboxes.inbox(participant) / name
                moved = await asyncio.to_thread(self._move, src, participant, name)
                if moved is None:  # collected meanwhile
                    continue
                release = partial(history.release_archived, participant=participant, name=name)
                await _run(self.store, release)
                await self._archived(item, moved)
            done.append(item)
        return done

    async def stored(self, before: datetime) -> list[Archived]:
        """Files kept in the store's inbox since before `before`."""
        done = []
        for old in await _run(self.store, partial(history.old_stored_files, before=before)):
            movement = await _run(
                self.store, partial(history.movement_of_output, output_id=old.output_id)
            )
            item = Archived(old.participant_id, old.name, True, movement)
            if not self.dry_run:
                data = await _run(self.store, partial(history.stored_data, file_id=old.id))
                if data is None:
                    continue
                target = await asyncio.to_thread(self._write, data, old.participant_id, old.name)
                if not await self._remove(old):
                    target.unlink(missing_ok=True)  # collected meanwhile
                    continue
                await self._archived(item, target)
            done.append(item)
        return done

    async def _remove(self, old: history.OldStored) -> bool:
        if self.remove is not None:
            return await self.remove(old.participant_id, old.name)
        return await _run(self.store, partial(history.remove_stored, file_id=old.id))

    async def _archived(self, item: Archived, target: Path) -> None:
        item.archive = str(target.relative_to(self.policy.archive.parent))
        if item.movement is not None:
            note = f"Non relevé, archivé le {self.now.astimezone(UTC):%d/%m/%Y}"
            await _run(self.store, partial(history.note_on_movement,
                                           movement_id=item.movement, note=note))  # fmt: skip
        log.info("inbox.archived", participant=item.participant, file=item.file,
                 stored=item.stored, movement=item.movement, archive=item.archive)  # fmt: skip

    def _target(self, participant: str) -> Path:
        folder = self.policy.archive / participant
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder

    def _free(self, folder: Path, name: str) -> Path:
        n = 1
        while (folder / suffixed(name, n)).exists():
            n += 1
        return folder / suffixed(name, n)

    def _move(self, src: Path, participant: str, name: str) -> Path | None:
        folder = self._target(participant)
        target = self._free(folder, name)
        try:
            src.replace(target)
        except FileNotFoundError:
            return None
        fsync_dir(folder)
        fsync_dir(src.parent)
        return target

    def _write(self, data: bytes, participant: str, name: str) -> Path:
        folder = self._target(participant)
        target = self._free(folder, name)
        tmp = folder / f".{target.name}.tmp"
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(target)
        fsync_dir(folder)
        return target


def _old_files(mailboxes: Mailboxes, before: float) -> list[tuple[str, str]]:
    """(participant, name) of each inbox folder file last written before `before`."""
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(mailboxes.root) as folders:
        for folder in folders:
            if not folder.is_dir(follow_symlinks=False):
                continue
            inbox = mailboxes.inbox(folder.name)
            with contextlib.suppress(FileNotFoundError), os.scandir(inbox) as files:
                for entry in files:
                    if _is_old(entry, before):
                        found.append((folder.name, entry.name))
    return sorted(found)


def _is_old(entry: os.DirEntry[str], before: float) -> bool:
    if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
        return False
    try:
        return entry.stat(follow_symlinks=False).st_mtime < before
    except FileNotFoundError:
        return False


async def _purge(
    store: Store, policy: RetentionPolicy, before: datetime, dry_run: bool
) -> history.Purged:
    if dry_run:
        return await _run(store, partial(history.count_old, before=before))
    total = history.Purged()
    while (batch := await _run(store, partial(history.purge_batch, before=before))).movements:
        await asyncio.to_thread(_unlink_all, policy.contents, batch.content_files)
        total.add(batch)
    while jobs := await _run(store, partial(history.purge_jobs_batch, before=before)):
        total.jobs += jobs
    return total


def _unlink_all(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).unlink(missing_ok=True)
    if names:
        fsync_dir(folder)
