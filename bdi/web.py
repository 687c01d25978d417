"""The web port: the admin API under /api/admin and the Suivi at /, served by uvicorn
inside the hub's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from bdi.admin.api import create_admin_api
from bdi.admin.wiring import service_for
from bdi.datadir import token_hash_file
from bdi.hub import Hub
from bdi.suivi import textindex
from bdi.suivi.app import create_app
from bdi.suivi.auth import Lockout
from bdi.uploads_api import create_uploads_api


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the hub owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def create_web_app(hub: Hub, secret_key: str, lockout: Lockout | None = None) -> Starlette:
    """Every route of the web port; the passwords of the Suivi and /api/uploads share one
    `lockout` (per id, per address)."""
    lockout = lockout or Lockout()
    admin = create_admin_api(lambda: service_for(hub, "api"), token_hash_file(hub.settings))
    uploads = create_uploads_api(hub, lockout)
    secure = hub.settings.tls_cert is not None
    suivi = create_app(hub, secret_key=secret_key, secure_cookies=secure, lockout=lockout)
    routes = [Mount("/api/admin", app=admin), Mount("/api/uploads", app=uploads)]
    return Starlette(routes=[*routes, Mount("/", app=suivi)])


def _ssl_kwargs(hub: Hub) -> dict[str, Any]:
    settings = hub.settings
    if settings.tls_cert is None or settings.tls_key is None:
        return {}
    return {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}


@contextlib.asynccontextmanager
async def web_server(hub: Hub, secret_key: str) -> AsyncIterator[int]:
    """Serve the web app on the configured port; yield the port actually bound."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((hub.settings.host, hub.settings.web_port))
    config = uvicorn.Config(
        create_web_app(hub, secret_key),
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
