"""Ordinary SFTP clients, with their default upload commands, against the real server (HUB.md,
"Uploading"): each command exits 0 and gives exactly one upload, hence one delivery.

OpenSSH `sftp -b`, rclone, lftp (also under its temporary name `.in.NAME`), curl (libssh2,
which has no AES-GCM) and paramiko's `put` (which stats the name it just uploaded) run as the
participant would run them; WinSCP and FileZilla, which have no Linux command line, are played
with paramiko: a `.filepart` upload cut half way by the connection, resumed (by append, or by
writing at its current end), renamed, then its times set under the final name. A client is
skipped only when its program is absent (`scripts/system-deps --test` installs them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import paramiko
import pytest
import pytest_asyncio
from hubkit import HubUnderTest, Party, hub_running, make_parties
from sqlmodel import col, func, select
from support import SAMPLES

from bdi.store.models import Job

pytestmark = pytest.mark.asyncio(loop_scope="module")

SENDER, RECIPIENT = "COU010234", "CIE000311"
SAMPLE = SAMPLES / "RCOU010234_00311_000001.edi"
TIMEOUT = 60


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT]) as made:
        yield made


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clients")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(work: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    async with hub_running(work / "data", parties) as running:
        yield running


@dataclass
class Desk:
    """The sender's side: a working folder, a home of its own, the hub's address and key."""

    hub: HubUnderTest
    folder: Path
    known_hosts: Path

    @property
    def user(self) -> str:
        return SENDER

    @property
    def password(self) -> str:
        return self.hub.parties[SENDER].password

    @property
    def port(self) -> int:
        return self.hub.port

    @property
    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSHPASS")}
        home = self.folder / "home"
        return {**keep, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                "SSHPASS": self.password}  # fmt: skip

    def sealed(self, name: str) -> Path:
        """The sample, signed and encrypted to the hub, as the file `name` of the desk."""
        path = self.folder / name
        path.write_bytes(self.hub.seal(SENDER, SAMPLE.read_bytes(), self.folder / "gpg"))
        return path

    async def run(self, *argv: str) -> str:
        """Run one command as the participant would; its output, or fail with it."""
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=self.folder, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(TIMEOUT):
            out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        assert proc.returncode == 0, f"{argv[0]} exited {proc.returncode}:\n{text}"
        return text

    def paramiko(self) -> paramiko.SSHClient:
        """A paramiko client that knows the hub's host key (and trusts no other)."""
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", self.port, self.user, self.password,
                       allow_agent=False, look_for_keys=False)  # fmt: skip
        return client


def known_hosts_line(hub: HubUnderTest) -> str:
    key = hub.settings.host_key
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key)], capture_output=True, check=True, text=True
    ).stdout
    algo, blob = public.split()[:2]
    return f"[127.0.0.1]:{hub.port} {algo} {blob}\n"


@pytest.fixture
def desk(hub: HubUnderTest, tmp_path: Path) -> Desk:
    (tmp_path / "gpg").mkdir()
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir(parents=True, mode=0o700)
    known_hosts = ssh / "known_hosts"
    known_hosts.write_text(known_hosts_line(hub))
    return Desk(hub, tmp_path, known_hosts)


def needs(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (scripts/system-deps --test)")


async def jobs_named(hub: HubUnderTest, name: str) -> int:
    async with hub.server.hub.store.session() as s:
        query = select(func.count()).select_from(Job).where(col(Job.upload_name) == name)
        return int((await s.exec(query)).one())


async def delivered_once(hub: HubUnderTest, name: str) -> None:
    """Exactly one upload was taken in under `name`, and it was delivered, once."""
    await hub.settled()
    assert await jobs_named(hub, name) == 1
    inbox = await hub.inbox(RECIPIENT)
    assert [n for n in inbox if n.startswith(name.removesuffix(".edi"))] == [name], list(inbox)
    plain, _ = hub.open_delivery(RECIPIENT, inbox[name], hub.settings.data.parent)
    assert plain == SAMPLE.read_bytes()
    assert not [n for n in await hub.inbox(SENDER) if name.removesuffix(".edi") in n]  # no .log


# -- command-line clients ---------------------------------------------------------------------
async def test_openssh_sftp(desk: Desk) -> None:
    needs("sftp")
    needs("sshpass")
    name = "RCOU010234_00311_000501.edi"
    desk.sealed(name)
    (desk.folder / "put.batch").write_text(f"put {name} /outbox/{name}\n")
    await desk.run(
        "sshpass", "-e", "sftp", "-o", "BatchMode=no", "-b", "put.batch", "-P", str(desk.port),
        "-o", f"UserKnownHostsFile={desk.known_hosts}", "-o", "PubkeyAuthentication=no",
        f"{desk.user}@127.0.0.1",
    )  # fmt: skip
    await delivered_once(desk.hub, name)


async def rclone_remote(desk: Desk) -> None:
    """`rclone config create hub sftp …`, the password obscured by `rclone obscure`."""
    obscured = (await desk.run("rclone", "obscure", "--", desk.password)).strip()
    await desk.run(
        "rclone", "config", "create", "hub", "sftp", "host=127.0.0.1", f"port={desk.port}",
        f"user={desk.user}", f"pass={obscured}", f"known_hosts_file={desk.known_hosts}",
        "--non-interactive",
    )  # fmt: skip


async def test_rclone_copy(desk: Desk) -> None:
    needs("rclone")
    name = "RCOU010234_00311_000502.edi"
    desk.sealed(name)
    await rclone_remote(desk)
    await desk.run("rclone", "copy", name, "hub:/outbox")
    await delivered_once(desk.hub, name)


async def test_rclone_copies_a_file_whose_last_write_is_short_once_and_whole(desk: Desk) -> None:
    """rclone (its SFTP library) sends the last WRITE of a file with bytes past its data, as
    OpenSSH's sftp-server ignores: a file of 100 000 bytes (not a multiple of its 32 KiB
    writes) is taken in once, whole (here not OpenPGP: one .log answers it)."""
    needs("rclone")
    name = "RCOU010234_00311_000509.edi"
    (desk.folder / name).write_bytes(os.urandom(100_000))
    await rclone_remote(desk)
    await desk.run("rclone", "copyto", name, f"hub:/outbox/{name}")
    await desk.hub.settled()
    async with desk.hub.server.hub.store.session() as s:
        sizes = (await s.exec(select(Job.size).where(col(Job.upload_name) == name))).all()
    assert list(sizes) == [100_000]
    logs = [n for n in await desk.hub.inbox(SENDER) if name.removesuffix(".edi") in n]
    assert len(logs) == 1, logs


def lftp_script(desk: Desk, *commands: str) -> str:
    """lftp's own `ssh` only told where the hub's host key is, then the commands."""
    ssh = f"ssh -a -x -o UserKnownHostsFile={desk.known_hosts} -o PubkeyAuthentication=no"
    return "; ".join([f'set sftp:connect-program "{ssh}"', *commands, "bye"])


@pytest.mark.parametrize(("temp_file", "number"), [(False, "503"), (True, "504")])
async def test_lftp_put(desk: Desk, temp_file: bool, number: str) -> None:
    needs("lftp")
    name = f"RCOU010234_00311_000{number}.edi"
    desk.sealed(name)
    settings = ["set xfer:use-temp-file yes"] if temp_file else []
    script = lftp_script(desk, *settings, f"put {name} -o /outbox/{name}")
    url = f"sftp://{desk.user}:{quote(desk.password, safe='')}@127.0.0.1:{desk.port}"
    await desk.run("lftp", "-e", script, url)
    await delivered_once(desk.hub, name)


async def test_curl_upload(desk: Desk) -> None:
    """curl uses libssh2 (1.10 on Debian 12: no AES-GCM) and checks ~/.ssh/known_hosts."""
    needs("curl")
    name = "RCOU010234_00311_000505.edi"
    desk.sealed(name)
    url = f"sftp://127.0.0.1:{desk.port}/outbox/{name}"
    await desk.run("curl", "-sS", "-u", f"{desk.user}:{desk.password}", "-T", name, url)
    await delivered_once(desk.hub, name)


# -- paramiko, and WinSCP and FileZilla played with it ----------------------------------------
def paramiko_put(desk: Desk, local: Path, remote: str) -> None:
    """`SFTPClient.put`, with its default `confirm=True`: it stats the name after the close."""
    with desk.paramiko() as client, client.open_sftp() as sftp:
        attrs = sftp.put(str(local), remote)
        assert attrs.st_size == local.stat().st_size


async def test_paramiko_put(desk: Desk) -> None:
    name = "RCOU010234_00311_000506.edi"
    await asyncio.to_thread(paramiko_put, desk, desk.sealed(name), f"/outbox/{name}")
    await delivered_once(desk.hub, name)


def cut_half_way(desk: Desk, data: bytes, remote: str) -> int:
    """Start a temporary upload and lose the connection half way, the file left open."""
    half = len(data) // 2
    client = desk.paramiko()
    sftp = client.open_sftp()
    f = sftp.open(remote, "wb")
    f.write(data[:half])
    f.flush()
    client.get_transport().close()  # type: ignore[union-attr]
    return half


def resume(desk: Desk, data: bytes, part: str, final: str, by_append: bool) -> None:
    """Another session: read how far the upload went, send the rest, rename, set its times.

    WinSCP appends; FileZilla writes at the current end of a file opened without truncation."""
    with desk.paramiko() as client, client.open_sftp() as sftp:
        done = sftp.stat(part).st_size
        assert done is not None and 0 < done < len(data)
        with sftp.open(part, "ab" if by_append else "r+b") as f:
            if not by_append:
                f.seek(done)
            f.write(data[done:])
        assert sftp.stat(part).st_size == len(data)
        sftp.rename(part, final)
        sftp.utime(final, (1_700_000_000, 1_700_000_000))  # accepted, changes nothing
        assert sftp.stat(final).st_size == len(data)


@pytest.mark.parametrize(("client", "number"), [("winscp", "507"), ("filezilla", "508")])
async def test_a_resumed_temporary_upload(desk: Desk, client: str, number: str) -> None:
    name = f"RCOU010234_00311_000{number}.edi"
    data = desk.sealed(name).read_bytes()
    part, final = f"/outbox/{name}.filepart", f"/outbox/{name}"
    await asyncio.to_thread(cut_half_way, desk, data, part)
    await asyncio.to_thread(resume, desk, data, part, final, client == "winscp")
    await delivered_once(desk.hub, name)
