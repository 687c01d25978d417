"""The SFTP front-end: a thin asyncssh adapter over a participant's `MailboxView`.

It holds no policy. The view decides; this module translates SFTP requests into view calls
and view errors into SFTP status codes, in one place (`_mapped`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncssh
from asyncssh import SFTPAttrs, SFTPName

from bdi.mailbox.view import (
    BytesHandle,
    Denied,
    Entry,
    MailboxView,
    NotFound,
    ReadHandle,
    TooLarge,
    UploadHandle,
    ViewError,
)

T = TypeVar("T")
WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC | asyncssh.FXF_APPEND


def _sftp_error(exc: ViewError) -> asyncssh.SFTPError:
    if isinstance(exc, NotFound):
        return asyncssh.SFTPNoSuchFile(str(exc))
    if isinstance(exc, Denied):
        return asyncssh.SFTPPermissionDenied(str(exc))
    if isinstance(exc, TooLarge):
        return asyncssh.SFTPFailure(str(exc))
    return asyncssh.SFTPFailure(str(exc))


async def _mapped(call: Callable[[], Awaitable[T]]) -> T:
    """Run a view call; its errors become SFTP errors, and nothing else leaks to the client."""
    try:
        return await call()
    except ViewError as exc:
        raise _sftp_error(exc) from exc
    except OSError as exc:
        raise asyncssh.SFTPFailure(exc.strerror or "I/O error") from exc


def _attrs(entry: Entry) -> SFTPAttrs:
    mode = (stat.S_IFDIR | 0o755) if entry.is_dir else (stat.S_IFREG | 0o600)
    return SFTPAttrs(size=entry.size, permissions=mode, mtime=entry.mtime, atime=entry.mtime)


class HubSFTPServer(asyncssh.SFTPServer):
    """One SFTP session of one participant."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], view: MailboxView) -> None:
        super().__init__(chan)
        self.view = view

    def _sync(self, fn: Callable[[], T]) -> Awaitable[T]:
        async def run() -> T:
            return fn()

        return _mapped(run)

    async def realpath(self, path: bytes) -> bytes:
        return await self._sync(lambda: self.view.display(self.view.resolve(path)))

    async def stat(self, path: bytes) -> SFTPAttrs:
        place = await self._sync(lambda: self.view.resolve(path))
        return _attrs(await _mapped(lambda: self.view.entry(place)))

    async def lstat(self, path: bytes) -> SFTPAttrs:
        return await self.stat(path)

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        place = await self._sync(lambda: self.view.resolve(path))
        entries = await _mapped(lambda: self.view.entries(place))
        for entry in entries:
            yield SFTPName(entry.name.encode(), attrs=_attrs(entry))

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        place = await self._sync(lambda: self.view.resolve(path))
        if pflags & WRITE_FLAGS:
            return await self._sync(lambda: self.view.open_write(place))
        return await _mapped(lambda: self.view.open_read(place))

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if isinstance(file_obj, BytesHandle):
            return file_obj.data[offset : offset + size]
        if not isinstance(file_obj, ReadHandle):
            raise asyncssh.SFTPPermissionDenied("file not open for reading")
        return await self._sync(lambda: os.pread(file_obj.fd, size, offset))

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, UploadHandle):
            raise asyncssh.SFTPPermissionDenied("file not open for writing")
        await self._sync(lambda: self.view.write(file_obj, offset, data))
        return len(data)

    async def close(self, file_obj: object) -> None:
        if isinstance(file_obj, UploadHandle):
            if self.channel.is_closing():
                # asyncssh closes the handles left open when the channel or the connection
                # is gone: no client asked for this close, nothing may be taken in
                self.view.abandon_upload(file_obj)
                return
            await _mapped(lambda: self.view.close_upload(file_obj))
        elif isinstance(file_obj, ReadHandle):
            os.close(file_obj.fd)

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        if isinstance(file_obj, UploadHandle):
            return SFTPAttrs(size=file_obj.size, permissions=stat.S_IFREG | 0o600)
        if isinstance(file_obj, BytesHandle):
            return SFTPAttrs(size=len(file_obj.data), permissions=stat.S_IFREG | 0o600)
        assert isinstance(file_obj, ReadHandle)
        return SFTPAttrs.from_local(os.fstat(file_obj.fd))

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self.stat(path)  # exists: no-op

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        return None  # times and modes of an upload are not kept

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self.setstat(path, attrs)

    async def remove(self, path: bytes) -> None:
        place = await self._sync(lambda: self.view.resolve(path))
        await _mapped(lambda: self.view.remove(place))

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new = await self._sync(
            lambda: (self.view.resolve(oldpath), self.view.resolve(newpath))
        )
        await _mapped(lambda: self.view.rename(old, new))

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self.rename(oldpath, newpath)

    async def fsync(self, file_obj: object) -> None:
        if isinstance(file_obj, UploadHandle):
            file_obj.fsync()

    def _denied(self, what: str) -> None:
        raise asyncssh.SFTPPermissionDenied(f"{what} is not allowed")

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        self._denied("mkdir")

    async def rmdir(self, path: bytes) -> None:
        self._denied("rmdir")

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        self._denied("symlink")

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        self._denied("link")

    async def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPNoSuchFile("no links here")

    # asyncssh's defaults for these query the hub's real file system: not offered
    async def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")

    async def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("fstatvfs is not supported")
