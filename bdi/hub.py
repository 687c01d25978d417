"""The hub's components, built once at start-up and passed down; and its clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from bdi.alerts import Alerts
from bdi.config import Settings
from bdi.crypto import OpenPGP
from bdi.mailbox.storage import Mailboxes
from bdi.metrics import Metrics
from bdi.routing.layout import Layout
from bdi.store.repo import Store


@dataclass(frozen=True, slots=True)
class Hub:
    """Everything the pipeline works with."""

    settings: Settings
    layout: Layout
    store: Store
    mailboxes: Mailboxes
    pgp: OpenPGP
    hub_fingerprint: str
    metrics: Metrics = field(default_factory=Metrics)
    alerts: Alerts | None = None  # sent only while the server runs them (`Alerts.run`)

    def spool_file(self, name: str) -> Path:
        return self.settings.spool / name

    def contents(self) -> Path:
        return self.settings.data / "contents"


def utcnow() -> datetime:
    return datetime.now(UTC)


def local_time(hub: Hub, at: datetime) -> datetime:
    """Wall-clock time in the hub's zone (Europe/Paris), as `.log` lines show it."""
    zone = ZoneInfo(hub.settings.timezone)
    return at.astimezone(zone).replace(tzinfo=None, microsecond=0)
