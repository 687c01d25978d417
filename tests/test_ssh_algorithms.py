"""The SSH algorithms a real hub offers are OpenSSH's defaults (HUB.md, "Uploading"): its
KEXINIT, read off the wire, lists OpenSSH 9.2p1's default key exchanges and MACs (less what
asyncssh lacks; mlkem768x25519-sha256 first, as OpenSSH >= 9.9), the configured ciphers in
their order and its ed25519 host key; each of them negotiates, asyncssh's extras (SHA-1
group14, curve448, @ssh.com MACs…) are refused, and OpenSSH's `ssh` forcing SHA-1 group14 is
refused while `sftp` with its defaults connects."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio
from asyncssh.kex import get_kex_algs
from hubkit import HubUnderTest, Party, hub_running, make_parties

from bdi.server import SSH_KEX_ALGS, SSH_MAC_ALGS

pytestmark = pytest.mark.asyncio(loop_scope="module")

SENDER = "COU010234"
TIMEOUT = 30
# OpenSSH 9.2p1's defaults (myproposal.h: KEX_SERVER_KEX, KEX_SERVER_MAC), led by the
# post-quantum key exchange OpenSSH offers first since 9.9
OPENSSH_9_2_KEX = [
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256", "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512", "diffie-hellman-group14-sha256",
]  # fmt: skip
OPENSSH_9_2_MACS = [
    "umac-64-etm@openssh.com", "umac-128-etm@openssh.com", "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com", "hmac-sha1-etm@openssh.com", "umac-64@openssh.com",
    "umac-128@openssh.com", "hmac-sha2-256", "hmac-sha2-512", "hmac-sha1",
]  # fmt: skip
# the markers a server adds to its key exchanges (RFC 8308, OpenSSH's strict KEX)
MARKERS = {"ext-info-s", "kex-strict-s-v00@openssh.com"}
# asyncssh's defaults that OpenSSH's are not
NOT_OFFERED_KEX = [
    "diffie-hellman-group14-sha1", "rsa2048-sha256", "curve448-sha512",
    "diffie-hellman-group15-sha512", "diffie-hellman-group17-sha512", "ecdh-sha2-1.3.132.0.10",
    "diffie-hellman-group14-sha256@ssh.com",
]  # fmt: skip
NOT_OFFERED_MACS = ["hmac-sha256-2@ssh.com", "hmac-sha256@ssh.com", "hmac-sha512@ssh.com"]


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER]) as made:
        yield made


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> AsyncIterator[HubUnderTest]:
    data = tmp_path_factory.mktemp("ssh-algorithms") / "data"
    # every handshake here ends before a login: loopback must not be banned for it
    async with hub_running(data, parties, defender_safe_addresses=("127.0.0.1",)) as running:
        yield running


@dataclass(frozen=True)
class Offer:
    """The name-lists of a server's SSH_MSG_KEXINIT (RFC 4253, 7.1), server to client."""

    kex: list[str]
    host_keys: list[str]
    ciphers: list[str]
    macs: list[str]


async def server_offer(port: int) -> Offer:
    """Read the hub's KEXINIT off the wire: what it offers, before any negotiation."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"SSH-2.0-probe\r\n")
        async with asyncio.timeout(TIMEOUT):
            while not (await reader.readline()).startswith(b"SSH-"):
                pass
            length = int.from_bytes(await reader.readexactly(4))
            packet = await reader.readexactly(length)
    finally:
        writer.close()
    payload = packet[1 : length - packet[0]]  # less the padding
    assert payload[0] == 20  # SSH_MSG_KEXINIT
    at, lists = 17, []  # after the message number and the cookie
    for _ in range(10):
        size = int.from_bytes(payload[at : at + 4])
        lists.append(payload[at + 4 : at + 4 + size].decode().split(","))
        at += 4 + size
    kex, host_keys, ciphers_cs, ciphers_sc, macs_cs, macs_sc = lists[:6]
    assert (ciphers_cs, macs_cs) == (ciphers_sc, macs_sc)
    return Offer([k for k in kex if k not in MARKERS], host_keys, ciphers_sc, macs_sc)


def supported(names: list[str], known: list[bytes]) -> list[str]:
    return [n for n in names if n.encode() in known]


async def test_the_hub_offers_openssh_defaults(hub: HubUnderTest) -> None:
    offer = await server_offer(hub.port)
    assert offer.kex == SSH_KEX_ALGS == supported(OPENSSH_9_2_KEX, get_kex_algs())
    assert offer.kex[0] == "mlkem768x25519-sha256"  # post-quantum first, as OpenSSH >= 9.9
    assert offer.macs == SSH_MAC_ALGS == OPENSSH_9_2_MACS  # asyncssh has every one
    assert offer.ciphers == list(hub.settings.ssh_ciphers)  # AES-GCM first, as configured
    assert offer.host_keys == ["ssh-ed25519"]


async def handshake(hub: HubUnderTest, kex: str | None = None, mac: str | None = None) -> None:
    """A key exchange with the hub alone (no login): with `kex` only, or with `mac` only (and
    a cipher that needs a MAC, so that the MAC is negotiated)."""
    options = asyncssh.SSHClientConnectionOptions(
        encryption_algs=["aes128-ctr"] if mac else (), mac_algs=[mac] if mac else ()
    )
    async with asyncio.timeout(TIMEOUT):
        await asyncssh.get_server_host_key(
            "127.0.0.1", hub.port, kex_algs=[kex] if kex else (), options=options
        )


@pytest.mark.filterwarnings("ignore:Diffie-Hellman over finite fields")  # OpenSSH's has groups
async def test_each_offered_algorithm_negotiates_and_no_other(hub: HubUnderTest) -> None:
    for kex in SSH_KEX_ALGS:
        await handshake(hub, kex=kex)
    for mac in SSH_MAC_ALGS:
        await handshake(hub, mac=mac)
    for kex in NOT_OFFERED_KEX:
        with pytest.raises(asyncssh.KeyExchangeFailed, match="key exchange"):
            await handshake(hub, kex=kex)
    for mac in NOT_OFFERED_MACS:
        with pytest.raises(asyncssh.KeyExchangeFailed, match="MAC"):
            await handshake(hub, mac=mac)


def known_hosts(hub: HubUnderTest, folder: Path) -> Path:
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(hub.settings.host_key)],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    path = folder / "known_hosts"
    path.write_text(f"[127.0.0.1]:{hub.port} {' '.join(public.split()[:2])}\n")
    return path


async def openssh(program: str, *argv: str, password: str) -> tuple[int, str]:
    """Run OpenSSH's `program` through sshpass, without any user or system configuration."""
    proc = await asyncio.create_subprocess_exec(
        "sshpass", "-e", program, "-F", "/dev/null", *argv,
        env={"SSHPASS": password, "PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(TIMEOUT):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_openssh_forcing_sha1_group14_is_refused_and_its_defaults_connect(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    for program in ("ssh", "sftp", "sshpass"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (scripts/system-deps --test)")
    pinned = ["-o", f"UserKnownHostsFile={known_hosts(hub, tmp_path)}",
              "-o", "PubkeyAuthentication=no", "-o", "BatchMode=no"]  # fmt: skip
    password = hub.parties[SENDER].password
    code, out = await openssh(
        "ssh", *pinned, "-o", "KexAlgorithms=diffie-hellman-group14-sha1",
        "-p", str(hub.port), f"{SENDER}@127.0.0.1", "true", password=password,
    )  # fmt: skip
    assert code == 255 and "no matching key exchange method found" in out, out
    (tmp_path / "ls.batch").write_text("ls /\n")
    code, out = await openssh(
        "sftp", *pinned, "-v", "-b", str(tmp_path / "ls.batch"), "-P", str(hub.port),
        f"{SENDER}@127.0.0.1", password=password,
    )  # fmt: skip
    assert code == 0, out
    assert "kex: algorithm: curve25519-sha256\r\n" in out or "sntrup761" in out, out
