"""A crowd logging in at once (issue 18): the password checks (argon2) wait their turn in a pool
of their own, whose threads run below the rest of the hub, and the logins read the store a few
at a time; a key login and a session logged in before the crowd go on meanwhile, and every
login of the crowd gets in once its turn comes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest
from hubkit import HubUnderTest, Party, hub_running, make_parties, until
from support import SAMPLES

from bdi.admin.wiring import service_for
from bdi.datadir import open_hub
from bdi.ssh import (
    ACCOUNT_READS_AT_ONCE,
    PASSWORD_NICE,
    Account,
    HubSSHServer,
    PasswordCheck,
    account,
)

SENDER, RECIPIENT = "COU010234", "CIE000311"
CROWD = 40  # password logins of the sender, at once
ADDRESSES = [f"127.0.0.{n}" for n in range(20, 25)]  # 8 each: under 16 waiting per address
SAMPLE = "RCOU010234_00311_000001.edi"  # one section, SENDER -> RECIPIENT


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT]) as made:
        yield made


@pytest.fixture
async def hub(tmp_path: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    async with hub_running(
        tmp_path / "data", parties, sessions_per_participant=CROWD + 1
    ) as running:
        yield running


@contextlib.asynccontextmanager
async def pool_busy(check: PasswordCheck) -> AsyncIterator[None]:
    """Every thread of the password pool taken: the checks asked meanwhile wait in its queue."""
    release, started = threading.Event(), threading.Semaphore(0)

    def hold() -> None:
        started.release()
        release.wait()

    held = [check.executor.submit(hold) for _ in range(check.threads)]
    for _ in held:
        await asyncio.to_thread(started.acquire)
    try:
        yield
    finally:
        release.set()


async def password_login(
    port: int, user: str, password: str, address: str
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1", port, local_addr=(address, 0), username=user, password=password,
        known_hosts=None, client_keys=None, agent_path=None, preferred_auth="password",
    )  # fmt: skip


async def test_a_burst_of_passwords_waits_alone(hub: HubUnderTest, tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    admin = service_for(hub.server.hub, "test")
    await admin.set_ssh_key(RECIPIENT, key.export_public_key().decode())
    checks = hub.server.doors.passwords
    sealed = hub.seal(SENDER, (SAMPLES / SAMPLE).read_bytes(), tmp_path)
    password = hub.parties[SENDER].password
    async with hub.sftp(SENDER) as uploader:  # logged in before the crowd
        async with pool_busy(checks):
            crowd = [
                asyncio.create_task(password_login(hub.port, SENDER, password, address))
                for address in ADDRESSES * (CROWD // len(ADDRESSES))
            ]

            async def all_waiting() -> bool:
                return checks.waiting == CROWD

            await until(all_waiting)
            async with (
                asyncssh.connect(
                    "127.0.0.1", hub.port, username=RECIPIENT, client_keys=[key],
                    known_hosts=None, agent_path=None, preferred_auth="publickey",
                ) as conn,
                conn.start_sftp_client() as recipient,
            ):  # fmt: skip
                async with uploader.open(f"/outbox/{SAMPLE}", "wb") as f:
                    await f.write(sealed)
                await hub.settled()
                assert SAMPLE in await recipient.listdir("/inbox")
            # the key login and the upload's delivery: all while the crowd still waited
            assert checks.waiting == CROWD
            assert not any(login.done() for login in crowd)
        logged_in = await asyncio.gather(*crowd)  # each in once the pool is free
        assert checks.waiting == 0
        assert hub.server.sessions.count(SENDER) == CROWD + 1  # the crowd and the uploader
    for conn in logged_in:
        conn.close()


async def test_logins_read_the_store_a_few_at_a_time(
    hub: HubUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crowd's account reads never take the store's whole pool: a session logged in before
    it still reads its inbox while they wait."""
    arrived = reading = most = 0
    release = asyncio.Event()
    real = HubSSHServer._read_account

    async def counted(server: HubSSHServer, username: str) -> Account | None:
        nonlocal arrived
        arrived += 1
        return await real(server, username)

    async def held(store: object, user: str) -> Account | None:
        nonlocal reading, most
        reading += 1
        most = max(most, reading)
        await release.wait()
        reading -= 1
        return await account(hub.server.hub.store, user)

    password = hub.parties[SENDER].password
    async with hub.sftp(RECIPIENT) as before:
        monkeypatch.setattr(HubSSHServer, "_read_account", counted)
        monkeypatch.setattr("bdi.ssh.account", held)
        crowd = [
            asyncio.create_task(password_login(hub.port, SENDER, password, address))
            for address in ADDRESSES * 2
        ]

        async def all_arrived() -> bool:
            return arrived == len(crowd) and reading == ACCOUNT_READS_AT_ONCE

        await until(all_arrived)
        await before.listdir("/inbox")  # read from the store meanwhile
        assert most == ACCOUNT_READS_AT_ONCE and not any(login.done() for login in crowd)
        release.set()
        for conn in await asyncio.gather(*crowd):  # all in, still a few reads at a time
            conn.close()
        assert most == ACCOUNT_READS_AT_ONCE


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread")
async def test_password_checks_run_below_the_event_loop(hub: HubUnderTest) -> None:
    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    checks = hub.server.doors.passwords
    in_pool = await asyncio.get_running_loop().run_in_executor(checks.executor, nice)
    assert in_pool == min(19, nice() + PASSWORD_NICE)


async def test_a_login_just_before_the_stop_is_recorded(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """Logins are written in batches: the last one goes out with the server."""
    async with hub_running(tmp_path / "data", parties) as running:
        async with running.sftp(RECIPIENT) as sftp:
            await sftp.listdir("/")
        settings = running.settings
    hub = await open_hub(settings)
    try:
        row = await hub.store.participant(RECIPIENT)
        assert row is not None and row.last_login is not None
    finally:
        await hub.store.engine.dispose()
