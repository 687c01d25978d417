"""One typed settings object: defaults, then a TOML file, then `BDI_*` environment variables.

The object is built once at the entry point and passed down; nothing reads it globally.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Embedded mode by default: SQLite and files under `./bdi-data`, loopback ports."""

    model_config = SettingsConfigDict(env_prefix="BDI_", extra="forbid", frozen=True)

    data: Path = Field(default=Path("bdi-data"), description="data folder")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL (postgresql+psycopg://...); default: SQLite file in "
        "the data folder",
    )
    host: str = "127.0.0.1"
    node_id: str | None = Field(
        default=None,
        max_length=64,
        description="this node's id among several on one database; default: host:sftp_port",
    )
    node_beat_s: float = Field(
        default=5.0, gt=0, description="seconds between two heartbeats of this node"
    )
    node_lease_s: float = Field(
        default=20.0,
        gt=0,
        description="a node silent this long is taken for dead: another takes its jobs over",
    )
    sftp_port: int = 2222
    web_port: int = 8080
    max_upload_bytes: int = 512 * MiB
    max_decrypted_bytes: int = 1024 * MiB
    workers: int = Field(
        default=6, ge=1, description="jobs processed at once (each GnuPG call is its own process)"
    )
    gpg_processes: int | None = Field(
        default=None,
        ge=1,
        description="gpg processes the pipeline runs at once; default: two more than the cores",
    )
    ssh_ciphers: tuple[str, ...] = Field(
        default=(
            "aes128-gcm@openssh.com",
            "aes256-gcm@openssh.com",
            "chacha20-poly1305@openssh.com",
            "aes128-ctr",
            "aes192-ctr",
            "aes256-ctr",
        ),
        description="SSH ciphers offered: OpenSSH's defaults, AES-GCM first (the fastest here; "
        "libssh2 1.10, curl's on Debian 12, has no AES-GCM)",
    )
    temporary_upload_max_age_s: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="seconds a temporary upload (*.part, .in.NAME...) is kept unwritten before "
        "it is deleted (a client may resume it until then)",
    )
    temporary_upload_sweep_s: float = Field(
        default=600.0, gt=0, description="seconds between two sweeps of old temporary uploads"
    )
    login_failures: int = Field(
        default=5, ge=1, description="failed passwords (one user, one address) before a pause"
    )
    login_failure_window_s: float = Field(
        default=300.0, gt=0, description="seconds over which failed passwords are counted"
    )
    # limits that protect the market (HUB.md): one participant or stranger cannot hurt others
    open_files_per_session: int = Field(default=64, ge=1, description="open files per SSH session")
    sessions_per_participant: int = Field(
        default=8, ge=1, description="SSH sessions one participant may have open at once"
    )
    quota_bytes: int = Field(
        default=2 * 1024 * MiB, ge=0, description="what a participant's outbox and inbox may hold"
    )
    login_grace_s: float = Field(
        default=30.0, gt=0, description="seconds a new SSH connection has to authenticate"
    )
    preauth_per_address: int = Field(
        default=16, ge=1, description="connections not yet logged in, per source address"
    )
    preauth_total: int = Field(default=512, ge=1, description="connections not yet logged in")
    password_threads: int = Field(
        default=2, ge=1, description="threads checking passwords (argon2): the rest wait their turn"
    )
    # the defender: failed logins per source address, then a ban on every listener
    defender_threshold: int = Field(default=15, ge=1, description="score that bans an address")
    defender_window_s: float = Field(default=300.0, gt=0, description="seconds a failure counts")
    defender_ban_s: float = Field(default=1800.0, gt=0, description="first ban of an address")
    defender_safe_addresses: tuple[str, ...] = Field(
        default=(), description="addresses or networks never banned (e.g. a monitoring host)"
    )
    # the work one upload may ask of gpg (crypto/packets.py Bounds): past it, DECHIFFREMENT
    max_recipients: int = Field(default=16, ge=1, description="recipient packets of an upload")
    max_packets: int = Field(default=64, ge=2, description="top-level packets of an upload")
    gpg_cpu_s: float = Field(default=5.0, gt=0, description="gpg CPU seconds per decryption, +")
    gpg_cpu_s_per_mib: float = Field(
        default=0.25, gt=0, description="... these per MiB of the upload and of its plaintext"
    )
    # operations (issue 15): /metrics, /readyz
    metrics_token: str | None = Field(
        default=None, description="bearer token of /metrics, besides the admin token"
    )
    free_space_floor_bytes: int = Field(
        default=1024 * MiB, ge=0, description="/readyz fails below this free space"
    )
    stale_job_s: float = Field(
        default=600.0, gt=0, description="/readyz fails when a job waits longer than this"
    )
    # alerts by e-mail (issue 15): none sent while smtp_host is unset
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = None
    alert_from: str = "bdi@localhost"
    alert_to: tuple[str, ...] = Field(default=(), description="the operators' addresses")
    alert_repeat_s: float = Field(
        default=6 * 3600.0, gt=0, description="the same alert is not sent again within this"
    )
    alert_max_per_hour: int = Field(default=30, ge=1, description="alerts sent per hour at most")
    alert_check_s: float = Field(default=300.0, gt=0, description="seconds between two checks")
    inbox_waiting_hours: float = Field(
        default=24.0, gt=0, description="files left uncollected this long raise an alert"
    )
    key_expiry_days: int = Field(default=30, ge=0, description="keys expiring within this alert")
    timezone: str = "Europe/Paris"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # retention (issue 15): `bdi admin purge`, and daily inside `bdi serve`
    inbox_retention_days: int = Field(
        default=30, ge=1, description="an inbox file uncollected this long goes to <data>/archive"
    )
    history_years: int = Field(
        default=10, ge=1, description="movements and contents older than this are purged"
    )

    @property
    def node(self) -> str:
        """This node's id: `node_id`, or the host and SFTP port (the process id with an
        ephemeral port): two nodes on one host listen on two ports."""
        return self.node_id or f"{socket.gethostname()}:{self.sftp_port or os.getpid()}"

    @property
    def db_url(self) -> str:
        """`{data}` in the URL names a database after the data folder (several hubs, each
        with its own data folder, on one PostgreSQL server: test, staging...)."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{self.data / 'bdi.sqlite3'}"
        if "{data}" not in self.database_url:
            return self.database_url
        digest = hashlib.sha256(str(self.data.resolve()).encode()).hexdigest()[:16]
        return self.database_url.replace("{data}", f"bdi_{digest}")

    @property
    def gpg_limit(self) -> int:
        """Many more gpg processes than cores only share them, and preempt the server's
        threads while they hold the interpreter lock; a couple more keep the cores busy while
        a gpg waits on its agent or a job on its commit. Measured with bench/hub_ab.py on 2
        cores: while each delivery was a file, 2 or 3 at once routed ~5 % more uploads per
        second than 4; with small deliveries kept in the store, 4 beat 3 by ~3 points of
        (a)/(b) in two paired runs of 4 and 5 pairs."""
        return self.gpg_processes or (os.cpu_count() or 1) + 2

    @property
    def gnupg_home(self) -> Path:
        return self.data / "gnupg"

    @property
    def mailboxes(self) -> Path:
        return self.data / "mailboxes"

    @property
    def spool(self) -> Path:
        return self.data / "spool"

    @property
    def host_key(self) -> Path:
        return self.data / "ssh_host_ed25519_key"


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from `config` (TOML) if given, `BDI_*` variables and explicit overrides.

    Precedence: explicit overrides > environment > TOML file > defaults.
    """
    values = {k: v for k, v in overrides.items() if v is not None}
    if config is None:
        return Settings(**values)
    return _with_file(config)(**values)


def _with_file(config: Path) -> type[Settings]:
    class FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=config)
            return (init_settings, env_settings, toml)

    return FileSettings
