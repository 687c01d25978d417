"""Registering participants: checked identity, imported key, issued password, mailbox."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from bdi.admin.passwords import hash_password, new_password
from bdi.crypto import OpenPGP
from bdi.mailbox.storage import Mailboxes
from bdi.routing.layout import Layout
from bdi.store.models import Participant
from bdi.store.repo import Store

ROLES = {"courtier": "COU", "agent": "AGT", "aaso": "APE", "compagnie": "CIE", "cesam": "GIE"}


class RegistrationError(ValueError):
    """A registration refused; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Registered:
    participant: Participant
    password: str


def role_of(edi_id: str, role: str | None, layout: Layout) -> str:
    if not re.fullmatch(layout.formats["edi_id"], edi_id):
        raise RegistrationError(f"malformed EDI identifier {edi_id!r} (e.g. COU010234)")
    implied = next(word for word, prefix in ROLES.items() if prefix == edi_id[:3])
    if role is not None and role not in ROLES:
        raise RegistrationError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if role is not None and role != implied:
        raise RegistrationError(f"role {role!r} does not agree with the prefix {edi_id[:3]}")
    return implied


async def key_unused(store: Store, fingerprint: str, edi_id: str) -> None:
    """One key, one participant: a signature must name its sender, and a delivery be
    readable by its recipient alone (a key pasted for the wrong participant is refused)."""
    for other in await store.participants():
        if other.pgp_fingerprint == fingerprint and other.id != edi_id:
            raise RegistrationError(f"key {fingerprint} is already that of {other.id}")


async def register(
    store: Store,
    pgp: OpenPGP,
    mailboxes: Mailboxes,
    layout: Layout,
    *,
    edi_id: str,
    name: str,
    email: str,
    pgp_key: str,
    role: str | None,
    ssh_keys: list[str],
    now: datetime,
) -> Registered:
    """Check everything first, then import the key, store the participant, make its mailbox."""
    implied = role_of(edi_id, role, layout)
    if await store.participant(edi_id) is not None:
        raise RegistrationError(f"participant {edi_id} already exists")
    await key_unused(store, pgp.inspect(pgp_key).fingerprint, edi_id)
    fingerprint = pgp.import_public(pgp_key)
    password = new_password()
    participant = Participant(
        id=edi_id,
        name=name,
        email=email,
        role=implied,
        pgp_fingerprint=fingerprint,
        password_hash=hash_password(password),
        created_at=now,
    )
    await store.add_participant(participant, ssh_keys)
    mailboxes.ensure(edi_id)
    return Registered(participant, password)
