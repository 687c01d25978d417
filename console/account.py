"""The operator's own account: the TOTP second factor, enrolled with a QR code (an SVG data
URI: no script, no Pillow) and confirmed by a first right code; turned off with a code."""

from __future__ import annotations

import segno
from starlette.requests import Request
from starlette.responses import Response

from bdi.admin import operators
from bdi.admin.service import AdminError
from bdi.console.auth import Ctx
from bdi.console.core import FORM_LIMITS, Console
from bdi.console.forms import text
from bdi.store import operators as rows


def qr_code(uri: str) -> str:
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2)


async def account(c: Console, request: Request, ctx: Ctx) -> Response:
    return c.render(request, "account.html", ctx)


async def totp_start(c: Console, request: Request, ctx: Ctx) -> Response:
    try:
        offered = await operators.start_totp(c.service(request, ctx), ctx.name)
    except AdminError as exc:
        return c.render(request, "account.html", ctx, 400, erreur=str(exc))
    return c.render(request, "account.html", ctx, secret=offered["secret"],
                    qr=qr_code(offered["uri"]))  # fmt: skip


async def totp_confirm(c: Console, request: Request, ctx: Ctx) -> Response:
    form = await request.form(**FORM_LIMITS)
    try:
        await operators.confirm_totp(c.service(request, ctx), ctx.name, text(form, "code", 16))
    except AdminError as exc:
        return c.render(request, "account.html", ctx, 400, erreur=str(exc),
                        **await _pending(c, ctx))  # fmt: skip
    return c.back(request, "account", "totp-on")


async def _pending(c: Console, ctx: Ctx) -> dict[str, str]:
    """The secret still waiting for its first code, shown again for another try."""
    row = await rows.operator(c.hub.store, ctx.name)
    if row is None or row.totp_pending is None:
        return {}
    uri = operators.totp_uri(ctx.name, row.totp_pending)
    return {"secret": row.totp_pending, "qr": qr_code(uri)}


async def totp_stop(c: Console, request: Request, ctx: Ctx) -> Response:
    form = await request.form(**FORM_LIMITS)
    try:
        await operators.stop_totp(c.service(request, ctx), ctx.name, text(form, "code", 16))
    except AdminError as exc:
        return c.render(request, "account.html", ctx, 400, erreur=str(exc))
    return c.back(request, "account", "totp-off")
