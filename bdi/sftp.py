"""The SFTP front-end: a thin asyncssh adapter over a participant's `MailboxView`.

It holds no policy. The view decides; this module translates SFTP requests into view calls
and errors into SFTP status codes, in one place (`_mapped`). A client reads short messages
in French; what went wrong inside (SQL, tracebacks, paths of the host) goes only to the log.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncssh
import structlog
from asyncssh import SFTPAttrs, SFTPName
from asyncssh.constants import FXP_WRITE
from asyncssh.packet import PacketDecodeError, SSHPacket, String, UInt64
from asyncssh.sftp import SFTPServerHandler

from bdi.mailbox.view import (
    BadName,
    BytesHandle,
    Denied,
    Entry,
    MailboxView,
    NotFound,
    OverQuota,
    ReadHandle,
    UploadHandle,
    ViewError,
)
from bdi.pipeline.faults import Fault, classify, describe

log = structlog.get_logger("bdi.sftp")
T = TypeVar("T")
WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC | asyncssh.FXF_APPEND
INTERNAL = "erreur interne du hub, réessayez plus tard"
DISK_FULL = "espace disque du hub plein, réessayez plus tard"
BUSY = "hub occupé, réessayez plus tard"
# what the host's own errors may tell a client: a code and a short text, never the error
_OS_ERRORS: dict[int, tuple[Callable[[str], asyncssh.SFTPError], str]] = {
    errno.ENOENT: (asyncssh.SFTPNoSuchFile, "introuvable"),
    errno.EACCES: (asyncssh.SFTPPermissionDenied, "accès refusé"),
    errno.EPERM: (asyncssh.SFTPPermissionDenied, "accès refusé"),
    errno.ENAMETOOLONG: (asyncssh.SFTPInvalidFilename, "nom trop long"),
    errno.ENOSPC: (asyncssh.SFTPNoSpaceOnFilesystem, DISK_FULL),
    errno.EDQUOT: (asyncssh.SFTPQuotaExceeded, "quota dépassé"),
}


def _view_error(exc: ViewError) -> asyncssh.SFTPError:
    if isinstance(exc, NotFound):
        return asyncssh.SFTPNoSuchFile(str(exc))
    if isinstance(exc, Denied):
        return asyncssh.SFTPPermissionDenied(str(exc))
    if isinstance(exc, BadName):
        return asyncssh.SFTPInvalidFilename(str(exc))
    if isinstance(exc, OverQuota):
        return asyncssh.SFTPQuotaExceeded(str(exc))
    return asyncssh.SFTPFailure(str(exc))


def _os_error(exc: OSError, op: str, participant: str) -> asyncssh.SFTPError:
    kind, text = _OS_ERRORS.get(exc.errno or 0, (asyncssh.SFTPFailure, INTERNAL))
    log.warning("sftp.os_error", op=op, participant=participant, errno=exc.errno, exc_info=exc)
    return kind(text)


async def _mapped(call: Callable[[], Awaitable[T]], op: str, participant: str) -> T:
    """Run a view call; its errors become SFTP errors, and nothing else leaks to the client:
    an unexpected error is logged with its traceback and told as an internal error."""
    try:
        return await call()
    except asyncssh.SFTPError:
        raise
    except ViewError as exc:
        raise _view_error(exc) from None
    except OSError as exc:
        raise _os_error(exc, op, participant) from None
    except Exception as exc:
        raise client_error(exc, op, participant) from None


def client_error(exc: Exception, op: str, participant: str) -> asyncssh.SFTPError:
    """A passing fault of the hub (SQLite's "disk I/O error" on a full disk, a busy
    database) is told as such, the rest as an internal error; details go to the log only."""
    fault = classify(exc)
    if fault is Fault.DISK:
        log.warning("sftp.fault", op=op, participant=participant, fault=fault,
                    error=describe(exc))  # fmt: skip
        return asyncssh.SFTPNoSpaceOnFilesystem(DISK_FULL)
    if fault is Fault.DATABASE:
        log.warning("sftp.fault", op=op, participant=participant, fault=fault,
                    error=describe(exc))  # fmt: skip
        return asyncssh.SFTPFailure(BUSY)
    log.error("sftp.failed", op=op, participant=participant, exc_info=exc)
    return asyncssh.SFTPFailure(INTERNAL)


def _attrs(entry: Entry) -> SFTPAttrs:
    mode = (stat.S_IFDIR | 0o755) if entry.is_dir else (stat.S_IFREG | 0o600)
    return SFTPAttrs(size=entry.size, permissions=mode, mtime=entry.mtime, atime=entry.mtime)


def _open_attrs(file_obj: object) -> SFTPAttrs:
    if isinstance(file_obj, UploadHandle):
        return SFTPAttrs(size=file_obj.size, permissions=stat.S_IFREG | 0o600)
    if isinstance(file_obj, BytesHandle):
        return SFTPAttrs(size=len(file_obj.data), permissions=stat.S_IFREG | 0o600)
    assert isinstance(file_obj, ReadHandle)
    return SFTPAttrs.from_local(os.fstat(file_obj.fd))


_Handler = Callable[[SFTPServerHandler, SSHPacket], Awaitable[object]]
_TRAILER_TOLERATED = "_bdi_tolerates_write_trailers"


def tolerate_write_trailers() -> None:
    """Have asyncssh's SFTP server ignore bytes past a WRITE request's data, as OpenSSH's
    sftp-server does: rclone (its SFTP library) sends the last, short write of a file with
    more bytes after the data, and asyncssh refused that write (bad message),
    so that rclone's close took in a truncated upload, and its retries others (HUB.md: rclone
    with its defaults, one command, one upload). The data itself is read by its length, as
    before; only what follows it is dropped. asyncssh keeps its request handlers in one
    table for every server of the process: the hub's are its only ones."""
    table: dict[object, _Handler] = getattr(SFTPServerHandler, "_packet_handlers")  # noqa: B009
    strict = table[FXP_WRITE]
    if getattr(strict, _TRAILER_TOLERATED, False):
        return

    async def write(handler: SFTPServerHandler, packet: SSHPacket) -> object:
        handle = packet.get_string()
        try:
            offset, data = packet.get_uint64(), packet.get_string()
        except PacketDecodeError:  # answered as a bad message; its upload is given up
            _garbled(handler, handle)
            raise
        return await strict(handler, SSHPacket(String(handle) + UInt64(offset) + String(data)))

    setattr(write, _TRAILER_TOLERATED, True)
    table[FXP_WRITE] = write


def _garbled(handler: SFTPServerHandler, handle: bytes) -> None:
    """A WRITE on `handle` could not be read: its upload is missing bytes the client believes
    sent (it may go on writing after the error), so the upload is discarded and the handle
    killed, as after a failed write, rather than taken in at its close, truncated."""
    server = getattr(handler, "_server")  # noqa: B009
    file_obj = getattr(handler, "_file_handles").get(handle)  # noqa: B009
    if isinstance(server, HubSFTPServer) and isinstance(file_obj, UploadHandle):
        server.view.garbled(file_obj)


class HubSFTPServer(asyncssh.SFTPServer):
    """One SFTP session of one participant."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], view: MailboxView) -> None:
        super().__init__(chan)
        self.view = view
        tolerate_write_trailers()  # before the session's first request

    def _run(self, op: str, call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        return _mapped(call, op, self.view.participant)

    def _sync(self, op: str, fn: Callable[[], T]) -> Awaitable[T]:
        async def run() -> T:
            return fn()

        return self._run(op, run)

    async def realpath(self, path: bytes) -> bytes:
        return await self._sync("realpath", lambda: self.view.display(self.view.resolve(path)))

    async def stat(self, path: bytes) -> SFTPAttrs:
        async def entry() -> Entry:
            return await self.view.entry(self.view.resolve(path))

        return _attrs(await self._run("stat", entry))

    async def lstat(self, path: bytes) -> SFTPAttrs:
        return await self.stat(path)

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        async def entries() -> list[Entry]:
            return await self.view.entries(self.view.resolve(path))

        for entry in await self._run("scandir", entries):
            yield SFTPName(entry.name.encode(), attrs=_attrs(entry))

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        async def opened() -> object:
            place = self.view.resolve(path)
            if not pflags & WRITE_FLAGS:
                return await self.view.open_file(place)
            return await self.view.open_upload(
                place,
                truncate=bool(pflags & asyncssh.FXF_TRUNC),
                append=bool(pflags & asyncssh.FXF_APPEND),
            )

        return await self._run("open", opened)

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if isinstance(file_obj, BytesHandle):
            return file_obj.data[offset : offset + size]
        if not isinstance(file_obj, ReadHandle):
            raise asyncssh.SFTPPermissionDenied("fichier non ouvert en lecture")
        return await self._sync("read", lambda: os.pread(file_obj.fd, size, offset))

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, UploadHandle):
            raise asyncssh.SFTPPermissionDenied("fichier non ouvert en écriture")
        await self._sync("write", lambda: self.view.write(file_obj, offset, data))
        return len(data)

    async def close(self, file_obj: object) -> None:
        try:
            await self._close(file_obj)
        finally:
            self.view.closed()

    async def _close(self, file_obj: object) -> None:
        if isinstance(file_obj, UploadHandle):
            if self.channel.is_closing():
                # asyncssh closes the handles left open when the channel or the connection
                # is gone: no client asked for this close, nothing may be taken in
                self._abandon(file_obj)
                return
            await self._run("close", lambda: self.view.close_upload(file_obj))
        elif isinstance(file_obj, ReadHandle):
            await self._sync("close", lambda: os.close(file_obj.fd))

    def _abandon(self, handle: UploadHandle) -> None:
        """Never raises: it runs while asyncssh cleans the session up."""
        try:
            self.view.abandon_upload(handle)
        except OSError as exc:
            log.warning("sftp.abandon_failed", participant=self.view.participant, exc_info=exc)

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        return await self._sync("fstat", lambda: _open_attrs(file_obj))

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        """Accepted on anything that exists, a name just taken in too; changes nothing (the
        times and modes of an upload are not kept)."""
        await self.stat(path)

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        return None  # times and modes of an upload are not kept

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self.setstat(path, attrs)

    async def remove(self, path: bytes) -> None:
        async def removed() -> None:
            await self.view.remove(self.view.resolve(path))

        await self._run("remove", removed)

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        async def renamed() -> None:
            old, new = self.view.resolve(oldpath), self.view.resolve(newpath)
            await self.view.rename(old, new)

        await self._run("rename", renamed)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self.rename(oldpath, newpath)

    async def fsync(self, file_obj: object) -> None:
        if isinstance(file_obj, UploadHandle):
            await self._sync("fsync", file_obj.fsync)

    def _denied(self, what: str) -> None:
        raise asyncssh.SFTPPermissionDenied(f"{what} : interdit")

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        self._denied("mkdir")

    async def rmdir(self, path: bytes) -> None:
        self._denied("rmdir")

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        self._denied("symlink")

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        self._denied("link")

    async def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPNoSuchFile("aucun lien ici")

    # asyncssh's defaults for these query the hub's real file system: not offered
    async def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("statvfs non pris en charge")

    async def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("fstatvfs non pris en charge")
