"""The data folder: created once by `bdi init` (never overwriting a key), opened by the rest."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from bdi.alerts import Alerts
from bdi.config import Settings
from bdi.crypto import OpenPGP
from bdi.crypto.packets import Bounds
from bdi.hub import Hub
from bdi.mailbox.storage import Mailboxes
from bdi.routing.layout import default_layout
from bdi.store.db import make_engine
from bdi.store.repo import Store
from bdi.store.schema import upgrade_to_head

HUB_UID = "BDI hub <bdi@localhost>"


@dataclass(frozen=True, slots=True)
class InitResult:
    created: bool
    hub_fingerprint: str
    admin_token: str | None  # shown once, only when created


def fingerprint_file(settings: Settings) -> Path:
    return settings.data / "hub-fingerprint"


def hub_key_file(settings: Settings) -> Path:
    return settings.data / "hub-public-key.asc"


def token_hash_file(settings: Settings) -> Path:
    return settings.data / "admin-token.sha256"


def is_initialised(settings: Settings) -> bool:
    return fingerprint_file(settings).exists()


def _write_private(path: Path, text: str) -> None:
    """Replace a secret file whole (owner-only), never leaving it half written."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def write_admin_token(settings: Settings) -> str:
    """A new admin API token; only its hash is kept, so the previous one stops working."""
    token = secrets.token_urlsafe(32)
    _write_private(token_hash_file(settings), hashlib.sha256(token.encode()).hexdigest())
    return token


def web_secret(settings: Settings) -> str:
    """The key signing Suivi session cookies; kept in the data folder across restarts."""
    path = settings.data / "web-secret"
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(48))
    return path.read_text().strip()


async def initialise(settings: Settings) -> InitResult:
    """Create database, hub OpenPGP key, SSH host key and admin token; idempotent."""
    if is_initialised(settings):
        await upgrade_to_head(settings.db_url)
        return InitResult(False, fingerprint_file(settings).read_text().strip(), None)
    settings.data.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder in (settings.spool, settings.mailboxes, settings.data / "contents"):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    await upgrade_to_head(settings.db_url)
    if not settings.host_key.exists():
        asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(settings.host_key))
        settings.host_key.chmod(0o600)
    pgp = OpenPGP(settings.gnupg_home)
    fingerprint = pgp.generate_key(HUB_UID)
    hub_key_file(settings).write_text(pgp.export_public(fingerprint))
    token = write_admin_token(settings)
    fingerprint_file(settings).write_text(fingerprint + "\n")  # written last: marks success
    return InitResult(True, fingerprint, token)


async def open_hub(settings: Settings) -> Hub:
    """The hub's components over an initialised data folder."""
    if not is_initialised(settings):
        raise FileNotFoundError(f"{settings.data} is not initialised: run `bdi init` first")
    await upgrade_to_head(settings.db_url)
    engine = make_engine(settings.db_url)
    return Hub(
        settings=settings,
        layout=default_layout(),
        store=Store(engine),
        mailboxes=Mailboxes(settings.mailboxes),
        pgp=OpenPGP(settings.gnupg_home, max_processes=settings.gpg_limit, bounds=bounds(settings)),
        hub_fingerprint=fingerprint_file(settings).read_text().strip(),
        alerts=Alerts(settings),
    )


def bounds(settings: Settings) -> Bounds:
    """The work one upload may ask of gpg, from the settings."""
    return Bounds(settings.max_packets, settings.max_recipients, settings.gpg_cpu_s,
                  settings.gpg_cpu_s_per_mib)  # fmt: skip


class HubBusy(OSError):
    """Another `bdi serve` holds the data folder."""


@contextlib.contextmanager
def serve_lock(settings: Settings) -> Iterator[None]:
    """One server per data folder: two would resume the same jobs, and the pipeline keeps
    the inbox names it has promised in memory. The lock dies with its process."""
    fd = os.open(settings.data / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HubBusy(f"another `bdi serve` is already running on {settings.data}") from None
        yield
    finally:
        os.close(fd)
