"""What every console handler works with: the hub, the admin service of the operator making
the request, the sessions, rendering in French, and the login guard (session, CSRF)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Router
from starlette.templating import Jinja2Templates

from bdi.admin.api import client_address
from bdi.admin.service import AdminService
from bdi.console import formats
from bdi.console.auth import Ctx, Sessions
from bdi.hub import Hub
from bdi.suivi.auth import CSRF_FIELD, Lockout, csrf_ok

log = structlog.get_logger("bdi.console")
HERE = Path(__file__).parent
# the admin service acting for (actor, source address): the same as the CLI's and the API's
ServiceFactory = Callable[[str, str | None], AdminService]
# told of each failed login: (source address, whether the name is no active operator)
FailureHook = Callable[[str, bool], object]
Handler = Callable[["Console", Request, Ctx], Awaitable[Response]]


class Check(Protocol):
    """One check of `/readyz` (`bdi.probes.Check`)."""

    @property
    def name(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def detail(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Facts:
    """What the hub page reads of the running hub, given by the web port that serves it."""

    started: float  # when the web port started (epoch seconds)
    readiness: Callable[[], Awaitable[Sequence[Check]]]


FORM_LIMITS = {"max_files": 4, "max_fields": 64, "max_part_size": 1024 * 1024}
MESSAGES = {
    "desactive": "Le participant est désactivé : ses sessions sont fermées.",
    "active": "Le participant est de nouveau actif.",
    "cle-ssh": "La clé SSH est remplacée.",
    "cle-openpgp": "La clé OpenPGP est enregistrée.",
    "relance": "Le traitement sera relancé dans quelques secondes.",
    "leve": "Le blocage de l'adresse est levé.",
    "totp-on": "La double authentification est activée.",
    "totp-off": "La double authentification est désactivée.",
}


@dataclass
class Console:
    hub: Hub
    services: ServiceFactory
    sessions: Sessions
    lockout: Lockout
    on_failure: FailureHook
    facts: Facts
    templates: Jinja2Templates
    router: Router | None = None  # the console's own routes, once its app is built

    def path(self, request: Request, name: str, **params: Any) -> str:
        """A console route by name, under the path the console is mounted at. Looked up in
        the console's own routes: the web port's router also holds the Suivi's, whose names
        (login, logout, static…) are the same."""
        assert self.router is not None
        return str(request.scope.get("root_path", "")) + self.router.url_path_for(name, **params)

    def service(self, request: Request, ctx: Ctx) -> AdminService:
        return self.services(ctx.actor, client_address(request) or None)

    def need(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A logged-in operator, and on a POST its session's CSRF token."""

        async def wrapped(request: Request) -> Response:
            ctx = await self.sessions.ctx_of(request)
            if ctx is None:
                return RedirectResponse(self.path(request, "login"), status_code=303)
            if request.method == "POST":
                form = await request.form(**FORM_LIMITS)
                if not csrf_ok(ctx.session, form.get(CSRF_FIELD)):
                    log.info("console.csrf_refused", operator=ctx.name, path=request.url.path)
                    raise HTTPException(403)
            response = await handler(self, request, ctx)
            response.headers["Cache-Control"] = "no-store"
            return response

        return wrapped

    def render(
        self, request: Request, name: str, ctx: Ctx | None, code: int = 200, **values: Any
    ) -> Response:
        done = MESSAGES.get(request.query_params.get("fait", ""))
        context = {"ctx": ctx, "csrf": ctx.session.csrf if ctx else "", "fait": done, **values}
        return self.templates.TemplateResponse(request, name, context, status_code=code)

    def back(self, request: Request, route: str, done: str = "", **params: Any) -> Response:
        """After an act: back to a page (303), with the message of what was done."""
        target = self.path(request, route, **params)
        return RedirectResponse(f"{target}?fait={done}" if done else target, status_code=303)


def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=str(HERE / "templates"))
    found.env.filters["quand"] = formats.when
    found.env.filters["octets"] = formats.size
    found.env.filters["nombre"] = formats.number
    found.env.globals["libelle"] = formats.state
    return found
