"""The web port: the admin API under /api/admin, `/api/uploads`, the operators' console under
/exploitation and the Suivi at /, served by uvicorn inside the hub's own event loop, behind the
defender's gate and the security headers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from bdi.admin.api import create_admin_api
from bdi.admin.service import AdminService
from bdi.admin.wiring import service_for
from bdi.console.app import create_console
from bdi.console.core import Facts
from bdi.datadir import token_hash_file
from bdi.defender import Defender, Event, defender_running
from bdi.hub import Hub
from bdi.probes import readiness
from bdi.shared import Sharing
from bdi.suivi import textindex
from bdi.suivi.app import create_app
from bdi.suivi.auth import Lockout
from bdi.suivi.headers import SecurityHeaders
from bdi.uploads_api import create_uploads_api

# the kinds of the shared counts of failed web logins: per (id, address), per id (the slow-down)
SUIVI = ("suivi_pairs", "suivi_ids")  # the Suivi's and /api/uploads' participants
CONSOLE = ("console_pairs", "console_ids")  # the console's operators


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the hub owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class BanGate:
    """ASGI middleware: a banned address gets 403 « adresse bloquée » before anything else
    runs (no session read, no cookie set, no store query)."""

    def __init__(self, app: ASGIApp, defender: Defender) -> None:
        self.app, self.defender = app, defender

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client and self.defender.is_banned(client[0]):
            refused = PlainTextResponse(
                "adresse bloquée\n", 403, headers={"Cache-Control": "no-store"}
            )
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _admin_service(hub: Hub, defender: Defender) -> AdminService:
    """The API's admin service: a ban it lifts ends in the defender at once."""
    return dataclasses.replace(service_for(hub, "api"), after_ban_change=defender.refresh)


def _console(hub: Hub, secret_key: str, defender: Defender, sharing: Sharing | None) -> ASGIApp:
    """The operators' console: the admin service of the CLI and the API, acting for the
    operator logged in, from its address; its failed logins feed the defender."""

    def services(actor: str, address: str | None) -> AdminService:
        return dataclasses.replace(
            service_for(hub, actor), after_ban_change=defender.refresh, address=address
        )

    settings = hub.settings
    facts = Facts(
        started=time.time(),
        readiness=lambda: readiness(hub, settings.free_space_floor_bytes, settings.stale_job_s),
    )
    return create_console(
        hub,
        services,
        secret_key=secret_key,
        facts=facts,
        secure_cookies=settings.tls_cert is not None,
        lockout=shared_lockout(sharing, CONSOLE),
        on_failure=lambda address, unknown: defender.record(
            address, Event.CONSOLE_LOGIN, unknown_user=unknown
        ),
    )


def create_web_app(
    hub: Hub,
    secret_key: str,
    defender: Defender,
    lockout: Lockout | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    sharing: Sharing | None = None,
) -> ASGIApp:
    """Every route of the web port; failed logins on any of them feed `defender`, and the
    passwords of the Suivi and /api/uploads share one `lockout` (per id, per address),
    counted with the other nodes' through `sharing`."""
    lockout = lockout or shared_lockout(sharing)
    admin = create_admin_api(
        lambda: _admin_service(hub, defender),
        token_hash_file(hub.settings),
        on_failure=lambda address: defender.record(address, Event.ADMIN_BEARER),
    )
    suivi = create_app(
        hub,
        secret_key=secret_key,
        secure_cookies=hub.settings.tls_cert is not None,
        lockout=lockout,
        on_failure=lambda address, unknown: defender.record(
            address, Event.SUIVI_LOGIN, unknown_user=unknown
        ),
    )
    routes = [
        *extra_routes,
        Mount("/api/admin", app=admin),
        Mount("/api/uploads", app=create_uploads_api(hub, lockout, defender)),
        # named: its route names (login, static…) stay out of the Suivi's lookups
        Mount(
            "/exploitation", app=_console(hub, secret_key, defender, sharing), name="exploitation"
        ),
        Mount("/", app=suivi),
    ]
    return SecurityHeaders(BanGate(Starlette(routes=routes), defender))


def _ssl_kwargs(hub: Hub) -> dict[str, Any]:
    settings = hub.settings
    if settings.tls_cert is None or settings.tls_key is None:
        return {}
    return {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}


def shared_lockout(sharing: Sharing | None, kinds: tuple[str, str] = SUIVI) -> Lockout:
    """A lockout of the web port; with several nodes, its counts summed over the live ones
    (`kinds`: the shared counts' kinds, per (id, address) and per id)."""
    lockout = Lockout()
    if sharing is not None:
        pairs = sharing.tally(kinds[0], lockout.clock, lockout.recount_pair)
        lockout.share(pairs, sharing.tally(kinds[1], lockout.clock, lockout.recount_id))
    return lockout


@contextlib.asynccontextmanager
async def web_server(
    hub: Hub,
    secret_key: str,
    defender: Defender | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    sharing: Sharing | None = None,
) -> AsyncIterator[int]:
    """Serve the web app on the configured port; yield the port actually bound.

    `defender` is the hub's, shared with the SSH server; without one, the web port runs
    its own over the same store (default policy)."""
    async with contextlib.AsyncExitStack() as stack:
        if defender is None:
            defender = await stack.enter_async_context(defender_running(hub.store))
        serving = _serving(hub, secret_key, defender, extra_routes, sharing)
        port = await stack.enter_async_context(serving)
        yield port


@contextlib.asynccontextmanager
async def _serving(
    hub: Hub,
    secret_key: str,
    defender: Defender,
    extra_routes: Sequence[BaseRoute],
    sharing: Sharing | None,
) -> AsyncIterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((hub.settings.host, hub.settings.web_port))
    config = uvicorn.Config(
        create_web_app(hub, secret_key, defender, extra_routes=extra_routes, sharing=sharing),
        log_config=None,
        access_log=False,
        lifespan="off",
        **_ssl_kwargs(hub),
    )
    await textindex.ready(hub.store)  # build the Suivi's search indexes before serving
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task
        sock.close()
