"""Password guessing. Over SSH: after `login_failures` failed passwords for one user, even the
right one is refused (and not checked) for the rest of the window; other users log in. On the
web port: `/api/uploads` and the Suivi share one throttle per (id, address), so a stranger's
guesses lock the stranger out, not the participant; and a wrong password is answered in the
same time whether or not the id exists."""

from __future__ import annotations

import base64
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import httpx
import pytest
from hubkit import HubUnderTest, Party, hub_running, make_parties
from starlette.types import ASGIApp
from structlog.testing import capture_logs

from bdi.defender import Defender, DefenderPolicy
from bdi.suivi.auth import Lockout, LockoutPolicy
from bdi.web import create_web_app

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


# --- the web port: /api/uploads and the Suivi share one throttle --------------------------------

SECRET = "throttle-test-secret-key"
STRANGER, OWNER = "203.0.113.66", "198.51.100.7"


def web_client(app: ASGIApp, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://hub.test")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def suivi_login(c: httpx.AsyncClient, user: str, password: str) -> int:
    form = await c.get("/connexion")
    csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
    data = {"csrf": csrf, "identifiant": user, "mot_de_passe": password}
    return (await c.post("/connexion", data=data)).status_code


def web_app(hub: HubUnderTest, policy: LockoutPolicy) -> ASGIApp:
    store = hub.server.hub.store
    defender = Defender(store, DefenderPolicy(threshold=1000))
    return create_web_app(hub.server.hub, SECRET, defender, Lockout(policy))


async def test_uploads_api_refuses_the_right_password_while_the_pair_is_throttled(
    hub: HubUnderTest,
) -> None:
    app = web_app(hub, LockoutPolicy(free_failures=100, max_failures=FAILURES))
    right = hub.parties["COU010234"].password
    async with web_client(app, STRANGER) as stranger, web_client(app, OWNER) as owner:
        for _ in range(FAILURES):
            guess = await stranger.get("/api/uploads/x.edi", headers=basic("COU010234", "guess"))
            assert guess.status_code == 401
        with capture_logs() as logs:
            refused = await stranger.get("/api/uploads/x.edi", headers=basic("COU010234", right))
        assert refused.status_code == 401
        assert [e["event"] for e in logs] == ["uploads_api.login_locked"]
        assert await suivi_login(stranger, "COU010234", right) == 429  # one throttle for both
        ok = await owner.get("/api/uploads/x.edi", headers=basic("COU010234", right))
        assert (ok.status_code, ok.json()) == (200, {"name": "x.edi", "jobs": []})
        assert await suivi_login(owner, "COU010234", right) == 303


async def test_a_wrong_password_takes_as_long_for_an_unknown_id(hub: HubUnderTest) -> None:
    """Checked against a decoy hash: the time of the answer does not tell which ids exist."""
    app = web_app(hub, LockoutPolicy(free_failures=1000, max_failures=1000))

    async def answer_time(c: httpx.AsyncClient, user: str) -> float:
        started = time.perf_counter()
        response = await c.get("/api/uploads/x.edi", headers=basic(user, "wrong"))
        assert response.status_code == 401
        return time.perf_counter() - started

    async with web_client(app, STRANGER) as c:
        known = [await answer_time(c, "COU010234") for _ in range(7)]
        unknown = [await answer_time(c, "COU999999") for _ in range(7)]
    assert statistics.median(unknown) > 0.6 * statistics.median(known), (known, unknown)
