"""Login with a registered SSH key instead of the password; logins are recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest
from hubkit import HubUnderTest, Party, hub_running, make_parties

from bdi.admin.wiring import service_for


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties(["COU010234", "CIE000311"]) as made:
        yield made


@pytest.fixture
async def hub(tmp_path: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    async with hub_running(tmp_path / "data", parties) as running:
        yield running


async def connect_with(
    hub: HubUnderTest, user: str, key: asyncssh.SSHKey, **options: object
) -> list[str]:
    async with (
        asyncssh.connect(
            "127.0.0.1", hub.port, username=user, client_keys=[key], password=None,
            known_hosts=None, agent_path=None, preferred_auth="publickey", **options,
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):  # fmt: skip
        return sorted(await sftp.listdir("/"))


async def test_registered_ssh_key_opens_the_session(hub: HubUnderTest) -> None:
    key, other = (asyncssh.generate_private_key("ssh-ed25519") for _ in range(2))
    admin = service_for(hub.server.hub, "test")
    await admin.set_ssh_key("COU010234", key.export_public_key().decode())
    listing = set(await connect_with(hub, "COU010234", key))
    assert listing - {".", ".."} == {"hub-public-key.asc", "inbox", "outbox"}
    with pytest.raises(asyncssh.PermissionDenied):
        await connect_with(hub, "COU010234", other)
    with pytest.raises(asyncssh.PermissionDenied):
        await connect_with(hub, "CIE000311", key)  # a key opens only its own mailbox


async def test_an_rsa_key_signs_with_sha2_and_a_sha1_signature_is_refused(
    hub: HubUnderTest,
) -> None:
    """As OpenSSH since 8.8: an RSA key logs in with its SHA-2 signatures (rsa-sha2-256/512,
    the only RSA ones the hub's server-sig-algs names); a client signing with SHA-1
    ('ssh-rsa') anyway is refused, with its right key."""
    key = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    await service_for(hub.server.hub, "test").set_ssh_key(
        "COU010234", key.export_public_key().decode()
    )
    assert "inbox" in await connect_with(hub, "COU010234", key)
    assert "inbox" in await connect_with(hub, "COU010234", key, signature_algs=["rsa-sha2-512"])
    with pytest.raises(asyncssh.PermissionDenied):
        await connect_with(hub, "COU010234", key, signature_algs=["ssh-rsa"])
    async with asyncssh.connect(
        "127.0.0.1",
        hub.port,
        username="COU010234",
        password=hub.parties["COU010234"].password,
        known_hosts=None,
        agent_path=None,
        client_keys=None,
    ) as conn:  # what the server offers: SHA-2 for RSA keys, never SHA-1
        offered = set(getattr(conn, "_server_sig_algs"))  # noqa: B009
    assert {b"rsa-sha2-256", b"rsa-sha2-512", b"ssh-ed25519"} <= offered
    assert b"ssh-rsa" not in offered


async def test_logins_are_recorded(hub: HubUnderTest) -> None:
    store = hub.server.hub.store
    before = await store.participant("CIE000311")
    assert before is not None and before.last_login is None
    async with hub.sftp("CIE000311") as sftp:
        await sftp.listdir("/inbox")
    async with asyncio.timeout(10):
        # the login is recorded by a task of the server's connection: its row is the condition
        while (row := await store.participant("CIE000311")) is None or row.last_login is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    show = await service_for(hub.server.hub, "test").show("CIE000311")
    assert show["last_login"] is not None
