"""Wrong bearer tokens on the ops routes (HUB.md: failed logins on "any HTTP API" add to the
source address's score): on a real hub's web port, guesses on /metrics get the address banned
as guesses on /api/admin do, after which even the right token is refused; a request with no
token at all is no guess."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio
from hubkit import HubUnderTest, hub_running

from bdi.admin.wiring import service_for

# given to the hub as X-Forwarded-For, believed from loopback (a reverse proxy on the host)
ATTACKER, OTHER = "203.0.113.77", "198.51.100.31"
THRESHOLD = 6  # the defender's, small: each wrong token weighs 1
METRICS_TOKEN = "scrape-me"


@pytest_asyncio.fixture
async def hub(tmp_path: Path) -> AsyncIterator[HubUnderTest]:
    settings = {"defender_threshold": THRESHOLD, "metrics_token": METRICS_TOKEN}
    async with hub_running(tmp_path / "data", {}, **settings) as running:
        yield running


def web(hub: HubUnderTest, address: str) -> httpx.AsyncClient:
    base = f"http://127.0.0.1:{hub.server.web_port}"
    return httpx.AsyncClient(base_url=base, headers={"X-Forwarded-For": address})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_wrong_tokens_on_metrics_ban_the_address(hub: HubUnderTest) -> None:
    admin = str((await service_for(hub.server.hub, "test").rotate_token())["token"])
    async with web(hub, ATTACKER) as attacker, web(hub, OTHER) as other:
        for right in (admin, METRICS_TOKEN):  # both open /metrics before any guess
            assert (await attacker.get("/metrics", headers=bearer(right))).status_code == 200
        for _ in range(3 * THRESHOLD):  # no token at all is no guess
            assert (await attacker.get("/metrics")).status_code == 401
        for n in range(THRESHOLD):  # the last guess reaches the threshold: refused, then banned
            guess = await attacker.get("/metrics", headers=bearer(f"bad{n}"))
            assert guess.status_code == 401, n
            assert guess.headers["www-authenticate"] == "Bearer"
        for right in (admin, METRICS_TOKEN):
            refused = await attacker.get("/metrics", headers=bearer(right))
            assert (refused.status_code, refused.text) == (403, "adresse bloquée\n")
        for path in ("/healthz", "/readyz", "/api/admin/bans"):  # the whole web port
            assert (await attacker.get(path)).status_code == 403, path
        assert (await other.get("/metrics", headers=bearer(admin))).status_code == 200
        listed = (await other.get("/api/admin/bans", headers=bearer(admin))).json()
    assert [(b["address"], b["reason"], b["score"]) for b in listed] == [
        (ATTACKER, "admin_bearer", THRESHOLD)
    ]
