"""The file work of one job before anything is recorded, done in its worker thread.

`prepare` decrypts, checks, keeps each recipient's plain content and seals its delivery:
the store then only has to name and record the outputs (`plan`). A delivery whose content
is small is sealed in memory and kept in the store's inbox with the job's plan; a bigger one
is sealed into the staging folder, for `place` to make it appear in its inbox.

The decrypted upload is never a named file: it stays in memory up to PLAIN_IN_MEMORY and
goes to an anonymous file in the spool beyond, so nothing is left of it after a crash (a
resumed job decrypts again) and small uploads cost no file creation and deletion.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import tempfile
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO, Protocol

import structlog

from bdi.crypto.openpgp import Reason, Refusal, Verified
from bdi.hub import Hub
from bdi.mailbox.storage import fsync_dir
from bdi.pipeline.plan import Content, Upload, group_by_recipient, occurrence, shifts
from bdi.routing.errors import Code, Problem, decryption_detail
from bdi.routing.flows import iter_flows
from bdi.routing.logs import LogFile, log_files, whole_upload_log
from bdi.routing.model import FileReport, Flow, SectionReport
from bdi.routing.scan import CheckContext, SectionChecked, check_lines
from bdi.store.jobs import JobRef, Occurrence, OutputRef, Party

log = structlog.get_logger("bdi.pipeline")
CHUNK = 1 << 20
PLAIN_IN_MEMORY = 1 << 20  # bytes of plaintext kept in memory per job before spilling to disk
CONTENT_IN_ROW = 64 * 1024  # a recipient's content up to this size is kept in the store
BATCH = 500  # flow occurrences per transaction: memory stays flat whatever the file's size
FLOWS_IN_ONE_PASS = 1 << 20  # plaintext bytes up to which the checks also collect the flows
# delivered section number -> (flow code, recipient, its `shifts` to the recipient's content)
Sections = Mapping[int, tuple[str, str, int]]
Batches = Generator[list[Occurrence], None, None]


class Streamed(Protocol):
    """What a streamed upload (`stream.py`) keeps outside memory until it is recorded: its
    sections' `.log` files (their flows come through `Prepared.more`)."""

    @property
    def log_count(self) -> int: ...
    def log_batches(self) -> Iterator[list[LogFile]]: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class Prepared:
    """One upload, decrypted, checked and sealed, waiting to be named and recorded."""

    report: FileReport | None  # None: refused by the OpenPGP layer
    logs: list[LogFile]
    contents: dict[str, Content] = field(default_factory=dict)  # by recipient
    staged: dict[str, Path] = field(default_factory=dict)  # recipient -> sealed delivery file
    sealed: dict[str, bytes] = field(default_factory=dict)  # recipient -> a small one, itself
    flows: list[Occurrence] = field(default_factory=list)  # the first batch
    more: Batches | None = None  # the next batches, for a big file
    streamed: Streamed | None = None  # more `.log` files, kept in the store with the plan
    movements: dict[str, int] = field(default_factory=dict)  # recipient -> id, once planned
    drafts: dict[str, int] = field(default_factory=dict)  # recipient -> its draft's number

    def close(self) -> None:
        if self.more is not None:
            self.more.close()
        if self.streamed is not None:
            self.streamed.close()


class Plain:
    """A job's decrypted upload, decrypted at most once per run of the job."""

    def __init__(self, hub: Hub, job: JobRef, sender: Party) -> None:
        self.hub, self.job, self.sender = hub, job, sender
        self._text: IO[bytes] | None = None
        self.refusal: Problem | None = None  # the OpenPGP layer refused the upload: its .log

    def open(self) -> IO[bytes] | None:
        """The plaintext, rewound; None if the upload is not signed by its sender."""
        if self._text is None and self.refusal is None:
            found = decrypt(self.hub, self.job, self.sender)
            if isinstance(found, Problem):
                self.refusal = found
            else:
                self._text = found
        if self._text is not None:
            self._text.seek(0)
        return self._text

    def checked(self) -> IO[bytes]:
        """The plaintext of an upload already found signed by its sender (checked, or
        planned before a crash), rewound."""
        stream = self.open()
        assert stream is not None
        return stream

    def close(self) -> None:
        if self._text is not None:
            self._text.close()


def prepare(hub: Hub, job: JobRef, plain: Plain, keys: dict[str, str], now: datetime) -> Prepared:
    """`keys` maps each active participant to its OpenPGP fingerprint."""
    assert job.id is not None
    stream = plain.open()
    if stream is None:
        problem = plain.refusal
        assert problem is not None
        return Prepared(None, [whole_upload_log(job.upload_name, problem, now, hub.layout)])
    upload = Upload(job.id, plain.sender.id, job.upload_name, job.received_at)
    report, flows = check_plain(hub, stream, upload, keys)
    prepared = Prepared(report, log_files(report, now, hub.layout))
    prepared.contents = store_contents(hub, job, plain, report)
    for recipient, content in prepared.contents.items():
        if content.data is not None:
            prepared.sealed[recipient] = seal_small(hub, content.data, keys[recipient])
        else:
            text = hub.contents() / content.name
            prepared.staged[recipient] = seal(hub, job, text, recipient, keys[recipient])
    sections = delivered(report.delivered_sections)
    if sections:
        batches = occurrence_batches(hub, plain, upload, sections, flows)
        prepared.flows = next(batches, [])
        if len(prepared.flows) == BATCH:
            prepared.more = batches
        else:
            batches.close()
    return prepared


def decrypt(hub: Hub, job: JobRef, sender: Party) -> IO[bytes] | Problem:
    """The upload's plaintext if it is signed by the sender's key, else its DECHIFFREMENT
    problem (`refused`)."""
    spool = hub.settings.spool
    plain: IO[bytes] = tempfile.SpooledTemporaryFile(PLAIN_IN_MEMORY, "w+b", dir=str(spool))  # noqa: SIM115
    try:
        upload = job.data if job.in_row else hub.spool_file(job.spool_name)
        assert upload is not None  # a job kept in its row is given its data before it runs
        result = hub.pgp.decrypt_verify_into(upload, plain, hub.settings.max_decrypted_bytes)
    except BaseException:
        plain.close()
        raise
    if result.ok and result.signer == sender.fingerprint:
        return plain
    plain.close()
    return refused(job, sender.id, result)


def refused(job: JobRef, participant: str, verdict: Verified) -> Problem:
    """The DECHIFFREMENT problem of an upload refused by the OpenPGP layer, or signed by
    another key than its sender's. The hub's log tells why in English (the bound crossed,
    gpg's exit code); the sender's `.log`, in a short French detail (routing.errors)."""
    reason = verdict.reason if verdict.reason is not None else Reason(Refusal.OTHER_SIGNER)
    log.info(
        "upload.refused",
        job=job.id,
        participant=participant,
        file=job.upload_name,
        code=Code.DECHIFFREMENT.value,
        reason=str(reason),
    )
    return Problem(Code.DECHIFFREMENT, detail=decryption_detail(reason.refusal, reason.bound))


def check_plain(
    hub: Hub, stream: IO[bytes], upload: Upload, keys: dict[str, str]
) -> tuple[FileReport, list[Flow] | None]:
    """The checks' report, and for a plaintext of up to FLOWS_IN_ONE_PASS bytes the flows of
    its accepted sections, collected by the same pass (a bigger one is read again for them,
    a batch at a time, so that they are never all in memory)."""
    size = stream.seek(0, os.SEEK_END)
    stream.seek(0)
    collect = size <= FLOWS_IN_ONE_PASS
    can_receive = partial(recipient_ready, hub, keys)
    ctx = CheckContext(upload.upload_name, upload.sender, can_receive, hub.layout, collect)
    flows: list[Flow] = []
    for event in check_lines(iter(partial(stream.read, CHUNK), b""), ctx):  # not by line:
        # a line may be as long as the plaintext (a compressed upload inflates to it)
        if isinstance(event, SectionChecked):
            flows.extend(event.flows)
        else:
            return event.report, flows if collect else None
    raise RuntimeError("check_lines ended without a FileChecked event")


def recipient_ready(hub: Hub, keys: dict[str, str], recipient: str) -> bool:
    """Registered, active, and with an OpenPGP key that can be encrypted to right now."""
    fingerprint = keys.get(recipient)
    return fingerprint is not None and hub.pgp.can_encrypt_to(fingerprint)


def store_contents(hub: Hub, job: JobRef, plain: Plain, report: FileReport) -> dict[str, Content]:
    """Keep each recipient's plain content for the Suivi: in memory, to be recorded with
    its movement, up to CONTENT_IN_ROW bytes; as a durable file of the contents folder beyond."""
    stream = plain.checked()
    out, files = {}, False
    for recipient, sections in group_by_recipient(report.delivered_sections).items():
        spans = [(s.start, s.end) for s in sections]
        if sum(end - start for start, end in spans) <= CONTENT_IN_ROW:
            data = io.BytesIO()
            out[recipient] = Content("", copy_ranges(stream, spans, data), data.getvalue())
            continue
        if not files:
            hub.contents().mkdir(parents=True, exist_ok=True, mode=0o700)
        files = True
        name = f"{job.id:08d}-{recipient}.edi"  # a run of the job again rewrites its own
        out[recipient] = Content(name, write_ranges(stream, spans, hub.contents() / name, True))
    if files:
        fsync_dir(hub.contents())  # their names too, before a movement refers to them
    return out


def seal(hub: Hub, job: JobRef, plain: Path | bytes, recipient: str, fingerprint: str) -> Path:
    """Sign and encrypt one recipient's content into its staging folder."""
    staged = hub.mailboxes.staged_path(recipient, f"{job.id}-{recipient}.pgp")
    hub.pgp.sign_encrypt(plain, staged, fingerprint, hub.hub_fingerprint)
    return staged


def seal_small(hub: Hub, plain: bytes, fingerprint: str) -> bytes:
    """Sign and encrypt a small content in memory: no file until it is recorded."""
    out = io.BytesIO()
    hub.pgp.sign_encrypt(plain, out, fingerprint, hub.hub_fingerprint)
    return out.getvalue()


def occurrence_batches(
    hub: Hub, plain: Plain, upload: Upload, sections: Sections, flows: Iterable[Flow] | None = None
) -> Batches:
    """The flow occurrences of the delivered sections, in batches: from `flows` (those of
    the accepted sections, in file order) or else read from the plaintext (nothing else may
    read it until the last batch is taken)."""
    accepted = {number: code for number, (code, _, _) in sections.items()}
    seq = dict.fromkeys((recipient for _, recipient, _ in sections.values()), 0)
    if flows is None:
        found = iter_flows(cut_lines(plain.checked()), hub.layout, accepted)
    else:  # a section accepted by its checks is not delivered if the file is refused
        found = (flow for flow in flows if flow.section in accepted)
    while batch := list(itertools.islice(found, BATCH)):
        rows = []
        for flow in batch:
            _, recipient, shift = sections[flow.section]
            rows.append(occurrence(hub.layout, upload, recipient, flow, seq[recipient], shift))
            seq[recipient] += 1
        yield rows


def delivered(reports: Sequence[SectionReport]) -> dict[int, tuple[str, str, int]]:
    """The `Sections` of a checked upload's delivered sections."""
    moved: dict[int, int] = {}
    for group in group_by_recipient(reports).values():
        moved.update(shifts((s.start, s.end) for s in group))
    return {s.number: (s.flow_code, s.recipient_id, moved[s.start]) for s in reports}


def delivered_sections(
    hub: Hub, stream: IO[bytes], outputs: Sequence[OutputRef]
) -> dict[int, tuple[str, str, int]]:
    """The `Sections` of a resumed job, from the headers of its plaintext and its outputs'
    byte ranges (its check report is gone; the ranges are stored)."""
    starts = {start: (o.participant_id, shift) for o in outputs if o.kind == "delivery"
              for start, shift in shifts(ranges(o.ranges)).items()}  # fmt: skip
    code = hub.layout.header.field("flow_code")
    found: dict[int, tuple[str, str, int]] = {}
    number, offset = 0, 0
    for length, raw in cut_lines(stream):
        if raw[:10] == b"1111111111":
            number += 1
            if offset in starts:
                flow_code = raw[code.start : code.end].decode(hub.layout.encoding)
                found[number] = (flow_code, *starts[offset])
        offset += length
    return found


LINE_KEPT = 1 << 16  # bytes of a line read again kept (a record has 640)


def cut_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """A plaintext's lines, terminators kept, each with its length: one longer than
    LINE_KEPT is cut there, the rest read and dropped. A line may be as long as the
    plaintext (a compressed upload inflates to it), and iterating the file would hold it."""
    while raw := stream.readline(LINE_KEPT):
        length, tail = len(raw), raw
        while len(tail) == LINE_KEPT and not tail.endswith(b"\n"):
            tail = stream.readline(LINE_KEPT)
            length += len(tail)
        yield length, raw


def ranges(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (r.split("-") for r in text.split(",") if r)]


def copy_ranges(inp: IO[bytes], spans: list[tuple[int, int]], out: IO[bytes]) -> str:
    """Copy byte ranges of `inp` into `out`; return their sha256."""
    digest = hashlib.sha256()
    for start, end in spans:
        inp.seek(start)
        left = end - start
        while left > 0:
            chunk = inp.read(min(CHUNK, left))
            if not chunk:
                raise ValueError(f"the plaintext ends before byte {end}")
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def write_ranges(inp: IO[bytes], spans: list[tuple[int, int]], dst: Path, durable: bool) -> str:
    """Copy byte ranges of `inp` into the file `dst`; return their sha256."""
    with dst.open("wb") as out:
        digest = copy_ranges(inp, spans, out)
        if durable:
            out.flush()
            os.fsync(out.fileno())
    return digest
