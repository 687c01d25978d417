"""What one participant sees over SFTP (HUB.md, "The mailbox, as seen over SFTP").

```
/                      read-only
/hub-public-key.asc    the hub's OpenPGP public key
/outbox/               upload here; files vanish from the listing once taken in
/inbox/                deliveries, .log files; read and delete allowed, no upload
```
Every client path is resolved here to one of these places, and only these; the SFTP layer
maps the exceptions below to SFTP status codes. An inbox is its folder plus the small files
kept in the store (`StoredInbox`): one listing, read and delete alike.

The view owns the access rules; it hands complete uploads to a `TakeIn` (the pipeline's
spool, injected), so the mailbox room never imports the pipeline.

Ordinary clients work with their default settings (HUB.md, "Uploading"): a name taken in
still answers `stat` and `setstat` for a while (`RecentUploads`), and a temporary upload is
written in place under its name, so that a client can resume it after a cut.

A handle whose write failed is dead: its upload is discarded at once (its bytes no longer
count against the quota) and its later writes and its close fail with the same error, so
that no client reads OK for bytes that went nowhere. A handle on a temporary upload dies too
when the file leaves its name through another handle (taken in, renamed, removed): nothing
changes an upload once taken in (`OpenTemporaries`).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Protocol

import structlog

from bdi.mailbox.quota import Quota
from bdi.mailbox.storage import Mailboxes
from bdi.mailbox.stored import StoredInbox
from bdi.store.inbox import StoredEntry

# .partial: rclone 1.63 and later upload to NAME.<random>.partial, then rename
TEMP_SUFFIXES = (".part", ".tmp", ".filepart", ".partial")
TEMP_PREFIX = ".in."  # lftp's xfer:temp-file-name: `.in.NAME`, renamed to NAME
ROOT, KEY, OUTBOX, INBOX = "", "hub-public-key.asc", "outbox", "inbox"
MAX_NAME_BYTES = 255  # what a file system takes: a longer name could never be a file
RECENT_S = 600.0  # how long a name taken in still answers stat and setstat
RECENT_PER_PARTICIPANT = 256  # names remembered per participant, the newest ones
log = structlog.get_logger("bdi.mailbox")


def is_temporary(name: str) -> bool:
    """A name a client writes under and renames once complete: not taken in at its close."""
    return name.endswith(TEMP_SUFFIXES) or (
        name.startswith(TEMP_PREFIX) and len(name) > len(TEMP_PREFIX)
    )


class ViewError(Exception):
    """Base of the errors a client can be told about."""


class NotFound(ViewError):
    pass


class Denied(ViewError):
    pass


class TooLarge(ViewError):
    pass


class OverQuota(ViewError):
    pass


class TooManyOpen(ViewError):
    pass


class BadName(ViewError):
    pass


class Detached(ViewError):
    """The temporary upload a handle writes left its name through another handle."""


class Garbled(ViewError):
    """A write request that could not be read: what the upload holds is not known."""


class Busy(ViewError):
    """The temporary upload is being taken in: it cannot be opened, renamed nor removed."""


@dataclass(frozen=True, slots=True)
class Place:
    """A resolved path: an area (root, key, outbox, inbox) and a file name in it, if any."""

    area: str
    name: str | None = None


@dataclass(slots=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    mtime: int


# An upload to be taken in at its close stays in memory up to this size and is committed
# with its job: no spool file to create, fsync, rename and delete for the usual small file.
UPLOAD_IN_MEMORY = 64 * 1024
UPLOADS_IN_MEMORY = 64 * 1024 * 1024  # all uploads being written, held in memory at once


class MemoryBudget:
    """Bytes the uploads being written may hold in memory, all sessions together: past it
    an upload goes to its file, as a big one does (many open uploads cannot exhaust memory)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


@dataclass(slots=True)
class UploadHandle:
    """An upload being written: in `buffer` while it is small and will be taken in at its
    close (its bytes counted in `budget`), else in the file `path` (opened as `fd`): a hidden
    file, or the temporary upload itself under its name (`temporary`: resumable).

    Opened for append (`append`), every write goes to the current end, whatever its offset:
    that is how a client resumes an upload it opened again.

    `error`: why the handle is dead (its upload discarded, or its file gone from its name);
    kept without traceback, raised anew at each later write and at the close."""

    name: str
    path: Path
    fd: int = -1
    buffer: bytearray | None = None
    budget: MemoryBudget | None = None
    size: int = 0
    error: Exception | None = None
    append: bool = False
    temporary: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None

    def at(self, offset: int) -> int:
        """Where a write asked at `offset` lands: for append, at the file's end, wherever
        another handle on it (same session or not) took it."""
        if self.append and self.fd >= 0:
            self.size = os.fstat(self.fd).st_size
        return self.size if self.append else offset

    def write(self, offset: int, data: bytes) -> None:
        offset = self.at(offset)
        end = offset + len(data)
        if self.buffer is not None and not self._room(end):
            self._spill()
        if self.buffer is not None:
            if offset > len(self.buffer):
                self.buffer.extend(bytes(offset - len(self.buffer)))  # a hole reads as zeros
            self.buffer[offset:end] = data
        else:
            _write_at(self.fd, data, offset)
        self.size = max(self.size, end)

    def take_buffer(self) -> bytes:
        """The whole upload, held in memory (its budget given back)."""
        assert self.buffer is not None
        data = bytes(self.buffer)
        self._release()
        return data

    def _room(self, end: int) -> bool:
        grow = end - len(self.buffer or b"")
        if grow <= 0:
            return True
        return end <= UPLOAD_IN_MEMORY and (self.budget is None or self.budget.take(grow))

    def _spill(self) -> None:
        assert self.buffer is not None
        self.fd = _create(self.path)
        _write_at(self.fd, self.buffer, 0)
        self._release()

    def _release(self) -> None:
        if self.buffer is not None and self.budget is not None:
            self.budget.give(len(self.buffer))
        self.buffer = None

    def fsync(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)

    def close_file(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> int:
        """Remove what the upload holds; the bytes freed."""
        freed = len(self.buffer) if self.buffer is not None else 0
        if self.fd >= 0:
            freed = os.fstat(self.fd).st_size  # another handle may have written further
            self.close_file()
            self.path.unlink(missing_ok=True)
        self._release()
        return freed

    def detach(self, error: ViewError) -> None:
        """Its file left its name (taken in, renamed, removed): the handle lets it be."""
        self.error = error
        self.close_file()
        self._release()


class OpenTemporaries:
    """The handles writing each temporary upload, all sessions together (a temporary upload
    is in place under its name: its path is the key), and the ones being taken in.

    When the file leaves its name through one handle or session, the other handles on it are
    detached: else their writes would still reach the file, in the spool once taken in."""

    def __init__(self) -> None:
        self._handles: dict[Path, list[UploadHandle]] = {}
        self._taking: set[Path] = set()

    def add(self, handle: UploadHandle) -> None:
        self._handles.setdefault(handle.path, []).append(handle)

    def forget(self, handle: UploadHandle) -> None:
        handles = self._handles.get(handle.path, [])
        self._handles[handle.path] = [h for h in handles if h is not handle]
        if not self._handles[handle.path]:
            del self._handles[handle.path]

    def detach(self, path: Path, error: ViewError) -> int:
        """How many handles were on `path`."""
        handles = self._handles.pop(path, [])
        for handle in handles:
            handle.detach(error)
        return len(handles)

    def held(self) -> frozenset[Path]:
        """The temporary uploads some handle has open."""
        return frozenset(self._handles)

    def swept(self, paths: Collection[Path]) -> int:
        """Temporary uploads the sweep removed: a handle opened on one after the sweep took
        `held` would write into a file gone from its name; it dies instead (how many)."""
        why = Detached("fichier temporaire supprimé : inactif depuis trop longtemps")
        return sum(self.detach(path, why) for path in paths)

    def check(self, path: Path) -> None:
        if path in self._taking:
            raise Busy("fichier en cours de prise en charge")

    @contextmanager
    def taking_in(self, path: Path) -> Iterator[None]:
        """While the file at `path` is moved to the spool (in a thread), no handle may
        reach it under its name."""
        self.check(path)
        self._taking.add(path)
        try:
            yield
        finally:
            self._taking.discard(path)


@dataclass(frozen=True, slots=True)
class Recent:
    """A name taken in: its size, its time of take-in (`mtime`) and the clock's `at` then."""

    size: int
    mtime: int
    at: float


class RecentUploads:
    """What the sessions share of the participants' uploads: the names they were taken in
    under lately, with size and time, and the temporary uploads open for writing (`writing`).

    Clients check an upload just made although its name has left the outbox (paramiko's put
    stats it, rclone and WinSCP set its times): for `keep_s` it still answers. Per
    participant, the `bound` newest names only; in memory (lost at a restart: harmless)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        keep_s: float = RECENT_S,
        bound: int = RECENT_PER_PARTICIPANT,
    ) -> None:
        self.clock, self.keep_s, self.bound = clock, keep_s, bound
        self._names: dict[str, OrderedDict[str, Recent]] = {}
        self.writing = OpenTemporaries()

    def add(self, participant: str, name: str, size: int) -> None:
        now = self.clock()
        names = self._names.setdefault(participant, OrderedDict())
        names.pop(name, None)
        names[name] = Recent(size, int(now), now)
        while len(names) > self.bound:
            names.popitem(last=False)
        self._expire(participant, now)

    def get(self, participant: str, name: str) -> Recent | None:
        self._expire(participant, self.clock())
        names = self._names.get(participant)
        return names.get(name) if names is not None else None

    def __len__(self) -> int:
        return sum(len(names) for names in self._names.values())

    def _expire(self, participant: str, now: float) -> None:
        names = self._names.get(participant)
        if names is None:
            return
        while names and now - next(iter(names.values())).at >= self.keep_s:
            names.popitem(last=False)
        if not names:
            del self._names[participant]


@dataclass(slots=True)
class ReadHandle:
    fd: int

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """What the SFTP layer's sparse-range query (`ranges@asyncssh.com`, used by asyncssh's
        `get`) needs: SEEK_DATA / SEEK_HOLE on the file being read."""
        return os.lseek(self.fd, offset, whence)


@dataclass(slots=True)
class BytesHandle:
    """An inbox file kept in the store, open for reading: its bytes, read at its opening."""

    data: bytes

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """SEEK_DATA / SEEK_HOLE, as on a file without holes (see `ReadHandle.seek`)."""
        if whence == os.SEEK_DATA and offset < len(self.data):
            return offset
        if whence == os.SEEK_HOLE and offset <= len(self.data):
            return len(self.data)
        raise OSError(errno.ENXIO, "no data past the end")


class TakeIn(Protocol):
    """Where a complete upload goes: its acknowledgement waits for these to return."""

    async def take_in(self, participant: str, path: Path, file_name: str) -> int: ...

    async def take_in_bytes(self, participant: str, data: bytes, file_name: str) -> int: ...


@dataclass
class MailboxView:
    participant: str
    mailboxes: Mailboxes
    stored: StoredInbox
    spool: TakeIn
    hub_key: Path
    max_upload: int
    budget: MemoryBudget
    recent: RecentUploads
    quota: Quota | None = None
    max_open_files: int = 64  # per SFTP session: a hoarder of handles cannot exhaust the hub's
    open_files: int = 0

    # -- paths --------------------------------------------------------------------------
    def resolve(self, raw: bytes) -> Place:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotFound("chemin illisible") from exc
        if "\x00" in text or "\\" in text:
            raise NotFound("chemin invalide")
        parts = [p for p in posixpath.normpath("/" + text).split("/") if p]
        if not parts:
            return Place(ROOT)
        if parts == [KEY]:
            return Place(KEY)
        if parts[0] not in (OUTBOX, INBOX) or len(parts) > 2:
            raise NotFound("introuvable")
        name = parts[1] if len(parts) == 2 else None
        if name is not None and not _client_name(parts[0], name):
            raise NotFound("introuvable")
        if name is not None and len(name.encode()) > MAX_NAME_BYTES:
            raise BadName(f"nom de plus de {MAX_NAME_BYTES} octets")
        return Place(parts[0], name)

    @staticmethod
    def display(place: Place) -> bytes:
        path = "/" + "/".join(p for p in (place.area, place.name) if p)
        return path.encode()

    def _file(self, place: Place) -> Path:
        assert place.name is not None
        folder = self.mailboxes.inbox if place.area == INBOX else self.mailboxes.outbox
        return folder(self.participant) / place.name

    @property
    def writing(self) -> OpenTemporaries:
        """Shared by all sessions (held by `recent`): a file is written from any of them."""
        return self.recent.writing

    # -- listing and attributes ---------------------------------------------------------
    async def entries(self, place: Place) -> list[Entry]:
        if place.name is not None or place.area == KEY:
            raise NotFound("pas un dossier")
        if place.area == ROOT:
            return [await self.entry(Place(KEY)), Entry(OUTBOX, True, 0, 0),
                    Entry(INBOX, True, 0, 0)]  # fmt: skip
        folder = self.mailboxes.inbox if place.area == INBOX else self.mailboxes.outbox
        found = [_entry(p) for p in folder(self.participant).iterdir() if _visible(place.area, p)]
        if place.area == INBOX:
            found += [_stored(e) for e in await self.stored.entries(self.participant)]
        return sorted(found, key=lambda e: e.name)

    async def entry(self, place: Place) -> Entry:
        if place.area == ROOT:
            return Entry("/", True, 0, 0)
        if place.area == KEY:
            return _entry(self.hub_key, KEY)
        if place.name is None:
            return Entry(place.area, True, 0, 0)
        path = self._file(place)
        if _visible(place.area, path):
            return _entry(path)
        if place.area == INBOX and (kept := await self.stored.entry(self.participant, place.name)):
            return _stored(kept)
        if place.area == OUTBOX and (taken := self.recent.get(self.participant, place.name)):
            return Entry(place.name, False, taken.size, taken.mtime)
        raise NotFound("introuvable")

    # -- handles ------------------------------------------------------------------------
    def _opening(self) -> None:
        if self.open_files >= self.max_open_files:
            raise TooManyOpen(f"trop de fichiers ouverts ({self.max_open_files} au plus)")
        self.open_files += 1

    def closed(self) -> None:
        """A handle of this session is closed (by its client, or at the session's end)."""
        self.open_files = max(0, self.open_files - 1)

    # -- reading ------------------------------------------------------------------------
    async def open_file(self, place: Place) -> ReadHandle | BytesHandle:
        """`open_read`, counted against the session's open files."""
        self._opening()
        try:
            return await self.open_read(place)
        except BaseException:
            self.closed()
            raise

    async def open_read(self, place: Place) -> ReadHandle | BytesHandle:
        if place.area == KEY:
            return ReadHandle(os.open(self.hub_key, os.O_RDONLY))
        if place.area != INBOX or place.name is None:
            raise Denied("lecture de /inbox/ et de la clé du hub seulement")
        try:
            return ReadHandle(os.open(self._file(place), os.O_RDONLY | os.O_NOFOLLOW))
        except FileNotFoundError:
            data = await self.stored.read(self.participant, place.name)
        if data is None:
            raise NotFound("introuvable")
        return BytesHandle(data)

    # -- uploading ----------------------------------------------------------------------
    async def open_upload(
        self, place: Place, *, truncate: bool = True, append: bool = False
    ) -> UploadHandle:
        """`open_write`, counted against the session's open files, once the participant's
        quota is measured (its writes then draw on it)."""
        if self.quota is not None and await self.quota.room(self.participant) <= 0:
            raise OverQuota("quota dépassé")
        self._opening()
        try:
            return self.open_write(place, truncate=truncate, append=append)
        except BaseException:
            self.closed()
            raise

    def open_write(
        self, place: Place, *, truncate: bool = True, append: bool = False
    ) -> UploadHandle:
        """A temporary name is written in place (renamed later, maybe in another session, or
        resumed: opened again without `truncate`); any other name in a hidden new upload."""
        if place.area != OUTBOX or place.name is None:
            raise Denied("dépôt dans /outbox/ seulement")
        if is_temporary(place.name):
            self.writing.check(self._file(place))
            handle = _open_temporary(self._file(place), place.name, truncate, append)
            self.writing.add(handle)
            return handle
        path = self.mailboxes.new_upload(self.participant)
        return UploadHandle(place.name, path, buffer=bytearray(), budget=self.budget, append=append)

    def write(self, handle: UploadHandle, offset: int, data: bytes) -> None:
        """A write that fails discards the upload (too large, over the quota, or a hole in
        it): the handle is dead, its later writes fail alike."""
        if handle.error is not None:
            raise _again(handle.error)
        if handle.temporary:
            self.writing.check(handle.path)  # being taken in: busy, the handle kept
        end = handle.at(offset) + len(data)
        if end > self.max_upload:
            too_large = f"fichier plus grand que le maximum de {self.max_upload} octets"
            raise self._fail(handle, TooLarge(too_large))
        grows = end - handle.size
        if grows > 0 and self.quota is not None and not self.quota.take(self.participant, grows):
            raise self._fail(handle, OverQuota("quota dépassé"))
        try:
            handle.write(offset, data)
        except OSError as exc:
            if grows > 0 and self.quota is not None:
                self.quota.release(self.participant, grows)
            self._fail(handle, exc)
            raise

    def garbled(self, handle: UploadHandle) -> None:
        """A write request on this handle could not be read: the upload is discarded and
        the handle dead, as after a failed write (its close takes nothing in)."""
        if handle.error is None:
            self._fail(handle, Garbled("requête d'écriture illisible: dépôt abandonné"))

    def _fail(self, handle: UploadHandle, error: Exception) -> Exception:
        """Kill the handle with `error` (returned, to be raised)."""
        handle.error = _again(error)
        freed = self._discard(handle)
        log.info("upload.discarded", participant=self.participant, file=handle.name,
                 reason=str(error), freed=freed)  # fmt: skip
        return error

    def _discard(self, handle: UploadHandle) -> int:
        """Nothing of the upload is left, and its bytes count no more against the quota
        (not only when it is measured again); the other handles on its file lose it too.
        The bytes freed."""
        if handle.temporary:
            self.writing.forget(handle)
            self._detach(handle.path, "fichier supprimé entre-temps")
        freed = handle.discard()
        if self.quota is not None:
            self.quota.release(self.participant, freed)
        return freed

    def _detach(self, path: Path, why: str) -> None:
        """The temporary upload at `path` leaves its name: the handles on it die."""
        if handles := self.writing.detach(path, Detached(why)):
            log.info("upload.detached", participant=self.participant, file=path.name,
                     handles=handles, reason=why)  # fmt: skip

    async def close_upload(self, handle: UploadHandle) -> None:
        """Take the upload in; if that fails, nothing of it is left (the client sends it
        again). A dead handle's close fails as its writes did: nothing is taken in."""
        if handle.error is not None:
            raise _again(handle.error)
        if handle.temporary:
            self.writing.forget(handle)
            handle.close_file()
            return
        try:
            if handle.buffer is not None:
                data = handle.take_buffer()
                await self.spool.take_in_bytes(self.participant, data, handle.name)
            else:
                handle.close_file()
                try:
                    await self.spool.take_in(self.participant, handle.path, handle.name)
                finally:
                    handle.path.unlink(missing_ok=True)  # moved away if it was taken in
        finally:  # taken in (moved to the spool) or refused: out of the outbox either way
            if self.quota is not None:
                self.quota.release(self.participant, handle.size)
        self.recent.add(self.participant, handle.name, handle.size)

    def abandon_upload(self, handle: UploadHandle) -> None:
        """The session ended before the client closed the upload: it was never acknowledged,
        so it is not taken in (the client sends it again). A temporary upload stays as far
        as it was written, for the client to resume."""
        if handle.error is not None:
            return  # discarded, or its file gone, already
        if handle.temporary:
            self.writing.forget(handle)
            handle.close_file()
        else:
            self._discard(handle)

    async def rename(self, old: Place, new: Place) -> None:
        """To a temporary name: a plain rename. To any other name: the upload is taken in;
        if that fails, the temporary upload is left as it was."""
        if old.area != OUTBOX or new.area != OUTBOX or not old.name or not new.name:
            raise Denied("seuls les dépôts de /outbox/ se renomment")
        source, target = self._file(old), self._file(new)
        if not source.is_file():
            raise NotFound("introuvable")
        if is_temporary(new.name):
            self.writing.check(source)
            self.writing.check(target)
            self._detach(source, "fichier renommé entre-temps")
            self._detach(target, "fichier remplacé entre-temps")
            source.replace(target)
            return
        size = source.stat().st_size
        with self.writing.taking_in(source):  # the handles on it may not write meanwhile
            await self.spool.take_in(self.participant, source, new.name)
        # taken in: the other handles on it lose it (if the take-in failed, they write on)
        self._detach(source, "fichier pris en charge entre-temps")
        if self.quota is not None:  # moved to the spool: out of the outbox
            self.quota.release(self.participant, size)
        self.recent.add(self.participant, new.name, size)

    async def remove(self, place: Place) -> None:
        if place.area not in (INBOX, OUTBOX) or place.name is None:
            raise Denied("suppression interdite")
        size = await self._remove(place, place.name)
        if self.quota is not None:
            self.quota.release(self.participant, size)

    async def _remove(self, place: Place, name: str) -> int:
        """The size of the file removed."""
        path = self._file(place)
        if place.area == OUTBOX:
            self.writing.check(path)
            self._detach(path, "fichier supprimé entre-temps")
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            kept = await self.stored.entry(self.participant, name) if place.area == INBOX else None
            if kept is None or not await self.stored.remove(self.participant, name):
                raise NotFound("introuvable") from None
            return kept.size
        if place.area == INBOX:
            await self.stored.released(self.participant, name)
        return size


def sweep_temporaries(
    mailboxes: Mailboxes, max_age_s: float, now: float, held: Collection[Path] = ()
) -> list[Path]:
    """Remove the temporary uploads untouched (not written) for `max_age_s`: never renamed,
    never resumed, and not open in a session now (`held`: its handle would go on writing
    into a file gone from its name; one opened since is `OpenTemporaries.swept`). Returns
    those removed."""
    removed: list[Path] = []
    for folder in mailboxes.root.iterdir():
        outbox = mailboxes.outbox(folder.name)
        if outbox.is_dir():
            removed += [p for p in outbox.iterdir() if p not in held and _stale(p, max_age_s, now)]
    return removed


def _stale(path: Path, max_age_s: float, now: float) -> bool:
    """Remove `path` if it is a temporary upload untouched for `max_age_s`."""
    if not is_temporary(path.name):
        return False
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < max_age_s:
            return False
        path.unlink()
    except FileNotFoundError:  # renamed or removed meanwhile
        return False
    return True


def _open_temporary(path: Path, name: str, truncate: bool, append: bool) -> UploadHandle:
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, 0o600)
    size = os.fstat(fd).st_size
    return UploadHandle(name, path, fd=fd, size=size, append=append, temporary=True)


def _again(error: Exception) -> Exception:
    """A copy of `error`, without its traceback (nor the frames and bytes it holds)."""
    return type(error)(*error.args)


def _client_name(area: str, name: str) -> bool:
    """A name a client may use: hidden names are the hub's own, but for lftp's `.in.NAME`."""
    return not name.startswith(".") or (
        area == OUTBOX and name.startswith(TEMP_PREFIX) and is_temporary(name)
    )


def _write_at(fd: int, data: bytes | bytearray, offset: int) -> None:
    """All of `data` at `offset`: a write the disk cannot hold whole is cut short first (the
    next one raises), and a short count taken for the whole would acknowledge lost bytes."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _visible(area: str, path: Path) -> bool:
    return _client_name(area, path.name) and path.is_file() and not path.is_symlink()


def _stored(entry: StoredEntry) -> Entry:
    at = entry.created_at  # UTC; read back naive from a database that drops the zone
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return Entry(entry.name, False, entry.size, int(at.timestamp()))


def _entry(path: Path, name: str | None = None) -> Entry:
    st = path.stat()
    return Entry(name or path.name, stat.S_ISDIR(st.st_mode), st.st_size, int(st.st_mtime))
