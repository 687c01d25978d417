"""Alerts by e-mail (issue 15), in French, to the operators and, when it concerns a
participant, to its registered contact: a job quarantined, files left uncollected, an
OpenPGP key expiring or expired (a participant's or the hub's), free space below its floor,
the database or the spool not writable, an address banned.

Each alert has a key: the same key is not sent again within `alert_repeat_s`, and no more
than `alert_max_per_hour` messages leave in an hour, whatever happens. Anything may raise an
alert from any thread (`raise_alert`); one task sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage

import aiosmtplib
import structlog

from bdi.config import Settings

log = structlog.get_logger("bdi.alerts")


@dataclass(frozen=True, slots=True)
class Alert:
    key: str  # what makes two alerts the same one
    subject: str
    body: str
    to: tuple[str, ...] = ()  # besides the operators (a participant's contact)


def message(settings: Settings, alert: Alert) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = settings.alert_from
    mail["To"] = ", ".join(dict.fromkeys((*settings.alert_to, *alert.to)))
    mail["Subject"] = f"[BDI] {alert.subject}"
    mail.set_content(alert.body + "\n\n-- \nLa Bourse d'Échanges Informatisée\n")
    return mail


async def send(settings: Settings, alert: Alert) -> None:
    """One message through the configured SMTP server (STARTTLS and login if configured)."""
    if not settings.smtp_host:
        raise RuntimeError("no SMTP server configured (smtp_host)")
    await aiosmtplib.send(
        message(settings, alert), hostname=settings.smtp_host, port=settings.smtp_port,
        start_tls=settings.smtp_starttls, username=settings.smtp_user,
        password=settings.smtp_password, timeout=30,
    )  # fmt: skip


@dataclass
class Alerts:
    """Raised from anywhere, sent by `run` on the event loop, de-duplicated and rate-limited."""

    settings: Settings
    clock: Callable[[], float] = time.monotonic
    sent_at: dict[str, float] = field(default_factory=dict)
    recent: deque[float] = field(default_factory=deque)
    _loop: asyncio.AbstractEventLoop | None = None
    _queue: asyncio.Queue[Alert] | None = None

    def raise_alert(self, alert: Alert) -> None:
        """Thread-safe; dropped when alerts are off (no SMTP server) or the hub is stopping."""
        if self._loop is None or self._queue is None or not self.settings.smtp_host:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._queue.put_nowait, alert)

    def job_quarantined(self, job_id: int, participant: str, file: str, error: str) -> None:
        self.raise_alert(quarantined(job_id, participant, file, error))

    def address_banned(self, address: str, until: datetime) -> None:
        self.raise_alert(banned(address, until))

    async def run(self) -> None:
        self._loop, self._queue = asyncio.get_running_loop(), asyncio.Queue()
        while True:
            alert = await self._queue.get()
            if self._due(alert):
                await self._send(alert)

    def _due(self, alert: Alert) -> bool:
        now = self.clock()
        last = self.sent_at.get(alert.key)
        if last is not None and now - last < self.settings.alert_repeat_s:
            return False
        while self.recent and now - self.recent[0] > 3600:
            self.recent.popleft()
        if len(self.recent) >= self.settings.alert_max_per_hour:
            log.warning("alert.dropped", key=alert.key, reason="rate limit")
            return False
        self.sent_at[alert.key] = now
        self.recent.append(now)
        return True

    async def _send(self, alert: Alert) -> None:
        try:
            await send(self.settings, alert)
        except Exception as exc:  # the SMTP server may be away: the next one may pass
            self.sent_at.pop(alert.key, None)
            log.warning("alert.failed", key=alert.key, error=f"{type(exc).__name__}: {exc}")
            return
        log.info("alert.sent", key=alert.key, subject=alert.subject)


# -- the alerts themselves, in French ------------------------------------------------------


def quarantined(job_id: int, participant: str, file: str, error: str) -> Alert:
    return Alert(
        f"quarantine:{job_id}", f"traitement en quarantaine : {file}",
        f"Le traitement n° {job_id} du fichier {file} déposé par {participant} a échoué "
        f"après ses nouvelles tentatives et a été mis en quarantaine.\nErreur : {error}\n"
        f"Le fichier est conservé. Après correction : bdi admin jobs retry {job_id}",
    )  # fmt: skip


def waiting(participant: str, contact: str, files: int, oldest: datetime, hours: float) -> Alert:
    return Alert(
        f"waiting:{participant}", f"fichiers non relevés par {participant}",
        f"{files} fichier(s) attendent dans la boîte de réception de {participant} depuis "
        f"plus de {hours:g} heures (le plus ancien depuis le {oldest:%d/%m/%Y %H:%M} UTC).",
        (contact,) if contact else (),
    )  # fmt: skip


def key_expiry(owner: str, contact: str, fingerprint: str, expires: datetime) -> Alert:
    past = expires <= datetime.now(UTC)
    state = "a expiré" if past else "expire"
    return Alert(
        f"key:{fingerprint}:{'expired' if past else 'expiring'}",
        f"clé OpenPGP de {owner} : {state} le {expires:%d/%m/%Y}",
        f"La clé OpenPGP {fingerprint} de {owner} {state} le {expires:%d/%m/%Y}. "
        "Une nouvelle clé publique doit être remise à l'exploitation de la BDI.",
        (contact,) if contact else (),
    )  # fmt: skip


_CHECKS = {
    "free_space": "espace disque sous son seuil",
    "database": "base de données",
    "spool": "dossier de dépôt non inscriptible",
    "jobs": "traitements en attente",
}


def not_ready(check: str, detail: str) -> Alert:
    what = _CHECKS.get(check, check)
    return Alert(f"ready:{check}", f"la BDI ne va pas bien : {what}",
                 f"Contrôle « {check} » en échec : {detail or what}.")  # fmt: skip


def banned(address: str, until: datetime) -> Alert:
    return Alert(
        f"ban:{address}", f"adresse bloquée : {address}",
        f"L'adresse {address} est bloquée jusqu'au {until:%d/%m/%Y %H:%M} UTC après des échecs "
        f"de connexion répétés. Levée : bdi admin bans lift {address}",
    )  # fmt: skip
