"""The last step of a job: make each planned output not yet in place appear in its inbox,
complete, under its name (sealing a delivery again if its staged file cannot be trusted: a
job resumed after a crash)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from bdi.hub import Hub
from bdi.pipeline.prepare import Plain, ranges, seal, write_ranges
from bdi.store.jobs import JobRef, OutputRef, Party

log = structlog.get_logger("bdi.pipeline")


def place_outputs(
    hub: Hub,
    job: JobRef,
    outputs: Sequence[OutputRef],
    people: Mapping[str, Party],
    staged: Mapping[str, Path],
    plain: Plain,
) -> None:
    """Make every output not yet in place appear in its inbox, complete, under its name."""
    for output in outputs:
        if output.delivered_at is not None or hub.mailboxes.in_inbox(
            output.participant_id, output.name
        ):
            continue
        if output.kind == "log":
            _place_log(hub, output)
            log_in_place(job, output)
            continue
        sealed = staged.get(output.participant_id) or _seal_again(hub, job, output, people, plain)
        size = sealed.stat().st_size
        hub.mailboxes.place(output.participant_id, sealed, output.name)
        log_in_place(job, output, size)


def log_in_place(job: JobRef, output: OutputRef, size: int = 0) -> None:
    """An output is in its inbox: placed as a file, or kept in the store by its plan.
    `size`: a delivery's (a `.log`'s event does not give it)."""
    if output.kind == "log":
        log.info("log.written", job=job.id, participant=output.participant_id, file=output.name)
    else:
        log.info("delivery.done", job=job.id, sender=job.participant_id,
                 participant=output.participant_id, file=output.name, size=size)  # fmt: skip


def _place_log(hub: Hub, output: OutputRef) -> None:
    staged = hub.mailboxes.staged_path(output.participant_id, f"{output.job_id}-{output.seq}.log")
    staged.write_text(output.text, encoding="utf-8")
    hub.mailboxes.place(output.participant_id, staged, output.name)


def _seal_again(
    hub: Hub, job: JobRef, output: OutputRef, people: Mapping[str, Party], plain: Plain
) -> Path:
    """A resumed job: seal the delivery again from the plaintext."""
    stream = plain.checked()
    recipient = output.participant_id
    part = hub.mailboxes.staged_path(recipient, f"{job.id}-{recipient}-{uuid.uuid4().hex[:8]}")
    write_ranges(stream, ranges(output.ranges), part, durable=False)
    try:
        return seal(hub, job, part, recipient, people[recipient].fingerprint)
    finally:
        part.unlink(missing_ok=True)
