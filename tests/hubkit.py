"""Test support for the hub: participants with real GnuPG keys, a real server on port 0,
and a real asyncssh SFTP client."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncssh
from sqlalchemy import text
from support import SAMPLES

from bdi.admin.registry import register
from bdi.config import Settings, load_settings
from bdi.crypto import OpenPGP
from bdi.datadir import hub_key_file, initialise, open_hub
from bdi.pipeline.retries import RetryPolicy
from bdi.routing.layout import default_layout
from bdi.server import RunningServer, run_server
from bdi.store.journal import sync_engine
from bdi.suivi import contents
from bdi.suivi.queries import FileFlow, file_flow_page


@dataclass
class Party:
    """A participant's side: its own GnuPG home and key."""

    edi_id: str
    pgp: OpenPGP
    fingerprint: str
    public_key: str
    password: str = ""


def sample_ids() -> list[str]:
    with (SAMPLES / "referentiel.toml").open("rb") as f:
        ref = tomllib.load(f)
    return [p["edi_id"] for p in ref["participants"].values() if p["edi_id"]]


def short_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))


@contextlib.contextmanager
def make_parties(ids: list[str]) -> Iterator[dict[str, Party]]:
    parties: dict[str, Party] = {}
    try:
        for edi_id in ids:
            pgp = OpenPGP(short_home())
            fpr = pgp.generate_key(f"{edi_id} <{edi_id.lower()}@example.test>")
            parties[edi_id] = Party(edi_id, pgp, fpr, pgp.export_public(fpr))
        yield parties
    finally:
        for party in parties.values():
            party.pgp.stop_agent()
            shutil.rmtree(party.pgp.home, ignore_errors=True)


@contextlib.asynccontextmanager
async def sftp_client(port: int, party: Party) -> AsyncIterator[asyncssh.SFTPClient]:
    """A real asyncssh SFTP session as the party, with its issued password."""
    async with (
        asyncssh.connect(
            "127.0.0.1", port, username=party.edi_id, password=party.password,
            known_hosts=None, client_keys=None, agent_path=None,
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):  # fmt: skip
        yield sftp


async def password_login(port: int, user: str, password: str) -> str:
    """'ok', 'denied' (a wrong password) or 'refused' (the connection is not served): one
    SSH login and an SFTP listing, as a client of the hub's listening on `port`."""
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, username=user, password=password,
            known_hosts=None, client_keys=None, agent_path=None, login_timeout=10,
        ) as conn, conn.start_sftp_client() as sftp:  # fmt: skip
            await sftp.listdir("/")
    except asyncssh.PermissionDenied:
        return "denied"
    except (OSError, asyncssh.Error):
        return "refused"
    return "ok"


@dataclass
class HubUnderTest:
    settings: Settings
    server: RunningServer
    parties: dict[str, Party]
    hub_fingerprint: str
    hub_public_key: str = field(default="")

    @property
    def port(self) -> int:
        return self.server.sftp_port

    async def settled(self) -> None:
        """Wait until every job submitted so far is processed."""
        async with asyncio.timeout(60):
            await self.server.pipeline.settled()

    def sftp(self, edi_id: str) -> contextlib.AbstractAsyncContextManager[asyncssh.SFTPClient]:
        return sftp_client(self.port, self.parties[edi_id])

    def seal(self, sender: str, plain: bytes, tmp: Path) -> bytes:
        """Sign with the sender's key and encrypt to the hub, as the kit does."""
        party = self.parties[sender]
        src, dst = tmp / f"{sender}.plain", tmp / f"{sender}.pgp"
        src.write_bytes(plain)
        party.pgp.sign_encrypt(src, dst, self.hub_fingerprint, party.fingerprint)
        return dst.read_bytes()

    def open_delivery(self, recipient: str, sealed: bytes, tmp: Path) -> tuple[bytes, str | None]:
        party = self.parties[recipient]
        src, dst = tmp / f"{recipient}.in.pgp", tmp / f"{recipient}.in.plain"
        src.write_bytes(sealed)
        result = party.pgp.decrypt_verify(src, dst, 1 << 30)
        assert result.ok, result.reason
        return dst.read_bytes(), result.signer

    async def upload(self, sender: str, name: str, sealed: bytes) -> None:
        async with self.sftp(sender) as sftp, sftp.open(f"/outbox/{name}", "wb") as f:
            await f.write(sealed)

    async def inbox(self, edi_id: str) -> dict[str, bytes]:
        async with self.sftp(edi_id) as sftp:
            names = sorted(await sftp.listdir("/inbox"))
            out: dict[str, bytes] = {}
            for name in names:
                if name in (".", ".."):
                    continue
                async with sftp.open(f"/inbox/{name}", "rb") as f:
                    out[name] = cast(bytes, await f.read())  # "rb": bytes (typed AnyStr)
            return out


async def prepare_data(settings: Settings, parties: dict[str, Party]) -> str:
    """Initialise a data folder and register the parties (once); return the hub's key."""
    if not (settings.data / "hub-fingerprint").exists():
        await initialise(settings)
        hub = await open_hub(settings)
        for party in parties.values():
            registered = await register(
                hub.store, hub.pgp, hub.mailboxes, default_layout(), edi_id=party.edi_id,
                name=party.edi_id, email="", pgp_key=party.public_key, role=None, ssh_keys=[],
                now=datetime.now(UTC),
            )  # fmt: skip
            party.password = registered.password
        await hub.store.engine.dispose()
    hub_key = hub_key_file(settings).read_text()
    for party in parties.values():
        party.pgp.import_public(hub_key)
    return hub_key


@contextlib.asynccontextmanager
async def hub_running(
    data: Path, parties: dict[str, Party], **overrides: object
) -> AsyncIterator[HubUnderTest]:
    settings = load_settings(
        None, data=data, sftp_port=0, web_port=0, host="127.0.0.1", **overrides
    )
    hub_key = await prepare_data(settings, parties)
    fingerprint = (data / "hub-fingerprint").read_text().strip()
    try:
        async with run_server(settings) as server:
            yield HubUnderTest(settings, server, parties, fingerprint, hub_key)
    finally:
        OpenPGP(settings.gnupg_home).stop_agent()


def gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--yes", *args],
        input=data,
        capture_output=True,
        check=True,
    )
    return result.stdout


# -- shared by the tests of the pipeline's faults, quarantine, redelivery, retention, ops ----

FAST = RetryPolicy(first_delay_s=0.05, max_delay_s=0.2, sweep_s=0.1)  # retries in tenths of s
BDI = Path(sys.executable).with_name("bdi")


async def run_bdi(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `bdi` in another process without blocking the event loop the hub runs on."""
    proc = await asyncio.create_subprocess_exec(
        str(BDI), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    done = subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())
    assert (done.returncode == 0) == ok, done.stderr
    return done


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Wait for a condition of another process or thread (polled; fails after `seconds`)."""
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def gpg_held(hub: HubUnderTest) -> Iterator[None]:
    """Every gpg slot of the hub taken: the jobs handed to its threads wait, the rest queue."""
    slots = hub.server.hub.pgp._runner._slots
    assert slots is not None
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    try:
        yield
    finally:
        for _ in range(taken):
            slots.release()


def db_rows(settings: Settings, query: str, **params: object) -> list[tuple[Any, ...]]:
    """Run a query on a hub's database (SQLite or PostgreSQL) from outside the hub, as
    another process would; the rows it returns, if any."""
    engine = sync_engine(settings.db_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(query), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def days_earlier(settings: Settings, column: str, days: int) -> str:
    """SQL for `column` moved `days` into the past, in the hub's database's dialect."""
    if settings.db_url.startswith("sqlite"):
        return f"datetime({column}, '-{days} days')"
    return f"{column} - interval '{days} days'"


async def file_flows(hub: HubUnderTest, user: str, movement_id: int) -> list[FileFlow] | None:
    """A file's flows with their grids, as the Suivi's detail page reads them (on one page);
    None when the user may not open the file."""
    inner = hub.server.hub
    found = await file_flow_page(inner.store, inner.layout, user, movement_id, 1, 100_000)
    if found is None:
        return None
    src = await contents.source_of(inner.store, inner.contents(), found.movement)
    return await contents.with_grids(src, found.page.items, inner.layout)
