"""The path of a big upload: decrypt, check, split and seal at once, in bounded memory.

One pass after the other (decrypt the whole upload, check it, copy each recipient's content,
seal it, read it again for the flows) left the cores idle in turn and kept a report, a
`.log` and a flow list per section in memory. Here gpg writes the plaintext itself into an
anonymous spill file of the spool, and the checks, in the job's thread, read it as it grows
(a megabyte at a time: no Python thread handles the plaintext on its way, as each would take
the interpreter lock from the checks at every chunk); each section is routed as soon as its
checks end:

- accepted, its bytes (read back from the spill) go to its recipient's content file and down
  a pipe into a gpg sealing it while the rest of the upload is still being read: at most
  SEALS_AT_ONCE such gpg per job, started only if a gpg place is free right now (a job
  holding its decryption's place and waiting for another could wait forever on others
  doing the same); other recipients are sealed once the upload is read, as before, and a
  recipient's content of up to CONTENT_IN_ROW is sealed in memory and kept in the store;
- its flows (handed over by the checks one at a time, for a section that may be delivered)
  are stored as Suivi rows as they come, under draft movements that no participant sees
  (`rows.py`, `store.drafts`), taken back if the section ends refused;
- refused, its `.log` goes to a spill, named and recorded with the plan in batches.

The signature is only known at the end of the plaintext: the plan adopts the drafts of the
recipients delivered and removes the others, so an upload refused then (or by a file-level
check) leaves nothing but its `.log`; its sealed files and contents are removed. A crash
before the plan runs the job again from its upload, its drafts removed first.
"""

from __future__ import annotations

import hashlib
import itertools
import marshal
import os
import queue
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, Generic, TypeVar, cast

import structlog

from bdi.crypto.openpgp import Verified, pipe
from bdi.hub import Hub
from bdi.mailbox.storage import fsync_dir
from bdi.pipeline import prepare as preparing
from bdi.pipeline.plan import LOG_IN_STORE, Content, Upload, occurrence
from bdi.pipeline.prepare import Prepared, recipient_ready, seal, seal_small
from bdi.pipeline.rows import DraftRows
from bdi.routing.logs import LogFile, log_files, log_line, log_name, whole_upload_log
from bdi.routing.model import FileReport, Flow, SectionReport
from bdi.routing.scan import CheckContext, SectionChecked, check_lines
from bdi.store.jobs import JobRef, Party, clear_drafts
from bdi.store.journal import Journal

log = structlog.get_logger("bdi.pipeline")
STREAM_ABOVE = 64 * 1024  # uploads (sealed bytes) bigger than this take this path
WAIT_S = 0.002  # the checks, caught up with gpg, look again for plaintext after this
SEALS_AT_ONCE = 2  # recipients sealed while the upload is read, per job
READ = 1 << 20  # bytes read back from the spill at a time
FEED = 2 << 20  # bytes a sealer's pump moves at a time (see `_Sealer`)
LOGS_BATCH = 2000  # `.log` files per batch recorded
AHEAD = 8 << 20  # bytes of a section still being checked handed to its sealer at a time
LOGGED_SECTIONS = 20  # refused sections logged one by one; the rest are counted
T = TypeVar("T")
LogRecord = tuple[str, int, list[str]]  # a refused section's `.log`: name, section, lines
_LENGTH = struct.Struct("<I")
_CONTENT_FROM_NOW = (-1, -1)  # told to a sealer's pump: write the content file from now on


def open_spill(folder: Path) -> int:
    """An anonymous file for the plaintext, which may become a content file of its own
    (`link_content`): O_TMPFILE without O_EXCL (tempfile's has it: never linkable)."""
    try:
        return os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600)
    except (AttributeError, OSError):  # no O_TMPFILE here: a file unlinked at once
        fd, name = tempfile.mkstemp(dir=str(folder))
        Path(name).unlink()
        return fd


def copy_spans(
    spill: int, spans: Iterable[tuple[int, int]], out: int | None, digest: Any = None
) -> None:
    """Bytes of the spill into the file `out` (if any) and `digest` (if any)."""
    for start, end in spans:
        while start < end:
            chunk = os.pread(spill, min(READ, end - start), start)
            if not chunk:
                raise ValueError(f"the plaintext ends before byte {end}")
            start += len(chunk)
            if digest is not None:
                digest.update(chunk)
            if out is not None:
                _write_all(out, chunk)


def link_content(spill: int, path: Path) -> None:
    """The plaintext is a recipient's content whole: the spill, made durable, becomes its
    content file by a second name rather than a copy (a gigabyte written once, not twice).
    Copied where it cannot be linked (no O_TMPFILE, another file system)."""
    os.fsync(spill)
    path.unlink(missing_ok=True)  # a run of the job again
    try:  # linkat(AT_SYMLINK_FOLLOW) through /proc: os.link's plain link() gives EXDEV
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.link(str(spill), path, src_dir_fd=proc, follow_symlinks=True)
        finally:
            os.close(proc)
        return
    except OSError as exc:
        log.info("content.copied", path=str(path), reason=str(exc))
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        copy_spans(spill, [(0, os.fstat(spill).st_size)], out)
        os.fsync(out)
    finally:
        os.close(out)


class _Active:
    """How many streamed jobs of this process are between their first byte read and their
    plan: the upkeep's indexing of the Suivi's text waits for none to be (its
    transactions would queue with theirs in the journal). A process runs one hub (several in
    the tests, where this only delays indexing, which the searches do not need)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def add(self, step: int) -> None:
        with self.lock:
            self.count += step


_ACTIVE = _Active()


def streaming() -> bool:
    """Whether a streamed job is under way in this process."""
    return _ACTIVE.count > 0


def streams(job: JobRef) -> bool:
    """Whether a job takes this path: an upload big enough for its passes to matter."""
    return job.size > STREAM_ABOVE


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Decryption:
    """gpg decrypting the upload, in a thread of its own, into the spill file (gpg writes
    it itself); the job's thread reads the plaintext as it grows."""

    def __init__(self, hub: Hub, job: JobRef, spill: int) -> None:
        self.spill = spill
        self.done = threading.Event()
        self.verdict: Verified | None = None
        self.error: BaseException | None = None
        src = job.data if job.in_row else hub.spool_file(job.spool_name)
        assert src is not None
        limit = hub.settings.max_decrypted_bytes
        work = partial(hub.pgp.decrypt_verify_to_fd, src, spill, limit)
        self.thread = threading.Thread(target=self._run, args=(work,), name="bdi-decrypt")
        self.thread.start()

    def _run(self, work: Callable[[], Verified]) -> None:
        try:
            self.verdict = work()
        except BaseException as exc:  # handed to the job's thread
            self.error = exc
        finally:
            self.done.set()

    def plaintext(self) -> Iterator[bytes]:
        """The spill's bytes as gpg writes them, until gpg has exited and all is read."""
        offset = 0
        while True:
            finished = self.done.is_set()  # before the read: nothing comes after it
            chunk = os.pread(self.spill, READ, offset)
            if chunk:
                offset += len(chunk)
                yield chunk
            elif finished:
                return
            else:
                self.done.wait(WAIT_S)

    def result(self) -> Verified:
        """Once the plaintext is read: gpg's verdict (its errors raised)."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.verdict is not None
        return self.verdict

    def cancel(self) -> None:
        """The job failed: wait for gpg (bounded by its guard), its verdict unwanted."""
        self.thread.join()


class _Sealer:
    """One recipient's delivery sealed while the upload is read: its sections' bytes go
    to its content file (for the Suivi) and down a pipe to gpg, which writes the sealed
    file into the recipient's staging folder. Runs in a gpg place taken beforehand.

    The bytes are moved by a thread of its own (`_pump`), FEED at a time: written by the
    job's thread, a section of 64 MB waited for gpg to take it through the pipe, ~0.3 s
    during which the checks stood still (1.3-1.6 s of a 256 MiB file of four sections).
    Each of the pump's system calls releases the interpreter lock, and taking it back may
    wait the switch interval behind the checks: big chunks, few calls."""

    def __init__(self, hub: Hub, job: JobRef, recipient: str, fingerprint: str, spill: int,
                 content: bool = True):  # fmt: skip
        self.name = f"{job.id:08d}-{recipient}.edi"  # a run of the job again rewrites its own
        self.path = hub.contents() / self.name
        self.staged = hub.mailboxes.staged_path(recipient, f"{job.id}-{recipient}.pgp")
        self.spill, self.digest = spill, hashlib.sha256()
        # the content file, written as the bytes go by; -1 while the upload may still be
        # this recipient's content whole (the spill itself becomes the file: `link_content`)
        self.out = self._open() if content else -1
        self.pumped: list[tuple[int, int]] = []  # the spans moved so far
        read, self.pipe = pipe()
        self.error: BaseException | None = None
        self.pump_error: BaseException | None = None
        self.spans: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self.stopping = False
        self.buffer = bytearray(FEED)
        work = partial(hub.pgp.sign_encrypt, read, self.staged, fingerprint, hub.hub_fingerprint,
                       reserved=True)  # fmt: skip
        self.thread = threading.Thread(target=self._run, args=(work,), name="bdi-seal")
        self.thread.start()
        self.pump = threading.Thread(target=self._pump, name="bdi-seal-feed")
        self.pump.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # raised in the job's thread at close
            self.error = exc

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)

    def feed(self, start: int, end: int) -> None:
        """A section's bytes, from the spill, to the content file and to gpg (by the pump)."""
        self.spans.put((start, end))

    def keep_content(self) -> None:
        """The upload is no longer this recipient's content whole: from now on the pump
        writes the content file, first with the bytes it has already moved."""
        self.spans.put(_CONTENT_FROM_NOW)

    def _pump(self) -> None:
        try:
            while (span := self.spans.get()) is not None and not self.stopping:
                if span is _CONTENT_FROM_NOW:
                    self._content_so_far()
                    continue
                self.pumped.append(span)
                self._copy(*span)
        except BaseException as exc:  # raised in the job's thread at close
            self.pump_error = exc
            self.stopping = True
        finally:
            self._close_pipe()  # gpg sees the end of its input

    def _copy(self, start: int, end: int) -> None:
        """Through one buffer of the pump's own: a new FEED of bytes per chunk, freed in
        another thread's arena than the job's, stayed in the process's memory."""
        view = memoryview(self.buffer)
        while start < end and not self.stopping:
            read = os.preadv(self.spill, [view[: min(FEED, end - start)]], start)
            if not read:
                raise ValueError(f"the plaintext ends before byte {end}")
            start += read
            chunk = view[:read]
            if self.out >= 0:
                _write_all(self.out, chunk)
            self.digest.update(chunk)
            if self.pipe >= 0:
                try:
                    _write_all(self.pipe, chunk)
                except BrokenPipeError:  # gpg is gone: its error comes at close
                    self._close_pipe()

    def _content_so_far(self) -> None:
        if self.out < 0:
            self.out = self._open()
            copy_spans(self.spill, self.pumped, self.out)

    def _close_pipe(self) -> None:
        if self.pipe >= 0:
            os.close(self.pipe)
            self.pipe = -1

    def _end_pump(self) -> None:
        self.spans.put(None)
        self.pump.join()

    def close(self, whole: bool) -> Content:
        """The delivery is sealed and its content durable; `whole`: the spill is the
        content (else a content file not written yet is written now)."""
        self._end_pump()
        self.thread.join()
        if self.pump_error is not None:
            raise self.pump_error
        if self.error is not None:
            raise self.error
        if self.out < 0:
            if whole:
                link_content(self.spill, self.path)
                return Content(self.name, self.digest.hexdigest())
            self._content_so_far()
        os.fsync(self.out)
        os.close(self.out)
        self.out = -1
        return Content(self.name, self.digest.hexdigest())

    def abort(self) -> None:
        """The upload is refused, or the job failed: nothing of it stays."""
        self.stopping = True  # the pump stops after its chunk (gpg takes it: it reads on)
        self._end_pump()
        self.thread.join()
        if self.out >= 0:
            os.close(self.out)
            self.out = -1
        self.staged.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


class _Spill(Generic[T]):
    """Records (marshalled) appended to an anonymous file of the spool, read back in
    batches."""

    def __init__(self, folder: Path) -> None:
        # a buffer of a megabyte: each write or read of the file's own releases the
        # interpreter lock, and taking it back may wait the switch interval behind others
        self.file: IO[bytes] = tempfile.TemporaryFile(dir=str(folder), buffering=READ)  # noqa: SIM115
        self.count = 0

    def add(self, record: T) -> None:
        data = marshal.dumps(record)  # type: ignore[arg-type]
        self.file.write(_LENGTH.pack(len(data)))
        self.file.write(data)
        self.count += 1

    def records(self) -> Iterator[T]:
        self.file.flush()
        self.file.seek(0)
        while head := self.file.read(_LENGTH.size):
            (size,) = _LENGTH.unpack(head)
            yield cast(T, marshal.loads(self.file.read(size)))

    def close(self) -> None:
        self.file.close()


@dataclass(slots=True)
class _Recipient:
    id: str
    spans: list[tuple[int, int]] = field(default_factory=list)
    size: int = 0
    sealer: _Sealer | None = None
    ahead: bool = False  # its sealer has bytes of the section being checked (`_Job._ahead`)


@dataclass(slots=True)
class Spills:
    """A streamed job's section `.log` files, until they are recorded."""

    logs: _Spill[LogRecord]
    closed: bool = False

    def __post_init__(self) -> None:
        _ACTIVE.add(1)

    @property
    def log_count(self) -> int:
        return self.logs.count

    def close(self) -> None:
        """Called once the job is planned (or it failed), maybe twice."""
        if not self.closed:
            self.closed = True
            _ACTIVE.add(-1)
        self.logs.close()

    def log_batches(self) -> Iterator[list[LogFile]]:
        records = self.logs.records()
        while batch := list(itertools.islice(records, LOGS_BATCH)):
            yield [LogFile(name, section, tuple(lines)) for name, section, lines in batch]


class _Job:
    """One streamed upload being read: routes each section as its checks end."""

    def __init__(self, hub: Hub, job: JobRef, keys: dict[str, str], now: datetime,
                 spill: int, journal: Journal) -> None:  # fmt: skip
        self.hub, self.job, self.keys, self.now, self.spill = hub, job, keys, now, spill
        assert job.id is not None
        self.upload = Upload(job.id, job.participant_id, job.upload_name, job.received_at)
        self.recipients: dict[str, _Recipient] = {}
        self.accepted: list[SectionReport] = []
        self.refused: Counter[str] = Counter()  # problem codes of the refused sections
        self.first_refused: list[SectionReport] = []  # the first LOGGED_SECTIONS of them
        self.spills = Spills(_Spill[LogRecord](hub.settings.spool))
        self.rows = DraftRows(journal, job.id, job.received_at)
        self.big_logs: list[LogFile] = []  # past LOG_IN_STORE: placed as files, kept here
        self.sealing = 0
        self.ready: dict[str, bool] = {}
        self.fed = 0  # the file's bytes up to this one are with a sealer, or refused
        # so far the plaintext is one recipient's sections one after the other: its content
        # whole, which the spill itself becomes (`link_content`) instead of a copy
        self.whole, self.sole, self.next_start = True, "", 0
        self.may_ahead: tuple[int, bool] = (0, False)  # a section: may it go ahead?

    def context(self) -> CheckContext:
        return CheckContext(self.upload.upload_name, self.upload.sender, self.can_receive,
                            self.hub.layout, collect_flows=True, on_flow=self.flow,
                            keep_sections=False)  # fmt: skip

    def can_receive(self, recipient: str) -> bool:
        """`recipient_ready`, asked once per recipient and job: each asking looks at the
        keyring's file, and such a job may have a hundred thousand sections."""
        ready = self.ready.get(recipient)
        if ready is None:
            ready = self.ready[recipient] = recipient_ready(self.hub, self.keys, recipient)
        return ready

    def flow(self, section: SectionReport, flow: Flow) -> None:
        """A flow of the section being read: its row stored now if the section may be
        delivered (else it will be refused); its bytes maybe sealed ahead."""
        if self._goes_ahead(section):
            recipient = self._recipient(section.recipient_id)
            shift = recipient.size - section.start  # its accepted sections come before
            row = occurrence(self.hub.layout, self.upload, recipient.id, flow, 0, shift)
            self.rows.add(section.number, recipient.id, row)
        if section.end - max(self.fed, section.start) >= AHEAD:
            self._ahead(section)

    def _ahead(self, report: SectionReport) -> None:
        """A big section with no problem so far: its bytes read since the last time go to
        its recipient's sealer now, so that gpg seals them while the rest is checked rather
        than after the section's end (a section may be most of the file). Should it end
        refused, that sealer is dropped (`_refused`) and its recipient sealed without it."""
        fed, self.fed = self.fed, report.end
        if not self._goes_ahead(report):
            return
        recipient = self._recipient(report.recipient_id)
        if recipient.sealer is None:
            big = recipient.size + report.end - report.start > preparing.CONTENT_IN_ROW
            if not (big and self._may_seal()):
                return
            recipient.sealer = self._sealer(recipient)
        start = max(fed, report.start) if recipient.ahead else report.start
        recipient.sealer.feed(start, report.end)
        recipient.ahead = True

    def _goes_ahead(self, report: SectionReport) -> bool:
        """Whether the section's header passes the checks made at its end (`_header_checks`):
        sent by the uploader to a participant who may receive it. Asked once a section."""
        if self.may_ahead[0] != report.number:
            r, upload = report, self.upload
            ok = (
                r.sender_id == upload.sender
                and r.file_type == upload.upload_name[:1]
                and r.recipient_id in self.keys
                and self.can_receive(r.recipient_id)
                and self.hub.layout.route_allowed(r.sender_id, r.recipient_id, r.file_type,
                                                  r.flow_code)
            )  # fmt: skip
            self.may_ahead = (report.number, ok)
        return self.may_ahead[1]

    def section(self, report: SectionReport) -> None:
        if report.accepted:
            self.accepted.append(report)
            self._route(report)
        else:
            self.rows.refused(report.number)
            self._refused(report)
        self._follow_whole(report)

    def _follow_whole(self, report: SectionReport) -> None:
        """Whether the plaintext may still be one recipient's content whole; once it may
        not, every sealer writes its recipient's content file itself."""
        sole = self.sole or report.recipient_id
        if self.whole and not (
            report.accepted and report.start == self.next_start and report.recipient_id == sole
        ):
            self.whole = False
            for recipient in self.recipients.values():
                if recipient.sealer is not None:
                    recipient.sealer.keep_content()
        self.sole, self.next_start = sole, report.end

    def _whole(self, recipient: _Recipient) -> bool:
        """The plaintext is this recipient's content, byte for byte."""
        spans = recipient.spans
        size = os.fstat(self.spill).st_size
        return self.whole and bool(spans) and spans[0][0] == 0 and spans[-1][1] == size

    def _refused(self, report: SectionReport) -> None:
        recipient = self.recipients.get(report.recipient_id)
        if recipient is not None and recipient.ahead:  # its sealer has this section's bytes
            assert recipient.sealer is not None
            recipient.sealer.abort()
            recipient.sealer, recipient.ahead = None, False
            self.sealing -= 1
        for code in {p.code.value for p in report.problems}:
            self.refused[code] += 1
        if len(self.first_refused) < LOGGED_SECTIONS:
            self.first_refused.append(report)
        upload = self.upload.upload_name
        lines = [log_line(p, upload, report.number, self.now, self.hub.layout)
                 for p in report.problems]  # fmt: skip
        name = log_name(upload, report.number)
        if sum(len(line) + 1 for line in lines) > LOG_IN_STORE:
            self.big_logs.append(LogFile(name, report.number, tuple(lines)))
        else:
            self.spills.logs.add((name, report.number, lines))

    def _recipient(self, recipient_id: str) -> _Recipient:
        recipient = self.recipients.get(recipient_id)
        if recipient is None:
            recipient = self.recipients[recipient_id] = _Recipient(recipient_id)
        return recipient

    def _route(self, report: SectionReport) -> None:
        recipient = self._recipient(report.recipient_id)
        recipient.spans.append((report.start, report.end))
        recipient.size += report.end - report.start
        start = max(self.fed, report.start) if recipient.ahead else report.start
        recipient.ahead = False
        if recipient.sealer is not None:
            recipient.sealer.feed(start, report.end)
        elif recipient.size > preparing.CONTENT_IN_ROW and self._may_seal():
            recipient.sealer = self._sealer(recipient)

    def _may_seal(self) -> bool:
        return self.sealing < SEALS_AT_ONCE and self.hub.pgp.reserve_process()

    def _sealer(self, recipient: _Recipient) -> _Sealer:
        """A sealer for the recipient, in the gpg place `_may_seal` took, given the bytes of
        its sections accepted so far."""
        self.sealing += 1
        try:
            self.hub.contents().mkdir(parents=True, exist_ok=True, mode=0o700)
            key = self.keys[recipient.id]
            sealer = _Sealer(self.hub, self.job, recipient.id, key, self.spill, not self.whole)
        except BaseException:
            self.hub.pgp.release_process()
            raise
        for span in recipient.spans:
            sealer.feed(*span)
        return sealer

    def abort(self) -> None:
        for recipient in self.recipients.values():
            if recipient.sealer is not None:
                recipient.sealer.abort()
        self.spills.close()

    def fail(self) -> None:
        """The job failed: nothing of it stays but its drafts (its next run removes them)."""
        self.abort()
        self.rows.wait()

    def drafted(self, prepared: Prepared) -> Prepared:
        """Once the upload is read: the rows not stored yet go with the plan, which adopts
        the drafts of the recipients delivered (and removes the others)."""
        rows = self.rows.rest()
        if prepared.report is not None and prepared.report.accepted:
            prepared.flows = rows
        prepared.drafts = self.rows.numbers
        return prepared

    def finish(self, report: FileReport) -> Prepared:
        """The upload is read and signed by its sender: its deliveries sealed, the rest to
        record with its plan."""
        report.sections = self.accepted
        if not report.accepted:  # a file-level problem: no section is delivered
            self.abort()
            return Prepared(report, log_files(report, self.now, self.hub.layout))
        prepared = Prepared(report, self.big_logs)
        files = False
        for recipient in self.recipients.values():
            if not recipient.spans:  # only met in a section gone ahead, then refused
                assert recipient.sealer is None
                continue
            content, staged, sealed = self._delivery(recipient)
            prepared.contents[recipient.id] = content
            files = files or content.data is None
            if staged is not None:
                prepared.staged[recipient.id] = staged
            if sealed is not None:
                prepared.sealed[recipient.id] = sealed
        if files:
            fsync_dir(self.hub.contents())  # their names too, before a movement refers to them
        prepared.streamed = self.spills
        return prepared

    def _delivery(self, recipient: _Recipient) -> tuple[Content, Path | None, bytes | None]:
        """A recipient's content, and its sealed delivery: a file of its staging folder, or
        the message itself when small (kept in the store)."""
        if recipient.sealer is not None:
            content = recipient.sealer.close(self._whole(recipient))
            return content, recipient.sealer.staged, None
        if recipient.size <= preparing.CONTENT_IN_ROW:
            data = b"".join(os.pread(self.spill, end - start, start)
                            for start, end in recipient.spans)  # fmt: skip
            content = Content("", hashlib.sha256(data).hexdigest(), data)
            return content, None, seal_small(self.hub, data, self.keys[recipient.id])
        self.hub.contents().mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{self.job.id:08d}-{recipient.id}.edi"
        path = self.hub.contents() / name
        digest = hashlib.sha256()
        if self._whole(recipient):
            copy_spans(self.spill, recipient.spans, None, digest)
            link_content(self.spill, path)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                copy_spans(self.spill, recipient.spans, fd, digest)
                os.fsync(fd)
            finally:
                os.close(fd)
        staged = seal(self.hub, self.job, path, recipient.id, self.keys[recipient.id])
        return Content(name, digest.hexdigest()), staged, None


def prepare_streamed(hub: Hub, job: JobRef, sender: Party, keys: dict[str, str],
                     now: datetime, journal: Journal) -> Prepared:  # fmt: skip
    """`prepare` for a big upload (see the module's docstring)."""
    assert job.id is not None
    journal.call(partial(clear_drafts, job_id=job.id))  # a previous run's
    spill = open_spill(hub.settings.spool)
    try:
        return _prepare(hub, job, sender, keys, now, spill, journal)
    finally:
        os.close(spill)


def _prepare(hub: Hub, job: JobRef, sender: Party, keys: dict[str, str], now: datetime,
             spill: int, journal: Journal) -> Prepared:  # fmt: skip
    work = _Job(hub, job, keys, now, spill, journal)
    decryption = _Decryption(hub, job, spill)
    try:
        report = None
        for event in check_lines(decryption.plaintext(), work.context()):
            if isinstance(event, SectionChecked):
                work.section(event.report)
            else:
                report = event.report
        assert report is not None
        verdict = decryption.result()
    except BaseException:
        decryption.cancel()
        work.fail()
        raise
    if not verdict.ok or verdict.signer != sender.fingerprint:
        work.abort()
        return work.drafted(_refused(hub, job, verdict, now))
    try:
        prepared = work.drafted(work.finish(report))
    except BaseException:
        work.fail()
        raise
    _count(hub, prepared, work)
    return prepared


def _refused(hub: Hub, job: JobRef, verdict: Verified, now: datetime) -> Prepared:
    problem = preparing.refused(job, job.participant_id, verdict)
    return Prepared(None, [whole_upload_log(job.upload_name, problem, now, hub.layout)])


def _count(hub: Hub, prepared: Prepared, work: _Job) -> None:
    """The refused sections of an accepted upload: their metrics, the first ones logged one
    by one (as `_log_report` does for the others), the rest in one line."""
    report = prepared.report
    assert report is not None
    if not (report.accepted and work.refused):
        return
    hub.metrics.sections(0, ([code] for code, n in work.refused.items() for _ in range(n)))
    job = work.job
    for section in work.first_refused:
        log.info("section.refused", job=job.id, participant=job.participant_id,
                 file=job.upload_name, section=section.number,
                 codes=[p.code.value for p in section.problems])  # fmt: skip
    count = work.spills.logs.count + len(work.big_logs)
    if count > len(work.first_refused):
        log.info("section.refused_more", job=job.id, participant=job.participant_id,
                 file=job.upload_name, sections=count - len(work.first_refused),
                 codes=dict(work.refused))  # fmt: skip
