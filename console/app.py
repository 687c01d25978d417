"""The console as an ASGI app, mounted by the web port on `/exploitation` (`bdi/web.py`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bdi.console import account, journal, login, operations, participants
from bdi.console.auth import SESSION_SECONDS, Ctx, Sessions
from bdi.console.core import HERE, Console, Facts, FailureHook, Handler, ServiceFactory, templates
from bdi.console.hubpage import hub
from bdi.hub import Hub
from bdi.suivi.auth import Lockout, Signer
from bdi.suivi.headers import SecurityHeaders

TITLES = {400: "Requête invalide", 403: "Requête refusée", 404: "Page introuvable",
          405: "Méthode non permise"}  # fmt: skip


def _no_failure_hook(address: str, unknown: bool) -> None:
    """Served alone, without a defender: failures only count in the lockout."""


async def home(c: Console, request: Request, ctx: Ctx) -> Response:
    return c.render(request, "home.html", ctx)


def create_console(
    hub_: Hub,
    services: ServiceFactory,
    *,
    secret_key: str,
    facts: Facts,
    secure_cookies: bool = False,
    lockout: Lockout | None = None,
    on_failure: FailureHook = _no_failure_hook,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The console over the hub's store; `services` gives the admin service acting for an
    operator (the CLI's and the API's), `on_failure` hears of each failed login."""
    if len(secret_key) < 16:
        raise ValueError("the console's secret key must be at least 16 characters")
    signer = Signer(f"console:{secret_key}".encode(), SESSION_SECONDS)
    sessions = Sessions(hub_.store, signer, secure_cookies, clock)
    console = Console(hub_, services, sessions, lockout or Lockout(), on_failure, facts,
                      templates())  # fmt: skip

    async def error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) and status == 400 else ""
        ctx = await sessions.ctx_of(request)
        return console.render(request, "error.html", ctx, status, status=status,
                              title=TITLES.get(status, "Erreur"), detail=detail)  # fmt: skip

    app = Starlette(
        routes=routes(console),
        exception_handlers={HTTPException: error},
        middleware=[Middleware(SecurityHeaders)],
    )
    console.router = app.router

    @pass_context
    def url_for(context: Context, name: str, /, **params: Any) -> str:
        return console.path(context["request"], name, **params)

    console.templates.env.globals["url_for"] = url_for  # the console's names, not the Suivi's
    return app


def routes(c: Console) -> list[Route | Mount]:
    need, p, o = c.need, participants, operations

    def post(path: str, handler: Handler, name: str) -> Route:
        return Route(path, need(handler), name=name, methods=["POST"])

    return [
        Route("/", need(home), name="home"),
        Route("/connexion", partial(login.login_form, c), name="login", methods=["GET"]),
        Route("/connexion", partial(login.login, c), name="login_post", methods=["POST"]),
        post("/deconnexion", login.logout, "logout"),
        Route("/participants", need(p.listing), name="participants"),
        Route("/participants/nouveau", need(p.new_form), name="participant_new"),
        post("/participants/nouveau", p.add, "participant_add"),
        Route("/participants/{pid}", need(p.show), name="participant"),
        post("/participants/{pid}/desactiver", p.disable, "participant_disable"),
        post("/participants/{pid}/activer", p.enable, "participant_enable"),
        post("/participants/{pid}/mot-de-passe", p.reset_password, "participant_password"),
        post("/participants/{pid}/cle-openpgp", p.pgp_key, "participant_pgp"),
        post("/participants/{pid}/cle-ssh", p.ssh_key, "participant_ssh"),
        Route("/referentiel", need(p.referential_form), name="referential"),
        post("/referentiel", p.referential, "referential_load"),
        Route("/traitements", need(o.jobs), name="jobs"),
        Route("/traitements/{job_id}", need(o.job), name="job"),
        post("/traitements/{job_id}/relancer", o.retry, "job_retry"),
        Route("/boites", need(o.inboxes), name="inboxes"),
        post("/boites/renvoi", o.redeliver, "redeliver"),
        Route("/adresses-bloquees", need(o.bans), name="bans"),
        post("/adresses-bloquees/lever", o.lift, "ban_lift"),
        Route("/audit", need(journal.journal), name="audit"),
        Route("/audit/csv", need(journal.journal_csv), name="audit_csv"),
        Route("/hub", need(hub), name="hub"),
        Route("/compte", need(account.account), name="account"),
        post("/compte/totp", account.totp_start, "totp_start"),
        post("/compte/totp/confirmer", account.totp_confirm, "totp_confirm"),
        post("/compte/totp/desactiver", account.totp_stop, "totp_stop"),
        Mount("/static", StaticFiles(directory=str(HERE / "static"),
                                     packages=[("bdi.suivi", "static")]), name="static"),
    ]  # fmt: skip
