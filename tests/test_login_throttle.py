"""Password guessing over SSH: after `login_failures` failed passwords for one user, even the
right one is refused (and not checked) for the rest of the window; other users log in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest
from hubkit import HubUnderTest, Party, hub_running, make_parties
from structlog.testing import capture_logs

FAILURES = 3


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties(["COU010234", "CIE000311"]) as made:
        yield made


@pytest.fixture
async def hub(tmp_path: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    async with hub_running(tmp_path / "data", parties, login_failures=FAILURES) as running:
        yield running


async def login(hub: HubUnderTest, user: str, password: str) -> bool:
    try:
        async with asyncssh.connect(
            "127.0.0.1", hub.port, username=user, password=password,
            known_hosts=None, client_keys=None, agent_path=None,
        ) as conn, conn.start_sftp_client() as sftp:  # fmt: skip
            await sftp.listdir("/")
    except asyncssh.PermissionDenied:
        return False
    return True


async def test_guessing_pauses_the_user_but_not_the_others(hub: HubUnderTest) -> None:
    right = hub.parties["COU010234"].password
    for _ in range(FAILURES - 1):
        assert not await login(hub, "COU010234", "guess")
    assert await login(hub, "COU010234", right)  # a success forgets the failures
    for _ in range(FAILURES):
        assert not await login(hub, "COU010234", "guess")
    with capture_logs() as logs:
        assert not await login(hub, "COU010234", right)
    assert [e["event"] for e in logs if e["event"].startswith("login.")] == ["login.throttled"]
    assert await login(hub, "CIE000311", hub.parties["CIE000311"].password)
