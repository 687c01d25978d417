"""Operator accounts of the console (`bdi admin operator …`, `/exploitation/`): distinct from
the participants, an issued password (argon2, shown once), an optional TOTP second factor.

Shared by `admin/operator_cli.py` and the console; each act is audited with who did it and
from where (the service's actor and address), as every other admin act.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pyotp

from bdi.admin.passwords import hash_password, new_password, verify_password
from bdi.admin.service import AdminError, AdminService, NotFoundError
from bdi.store import operators as rows
from bdi.store.models import Operator
from bdi.store.repo import Store

NAME = re.compile(r"[a-z][a-z0-9._-]{1,31}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
ISSUER = "BDI exploitation"
TOTP_DIGITS = 6


def now() -> datetime:
    return datetime.now(UTC)


def _iso(at: datetime | None) -> str | None:
    """Stored times are UTC; SQLite hands them back naive."""
    return at.replace(tzinfo=at.tzinfo or UTC).isoformat() if at else None


def operator_view(row: Operator) -> dict[str, Any]:
    return {
        "name": row.name,
        "email": row.email,
        "state": "active" if row.active else "disabled",
        "totp": row.totp_secret is not None,
        "created": _iso(row.created_at),
        "last_login": _iso(row.last_login),
    }


async def _audit(service: AdminService, action: str, target: str, detail: str = "") -> None:
    await service.store.audit(now(), service.actor, action, target, detail, service.address)


async def _get(service: AdminService, name: str) -> Operator:
    row = await rows.operator(service.store, name)
    if row is None:
        raise NotFoundError(f"no operator {name}")
    return row


async def add_operator(service: AdminService, name: str, email: str) -> dict[str, Any]:
    """A new operator; its issued password is in the result, shown once."""
    if not NAME.fullmatch(name):
        raise AdminError(f"malformed operator name {name!r} (a-z first, then a-z 0-9 . _ -)")
    if not EMAIL.fullmatch(email):
        raise AdminError(f"malformed e-mail address {email!r}")
    if await rows.operator(service.store, name) is not None:
        raise AdminError(f"operator {name} already exists")
    password = new_password()
    row = Operator(name=name, email=email, password_hash=hash_password(password),
                   created_at=now())  # fmt: skip
    await rows.add_operator(service.store, row)
    await _audit(service, "operator.add", name, email)
    return {"name": name, "password": password}


async def list_operators(service: AdminService) -> list[dict[str, Any]]:
    return [operator_view(row) for row in await rows.operators(service.store)]


async def set_operator_active(service: AdminService, name: str, active: bool) -> dict[str, Any]:
    """Disabling closes the operator's console sessions at once."""
    row = await _get(service, name)
    version = row.credentials_version + (0 if active else 1)
    row = await rows.update_operator(service.store, name, active=active,
                                     credentials_version=version)  # fmt: skip
    if not active:
        await rows.close_sessions_of(service.store, name)
    await _audit(service, "operator.enable" if active else "operator.disable", name)
    return operator_view(row)


async def reset_operator_password(
    service: AdminService, name: str, reset_totp: bool = False
) -> dict[str, Any]:
    """A new password (shown once); open sessions close. `reset_totp`: the second factor
    is removed too (a lost phone), to be enrolled again."""
    row = await _get(service, name)
    password = new_password()
    values: dict[str, object] = {"password_hash": hash_password(password),
                                 "credentials_version": row.credentials_version + 1}  # fmt: skip
    if reset_totp:
        values |= {"totp_secret": None, "totp_pending": None}
    await rows.update_operator(service.store, name, **values)
    await rows.close_sessions_of(service.store, name)
    await _audit(service, "operator.reset-password", name, "totp reset" if reset_totp else "")
    return {"name": name, "password": password, "totp": not reset_totp and bool(row.totp_secret)}


# --- the second factor ----------------------------------------------------------------------


def totp_uri(name: str, secret: str) -> str:
    """What the authenticator app reads from the QR code."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS).provisioning_uri(name=name, issuer_name=ISSUER)


def matching_step(secret: str, code: str, at: datetime) -> int | None:
    """The time step whose code `code` is (the current one, or one step either side for a
    clock a little off), or None."""
    code = code.replace(" ", "").strip()
    if not (code.isdigit() and len(code) == TOTP_DIGITS):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS)
    current = totp.timecode(at)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


async def start_totp(service: AdminService, name: str) -> dict[str, Any]:
    """A new secret, pending until `confirm_totp` sees a right code from it."""
    row = await _get(service, name)
    if row.totp_secret:
        raise AdminError("the second factor is already on")
    secret = pyotp.random_base32()
    await rows.update_operator(service.store, name, totp_pending=secret)
    return {"name": name, "secret": secret, "uri": totp_uri(name, secret)}


async def confirm_totp(service: AdminService, name: str, code: str) -> dict[str, Any]:
    row = await _get(service, name)
    step = matching_step(row.totp_pending, code, now()) if row.totp_pending else None
    if step is None or not await rows.take_totp_step(service.store, name, step):
        raise AdminError("wrong code: the second factor stays off")
    row = await rows.update_operator(service.store, name, totp_secret=row.totp_pending,
                                     totp_pending=None)  # fmt: skip
    await _audit(service, "operator.totp-on", name)
    return operator_view(row)


async def stop_totp(service: AdminService, name: str, code: str) -> dict[str, Any]:
    """Turned off by the operator with a current code (its password was asked at login)."""
    row = await _get(service, name)
    step = matching_step(row.totp_secret, code, now()) if row.totp_secret else None
    if step is None or not await rows.take_totp_step(service.store, name, step):
        raise AdminError("wrong code: the second factor stays on")
    row = await rows.update_operator(service.store, name, totp_secret=None)
    await _audit(service, "operator.totp-off", name)
    return operator_view(row)


# --- login ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginCheck:
    """A console login checked: the credentials version when everything was right, and
    whether the name is an active operator (an unknown name weighs more for the defender)."""

    version: int | None
    known: bool


@cache
def _decoy_hash() -> str:
    return hash_password(secrets.token_urlsafe(18))


async def check_login(store: Store, name: str, password: str, code: str) -> LoginCheck:
    """Password, then the TOTP code if the operator has one (each code once). An unknown or
    disabled name costs the same hash check, so the answer's time tells nothing."""
    row = await rows.operator(store, name) if name else None
    usable = row is not None and row.active
    stored = row.password_hash if row is not None and usable else _decoy_hash()
    ok = await asyncio.to_thread(verify_password, stored, password)
    if row is None or not (ok and usable):
        return LoginCheck(None, usable)
    if row.totp_secret:
        step = matching_step(row.totp_secret, code, now())
        if step is None or not await rows.take_totp_step(store, name, step):
            return LoginCheck(None, True)
    await rows.update_operator(store, name, last_login=now())
    return LoginCheck(row.credentials_version, True)
