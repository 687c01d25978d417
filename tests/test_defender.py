"""The defender (HUB.md, "Limits that protect the market"): one score per source address over
a window, weights per event, bans that grow for repeat offenders, kept in the store across a
restart and lifted by an admin from another process; and, through the real web port, every
web input feeding it and every web route refusing a banned address."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from hubkit import HubUnderTest, Party, hub_running, make_parties, password_login
from structlog.testing import capture_logs

from bdi.admin.service import AdminService, NotFoundError
from bdi.admin.wiring import service_for
from bdi.defender import Defender, DefenderPolicy, Event
from bdi.store import bans
from bdi.store.db import make_engine
from bdi.store.repo import Store
from bdi.store.schema import upgrade_to_head

BDI = Path(sys.executable).with_name("bdi")
ATTACKER, OTHER = "203.0.113.9", "198.51.100.20"
BROKER, LEADER = "COU010234", "CIE000311"


@dataclass
class Clock:
    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def open_store(path: Path) -> Store:
    await upgrade_to_head(f"sqlite+aiosqlite:///{path}")
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    return Store(engine)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(tmp_path / "bdi.sqlite3")
    yield opened
    await opened.engine.dispose()


def failures(defender: Defender, address: str, n: int, event: Event = Event.SSH_PASSWORD) -> None:
    for _ in range(n):
        defender.record(address, event)


# --- the score and the ban ---------------------------------------------------------------------


async def test_the_threshold_bans_within_the_window_only(store: Store) -> None:
    clock = Clock()
    defender = Defender(store, DefenderPolicy(), clock)
    failures(defender, ATTACKER, 14)
    assert not defender.is_banned(ATTACKER)
    clock.now += 5 * 60 + 1  # the 14 failures leave the window
    failures(defender, ATTACKER, 14)
    assert not defender.is_banned(ATTACKER)
    with capture_logs() as logs:
        assert defender.record(ATTACKER, Event.SUIVI_LOGIN)
    assert defender.is_banned(ATTACKER) and not defender.is_banned(OTHER)
    [banned] = [e for e in logs if e["event"] == "defender.banned"]
    assert (banned["address"], banned["score"], banned["seconds"]) == (ATTACKER, 15, 1800)
    assert banned["cause"] == "suivi_login"
    clock.now += 30 * 60 - 1
    assert defender.is_banned(ATTACKER)
    clock.now += 2
    assert not defender.is_banned(ATTACKER)
    await defender.flush()


async def test_weights_unknown_users_and_overrides(store: Store) -> None:
    defender = Defender(store, DefenderPolicy(), Clock())
    for _ in range(7):
        defender.record(ATTACKER, Event.UPLOADS_BASIC, unknown_user=True)
    assert not defender.is_banned(ATTACKER)  # 14
    assert defender.record(ATTACKER, Event.ADMIN_BEARER, unknown_user=True)  # 16
    quiet = DefenderPolicy(threshold=3, weights={Event.SSH_PREAUTH_DISCONNECT: 0})
    other = Defender(store, quiet, Clock())
    failures(other, OTHER, 50, Event.SSH_PREAUTH_DISCONNECT)
    assert not other.is_banned(OTHER)
    failures(other, OTHER, 3, Event.SSH_KEY)
    assert other.is_banned(OTHER)
    await defender.flush()
    await other.flush()


async def test_safe_addresses_and_networks_are_never_banned(store: Store) -> None:
    policy = DefenderPolicy(threshold=2, safe_addresses=("127.0.0.1", "10.0.0.0/8", "::1"))
    defender = Defender(store, policy, Clock())
    for address in ("127.0.0.1", "10.20.30.40", "::1"):
        failures(defender, address, 10)
        assert not defender.is_banned(address), address
    failures(defender, "11.0.0.1", 2)
    assert defender.is_banned("11.0.0.1")
    await defender.flush()


async def test_a_repeat_offender_is_banned_longer_up_to_the_maximum(store: Store) -> None:
    clock = Clock()
    policy = DefenderPolicy(threshold=2, ban_s=60, ban_growth=2, max_ban_s=200)
    defender = Defender(store, policy, clock)
    lengths = []
    for _ in range(4):
        failures(defender, ATTACKER, 2)
        until = defender.banned()[ATTACKER].timestamp()
        lengths.append(until - clock.now)
        clock.now = until + 1
    assert lengths == [60, 120, 200, 200]
    await defender.flush()
    restarted = Defender(store, policy, clock)
    await restarted.load()  # the offences are in the store: a restart does not forgive them
    failures(restarted, ATTACKER, 2)
    assert restarted.banned()[ATTACKER].timestamp() - clock.now == 200
    await restarted.flush()


async def test_a_restart_keeps_the_bans(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    defender = Defender(store, DefenderPolicy(threshold=1), clock)
    defender.record(ATTACKER, Event.SSH_PASSWORD)
    await defender.flush()
    again = await open_store(tmp_path / "bdi.sqlite3")
    try:
        restarted = Defender(again, DefenderPolicy(threshold=1), clock)
        assert not restarted.is_banned(ATTACKER)  # nothing before it is loaded
        await restarted.load()
        assert restarted.is_banned(ATTACKER) and not restarted.is_banned(OTHER)
        clock.now += 30 * 60 + 1
        await restarted.load()
        assert not restarted.is_banned(ATTACKER)
    finally:
        await again.engine.dispose()


async def test_memory_stays_bounded_under_a_spray_from_many_addresses(store: Store) -> None:
    clock = Clock()
    defender = Defender(store, DefenderPolicy(tracked_addresses=100), clock)
    for n in range(1000):
        defender.record(f"10.1.{n // 256}.{n % 256}", Event.SSH_PASSWORD, unknown_user=True)
        clock.now += 0.01
    assert len(defender._events) <= 100


# --- lifting -------------------------------------------------------------------------------------


def admin(store: Store, actor: str = "cli") -> AdminService:
    """The admin service over a store, as `bdi admin` builds it (only bans are used here)."""
    return AdminService(store, None, None, None, "", lambda: "", actor)  # type: ignore[arg-type]


async def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_lift_from_another_process_reaches_the_running_defender(
    store: Store, tmp_path: Path
) -> None:
    defender = Defender(store, DefenderPolicy(threshold=3, reload_s=0.1))
    await defender.load()
    watching = asyncio.create_task(defender.watch())
    try:
        failures(defender, ATTACKER, 3)
        failures(defender, OTHER, 3)
        await defender.flush()
        other_process = await open_store(tmp_path / "bdi.sqlite3")  # its own engine
        try:
            listed = await admin(other_process).bans()
            assert {b["address"] for b in listed} == {ATTACKER, OTHER}
            assert {b["reason"] for b in listed} == {"ssh_password"}
            with capture_logs() as logs:
                assert await admin(other_process).lift_ban(ATTACKER) == {
                    "address": ATTACKER,
                    "lifted": True,
                }
            assert [e["address"] for e in logs if e["event"] == "defender.lifted"] == [ATTACKER]
            with pytest.raises(NotFoundError):
                await admin(other_process).lift_ban(ATTACKER)
        finally:
            await other_process.engine.dispose()
        await wait_for(lambda: not defender.is_banned(ATTACKER), seconds=2)
        assert defender.is_banned(OTHER)
        failures(defender, ATTACKER, 2)  # lifted: its score starts again from zero
        assert not defender.is_banned(ATTACKER)
    finally:
        watching.cancel()
        await defender.flush()


async def test_a_ban_being_written_survives_a_reload(store: Store) -> None:
    defender = Defender(store, DefenderPolicy(threshold=1))
    defender.record(ATTACKER, Event.SSH_KEY)  # its row is not written yet
    await defender.refresh()
    assert defender.is_banned(ATTACKER)
    await defender.flush()
    await defender.refresh()
    assert defender.is_banned(ATTACKER)
    assert [b.address for b in await bans.active_bans(store, datetime.now(UTC))] == [ATTACKER]


# --- the web port --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([BROKER, LEADER]) as made:
        yield made


@pytest_asyncio.fixture
async def hub(tmp_path: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    async with hub_running(tmp_path / "data", parties) as running:
        yield running


def web(hub: HubUnderTest, address: str | None = None) -> httpx.AsyncClient:
    """A client of the real web port; `address` is given to the hub as X-Forwarded-For, which
    it believes from loopback only (a reverse proxy on the same host)."""
    headers = {"X-Forwarded-For": address} if address else {}
    base = f"http://127.0.0.1:{hub.server.web_port}"
    return httpx.AsyncClient(base_url=base, headers=headers)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def suivi_login(c: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    form = await c.get("/connexion")
    csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
    data = {"csrf": csrf, "identifiant": user, "mot_de_passe": password}
    return await c.post("/connexion", data=data)


async def assert_refused_everywhere(c: httpx.AsyncClient) -> None:
    for url in ("/", "/connexion", "/static/suivi.css", "/api/admin/bans", "/api/uploads/x"):
        response = await c.get(url)
        assert response.status_code == 403, url
        assert response.text.strip() == "adresse bloquée", url
        assert "set-cookie" not in response.headers, url
    refused = await c.post("/connexion", data={"identifiant": BROKER})
    assert refused.status_code == 403


async def admin_token(hub: HubUnderTest) -> str:
    return str((await service_for(hub.server.hub, "test").rotate_token())["token"])


async def bdi(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(BDI), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_suivi_logins_with_made_up_ids_ban_the_address_and_the_cli_lifts_it(
    hub: HubUnderTest,
) -> None:
    async with web(hub, ATTACKER) as attacker, web(hub) as participant:
        for n in range(8):  # made-up ids weigh 2: 16 > 15
            assert (await suivi_login(attacker, f"COU9{n:05}", "guess")).status_code == 401
        await assert_refused_everywhere(attacker)
        assert (await participant.get("/connexion")).status_code == 200  # another address
        data = str(hub.settings.data)
        listed = json.loads(await bdi("admin", "bans", "list", "--json", "--data", data))
        assert [(b["address"], b["reason"], b["score"]) for b in listed] == [
            (ATTACKER, "suivi_login", 16)
        ]
        lifted = json.loads(await bdi("admin", "bans", "lift", ATTACKER, "--data", data, "--json"))
        assert lifted["address"] == ATTACKER  # stdout is the result alone: events go to stderr
        async with asyncio.timeout(3):  # the hub reads the bans again every second
            while (await attacker.get("/connexion")).status_code == 403:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert "no ban" in await bdi("admin", "bans", "list", "--data", data)
        assert (
            await suivi_login(attacker, BROKER, hub.parties[BROKER].password)
        ).status_code == 303


async def test_wrong_bearer_tokens_ban_and_the_api_lifts_at_once(hub: HubUnderTest) -> None:
    token = await admin_token(hub)
    bearer = {"Authorization": f"Bearer {token}"}
    async with web(hub, ATTACKER) as attacker, web(hub, OTHER) as admin_client:
        for n in range(15):
            wrong = {"Authorization": f"Bearer guess-{n}"}
            assert (await attacker.get("/api/admin/participants", headers=wrong)).status_code == 401
        await assert_refused_everywhere(attacker)
        for _ in range(20):  # no token at all is no guess
            assert (await admin_client.get("/api/admin/bans")).status_code == 401
        listed = (await admin_client.get("/api/admin/bans", headers=bearer)).json()
        assert [(b["address"], b["reason"]) for b in listed] == [(ATTACKER, "admin_bearer")]
        lifted = await admin_client.delete(f"/api/admin/bans/{ATTACKER}", headers=bearer)
        assert lifted.json() == {"address": ATTACKER, "lifted": True}
        assert (await attacker.get("/connexion")).status_code == 200  # at once
        again = await admin_client.delete(f"/api/admin/bans/{ATTACKER}", headers=bearer)
        assert again.status_code == 404
        bad = await admin_client.delete("/api/admin/bans/not-an-address", headers=bearer)
        assert bad.status_code == 400


async def test_http_basic_guesses_ban_and_the_ban_survives_a_restart(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with (
        hub_running(tmp_path / "data", parties) as running,
        web(running, ATTACKER) as attacker,
    ):
        for n in range(8):  # made-up ids weigh 2
            guess = basic(f"COU9{n:05}", "guess")
            assert (await attacker.get("/api/uploads/x.edi", headers=guess)).status_code == 401
        await assert_refused_everywhere(attacker)
    async with (
        hub_running(tmp_path / "data", parties) as restarted,
        web(restarted, ATTACKER) as attacker,
        web(restarted, OTHER) as other,
    ):
        await assert_refused_everywhere(attacker)
        right = basic(BROKER, parties[BROKER].password)
        assert (await other.get("/api/uploads/x.edi", headers=right)).status_code == 200


# --- the SSH port ---------------------------------------------------------------------------------


async def ssh_login(hub: HubUnderTest, user: str, password: str) -> str:
    return await password_login(hub.port, user, password)


async def test_ssh_guesses_ban_the_address_on_every_listener(hub: HubUnderTest) -> None:
    outcomes = []
    for n in range(10):  # made-up names weigh 2, and each connection gone before its login 1
        outcomes.append(await ssh_login(hub, f"COU9{n:05}", "guess"))
        if outcomes[-1] == "refused":
            break
    assert outcomes[-1] == "refused" and set(outcomes[:-1]) == {"denied"}, outcomes
    assert len(outcomes) <= 8, outcomes
    assert await ssh_login(hub, BROKER, hub.parties[BROKER].password) == "refused"
    async with web(hub) as same_address:
        await assert_refused_everywhere(same_address)
    await bdi("admin", "bans", "lift", "127.0.0.1", "--data", str(hub.settings.data))
    async with asyncio.timeout(3):  # the hub reads the bans again every second
        while await ssh_login(hub, BROKER, hub.parties[BROKER].password) != "ok":  # noqa: ASYNC110
            await asyncio.sleep(0.05)
