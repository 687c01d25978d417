"""Logging in and out of the console: name, password and, when the operator has enrolled
one, a TOTP code; the Suivi's lockout per (name, address) and the defender on failures.
Logins, refused ones included, go to the audit log with their address."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bdi.admin.api import client_address
from bdi.admin.operators import check_login
from bdi.console.auth import Ctx
from bdi.console.core import FORM_LIMITS, Console, log
from bdi.suivi.auth import CSRF_FIELD, Session, csrf_ok

ACTOR = "exploitation"  # a refused login's actor: nobody proven yet


async def login_form(c: Console, request: Request) -> Response:
    if await c.sessions.ctx_of(request) is not None:
        return RedirectResponse(c.path(request, "home"), status_code=303)
    return _form(c, request, c.sessions.anonymous(request), 200)


def _form(
    c: Console, request: Request, session: Session, code: int, locked: bool = False
) -> Response:
    """A refused login clears every field (as the Suivi's, §8.1)."""
    page = c.render(request, "login.html", None, code, csrf_login=session.csrf, locked=locked)
    page.headers["Cache-Control"] = "no-store"
    return c.sessions.set_cookie(request, page, session)


async def _audit(c: Console, actor: str, action: str, name: str, address: str) -> None:
    await c.hub.store.audit(datetime.now(UTC), actor, action, name, "", address or None)


async def login(c: Console, request: Request) -> Response:
    session = c.sessions.anonymous(request)
    form = await request.form(**FORM_LIMITS)
    if not csrf_ok(session, form.get(CSRF_FIELD)):
        raise HTTPException(403)
    name = str(form.get("identifiant", "")).strip().lower()[:32]
    password, code = str(form.get("mot_de_passe", "")), str(form.get("code", ""))[:16]
    address = client_address(request)
    if c.lockout.locked(name, address):
        log.info("console.login_locked", operator=name, address=address)
        c.on_failure(address, False)
        return _form(c, request, session, 429, locked=True)
    await asyncio.sleep(c.lockout.delay(name))  # slow down repeated failures on the name
    checked = await check_login(c.hub.store, name, password, code)
    if checked.version is None:
        c.lockout.failed(name, address)
        log.info("console.login_failed", operator=name, address=address)
        c.on_failure(address, not checked.known)
        await _audit(c, ACTOR, "operator.login-refused", name, address)
        return _form(c, request, session, 401, c.lockout.locked(name, address))
    c.lockout.succeeded(name, address)
    log.info("console.login", operator=name, address=address)
    fresh = await c.sessions.open(name, checked.version)
    await _audit(c, f"{ACTOR}:{name}", "operator.login", name, address)
    response = RedirectResponse(c.path(request, "home"), status_code=303)
    return c.sessions.set_cookie(request, response, fresh)


async def logout(c: Console, request: Request, ctx: Ctx) -> Response:
    """The session ends in the store: its cookie, even kept aside, opens nothing now."""
    await c.sessions.close(ctx)
    log.info("console.logout", operator=ctx.name)
    await _audit(c, ctx.actor, "operator.logout", ctx.name, client_address(request))
    response = RedirectResponse(c.path(request, "login"), status_code=303)
    return c.sessions.set_cookie(request, response, Session.anonymous(c.sessions.clock()))
