"""The operators' probes on the web port: `/healthz` (the process answers), `/readyz` (it can
do its work: JSON naming the check that failed, 503) and `/metrics` (Prometheus text, behind
the admin token or the metrics token). A wrong token there is a failed login like one on
/api/admin: it is told to the defender (HUB.md, "any HTTP API"), and the web port's ban gate
refuses a banned address here as on every other route."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bdi.admin.api import FailureHook, token_guessed, token_ok
from bdi.hub import Hub
from bdi.metrics import State
from bdi.probes import readiness

StateReader = Callable[[], Awaitable[State]]


def ops_routes(
    hub: Hub, read_state: StateReader, token_file: Path, on_failure: FailureHook | None = None
) -> list[Route]:
    """The probes; `on_failure` is told the address of each wrong token offered (the hub's
    defender), as the admin API's is."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        settings = hub.settings
        checks = await readiness(hub, settings.free_space_floor_bytes, settings.stale_job_s)
        ready = all(c.ok for c in checks)
        body = {
            "ready": ready,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        return JSONResponse(body, 200 if ready else 503)

    async def metrics(request: Request) -> Response:
        header = request.headers.get("authorization")
        if not (
            token_ok(header, token_file) or _metrics_token_ok(header, hub.settings.metrics_token)
        ):
            if on_failure is not None:
                token_guessed(request, header, on_failure, "ops_api.token_refused")
            return JSONResponse({"error": "missing or wrong token"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        hub.metrics.refresh(await read_state())
        return Response(hub.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def _metrics_token_ok(header: str | None, token: str | None) -> bool:
    if not token or not header or not header.startswith("Bearer "):
        return False
    offered = hashlib.sha256(header.removeprefix("Bearer ").strip().encode()).digest()
    return hmac.compare_digest(offered, hashlib.sha256(token.encode()).digest())
