"""The limits that protect the market (HUB.md): open files per session, sessions per
participant, the login grace time, connections not logged in per address and in all, the
quota of a mailbox, and a wrong password that takes as long for an unknown user."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest
from hubkit import HubUnderTest, Party, gpg, hub_running, make_parties, sftp_client
from structlog.testing import capture_logs
from support import SAMPLES

from bdi.ssh import Gate

SENDER, OTHER, RECIPIENT = "COU010234", "CIE000638", "CIE000311"
GOOD = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, OTHER, RECIPIENT, "GIE000001"]) as made:
        yield made


@contextlib.asynccontextmanager
async def limited(
    tmp: Path, parties: dict[str, Party], **limits: object
) -> AsyncIterator[HubUnderTest]:
    async with hub_running(tmp / "data", parties, **limits) as hub:
        yield hub


async def canary(hub: HubUnderTest, tmp: Path, number: int) -> None:
    """Another participant's upload goes through meanwhile."""
    name = f"RCOU010234_00311_{number:06d}.edi"
    await hub.upload(SENDER, name, hub.seal(SENDER, GOOD, tmp))
    await hub.settled()
    assert name in await hub.inbox(RECIPIENT)


async def test_a_session_holds_at_most_its_open_files(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with limited(tmp_path, parties, open_files_per_session=8) as hub:
        async with hub.sftp(OTHER) as hoarder:
            handles = [await hoarder.open(f"/outbox/h{n}.part", "wb") for n in range(8)]
            with pytest.raises(asyncssh.SFTPFailure, match="trop de fichiers ouverts"):
                await hoarder.open("/outbox/h8.part", "wb")
            with pytest.raises(asyncssh.SFTPFailure, match="trop de fichiers ouverts"):
                await hoarder.open("/hub-public-key.asc", "rb")
            await canary(hub, tmp_path, 801)
            await handles.pop().close()
            handles.append(await hoarder.open("/hub-public-key.asc", "rb"))  # room for one
        async with hub.sftp(OTHER) as again:  # the count was the session's: a new one starts at 0
            for n in range(8):
                await (await again.open(f"/outbox/g{n}.part", "wb")).close()


async def test_a_participant_holds_at_most_its_sessions(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with limited(tmp_path, parties, sessions_per_participant=3) as hub:
        party = hub.parties[OTHER]
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                await stack.enter_async_context(sftp_client(hub.port, party))
            with capture_logs() as logs, pytest.raises((asyncssh.Error, OSError)):
                async with sftp_client(hub.port, party) as fourth:
                    await fourth.listdir("/")
            assert [e["reason"] for e in logs if e["event"] == "session.refused"] == [
                "too many sessions"
            ]
            await canary(hub, tmp_path, 802)
        async with sftp_client(hub.port, party) as later:  # the others are closed: room again
            assert "inbox" in await later.listdir("/")


async def silent(
    host: str, port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sends the SSH banner and nothing more."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(b"SSH-2.0-silent\r\n")
    await writer.drain()
    return reader, writer


async def closed_by_the_hub(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(20):
        with contextlib.suppress(ConnectionResetError):  # aborted: reset rather than closed
            while await reader.read(4096):
                pass
    return True


async def test_a_connection_that_does_not_log_in_is_closed_after_the_grace_time(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with limited(tmp_path, parties, login_grace_s=1.0) as hub:
        reader, writer = await silent("127.0.0.1", hub.port)
        started = time.monotonic()
        assert await closed_by_the_hub(reader)
        assert time.monotonic() - started < 10
        writer.close()


async def test_connections_not_logged_in_are_bounded_per_address_and_in_all(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with limited(tmp_path, parties, preauth_per_address=3, preauth_total=5) as hub:
        held = [await silent("127.0.0.1", hub.port, "127.0.0.4") for _ in range(3)]
        with capture_logs() as logs:
            refused, _ = await silent("127.0.0.1", hub.port, "127.0.0.4")
            assert await closed_by_the_hub(refused)  # a fourth from the same address
            held += [await silent("127.0.0.1", hub.port, "127.0.0.2") for _ in range(2)]
            # all 5 places taken: a newcomer gets one, the address holding the most gives
            # up its oldest
            await silent("127.0.0.1", hub.port, "127.0.0.3")
            assert await closed_by_the_hub(held[0][0])
        assert [e["reason"] for e in logs if e["event"] == "ssh.refused"] == [
            "too many from this address"
        ]
        for _, writer in held:
            writer.close()


async def test_a_banner_flood_does_not_keep_others_from_logging_in(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """Flooders hold every place and ask for more: they are banned within their first
    refusals, their connections closed at once, and a participant logs in meanwhile."""
    async with limited(tmp_path, parties, preauth_per_address=4, preauth_total=8) as hub:
        flood = [
            await silent("127.0.0.1", hub.port, f"127.0.0.{source}")
            for source in (11, 12)
            for _ in range(4)
        ]
        for _ in range(15):  # holding all its places, 127.0.0.11 keeps asking
            _, writer = await silent("127.0.0.1", hub.port, "127.0.0.11")
            writer.close()
        assert await closed_by_the_hub(flood[0][0])  # banned: its waiting ones closed
        async with sftp_client(hub.port, hub.parties[OTHER]) as sftp:
            assert "inbox" in await sftp.listdir("/")
        for _, writer in flood:
            writer.close()


async def test_past_its_quota_a_participant_cannot_write(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with limited(tmp_path, parties, quota_bytes=64 * 1024) as hub:
        async with hub.sftp(OTHER) as sftp:
            with pytest.raises(asyncssh.SFTPError, match="quota dépassé"):  # FX_FAILURE in v3
                async with sftp.open("/outbox/big.part", "wb") as f:
                    await f.write(b"x" * 100_000)
            assert "big.part" not in await sftp.listdir("/outbox")  # nothing kept of it
        await canary(hub, tmp_path, 804)


async def test_what_waits_in_the_inbox_counts_until_it_is_removed(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with limited(tmp_path, parties, quota_bytes=64 * 1024) as hub:
        inbox = hub.settings.mailboxes / OTHER / "inbox"
        (inbox / "PCIE000311_00311_000002.edi").write_bytes(b"y" * 70_000)  # uncollected
        async with hub.sftp(OTHER) as sftp:
            with pytest.raises(asyncssh.SFTPError, match="quota dépassé"):
                await sftp.open("/outbox/small.part", "wb")
            await sftp.remove("/inbox/PCIE000311_00311_000002.edi")
            async with sftp.open("/outbox/small.part", "wb") as f:  # room again at once
                await f.write(b"z" * 1000)


async def wrong_password(port: int, user: str) -> float:
    started = time.perf_counter()
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1", port, username=user, password="wrong-password", known_hosts=None,
            client_keys=None, agent_path=None, preferred_auth="password",
        )  # fmt: skip
    return time.perf_counter() - started


async def test_a_wrong_password_takes_as_long_for_an_unknown_user(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    unbanned = {"defender_safe_addresses": ("127.0.0.1",)}  # 14 failures would ban it
    async with limited(tmp_path, parties, login_failures=100, **unbanned) as hub:
        known = [await wrong_password(hub.port, OTHER) for _ in range(7)]
        unknown = [await wrong_password(hub.port, "COU999999") for _ in range(7)]
        # before: 27 ms against 5 ms; both now pay one argon2 check
        assert statistics.median(unknown) > 0.6 * statistics.median(known), (known, unknown)


def test_the_open_files_limit_is_raised_at_start() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    from bdi.server import raise_open_files_limit

    raise_open_files_limit()
    raised, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raised == (hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20))


async def test_the_work_an_upload_may_ask_of_gpg_is_a_setting(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with limited(tmp_path, parties, max_recipients=1) as hub:
        me = hub.parties[SENDER]
        me.pgp.import_public(hub.parties[RECIPIENT].public_key)
        two = gpg(
            me.pgp.home, "--trust-model", "always", "--sign", "--local-user", me.fingerprint,
            "--encrypt", "-r", hub.hub_fingerprint, "-r", hub.parties[RECIPIENT].fingerprint,
            data=GOOD,
        )  # fmt: skip
        await hub.upload(SENDER, "RCOU010234_00311_000805.edi", two)
        await hub.settled()
        [log] = (await hub.inbox(SENDER)).values()
        assert b"DECHIFFREMENT" in log and "(trop de destinataires (plus de 1))" in log.decode()


async def test_port_probes_are_not_held_against_their_address(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """A load balancer's health check connects and closes: never a reason to ban it."""
    async with limited(tmp_path, parties, defender_threshold=3) as hub:
        for _ in range(10):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", hub.port, local_addr=("127.0.0.5", 0)
            )
            writer.close()
            await writer.wait_closed()
        async with asyncssh.connect(
            "127.0.0.1", hub.port, username=OTHER, password=hub.parties[OTHER].password,
            known_hosts=None, client_keys=None, agent_path=None, local_addr=("127.0.0.5", 0),
        ) as conn, conn.start_sftp_client() as sftp:  # fmt: skip
            assert "inbox" in await sftp.listdir("/")


async def test_ssh_keys_that_are_not_the_users_feed_the_defender(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with limited(tmp_path, parties, defender_threshold=4) as hub:
        stranger = asyncssh.generate_private_key("ssh-ed25519")
        outcomes = []
        for _ in range(4):
            try:
                async with asyncssh.connect(
                    "127.0.0.1", hub.port, username=OTHER, client_keys=[stranger],
                    known_hosts=None, agent_path=None, preferred_auth="publickey",
                    local_addr=("127.0.0.6", 0),
                ):  # fmt: skip
                    outcomes.append("in")
            except asyncssh.PermissionDenied:
                outcomes.append("denied")
            except (OSError, asyncssh.Error):
                outcomes.append("refused")
        assert outcomes[:2] == ["denied", "denied"] and outcomes[-1] == "refused", outcomes


def test_the_gate_keeps_no_trace_of_refused_addresses() -> None:
    class Conn:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    gate = Gate(per_address=2, total=2)
    first, second = Conn(), Conn()
    assert gate.enter("10.0.0.1", first) is None and gate.enter("10.0.0.1", second) is None
    assert gate.enter("10.0.0.1", Conn()) == "too many from this address"
    for n in range(1000):  # a spray: each newcomer takes the oldest place of the greediest
        assert gate.enter(f"10.1.{n // 250}.{n % 250}", Conn()) in (
            None,
            "too many connections not logged in",
        )
    assert first.aborted and gate.count() == 2 and len(gate.waiting) <= 2
