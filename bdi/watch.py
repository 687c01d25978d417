"""The hub watching itself for what an operator must hear of before a participant calls
(issue 15): every `alert_check_s`, the checks of `/readyz`, the files left uncollected in an
inbox for `inbox_waiting_hours`, and the OpenPGP keys (the participants' and the hub's)
expiring within `key_expiry_days`. What is found is raised as an alert (`bdi.alerts`), whose
de-duplication keeps one message per problem."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, select

from bdi.alerts import Alert, Alerts, key_expiry, not_ready, waiting
from bdi.hub import Hub, utcnow
from bdi.probes import readiness
from bdi.store.inbox import INBOX

log = structlog.get_logger("bdi.watch")


async def watch_forever(hub: Hub, alerts: Alerts) -> None:
    while True:
        await asyncio.sleep(hub.settings.alert_check_s)
        try:
            for alert in await look(hub, utcnow()):
                alerts.raise_alert(alert)
        except Exception as exc:  # the next round may do better; never stop watching
            log.warning("watch.failed", error=f"{type(exc).__name__}: {exc}")


async def look(hub: Hub, now: datetime) -> list[Alert]:
    """Every alert due now (sending decides what was already sent)."""
    settings = hub.settings
    found = [
        not_ready(c.name, c.detail)
        for c in await readiness(hub, settings.free_space_floor_bytes, settings.stale_job_s)
        if not c.ok
    ]
    found += await _waiting(hub, now)
    found += await asyncio.to_thread(_keys, hub, await _people(hub), now)
    return found


async def _people(hub: Hub) -> list[tuple[str, str, str]]:
    """(id, contact e-mail, OpenPGP fingerprint) of the active participants."""
    return [(p.id, p.email, p.pgp_fingerprint) for p in await hub.store.participants() if p.active]


async def _waiting(hub: Hub, now: datetime) -> list[Alert]:
    hours = hub.settings.inbox_waiting_hours
    limit = now - timedelta(hours=hours)
    oldest = await _oldest_in_store(hub)
    for participant, (count, at) in (await asyncio.to_thread(_oldest_on_disk, hub)).items():
        known = oldest.get(participant)
        oldest[participant] = (
            count + (known[0] if known else 0),
            min(at, known[1]) if known else at,
        )
    contacts = {p: email for p, email, _ in await _people(hub)}
    return [
        waiting(participant, contacts.get(participant, ""), count, at, hours)
        for participant, (count, at) in sorted(oldest.items())
        if at < limit and participant in contacts
    ]


async def _oldest_in_store(hub: Hub) -> dict[str, tuple[int, datetime]]:
    query = select(INBOX.c.participant_id, func.count(), func.min(INBOX.c.created_at)).group_by(
        INBOX.c.participant_id
    )
    async with hub.store.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {p: (int(n), _aware(at)) for p, n, at in rows if isinstance(at, datetime)}


def _oldest_on_disk(hub: Hub) -> dict[str, tuple[int, datetime]]:
    found: dict[str, tuple[int, datetime]] = {}
    root = hub.settings.mailboxes
    for inbox in root.glob("*/inbox") if root.is_dir() else ():
        times = [p.stat().st_mtime for p in inbox.iterdir() if p.is_file()]
        if times:
            found[inbox.parent.name] = (len(times), datetime.fromtimestamp(min(times), UTC))
    return found


def _keys(hub: Hub, people: list[tuple[str, str, str]], now: datetime) -> list[Alert]:
    window = timedelta(days=hub.settings.key_expiry_days)
    owners = [("la BDI", "", hub.hub_fingerprint), *people]
    found = []
    for owner, contact, fingerprint in owners:
        info = hub.pgp.key_info(fingerprint)
        if info is not None and info.expires is not None and info.expires - now <= window:
            found.append(key_expiry(owner, contact, fingerprint, info.expires))
    return found


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
