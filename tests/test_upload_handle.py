"""An upload handle keeps a small upload in memory and moves to its file past the bound; one
opened for append writes at the end; the names just taken in are remembered a while; old
temporary uploads are swept."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import cast

import pytest

from bdi.mailbox import view as mailbox_view
from bdi.mailbox.storage import Mailboxes
from bdi.mailbox.stored import StoredInbox
from bdi.mailbox.view import (
    RECENT_S,
    MailboxView,
    MemoryBudget,
    RecentUploads,
    UploadHandle,
    sweep_temporaries,
)
from bdi.pipeline.spool import Spool


def in_memory(handle: UploadHandle) -> bool:
    return handle.buffer is not None


def test_a_small_upload_stays_in_memory_holes_reading_as_zeros(tmp_path: Path) -> None:
    handle = UploadHandle("A.edi", tmp_path / ".up-a", buffer=bytearray())
    handle.write(4, b"tail")
    handle.write(0, b"he")
    assert bytes(handle.buffer or b"") == b"he\0\0tail" and handle.size == 8
    assert not handle.path.exists()


def test_past_the_bound_the_upload_moves_to_its_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mailbox_view, "UPLOAD_IN_MEMORY", 8)
    handle = UploadHandle("A.edi", tmp_path / ".up-a", buffer=bytearray())
    handle.write(0, b"12345678")
    assert in_memory(handle)
    handle.write(8, b"9")
    handle.write(2, b"ab")
    assert not in_memory(handle) and handle.size == 9
    os.close(handle.fd)
    assert handle.path.read_bytes() == b"12ab56789"


def test_discarding_removes_a_spilled_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mailbox_view, "UPLOAD_IN_MEMORY", 2)
    handle = UploadHandle("A.edi", tmp_path / ".up-a", buffer=bytearray())
    handle.write(0, b"123")
    assert handle.path.exists()
    handle.discard()
    assert not handle.path.exists() and handle.fd == -1


def test_past_the_shared_budget_an_upload_goes_to_its_file(tmp_path: Path) -> None:
    budget = MemoryBudget(10)
    first = UploadHandle("A.edi", tmp_path / ".up-a", buffer=bytearray(), budget=budget)
    second = UploadHandle("B.edi", tmp_path / ".up-b", buffer=bytearray(), budget=budget)
    first.write(0, b"12345678")
    second.write(0, b"12")
    assert budget.used == 10 and in_memory(first) and in_memory(second)
    second.write(2, b"3")  # one byte more than the budget
    assert not in_memory(second) and budget.used == 8
    os.close(second.fd)
    assert second.path.read_bytes() == b"123"
    assert first.take_buffer() == b"12345678" and budget.used == 0
    third = UploadHandle("C.edi", tmp_path / ".up-c", buffer=bytearray(), budget=budget)
    third.write(0, b"abc")
    third.discard()
    assert budget.used == 0


def test_a_write_that_fails_leaves_nothing_to_take_in(tmp_path: Path) -> None:
    """A disk error while writing (here: the hidden file cannot be created) fails the
    upload: its close discards it rather than taking in a file with a hole."""
    budget = MemoryBudget(0)  # the first byte must go to a file
    no_spool = cast(Spool, None)  # write never takes anything in
    no_store = cast(StoredInbox, None)  # nor reads the inbox
    mailboxes = Mailboxes(tmp_path)
    view = MailboxView(
        "COU010234", mailboxes, no_store, no_spool, tmp_path, 1 << 20, budget, RecentUploads()
    )
    handle = UploadHandle(
        "A.edi", tmp_path / "missing" / ".up-a", buffer=bytearray(), budget=budget
    )
    with pytest.raises(FileNotFoundError):
        view.write(handle, 0, b"x")
    assert handle.failed


def test_an_append_handle_writes_at_the_end_whatever_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "A.edi.part"
    path.write_bytes(b"first half;")
    fd = os.open(path, os.O_WRONLY)
    handle = UploadHandle("A.edi.part", path, fd=fd, size=11, append=True, temporary=True)
    handle.write(0, b"second")
    handle.write(3, b" half")
    handle.close_file()
    assert path.read_bytes() == b"first half;second half" and handle.size == 22


def test_recent_names_expire_after_ten_minutes_and_are_bounded() -> None:
    now = [1_000.0]
    recent = RecentUploads(clock=lambda: now[0], bound=3)
    recent.add("COU010234", "A.edi", 10)
    now[0] += RECENT_S - 1
    taken = recent.get("COU010234", "A.edi")
    assert taken is not None and (taken.size, taken.mtime) == (10, 1_000)
    assert recent.get("CIE000311", "A.edi") is None  # per participant
    now[0] += 1
    assert recent.get("COU010234", "A.edi") is None and len(recent) == 0
    for n in range(5):
        recent.add("COU010234", f"{n}.edi", n)
    assert len(recent) == 3 and recent.get("COU010234", "1.edi") is None
    assert recent.get("COU010234", "4.edi") is not None


def test_the_sweep_removes_only_temporary_uploads_untouched_long_enough(tmp_path: Path) -> None:
    mailboxes = Mailboxes(tmp_path)
    mailboxes.ensure("COU010234")
    outbox = mailboxes.outbox("COU010234")
    now = time.time()
    ages = {"old.part": 90_000, ".in.old.edi": 90_000, "old.tmp": 86_400, "young.part": 86_399,
            "young.filepart": 10, ".up-0123": 90_000}  # fmt: skip
    for name, age in ages.items():
        (outbox / name).write_bytes(b"x")
        os.utime(outbox / name, (now - age, now - age))
    assert len(sweep_temporaries(mailboxes, 86_400, now)) == 3
    assert {p.name for p in outbox.iterdir()} == {"young.part", "young.filepart", ".up-0123"}
