"""`GET /api/uploads/{name}`: a participant's own word from the hub on its uploads of a name
(HTTP Basic with its EDI id and issued password). The kit's `send --wait` reads it.

Its passwords go through the Suivi's throttling (one `Lockout` for both: a pair (id,
address) that failed too often is refused even the right password for a while, an id that
fails from anywhere is answered more slowly) and tell the defender of each failure.

Every answer is JSON, and an error's is a short French `{"error": …}` (HUB.md), whatever the
path or method asked: Starlette's own answers (a plain English `Not Found`) never go out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bdi.admin.api import client_address
from bdi.defender import Defender, Event
from bdi.hub import Hub
from bdi.suivi.auth import Lockout, check_password

log = structlog.get_logger("bdi.uploads_api")
# what an error answer says, by its status (any other: REFUSED)
ERRORS = {
    401: "authentification requise",
    404: "adresse inconnue",
    405: "méthode non permise",
    500: "erreur interne du hub, réessayez plus tard",  # what went wrong: in the hub's log
}
REFUSED = "requête refusée"


def _credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _refused() -> Response:
    return JSONResponse(
        {"error": ERRORS[401]}, 401, headers={"WWW-Authenticate": 'Basic realm="bdi"'}
    )


async def _http_error(_: Request, exc: Exception) -> Response:
    """Starlette's refusal of a path or method (an unknown path, such as a name holding a
    '/', or a method other than GET), said as every other error of the API."""
    assert isinstance(exc, HTTPException)
    error = ERRORS.get(exc.status_code, REFUSED)
    return JSONResponse({"error": error}, exc.status_code, headers=exc.headers)


async def _internal(_: Request, exc: Exception) -> Response:
    """A failure of the hub's (raised again once answered, for the server's log)."""
    return JSONResponse({"error": ERRORS[500]}, 500)


class UploadsApi:
    def __init__(self, hub: Hub, lockout: Lockout, defender: Defender | None) -> None:
        self.hub, self.lockout, self.defender = hub, lockout, defender

    async def participant(self, request: Request) -> str | None:
        """The participant whose right password the request carries, unless its address is
        throttled for that id (then even the right password is refused)."""
        credentials = _credentials(request.headers.get("authorization"))
        if credentials is None:
            return None
        user, password = credentials
        address = client_address(request)
        if self.lockout.locked(user, address):
            log.info("uploads_api.login_locked", participant=user, address=address)
            self._failed(address, unknown=False)
            return None
        await asyncio.sleep(self.lockout.delay(user))
        checked = await check_password(self.hub.store, user, password)
        if checked.version is None:
            self.lockout.failed(user, address)
            log.info("uploads_api.login_failed", participant=user, address=address)
            self._failed(address, unknown=not checked.known)
            return None
        self.lockout.succeeded(user, address)
        return user

    def _failed(self, address: str, unknown: bool) -> None:
        if self.defender is not None:
            self.defender.record(address, Event.UPLOADS_BASIC, unknown_user=unknown)

    async def status(self, request: Request) -> Response:
        user = await self.participant(request)
        if user is None:
            return _refused()
        name = str(request.path_params["name"])
        jobs = await self.hub.store.jobs_named(user, name)
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


def create_uploads_api(
    hub: Hub, lockout: Lockout | None = None, defender: Defender | None = None
) -> Starlette:
    api = UploadsApi(hub, lockout or Lockout(), defender)
    return Starlette(
        routes=[Route("/{name}", api.status, methods=["GET"])],
        exception_handlers={HTTPException: _http_error, Exception: _internal},
    )
