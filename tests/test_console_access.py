"""Who may open the console: a participant's Suivi session never opens it, an operator's
console session never opens the Suivi's pages or contents (not even its cookie replayed as the
other's), credentials of one are nothing to the other; a disabled operator or a new password
ends its sessions at once; failed logins lock a (name, address) out and feed the defender."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
import pytest_asyncio
from hubkit import HubUnderTest, Party, hub_running
from test_console_support import console, csrf, csrf_of, log_in, logged_in, new_operator
from test_suivi_support import BROKER, CIRCUIT, load_referential, send

from bdi.admin.operators import reset_operator_password, set_operator_active
from bdi.admin.service import AdminService
from bdi.admin.wiring import service_for
from bdi.console.app import create_console
from bdi.console.auth import COOKIE as CONSOLE_COOKIE
from bdi.console.core import Check, Facts
from bdi.suivi.auth import COOKIE as SUIVI_COOKIE
from bdi.suivi.auth import Lockout, LockoutPolicy

pytestmark = pytest.mark.asyncio(loop_scope="module")
OPERATOR = "jean.martin"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> AsyncIterator[HubUnderTest]:
    tmp = tmp_path_factory.mktemp("console-access")
    async with hub_running(tmp / "data", parties) as running:
        await send(running, CIRCUIT[0], tmp)
        await load_referential(running)
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def password(hub: HubUnderTest) -> str:
    return await new_operator(hub, OPERATOR)


async def suivi_login(c: httpx.AsyncClient, hub: HubUnderTest, user: str) -> None:
    form = await c.get("/connexion")
    data = {"csrf": csrf_of(form.text), "identifiant": user,
            "mot_de_passe": hub.parties[user].password}  # fmt: skip
    assert (await c.post("/connexion", data=data)).status_code == 303


async def content_url(hub: HubUnderTest, user: str) -> str:
    movements = [m for m in await hub.server.hub.store.movements() if m.recipient_id == user]
    return f"/fichiers/{movements[0].id}/contenu"


def to_console_login(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"] == (
        "/exploitation/connexion"
    )


def to_suivi_login(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"] == "/connexion"


CONSOLE_PAGES = tuple(
    f"/exploitation/{page}"
    for page in ("", "participants", f"participants/{BROKER}", "audit", "audit/csv", "hub")
)


async def test_a_participants_suivi_session_never_opens_the_console(
    hub: HubUnderTest, password: str
) -> None:
    recipient = (await hub.server.hub.store.movements())[0].recipient_id
    async with console(hub) as c:
        await suivi_login(c, hub, recipient)
        assert (await c.get("/")).status_code == 200  # the Suivi is open to it
        for path in CONSOLE_PAGES:
            assert to_console_login(await c.get(path)), path
        token = c.cookies[SUIVI_COOKIE]
        c.cookies.set(CONSOLE_COOKIE, token, path="/exploitation")  # its cookie, replayed here
        for path in CONSOLE_PAGES:
            assert to_console_login(await c.get(path)), path
        suivi_csrf = await csrf(c, "/")
        act = await c.post(f"/exploitation/participants/{BROKER}/desactiver",
                           data={"csrf": suivi_csrf})  # fmt: skip
        assert to_console_login(act)
    row = await hub.server.hub.store.participant(BROKER)
    assert row is not None and row.active


async def test_an_operators_session_never_opens_the_suivi(hub: HubUnderTest, password: str) -> None:
    recipient = (await hub.server.hub.store.movements())[0].recipient_id
    contents = await content_url(hub, recipient)
    async with console(hub) as c:
        await logged_in(c, OPERATOR, password)
        assert (await c.get("/exploitation/participants")).status_code == 200
        for path in ("/", "/fichiers?envoyer=1", contents, f"{contents}?brut=1"):
            response = await c.get(path)
            assert to_suivi_login(response), (path, response.headers.get("location"))
        token = c.cookies[CONSOLE_COOKIE]
        c.cookies.set(SUIVI_COOKIE, token, path="/")  # its cookie, replayed in the Suivi
        for path in ("/", "/fichiers?envoyer=1", contents, f"{contents}?brut=1"):
            response = await c.get(path)
            assert to_suivi_login(response), path
            assert b"1111111111" not in response.content


async def test_the_suivi_keeps_its_own_links_beside_the_console(hub: HubUnderTest) -> None:
    """The console's route names (login, logout, static…) are the Suivi's too: mounted, the
    console must not answer the Suivi's lookups."""
    async with console(hub) as c:
        form = await c.get("/connexion")
        assert 'action="/connexion"' in form.text and 'href="/static/suivi.css"' in form.text
        await suivi_login(c, hub, BROKER)
        menu = await c.get("/")
        assert 'action="/deconnexion"' in menu.text
        out = await c.post("/deconnexion", data={"csrf": csrf_of(menu.text)})
        assert to_suivi_login(out)
        page = await c.get("/exploitation/connexion")
        assert 'action="/exploitation/connexion"' in page.text
        assert 'href="/exploitation/static/console.css"' in page.text


async def test_the_credentials_of_one_are_nothing_to_the_other(
    hub: HubUnderTest, password: str
) -> None:
    async with console(hub) as c:
        for name in (BROKER, BROKER.lower()):
            assert (await log_in(c, name, hub.parties[BROKER].password)).status_code == 401
        form = await c.get("/connexion")
        data = {"csrf": csrf_of(form.text), "identifiant": OPERATOR, "mot_de_passe": password}
        assert (await c.post("/connexion", data=data)).status_code == 401


@pytest.mark.parametrize("act", ["logout", "disable", "reset-password"])
async def test_logout_disable_and_a_new_password_end_the_sessions(
    hub: HubUnderTest, act: str
) -> None:
    name = f"ops.{act}"
    secret = await new_operator(hub, name)
    service = service_for(hub.server.hub, "test")
    async with console(hub) as c, console(hub) as replay:
        await logged_in(c, name, secret)
        replay.cookies.set(CONSOLE_COOKIE, c.cookies[CONSOLE_COOKIE], path="/exploitation")
        assert (await replay.get("/exploitation/")).status_code == 200
        if act == "logout":
            token = await csrf(c)
            assert (await c.post("/exploitation/deconnexion", data={"csrf": token})).is_redirect
        elif act == "disable":
            await set_operator_active(service, name, False)
            await set_operator_active(service, name, True)  # enabled again: sessions stay closed
        else:
            secret = (await reset_operator_password(service, name))["password"]
        for client in (c, replay):
            assert to_console_login(await client.get("/exploitation/participants"))
    if act == "disable":
        await set_operator_active(service, name, False)
        async with console(hub) as c:
            assert (await log_in(c, name, secret)).status_code == 401


# --- failed logins ------------------------------------------------------------------------------


async def ready() -> Sequence[Check]:
    return []


def standalone(hub: HubUnderTest, lockout: Lockout, seen: list[tuple[str, bool]]) -> object:
    def services(actor: str, address: str | None) -> AdminService:
        return dataclasses.replace(service_for(hub.server.hub, actor), address=address)

    return create_console(hub.server.hub, services, secret_key="lockout-test-secret",
                          facts=Facts(0.0, ready), lockout=lockout,
                          on_failure=lambda a, unknown: seen.append((a, unknown)))  # fmt: skip


def client_from(app: object, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 4242))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://console.test")


async def asgi_login(c: httpx.AsyncClient, name: str, secret: str) -> int:
    form = await c.get("/connexion")
    data = {"csrf": csrf_of(form.text), "identifiant": name, "mot_de_passe": secret}
    return (await c.post("/connexion", data=data)).status_code


async def test_a_stranger_locks_out_its_address_not_the_operator(
    hub: HubUnderTest, password: str
) -> None:
    seen: list[tuple[str, bool]] = []
    policy = LockoutPolicy(free_failures=100, max_failures=3)
    app = standalone(hub, Lockout(policy), seen)
    async with (
        client_from(app, "203.0.113.66") as stranger,
        client_from(app, "198.51.100.7") as owner,
    ):
        assert [await asgi_login(stranger, OPERATOR, "guess") for _ in range(3)] == [401] * 3
        assert await asgi_login(stranger, OPERATOR, password) == 429  # locked, even right
        assert await asgi_login(owner, OPERATOR, password) == 303
        assert await asgi_login(stranger, "nobody.here", "x") == 401
    assert seen == [("203.0.113.66", False)] * 4 + [("203.0.113.66", True)]


async def test_failed_console_logins_feed_the_defender(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Two made-up names (2 points each) reach a threshold of 4: the whole web port then
    answers 403 « adresse bloquée » to that address."""
    tmp = tmp_path_factory.mktemp("console-defender")
    async with (
        hub_running(tmp / "data", {}, defender_threshold=4) as running,
        console(running) as c,
    ):
        assert (await log_in(c, "made.up", "x")).status_code == 401
        assert (await log_in(c, "made.up2", "x")).status_code == 401
        for path in ("/exploitation/connexion", "/connexion", "/api/admin/participants"):
            refused = await c.get(path)
            assert (refused.status_code, refused.text) == (403, "adresse bloquée\n"), path
