"""`GET /api/uploads/{name}`: a participant's own word from the hub on its uploads of a name
(HTTP Basic with its EDI id and issued password). The kit's `send --wait` reads it."""

from __future__ import annotations

import asyncio
import base64
import binascii

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bdi.admin.passwords import verify_password
from bdi.hub import Hub


async def _participant(hub: Hub, header: str | None) -> str | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    row = await hub.store.participant(user)
    if row is None or not row.active:
        return None
    ok = await asyncio.to_thread(verify_password, row.password_hash, password)
    return user if ok else None


def create_uploads_api(hub: Hub) -> Starlette:
    async def status(request: Request) -> Response:
        user = await _participant(hub, request.headers.get("authorization"))
        if user is None:
            return JSONResponse(
                {"error": "authentication required"},
                401,
                headers={"WWW-Authenticate": 'Basic realm="bdi"'},
            )
        name = str(request.path_params["name"])
        jobs = await hub.store.jobs_named(user, name)
        return JSONResponse(
            {
                "name": name,
                "jobs": [
                    {
                        "received_at": job.received_at.isoformat(),
                        "state": job.state,
                        "outcome": job.outcome,
                        "recipients": [o.participant_id for o in outputs if o.kind == "delivery"],
                        "logs": [o.name for o in outputs if o.kind == "log"],
                    }
                    for job, outputs in jobs
                ],
            }
        )

    return Starlette(routes=[Route("/{name}", status, methods=["GET"])])
