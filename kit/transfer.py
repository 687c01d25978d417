"""The kit's exchanges with the hub: send (sign, encrypt, upload under `.part`, rename),
receive (download, verify, decrypt, write atomically, then delete remotely), and wait."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from bdi.crypto import OpenPGP
from bdi.kit.home import KitError, KitHome


@dataclass(frozen=True)
class Remote:
    host: str
    port: int
    user: str
    password: str | None = None
    identity: Path | None = None
    known_hosts: Path | None = None
    web_port: int | None = None


@dataclass
class Outcome:
    file: str
    status: str  # sent | delivered | refused | received | log
    detail: str = ""

    def line(self) -> str:
        return f"{self.status} {self.file}" + (f" ({self.detail})" if self.detail else "")


@contextlib.asynccontextmanager
async def sftp_session(remote: Remote) -> AsyncIterator[asyncssh.SFTPClient]:
    """An SFTP session; the hub's host key is checked against known_hosts, which is
    filled on first use when it does not exist yet (trust on first use, like ssh)."""
    pinned = remote.known_hosts
    first_use = pinned is not None and not pinned.exists()
    options: dict[str, Any] = {
        "username": remote.user,
        "known_hosts": str(pinned) if pinned and not first_use else None,
        "agent_path": None,
        "client_keys": [str(remote.identity)] if remote.identity else None,
        "password": remote.password,
    }
    try:
        async with asyncssh.connect(remote.host, remote.port, **options) as conn:
            if first_use and pinned is not None:
                _pin_host_key(pinned, remote, conn.get_server_host_key())
            async with conn.start_sftp_client() as sftp:
                yield sftp
    except (OSError, asyncssh.Error) as exc:
        raise KitError(f"cannot talk to {remote.host}:{remote.port}: {exc}") from exc


def _pin_host_key(path: Path, remote: Remote, key: asyncssh.SSHKey | None) -> None:
    if key is None:
        raise KitError("the hub offered no host key")
    line = f"[{remote.host}]:{remote.port} {key.export_public_key().decode().strip()}\n"
    path.write_text(line)


async def hub_fingerprint(sftp: asyncssh.SFTPClient, home: KitHome, pgp: OpenPGP) -> str:
    async with sftp.open("/hub-public-key.asc", "r") as f:
        armoured = str(await f.read())
    return await asyncio.to_thread(home.pin, pgp, armoured)


# -- sending -------------------------------------------------------------------------------
async def send(home: KitHome, remote: Remote, files: list[Path]) -> list[Outcome]:
    identity = home.identity()
    pgp = home.pgp()
    out = []
    async with sftp_session(remote) as sftp:
        hub = await hub_fingerprint(sftp, home, pgp)
        for path in files:
            sealed = home.work / f"{path.name}.pgp"
            await asyncio.to_thread(pgp.sign_encrypt, path, sealed, hub, identity["fingerprint"])
            part = f"/outbox/{path.name}.part"
            await sftp.put(str(sealed), part)
            await sftp.rename(part, f"/outbox/{path.name}")
            sealed.unlink()
            out.append(Outcome(path.name, "sent"))
    return out


SUFFIXES_IGNORED = (".pgp", ".gpg", ".asc")  # HUB.md: the upload name is the name without


def upload_name(file_name: str) -> str:
    """The name the hub files an upload under: without an added .pgp, .gpg or .asc."""
    for suffix in SUFFIXES_IGNORED:
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)]
    return file_name


def status_url(remote: Remote, name: str) -> str:
    """The URL of /api/uploads/<name>: every character of the name that is not plain is
    percent-encoded (a name is the participant's to choose: quotes, '>', '#', '?', '%',
    spaces, non-ASCII), and an IPv6 host goes in brackets."""
    host = f"[{remote.host}]" if ":" in remote.host else remote.host
    path = urllib.parse.quote(upload_name(name), safe="", errors="surrogateescape")
    return f"http://{host}:{remote.web_port}/api/uploads/{path}"


def _upload_status(remote: Remote, name: str) -> list[dict[str, Any]]:
    """The hub's word on this participant's uploads of that name (web port, HTTP Basic)."""
    token = base64.b64encode(f"{remote.user}:{remote.password}".encode()).decode()
    request = urllib.request.Request(
        status_url(remote, name), headers={"Authorization": f"Basic {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return list(json.loads(response.read())["jobs"])
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as exc:
        raise KitError(f"cannot read the status of {name}: {exc}") from exc


async def wait_for(remote: Remote, sent: list[Outcome], before: dict[str, int]) -> list[Outcome]:
    """Wait until each sent file's newest job is done; report delivered or its .log."""
    if remote.web_port is None or remote.password is None:
        raise KitError("--wait needs --web-port and a password")
    out = []
    for outcome in sent:
        job = await _finished_job(remote, outcome.file, before.get(outcome.file, 0))
        logs = job.get("logs", [])
        status = "refused" if job["outcome"] == "refused" else "delivered"
        detail = ", ".join(logs) if logs else ", ".join(job.get("recipients", []))
        out.append(Outcome(outcome.file, status, detail))
    return out


async def _finished_job(remote: Remote, name: str, known: int) -> dict[str, Any]:
    while True:
        jobs = await asyncio.to_thread(_upload_status, remote, name)
        if len(jobs) > known and jobs[-1]["state"] == "done":
            return jobs[-1]
        await asyncio.sleep(0.2)  # polling the hub: the only way to learn of the outcome


async def job_counts(remote: Remote, files: list[Path]) -> dict[str, int]:
    return {p.name: len(await asyncio.to_thread(_upload_status, remote, p.name)) for p in files}


# -- receiving -----------------------------------------------------------------------------
async def receive(home: KitHome, remote: Remote, target: Path) -> list[Outcome]:
    """Every inbox file exactly once in `target`, then deleted from the hub."""
    pgp = home.pgp()
    out = []
    async with sftp_session(remote) as sftp:
        hub = await hub_fingerprint(sftp, home, pgp)
        for name in sorted(n for n in await sftp.listdir("/inbox") if n not in (".", "..")):
            out.append(await _receive_one(sftp, home, pgp, hub, name, target))
    return out


async def _receive_one(
    sftp: asyncssh.SFTPClient, home: KitHome, pgp: OpenPGP, hub: str, name: str, target: Path
) -> Outcome:
    download = home.work / f"{name}.download"
    await sftp.get(f"/inbox/{name}", str(download))
    digest = hashlib.sha256(download.read_bytes()).hexdigest()
    journal = home.received()
    if digest not in journal:
        local = await asyncio.to_thread(_store, home, pgp, hub, download, name, target)
        home.record(digest, local)
    else:
        local = journal[digest]
    _finish(target, local)
    download.unlink(missing_ok=True)
    await sftp.remove(f"/inbox/{name}")
    return Outcome(name, "log" if name.endswith(".log") else "received", local)


def _free_name(target: Path, name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    n, candidate = 1, name
    while (target / candidate).exists():  # an unjournaled .part is from a crash: reused
        n += 1
        candidate = f"{stem}_{n}.{ext}" if dot else f"{name}_{n}"
    return candidate


def _store(home: KitHome, pgp: OpenPGP, hub: str, download: Path, name: str, target: Path) -> str:
    """Write the plain file as `.<local>.part` (fsynced); `_finish` renames it."""
    local = _free_name(target, name)
    part = target / f".{local}.part"
    if name.endswith(".log"):
        part.write_bytes(download.read_bytes())
    else:
        verdict = pgp.decrypt_verify(download, part, 1 << 40)
        if not verdict.ok or verdict.signer != hub:
            raise KitError(f"{name}: not signed by the hub ({verdict.reason or verdict.signer})")
    with part.open("rb") as f:
        os.fsync(f.fileno())
    return local


def _finish(target: Path, local: str) -> None:
    part = target / f".{local}.part"
    if part.exists():
        part.replace(target / local)
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
