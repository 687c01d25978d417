"""Admin operations (HUB.md "Participants and credentials"), shared by the CLI and the API.

Each operation checks everything before it changes anything, records itself in the audit
table, and returns plain data that both front-ends render (text, JSON).
"""

from __future__ import annotations

import asyncio
import builtins
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncssh
import structlog

from bdi.admin import overview
from bdi.admin.passwords import hash_password, new_password
from bdi.admin.registry import RegistrationError, key_unused, register
from bdi.alerts import Alert
from bdi.alerts import send as send_alert
from bdi.config import Settings
from bdi.crypto import KeyInfo, KeyProblem, OpenPGP
from bdi.mailbox.retention import RetentionPolicy
from bdi.mailbox.storage import Mailboxes
from bdi.routing.layout import Layout
from bdi.routing.referential import ReferentialError, parse_referential
from bdi.store import bans as ban_store
from bdi.store import sessions
from bdi.store.models import Ban, Job, Participant, ReferentialLabel, ReferentialParticipant
from bdi.store.repo import Store

log = structlog.get_logger("bdi.admin")


class AdminError(ValueError):
    """An admin request refused; nothing was changed. The message is one line."""


class NotFoundError(AdminError):
    pass


def now() -> datetime:
    return datetime.now(UTC)


def participant_view(p: Participant, ssh_keys: int = 0) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "email": p.email,
        "role": p.role,
        "state": "active" if p.active else "disabled",
        "pgp_fingerprint": p.pgp_fingerprint,
        "ssh_keys": ssh_keys,
        "created": p.created_at.isoformat(),
        "last_login": p.last_login.isoformat() if p.last_login else None,
    }


def pgp_key_view(key: KeyInfo | None) -> dict[str, Any]:
    """The state of the registered OpenPGP key as the hub's keyring knows it now."""
    if key is None:
        return {"pgp_state": "missing", "pgp_expires": None}
    if key.revoked:
        state = "revoked"
    elif key.expired:
        state = "expired"
    else:
        state = "valid" if key.can_sign and key.encryption_subkey else "unusable"
    return {"pgp_state": state, "pgp_expires": key.expires.isoformat() if key.expires else None}


JOB_LISTS = ("quarantined", "waiting", "all")


def job_view(job: Job) -> dict[str, Any]:
    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    state = "quarantined" if job.quarantined_at else job.state
    return {
        "id": job.id,
        "participant": job.participant_id,
        "file": job.upload_name,
        "size": job.size,
        "received": iso(job.received_at),
        "state": state,
        "outcome": job.outcome,
        "attempts": job.attempts or 0,
        "error": job.error,
        "quarantined": iso(job.quarantined_at),
        "retry_requested": iso(job.retry_requested_at),
        "finished": iso(job.finished_at),
    }


def ban_view(ban: Ban) -> dict[str, Any]:
    return {
        "address": ban.address,
        "banned": ban_store.as_utc(ban.banned_at).isoformat(),
        "until": ban_store.as_utc(ban.until).isoformat(),
        "score": ban.score,
        "reason": ban.reason,
    }


def check_address(text: str) -> str:
    """An IP address, written as the hub records it."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError as exc:
        raise AdminError(f"not an IP address: {text!r}") from exc


def check_ssh_key(text: str) -> str:
    try:
        asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise AdminError(f"not an SSH public key: {exc}") from exc
    return text.strip()


@dataclass
class AdminService:
    store: Store
    pgp: OpenPGP
    mailboxes: Mailboxes
    layout: Layout
    hub_public_key: str
    new_token: Callable[[], str]
    actor: str = "cli"
    # told when a ban is lifted, so that the running hub's defender sees it at once (the API);
    # from another process (the CLI) the hub sees it at its next reading of the bans
    after_ban_change: Callable[[], Awaitable[None]] | None = None
    retention: RetentionPolicy | None = None  # the data folder's (`bdi admin purge`)
    address: str | None = None  # where the acts come from, for the audit (None: the CLI)
    settings: Settings | None = None  # the hub's (SMTP, for `alerts test`)

    async def test_alert(self) -> dict[str, Any]:
        """A test message to the operators, through the configured SMTP server."""
        if self.settings is None or not self.settings.alert_to:
            raise AdminError("no operator address configured (alert_to)")
        alert = Alert("test", "message de test", "Les alertes de la BDI arrivent bien jusqu'ici.")
        try:
            await send_alert(self.settings, alert)
        except Exception as exc:
            raise AdminError(f"alert not sent: {type(exc).__name__}: {exc}") from exc
        await self._audit("alerts.test")
        return {"sent_to": list(self.settings.alert_to)}

    async def _audit(self, action: str, target: str = "", detail: str = "") -> None:
        await self.store.audit(now(), self.actor, action, target, detail, self.address)

    async def _get(self, edi_id: str) -> Participant:
        row = await self.store.participant(edi_id)
        if row is None:
            raise NotFoundError(f"no participant {edi_id}")
        return row

    async def add(
        self,
        edi_id: str,
        *,
        name: str,
        email: str,
        pgp_key: str,
        role: str | None = None,
        ssh_key: str | None = None,
    ) -> dict[str, Any]:
        """Register a participant; the issued password is in the result, shown once."""
        keys = [check_ssh_key(ssh_key)] if ssh_key else []
        try:
            done = await register(
                self.store,
                self.pgp,
                self.mailboxes,
                self.layout,
                edi_id=edi_id,
                name=name,
                email=email,
                pgp_key=pgp_key,
                role=role,
                ssh_keys=keys,
                now=now(),
            )
        except (RegistrationError, KeyProblem) as exc:
            raise AdminError(str(exc)) from exc
        await self._audit("participant.add", edi_id, done.participant.pgp_fingerprint)
        return {"id": edi_id, "password": done.password}

    async def list(self) -> list[dict[str, Any]]:
        return [participant_view(p) for p in await self.store.participants()]

    async def show(self, edi_id: str) -> dict[str, Any]:
        row = await self._get(edi_id)
        key = await asyncio.to_thread(self.pgp.key_info, row.pgp_fingerprint)
        return {**participant_view(row, len(await self.store.ssh_keys(edi_id))),
                **pgp_key_view(key)}  # fmt: skip

    async def set_active(self, edi_id: str, active: bool) -> dict[str, Any]:
        row = await self._get(edi_id)
        version = row.credentials_version + (0 if active else 1)
        row = await self.store.update_participant(
            edi_id, active=active, credentials_version=version
        )
        if not active:
            await sessions.close_sessions_of(self.store, edi_id)
        await self._audit("participant.enable" if active else "participant.disable", edi_id)
        return participant_view(row)

    async def reset_password(self, edi_id: str) -> dict[str, Any]:
        row = await self._get(edi_id)
        password = new_password()
        await self.store.update_participant(
            edi_id,
            password_hash=hash_password(password),
            credentials_version=row.credentials_version + 1,
        )
        await sessions.close_sessions_of(self.store, edi_id)
        await self._audit("participant.reset-password", edi_id)
        return {"id": edi_id, "password": password}

    async def set_pgp_key(self, edi_id: str, pgp_key: str) -> dict[str, Any]:
        """Replace the key: uploads signed with the old one are refused from now on. The
        registered key itself, revoked (or its revocation certificate), revokes it."""
        row = await self._get(edi_id)
        try:
            await key_unused(self.store, self.pgp.inspect(pgp_key).fingerprint, edi_id)
            fingerprint = self.pgp.import_public(pgp_key)
        except RegistrationError as exc:
            raise AdminError(str(exc)) from exc
        except KeyProblem as exc:
            try:
                return await self.revoke_pgp_key(edi_id, pgp_key)
            except AdminError:
                raise AdminError(str(exc)) from exc
        await self.store.update_participant(edi_id, pgp_fingerprint=fingerprint)
        await self._audit("participant.set-key", edi_id, f"{row.pgp_fingerprint} -> {fingerprint}")
        return {"id": edi_id, "pgp_fingerprint": fingerprint}

    async def revoke_pgp_key(self, edi_id: str, certificate: str) -> dict[str, Any]:
        """Load the participant's revocation certificate for its registered key (or that
        key, revoked): from now on files signed by it are refused (DECHIFFREMENT) and
        nothing is delivered to it. Another key's certificate changes nothing."""
        row = await self._get(edi_id)
        try:
            key = await asyncio.to_thread(
                self.pgp.load_revocation, row.pgp_fingerprint, certificate
            )
        except KeyProblem as exc:
            raise AdminError(str(exc)) from exc
        await self._audit("participant.revoke-key", edi_id, key.fingerprint)
        return {"id": edi_id, "pgp_fingerprint": key.fingerprint, **pgp_key_view(key)}

    async def set_ssh_key(self, edi_id: str, ssh_key: str) -> dict[str, Any]:
        row = await self._get(edi_id)
        await self.store.replace_ssh_keys(edi_id, [check_ssh_key(ssh_key)])
        await self.store.update_participant(edi_id, credentials_version=row.credentials_version + 1)
        await self._audit("participant.set-ssh-key", edi_id)
        return {"id": edi_id, "ssh_keys": 1}

    async def load_referential(self, text: str) -> dict[str, Any]:
        try:
            referential = parse_referential(text, self.layout)
        except ReferentialError as exc:
            raise AdminError(str(exc)) from exc
        participants = [
            ReferentialParticipant(code=p.code, type=p.type, name=p.name, edi_id=p.edi_id)
            for p in referential.participants.values()
        ]
        labels = [
            ReferentialLabel(table="companies", code=c, label=lbl)
            for c, lbl in referential.companies.items()
        ]
        labels += [
            ReferentialLabel(table=t, code=c, label=lbl)
            for t, table in referential.tables.items()
            for c, lbl in table.items()
        ]
        await self.store.replace_referential(participants, labels)
        await self._audit("referential.load", "", f"{len(participants)} codes")
        return {"participants": len(participants), "labels": len(labels)}

    async def jobs(self, which: str = "quarantined") -> builtins.list[dict[str, Any]]:
        if which not in JOB_LISTS:
            raise AdminError(f"which jobs? one of {', '.join(JOB_LISTS)}")
        return [job_view(j) for j in await self.store.jobs(which)]

    async def job(self, job_id: int) -> dict[str, Any]:
        found = await self.store.job(job_id)
        if found is None:
            raise NotFoundError(f"no job {job_id}")
        return job_view(found)

    async def retry_job(self, job_id: int) -> dict[str, Any]:
        """Run a quarantined job again (the running hub takes it within a second or so); its
        sender then gets the real outcome, once."""
        if not await self.store.request_retry(job_id, now()):
            shown = await self.job(job_id)  # NotFoundError if there is no such job
            raise AdminError(f"job {job_id} is not quarantined (state: {shown['state']})")
        await self._audit("job.retry", str(job_id))
        return await self.job(job_id)

    async def bans(self) -> builtins.list[dict[str, Any]]:
        """The source addresses banned now, the latest ending first."""
        return [ban_view(b) for b in await ban_store.active_bans(self.store, now())]

    async def lift_ban(self, address: str) -> dict[str, Any]:
        """Let the address in again, with a clean score (the running hub sees it within a
        couple of seconds, at once through the API)."""
        address = check_address(address)
        if not await ban_store.lift(self.store, address, now(), self.actor):
            raise NotFoundError(f"no ban on {address}")
        await self._audit("ban.lift", address)
        log.info("defender.lifted", address=address, actor=self.actor)
        if self.after_ban_change is not None:
            await self.after_ban_change()
        return {"address": address, "lifted": True}

    async def inboxes(self) -> builtins.list[dict[str, Any]]:
        """What waits in each participant's inbox: files, bytes, the oldest; largest first."""
        ids = [p.id for p in await self.store.participants()]
        return await overview.inbox_backlog(self.store, self.mailboxes, ids)

    async def audit_log(
        self, text: str = "", start: date | None = None, end: date | None = None,
        page: int = 1, size: int = 50,
    ) -> dict[str, Any]:  # fmt: skip
        """The audit events holding every word of `text`, between two days, newest first."""
        return await overview.audit_page(
            self.store, overview.audit_query(text, start, end), page, size
        )

    def audit_events(
        self, text: str = "", start: date | None = None, end: date | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The same events, all of them, streamed (the CSV export)."""
        return overview.audit_stream(self.store, overview.audit_query(text, start, end))

    async def hub_key(self) -> dict[str, Any]:
        return {"armoured": self.hub_public_key}

    async def rotate_token(self) -> dict[str, Any]:
        """A new admin API token; only its hash is kept, so the old one stops working."""
        token = self.new_token()
        await self._audit("token.rotate")
        return {"token": token}
