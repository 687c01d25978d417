"""The hub's work seen by an operator: jobs (running, waiting, quarantined, retried), the
backlog of each inbox with the redelivery of a movement, and the banned addresses."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bdi.admin import operations
from bdi.admin.service import JOB_LISTS, AdminError, NotFoundError, check_address
from bdi.console.auth import Ctx
from bdi.console.core import FORM_LIMITS, Console
from bdi.console.forms import text

MAX_ID = 2**31 - 1  # the store's ids are INTEGER: 32-bit on PostgreSQL
JOB_TABS = {"waiting": "En cours ou en attente", "quarantined": "En quarantaine",
            "all": "Tous (les 200 derniers)"}  # fmt: skip
REDELIVERY_WAIT_S = 30.0


def _id(raw: str) -> int:
    """An id of a path or a form; anything else names nothing."""
    if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 10) or int(raw) > MAX_ID:
        raise HTTPException(404)
    return int(raw)


async def jobs(c: Console, request: Request, ctx: Ctx) -> Response:
    which = request.query_params.get("liste", "waiting")
    if which not in JOB_LISTS:
        raise HTTPException(404)
    rows = await c.service(request, ctx).jobs(which)
    return c.render(request, "jobs.html", ctx, rows=rows, which=which, tabs=JOB_TABS)


async def job(c: Console, request: Request, ctx: Ctx) -> Response:
    try:
        shown = await c.service(request, ctx).job(_id(str(request.path_params["job_id"])))
    except NotFoundError:
        raise HTTPException(404) from None
    return c.render(request, "job.html", ctx, job=shown)


async def retry(c: Console, request: Request, ctx: Ctx) -> Response:
    job_id = _id(str(request.path_params["job_id"]))
    service = c.service(request, ctx)
    try:
        await service.retry_job(job_id)
    except NotFoundError:
        raise HTTPException(404) from None
    except AdminError as exc:
        return c.render(request, "job.html", ctx, 400, job=await service.job(job_id),
                        erreur=str(exc))  # fmt: skip
    return c.back(request, "job", "relance", job_id=job_id)


async def inboxes(c: Console, request: Request, ctx: Ctx) -> Response:
    rows = await c.service(request, ctx).inboxes()
    return c.render(request, "inboxes.html", ctx, rows=rows)


async def redeliver(c: Console, request: Request, ctx: Ctx) -> Response:
    """Send a movement's delivery again (the running hub does it, within seconds)."""
    form = await request.form(**FORM_LIMITS)
    service = c.service(request, ctx)
    raw = text(form, "mouvement", 20)
    try:
        movement = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else -1
        if movement < 1:
            raise AdminError(f"numéro de mouvement invalide : {raw!r}")
        done = await operations.redeliver(service, movement, REDELIVERY_WAIT_S)
    except AdminError as exc:
        rows = await service.inboxes()
        return c.render(request, "inboxes.html", ctx, 400, rows=rows, erreur=str(exc))
    rows = await service.inboxes()
    return c.render(request, "inboxes.html", ctx, rows=rows, renvoi=done)


async def bans(c: Console, request: Request, ctx: Ctx) -> Response:
    rows = await c.service(request, ctx).bans()
    return c.render(request, "bans.html", ctx, rows=rows)


async def lift(c: Console, request: Request, ctx: Ctx) -> Response:
    form = await request.form(**FORM_LIMITS)
    service = c.service(request, ctx)
    try:
        await service.lift_ban(check_address(text(form, "adresse", 64)))
    except AdminError as exc:
        return c.render(request, "bans.html", ctx, 400, rows=await service.bans(),
                        erreur=str(exc))  # fmt: skip
    return c.back(request, "bans", "leve")
