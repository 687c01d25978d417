"""The admin JSON API under `/api/admin/`: the CLI's operations over HTTP, bearer-token auth.

Handlers are thin: parse, call `AdminService`, render. Errors map to statuses in one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bdi.admin import operations
from bdi.admin.openapi import OPENAPI
from bdi.admin.service import AdminError, AdminService, NotFoundError

Handler = Callable[[Request, AdminService], Awaitable[Any]]
log = structlog.get_logger("bdi.admin.api")


def token_ok(header: str | None, hash_file: Path) -> bool:
    """Constant-time check of `Authorization: Bearer <token>` against the stored hash."""
    if not header or not header.startswith("Bearer "):
        return False
    try:
        stored = hash_file.read_text().strip()
    except OSError:
        return False
    offered = hashlib.sha256(header.removeprefix("Bearer ").strip().encode()).hexdigest()
    return hmac.compare_digest(offered, stored)


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdminError(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise AdminError("body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and required:
        raise AdminError(f"missing field {name!r}")
    if value is not None and not isinstance(value, str):
        raise AdminError(f"field {name!r} must be a string")
    return value


# told of each wrong token offered, with the source address (the hub's defender)
FailureHook = Callable[[str], object]


def _no_failure_hook(address: str) -> None:
    """The API served alone, without a defender."""


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def token_guessed(
    request: Request, header: str | None, on_failure: FailureHook, event: str
) -> None:
    """A wrong token: if one was offered at all, a guess, logged as `event` and told to
    `on_failure` (the hub's defender); no token at all is no guess."""
    if header:
        address = client_address(request)
        log.info(event, address=address, path=request.url.path)
        on_failure(address)


def endpoint(
    service: Callable[[], AdminService],
    token_file: Path,
    handler: Handler,
    status: int = 200,
    on_failure: FailureHook = _no_failure_hook,
) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        header = request.headers.get("authorization")
        address = client_address(request)
        if not token_ok(header, token_file):
            token_guessed(request, header, on_failure, "admin_api.token_refused")
            return JSONResponse(
                {"error": "missing or wrong admin token"},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            acting = dataclasses.replace(service(), address=address or None)  # for the audit
            result = await handler(request, acting)
        except NotFoundError as exc:
            return JSONResponse({"error": str(exc)}, 404)
        except AdminError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(result, status)

    return run


async def _add(request: Request, s: AdminService) -> Any:
    body = await _body(request)
    return await s.add(
        _field(body, "id"),
        name=_field(body, "name"),
        email=_field(body, "email"),
        pgp_key=_field(body, "pgp_key"),
        role=_field(body, "role", False),
        ssh_key=_field(body, "ssh_key", False),
    )


def _pid(request: Request) -> str:
    return str(request.path_params["edi_id"])


async def _set_pgp(request: Request, s: AdminService) -> Any:
    return await s.set_pgp_key(_pid(request), _field(await _body(request), "pgp_key"))


async def _set_ssh(request: Request, s: AdminService) -> Any:
    return await s.set_ssh_key(_pid(request), _field(await _body(request), "ssh_key"))


async def _referential(request: Request, s: AdminService) -> Any:
    return await s.load_referential(_field(await _body(request), "toml"))


def _job_id(request: Request) -> int:
    try:
        return int(request.path_params["job_id"])
    except ValueError as exc:
        raise NotFoundError(f"no job {request.path_params['job_id']}") from exc


async def _jobs(request: Request, s: AdminService) -> Any:
    return await s.jobs(request.query_params.get("which", "quarantined"))


def _address(request: Request) -> str:
    return str(request.path_params["address"])


def _movement_id(request: Request) -> int:
    try:
        return int(request.path_params["movement_id"])
    except ValueError as exc:
        raise NotFoundError(f"no movement {request.path_params['movement_id']}") from exc


async def _redeliver(request: Request, s: AdminService) -> Any:
    return await operations.redeliver(s, _movement_id(request))


def _day(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError as exc:
        raise AdminError(f"{name}: not a day (YYYY-MM-DD): {raw!r}") from exc


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name, str(default))
    if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 7 and int(raw) > 0):
        raise AdminError(f"{name}: not a positive number: {raw!r}")
    return int(raw)


async def _audit(request: Request, s: AdminService) -> Any:
    """The audit log, searched as the console searches it (words, days), newest first."""
    words = request.query_params.get("q", "")[:200]
    return await s.audit_log(words, _day(request, "from"), _day(request, "to"),
                             _int(request, "page", 1), _int(request, "size", 50))  # fmt: skip


async def _purge(request: Request, s: AdminService) -> Any:
    dry_run = (await _body(request)).get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise AdminError("field 'dry_run' must be a boolean")
    return await operations.purge(s, dry_run)


HANDLERS: list[tuple[str, str, Handler, int]] = [
    ("/participants", "GET", lambda r, s: s.list(), 200),
    ("/participants", "POST", _add, 201),
    ("/participants/{edi_id}", "GET", lambda r, s: s.show(_pid(r)), 200),
    ("/participants/{edi_id}/disable", "POST", lambda r, s: s.set_active(_pid(r), False), 200),
    ("/participants/{edi_id}/enable", "POST", lambda r, s: s.set_active(_pid(r), True), 200),
    ("/participants/{edi_id}/reset-password", "POST", lambda r, s: s.reset_password(_pid(r)), 200),
    ("/participants/{edi_id}/pgp-key", "PUT", _set_pgp, 200),
    ("/participants/{edi_id}/ssh-key", "PUT", _set_ssh, 200),
    ("/hub-key", "GET", lambda r, s: s.hub_key(), 200),
    ("/token/rotate", "POST", lambda r, s: s.rotate_token(), 200),
    ("/referential", "PUT", _referential, 200),
    ("/jobs", "GET", _jobs, 200),
    ("/jobs/{job_id}", "GET", lambda r, s: s.job(_job_id(r)), 200),
    ("/jobs/{job_id}/retry", "POST", lambda r, s: s.retry_job(_job_id(r)), 200),
    ("/bans", "GET", lambda r, s: s.bans(), 200),
    ("/alerts/test", "POST", lambda r, s: s.test_alert(), 200),
    ("/bans/{address}", "DELETE", lambda r, s: s.lift_ban(_address(r)), 200),
    ("/movements/{movement_id}/redeliver", "POST", _redeliver, 200),
    ("/purge", "POST", _purge, 200),
    ("/inboxes", "GET", lambda r, s: s.inboxes(), 200),
    ("/audit", "GET", _audit, 200),
]


async def openapi(_: Request) -> Response:
    return JSONResponse(OPENAPI)


def create_admin_api(
    service: Callable[[], AdminService],
    token_file: Path,
    on_failure: FailureHook = _no_failure_hook,
) -> Starlette:
    routes = [Route("/openapi.json", openapi, methods=["GET"])]
    routes += [
        Route(path, endpoint(service, token_file, handler, status, on_failure), methods=[method])
        for path, method, handler, status in HANDLERS
    ]
    return Starlette(routes=routes)
