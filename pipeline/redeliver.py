"""Sending a delivery again (`bdi admin redeliver`), performed by the running hub.

The admin's command (any process) only writes a request (`store/redeliveries.py`); the hub
takes it at its next sweep, because it alone may give inbox names: those promised to its
jobs' outputs live in its memory (`mailbox/names.py`). The kept plain content is sealed again
for the recipient's key as registered now, signed by the hub, under the upload's name (`_2`…
when taken), then recorded and placed as a job's output is: a small one kept in the store's
inbox by the transaction that records it, a bigger one recorded `planned`, renamed into the
inbox, then ended, so that a crash in between is finished at the next start-up, before the
SFTP port opens, without sending it twice.
"""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import structlog

from bdi.hub import Hub, utcnow
from bdi.mailbox.names import Names
from bdi.pipeline.faults import describe
from bdi.store import redeliveries as rows
from bdi.store.jobs import OutputRef
from bdi.store.journal import Journal
from bdi.store.redeliveries import Request, Source

log = structlog.get_logger("bdi.pipeline")


class Refused(Exception):
    """The request cannot be performed; nothing was recorded."""


class Redeliveries:
    """Performs the admins' requests; each step in a worker thread (gpg, files, journal)."""

    def __init__(self, hub: Hub, journal: Journal, names: Names) -> None:
        self.hub, self.journal, self.names = hub, journal, names

    def run(self) -> int:
        """Perform every open request; returns how many were looked at."""
        requests = self.journal.call(rows.open_requests)
        for req in requests:
            self.perform(req)
        return len(requests)

    def perform(self, req: Request) -> None:
        try:
            if req.state == rows.PLANNED:
                self._place(req, None)
            else:
                self._start(req)
        except rows.Cancelled:
            log.info("redelivery.cancelled", request=req.id, movement=req.movement_id)
        except Exception as exc:
            self._failed(req, exc)

    def _failed(self, req: Request, exc: Exception) -> None:
        """A request refused, or failing before it was recorded, fails for good (the admin
        asks again); a planned one is only finished: it waits for the next sweep."""
        error = str(exc) if isinstance(exc, Refused) else describe(exc)
        if req.state == rows.REQUESTED:
            self.journal.call(partial(rows.fail, request_id=req.id, error=error, at=utcnow()))
        log.warning("redelivery.failed", request=req.id, movement=req.movement_id,
                    participant=req.recipient_id, state=req.state, error=error)  # fmt: skip

    def _source(self, movement_id: int) -> Source:
        src = self.journal.call(partial(rows.source, movement_id=movement_id))
        reason = rows.refusal(src, movement_id)
        if reason is None and src is not None and not self.hub.pgp.can_encrypt_to(src.fingerprint):
            reason = f"no usable OpenPGP key for {src.recipient_id}"
        if reason is not None or src is None:
            raise Refused(reason)
        if src.content is None and not self._content(src).is_file():
            raise Refused(f"the content file of movement {movement_id} is missing")
        return src

    def _content(self, src: Source) -> Path:
        return self.hub.contents() / src.content_path

    def _start(self, req: Request) -> None:
        src = self._source(req.movement_id)
        staged = None if src.content is not None else self._seal(req, src)
        name = self.names.take(src.recipient_id, src.upload_name)
        try:
            sealed = self._seal_small(src) if staged is None else None
            work = partial(rows.plan, req=req, src=src, name=name, at=utcnow(), sealed=sealed)
            planned = self.journal.call(work)
        except BaseException:
            self._release(src.recipient_id, name)
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise
        if sealed is not None:  # kept in the store's inbox by its record: over
            self._release(src.recipient_id, name)
            _log_done(planned, src.sender_id, len(sealed))
        else:  # its name stays promised until its file is in place
            self._place(planned, staged, src)

    def _seal_small(self, src: Source) -> bytes:
        assert src.content is not None
        out = io.BytesIO()
        self.hub.pgp.sign_encrypt(src.content, out, src.fingerprint, self.hub.hub_fingerprint)
        return out.getvalue()

    def _seal(self, req: Request, src: Source) -> Path:
        staged = self.hub.mailboxes.staged_path(src.recipient_id, f"redelivery-{req.id}.pgp")
        self.hub.pgp.sign_encrypt(self._content(src), staged, src.fingerprint,
                                  self.hub.hub_fingerprint)  # fmt: skip
        return staged

    def _place(self, req: Request, staged: Path | None, src: Source | None = None) -> None:
        """Make a planned redelivery's file appear (sealed again if its staged file is gone:
        a crash), unless it is already there, then end it."""
        assert req.name is not None
        size = 0
        if not self.hub.mailboxes.in_inbox(req.recipient_id, req.name):
            if staged is None:
                src = src or self._planned_source(req)
                staged = self._seal(req, src)
            size = staged.stat().st_size
            self.hub.mailboxes.place(req.recipient_id, staged, req.name)
        self.journal.call(partial(rows.finish, req=req, at=utcnow()))
        self._release(req.recipient_id, req.name)
        _log_done(req, src.sender_id if src else "", size)

    def _planned_source(self, req: Request) -> Source:
        """A planned redelivery's content and key, read again (after a crash)."""
        assert req.new_movement_id is not None
        src = self.journal.call(partial(rows.source, movement_id=req.new_movement_id))
        if src is None:
            raise Refused(f"movement {req.new_movement_id} is gone")
        return src

    def _release(self, participant: str, name: str) -> None:
        self.names.release([OutputRef(0, 0, rows.KIND, participant, name)])


def _log_done(req: Request, sender: str, size: int) -> None:
    log.info("redelivery.done", request=req.id, movement=req.movement_id,
             new_movement=req.new_movement_id, sender=sender, participant=req.recipient_id,
             file=req.name, size=size)  # fmt: skip
