"""The operations admin acts of issue 15, shared by `admin/cli.py` and `admin/api.py`:
sending a delivery again, and applying the retention periods now.

A redelivery is asked of the running hub, which alone gives inbox names: the request is a row
its sweep takes within a second or so (`pipeline/redeliver.py`); this waits for the outcome,
and withdraws a request no hub has taken in time, so that the answer is always final.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import partial
from typing import Any

from bdi.admin.service import AdminError, AdminService, NotFoundError
from bdi.mailbox.retention import apply_retention
from bdi.store import redeliveries as rows
from bdi.store.models import Redelivery

WAIT_S = 30.0  # how long an admin waits for the running hub to take a redelivery
POLL_S = 0.1


def now() -> datetime:
    return datetime.now(UTC)


def redelivery_view(row: Redelivery) -> dict[str, Any]:
    def iso(at: datetime | None) -> str | None:
        return at.replace(tzinfo=at.tzinfo or UTC).isoformat() if at else None

    return {
        "request": row.id,
        "movement": row.movement_id,
        "recipient": row.recipient_id,
        "state": row.state,
        "file": row.name,
        "new_movement": row.new_movement_id,
        "error": row.error,
        "requested": iso(row.requested_at),
        "finished": iso(row.finished_at),
    }


async def redeliver(
    service: AdminService, movement_id: int, wait_s: float = WAIT_S
) -> dict[str, Any]:
    """Send the delivery of a movement again to its recipient (its current key), as a new
    movement « Renvoyé par l'exploitation »; returns it once the running hub has done it."""
    store = service.store
    src = await rows.run(store, partial(rows.source, movement_id=movement_id))
    reason = rows.refusal(src, movement_id)
    if src is None or reason is not None:
        raise (NotFoundError if src is None else AdminError)(reason)
    if not await asyncio.to_thread(service.pgp.can_encrypt_to, src.fingerprint):
        raise AdminError(f"no usable OpenPGP key for {src.recipient_id}")
    ask = partial(rows.ask, movement_id=movement_id, recipient=src.recipient_id, at=now(),
                  actor=service.actor)  # fmt: skip
    request_id = await rows.run(store, ask)
    await store.audit(now(), service.actor, "movement.redeliver", str(movement_id),
                      f"request {request_id}")  # fmt: skip
    row = await _outcome(service, request_id, wait_s)
    if row.state == rows.FAILED:
        raise AdminError(f"movement {movement_id} not sent again: {row.error}")
    if row.state == rows.CANCELLED:
        raise AdminError(
            f"no running hub took the redelivery of movement {movement_id} within {wait_s:g} s "
            "(is `bdi serve` running?); nothing was sent"
        )
    return redelivery_view(row)


async def _outcome(service: AdminService, request_id: int, wait_s: float) -> Redelivery:
    """The request once over: done, failed, or withdrawn after `wait_s` if still untaken."""
    store = service.store
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        row = await rows.run(store, partial(rows.request, request_id=request_id))
        assert row is not None
        if row.state in (rows.DONE, rows.FAILED, rows.CANCELLED):
            return row
        if asyncio.get_running_loop().time() >= deadline and row.state == rows.REQUESTED:
            await rows.run(store, partial(rows.cancel, request_id=request_id, at=now()))
            continue  # cancelled, or taken just now: read it again
        await asyncio.sleep(POLL_S)


async def purge(service: AdminService, dry_run: bool = False) -> dict[str, Any]:
    """Archive the inbox files past `inbox_retention_days`, purge the history past
    `history_years`; with `dry_run`, only say what would go."""
    if service.retention is None:
        raise AdminError("no retention policy: this service has no data folder")
    report = await apply_retention(service.store, service.mailboxes, service.retention, now(),
                                   dry_run)  # fmt: skip
    if not dry_run:
        detail = f"{len(report.archived)} archived, {report.purged.movements} movements purged"
        await service.store.audit(now(), service.actor, "retention.purge", "", detail)
    return report.as_json()
