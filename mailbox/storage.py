"""Mailboxes on disk: one folder per participant with its inbox, its uploads in progress and
a staging folder where outputs are written before they appear, complete, under their name."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Container
from pathlib import Path

INBOX, OUTBOX, STAGING = "inbox", "outbox", ".staging"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def suffixed(name: str, n: int) -> str:
    """`PCOU010234_00311_000003_2.edi`: `_n` before the extension; n = 1 is the name itself."""
    if n == 1:
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}_{n}.{ext}" if dot and stem else f"{name}_{n}"


UPLOADING = ".up-"  # prefix of an upload being written


class Mailboxes:
    """The mailbox folders under one root (`<data>/mailboxes`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, participant_id: str) -> Path:
        return self.root / participant_id

    def inbox(self, participant_id: str) -> Path:
        return self.folder(participant_id) / INBOX

    def outbox(self, participant_id: str) -> Path:
        return self.folder(participant_id) / OUTBOX

    def staging(self, participant_id: str) -> Path:
        return self.folder(participant_id) / STAGING

    def ensure(self, participant_id: str) -> None:
        for path in (self.inbox, self.outbox, self.staging):
            path(participant_id).mkdir(parents=True, exist_ok=True, mode=0o700)

    def new_upload(self, participant_id: str) -> Path:
        """Where an upload is written until its close takes it in (hidden from listings)."""
        return self.outbox(participant_id) / f"{UPLOADING}{uuid.uuid4().hex}"

    def forget_unfinished_uploads(self, participant_id: str) -> int:
        """At start-up: uploads still being written when the server stopped were never
        acknowledged (their clients send them again); remove them."""
        removed = 0
        for path in self.outbox(participant_id).glob(f"{UPLOADING}*"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def unique_name(
        self, participant_id: str, name: str, taken: Callable[[str], bool],
        files: Container[str] | None = None,
    ) -> str:  # fmt: skip
        """The first of name, name_2, name_3... neither `taken` (promised to another output,
        or held by the store) nor a file of the inbox (`files`: its names, listed already)."""
        inbox = self.inbox(participant_id)
        n = 1
        while taken(candidate := suffixed(name, n)) or (
            candidate in files if files is not None else (inbox / candidate).exists()
        ):
            n += 1
        return candidate

    def inbox_files(self, participant_id: str) -> set[str]:
        """The names of the files of an inbox folder (none if it does not exist)."""
        try:
            return {path.name for path in self.inbox(participant_id).iterdir()}
        except FileNotFoundError:
            return set()

    def staged_path(self, participant_id: str, token: str) -> Path:
        return self.staging(participant_id) / token

    def place(self, participant_id: str, staged: Path, name: str) -> None:
        """Make a complete staged file appear in the inbox under `name`, durably."""
        fsync_file(staged)
        target = self.inbox(participant_id) / name
        staged.replace(target)
        fsync_dir(target.parent)

    def in_inbox(self, participant_id: str, name: str) -> bool:
        return (self.inbox(participant_id) / name).exists()
