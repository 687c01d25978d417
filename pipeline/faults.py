"""What kind of failure stopped a job (HUB.md, "When the hub itself fails").

A fault of the hub's surroundings (disk full, database busy, gpg or its agent gone, no file
descriptors left) passes: the job waits and is tried again for as long as it lasts, and at
once when it is gone. Anything else is a bug: tried again a few times, then quarantined.
Neither is ever reported to the sender as a problem of its file.
"""

from __future__ import annotations

import errno
import sqlite3
import subprocess
from enum import StrEnum

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bdi.crypto import OpenPGPError
from bdi.store.inbox import NameTaken


class Fault(StrEnum):
    DISK = "disk"
    DATABASE = "database"
    GPG = "gpg"
    RESOURCES = "resources"


_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}
_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN}


def classify(error: BaseException) -> Fault | None:
    """The passing fault behind `error`, or None for a bug."""
    if isinstance(error, NameTaken):  # another node gave the name meanwhile: plan again
        return Fault.DATABASE
    if isinstance(error, OperationalError | PoolTimeout | sqlite3.OperationalError):
        return Fault.DISK if _says_full(error) else Fault.DATABASE
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return Fault.DATABASE
    if isinstance(error, OpenPGPError | subprocess.SubprocessError):
        return Fault.GPG
    if isinstance(error, OSError):
        if error.errno in _DISK:
            return Fault.DISK
        if error.errno in _RESOURCES:
            return Fault.RESOURCES
    cause = error.__cause__ or error.__context__
    return classify(cause) if cause is not None and cause is not error else None


def _says_full(error: BaseException) -> bool:
    text = str(error).lower()
    return "disk is full" in text or "disk i/o error" in text


def describe(error: BaseException) -> str:
    """One line for the admin: the exception's type and message, never a traceback."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:500]
