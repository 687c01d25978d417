"""The console's sessions and login, with the Suivi's protections (`bdi.suivi.auth`): a signed
anonymous cookie holding the login form's CSRF token, then a server-side session (only the
SHA-256 of its cookie in `OperatorSession`), a lockout per (name, address), the defender told
of each failure.

Its cookie is its own (`bdi_exploitation`, path `/exploitation`) and its sessions live in
their own table: a participant's Suivi session opens nothing here, an operator's nothing
in the Suivi."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from bdi.store import operators
from bdi.store.models import OperatorSession
from bdi.store.repo import Store
from bdi.suivi.auth import (
    Session,
    Signer,
    cookie_session,
    is_session_token,
    session_id,
    set_session_cookie,
)

COOKIE = "bdi_exploitation"
SESSION_SECONDS = 4 * 3600.0


@dataclass(frozen=True, slots=True)
class Ctx:
    """The operator of a request and its session."""

    name: str
    email: str
    totp: bool
    session: Session

    @property
    def actor(self) -> str:
        """Who the audit names for this operator's acts."""
        return f"exploitation:{self.name}"


@dataclass(frozen=True, slots=True)
class Sessions:
    """Reads, opens and closes the console's sessions and sets their cookie."""

    store: Store
    signer: Signer
    secure: bool
    clock: Callable[[], float]

    def anonymous(self, request: Request) -> Session:
        """The anonymous session of the cookie (its CSRF token), or a new one."""
        return cookie_session(self.signer, request.cookies.get(COOKIE), self.clock())

    def set_cookie(self, request: Request, response: Response, session: Session) -> Response:
        value = session.token or self.signer.dumps(session)
        return set_session_cookie(response, COOKIE, value, request, self.signer.max_age,
                                  self.secure, "strict")  # fmt: skip

    async def ctx_of(self, request: Request) -> Ctx | None:
        """The logged-in session of the cookie, if the store still has it and its operator
        is active with the credentials it logged in with."""
        token = request.cookies.get(COOKIE)
        if not token or not is_session_token(token):
            return None
        now = datetime.fromtimestamp(self.clock(), UTC)
        found = await operators.session_of(self.store, session_id(token), now)
        if found is None:
            return None
        row, op = found
        if not op.active or op.credentials_version != row.credentials_version:
            return None
        session = Session(op.name, row.credentials_version, row.csrf, 0.0, token)
        return Ctx(op.name, op.email, op.totp_secret is not None, session)

    async def open(self, name: str, version: int) -> Session:
        fresh = Session.logged_in(name, version, self.clock())
        assert fresh.token is not None
        row = OperatorSession(
            id=session_id(fresh.token),
            operator_name=name,
            credentials_version=version,
            csrf=fresh.csrf,
            created_at=datetime.fromtimestamp(fresh.issued, UTC),
            expires_at=datetime.fromtimestamp(fresh.issued + self.signer.max_age, UTC),
        )
        await operators.open_session(self.store, row)
        return fresh

    async def close(self, ctx: Ctx) -> None:
        assert ctx.session.token is not None
        await operators.close_session(self.store, session_id(ctx.session.token))
