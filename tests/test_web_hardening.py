"""Web hardening (HUB.md, issue 14): server-side sessions that a logout, a disabled participant
or a password reset end at once (a cookie kept aside opens nothing); security headers and no
inline script, handler or style anywhere; hostile ids, pages and dates answered 400/404 with a
complete body, never 500 nor a broken stream, through the real web port."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from hubkit import HubUnderTest, Party, hub_running
from sqlmodel import col, select
from support import REPO
from test_suivi_support import BROKER, COGEAS, MAR, route_circuit

from bdi.admin.wiring import service_for
from bdi.store.models import WebSession
from bdi.suivi import queries as q
from bdi.suivi.app import create_app
from bdi.suivi.auth import COOKIE

pytestmark = pytest.mark.asyncio(loop_scope="module")
SECRET = "hardening-test-secret-key"
# an inline <script> (one without src), an on…= handler, a style attribute
INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<[^>]+\son[a-z]+\s*=|<[^>]+\sstyle\s*=", re.I)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def routed(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> AsyncIterator[HubUnderTest]:
    tmp = tmp_path_factory.mktemp("hardening")
    async with hub_running(tmp / "data", parties) as hub:
        await route_circuit(hub, tmp)
        yield hub


def real_port(hub: HubUnderTest) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.server.web_port}")


def asgi(hub: HubUnderTest) -> httpx.AsyncClient:
    app = create_app(hub.server.hub, secret_key=SECRET)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://suivi.test")


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def log_in(c: httpx.AsyncClient, hub: HubUnderTest, user: str) -> None:
    form = await c.get("/connexion")
    password = hub.parties[user].password
    data = {"csrf": csrf_of(form.text), "identifiant": user, "mot_de_passe": password}
    response = await c.post("/connexion", data=data)
    assert response.status_code == 303, response.text


async def sessions_of(hub: HubUnderTest, user: str) -> int:
    async with hub.server.hub.store.session() as s:
        query = select(WebSession).where(col(WebSession.participant_id) == user)
        return len((await s.exec(query)).all())


# --- sessions ------------------------------------------------------------------------------------


async def test_a_cookie_kept_after_logout_opens_nothing(routed: HubUnderTest) -> None:
    async with real_port(routed) as c, real_port(routed) as replay:
        await log_in(c, routed, BROKER)
        saved = c.cookies[COOKIE]
        menu = await c.get("/")
        assert menu.status_code == 200
        replay.cookies.set(COOKIE, saved)
        assert (await replay.get("/")).status_code == 200  # the same session, elsewhere
        out = await c.post("/deconnexion", data={"csrf": csrf_of(menu.text)})
        assert (out.status_code, out.headers["location"]) == (303, "/connexion")
        replay.cookies.set(COOKIE, saved)
        for url in ("/", "/fichiers?envoyer=1", "/recherche/allocations/csv"):
            response = await replay.get(url)
            assert (response.status_code, response.headers["location"]) == (303, "/connexion")
        refused = await replay.post("/deconnexion", data={"csrf": csrf_of(menu.text)})
        assert refused.status_code == 303 and refused.headers["location"] == "/connexion"


async def test_the_store_keeps_only_a_hash_of_the_cookie(routed: HubUnderTest) -> None:
    async with asgi(routed) as c:
        await log_in(c, routed, BROKER)
        token = c.cookies[COOKIE]
        async with routed.server.hub.store.session() as s:
            ids = (await s.exec(select(WebSession.id))).all()
        assert token not in ids and all(len(i) == 64 for i in ids)


@pytest.mark.parametrize("action", ["disable", "reset-password"])
async def test_disable_and_password_reset_end_the_open_sessions_at_once(
    routed: HubUnderTest, action: str
) -> None:
    service = service_for(routed.server.hub, "test")
    async with asgi(routed) as browser, real_port(routed) as other_browser:
        await log_in(browser, routed, COGEAS)
        await log_in(other_browser, routed, COGEAS)
        assert await sessions_of(routed, COGEAS) >= 2
        if action == "disable":
            await service.set_active(COGEAS, False)
            await service.set_active(COGEAS, True)  # enabled again: the sessions stay closed
        else:
            routed.parties[COGEAS].password = (await service.reset_password(COGEAS))["password"]
        assert await sessions_of(routed, COGEAS) == 0
        for c in (browser, other_browser):
            assert (await c.get("/")).status_code == 303
        await log_in(browser, routed, COGEAS)
        assert (await browser.get("/")).status_code == 200


# --- headers and inline code ---------------------------------------------------------------------


def assert_security_headers(response: httpx.Response) -> None:
    url = str(response.url)
    csp = response.headers.get("content-security-policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";")}
    assert directives.get("script-src") == "script-src 'self'", url
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", url
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, url
    assert response.headers.get("referrer-policy") in ("same-origin", "no-referrer"), url
    assert "camera=()" in response.headers.get("permissions-policy", ""), url
    assert response.headers.get("x-content-type-options") == "nosniff", url


async def test_every_answer_of_the_web_port_has_the_security_headers(
    routed: HubUnderTest,
) -> None:
    async with real_port(routed) as c:
        for url in ("/connexion", "/static/suivi.css", "/static/pickers.js", "/nope"):
            assert_security_headers(await c.get(url))
        for url in ("/api/admin/openapi.json", "/api/admin/participants", "/api/uploads/x"):
            assert_security_headers(await c.get(url))
        await log_in(c, routed, BROKER)
        for url in ("/", "/recherche/allocations?envoyer=1", "/fichiers/csv", "/suivi/0"):
            assert_security_headers(await c.get(url))


async def test_no_template_has_inline_script_handler_or_style() -> None:
    templates = sorted((REPO / "suivi" / "templates").glob("*.html"))
    assert templates
    for path in templates:
        assert not INLINE.search(path.read_text(encoding="utf-8")), path.name


async def test_no_page_has_inline_script_handler_or_style(routed: HubUnderTest) -> None:
    hub = routed.server.hub
    search = q.Search.of(hub.layout, "allocations", {})
    (hit,) = [h async for h in q.search_rows(hub.store, search, BROKER)]
    async with real_port(routed) as c:
        assert not INLINE.search((await c.get("/connexion")).text)
        await log_in(c, routed, BROKER)
        listing = await c.get("/fichiers?envoyer=1")
        movement = re.findall(r'href="/fichiers/(\d+)"', listing.text)[0]
        pages = [
            "/",
            "/recherche/allocations?envoyer=1",
            f"/suivi/{hit.flow_id}",
            "/attente/primes",
            "/repartitions-incompletes",
            "/fichiers?envoyer=1",
            f"/fichiers/{movement}",
            f"/fichiers/{movement}/contenu",
            f"/cle?cle={MAR}",
            "/differences-courtages",
            "/nope",
        ]
        for url in pages:
            page = await c.get(url)
            assert page.status_code in (200, 404), url
            assert not INLINE.search(page.text), url


# --- hostile ids, pages and dates ----------------------------------------------------------------

HUGE = "99999999999999999999999"
BAD_NUMBERS = (HUGE, "9223372036854775808", "-1", "0", "abc", "1e3", "²", "%00", "1000001")
BAD_DATES = ("9999-12-31", "0001-01-01", "2008-02-30", "31/12/2008", "+2008-01-01", "x" * 300)
HOSTILE = [
    f"/suivi/{HUGE}",
    "/suivi/9223372036854775807",
    "/suivi/9223372036854775808",
    "/suivi/-1",
    "/suivi/abc",
    f"/fichiers/{HUGE}",
    f"/fichiers/{HUGE}/contenu",
    f"/fichiers/{HUGE}/contenu?brut=1",
    "/fichiers/9223372036854775808",
    *(f"/recherche/allocations?envoyer=1&page={n}" for n in BAD_NUMBERS),
    *(f"/recherche/accounts_claims_paid?envoyer=1&page={n}" for n in BAD_NUMBERS),
    *(f"/fichiers?envoyer=1&page={n}" for n in BAD_NUMBERS),
    *(f"/repartitions-incompletes?page={n}" for n in BAD_NUMBERS),
    *(f"/attente/primes?page_rejetes={n}&page_en-cours={n}" for n in BAD_NUMBERS),
    *(f"/cle?cle={MAR}&page_allocations={n}" for n in BAD_NUMBERS),
    *(f"/fichiers?envoyer=1&au={d}" for d in BAD_DATES),
    *(f"/fichiers?envoyer=1&du={d}&au=2008-12-31" for d in BAD_DATES),
    *(f"/fichiers/csv?au={d}&envoyer=1" for d in BAD_DATES),
    *(f"/fichiers/csv?du={d}" for d in BAD_DATES),
    "/fichiers/csv?du=1900-01-01&au=9998-12-31",
    "/fichiers?envoyer=1&du=9998-12-31&au=1900-01-01",
    f"/recherche/allocations?envoyer=1&producer_code={HUGE}&optiflux_key=%25_%5C",
    "/recherche/allocations/csv?insured_name=%00&optiflux_key=" + "Z" * 5000,
    "/recherche/premiums?envoyer=1&insured_name=%22%27%3B--",
    "/recherche/accounts_by_balance/csv?balance=²&currency=%00",
    "/fichiers/csv?nom=%25&type=%00&expediteur=" + "é" * 500,
    f"/cle?cle=%22{HUGE}%22",
    "/attente/primes/rejetes/csv?page=-5",
    "/recherche/nope/csv",
    "/attente/nope/rejetes/csv",
    "/attente/primes/nope/csv",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def logged_in(routed: HubUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    async with real_port(routed) as c:
        await log_in(c, routed, BROKER)
        yield c


@pytest.mark.parametrize("url", HOSTILE)
async def test_hostile_ids_pages_and_dates_never_break(
    logged_in: httpx.AsyncClient, url: str
) -> None:
    response = await logged_in.get(url)  # a stream broken midway raises here
    assert response.status_code < 500, (url, response.status_code)
    if response.headers["content-type"].startswith("text/csv"):
        body = response.content
        assert response.status_code == 200 and body.startswith(b"\xef\xbb\xbf"), url
        assert body.endswith(b"\r\n"), url
    else:
        assert response.text.rstrip().endswith("</html>"), url
    if response.status_code >= 400:
        assert response.status_code in (400, 404), url
        assert "Retour au menu principal" in response.text, url


async def test_out_of_range_values_are_refused_with_400_or_404(
    logged_in: httpx.AsyncClient,
) -> None:
    expected = {
        f"/suivi/{HUGE}": 404,
        f"/fichiers/{HUGE}": 404,
        "/recherche/allocations?envoyer=1&page=0": 400,
        f"/recherche/allocations?envoyer=1&page={HUGE}": 400,
        "/fichiers?envoyer=1&au=9999-12-31": 400,
        "/fichiers/csv?au=9999-12-31&envoyer=1": 400,
        "/fichiers?envoyer=1&du=2008-02-30": 400,
        "/recherche/allocations?envoyer=1&page=1000000": 200,  # far, but in range: empty
    }
    for url, status in expected.items():
        response = await logged_in.get(url)
        assert response.status_code == status, url
    page = html.unescape((await logged_in.get("/fichiers?envoyer=1&au=9999-12-31")).text)
    assert "Requête invalide" in page and "Erreur 400 : date hors limites." in page
    dismiss = await logged_in.post(f"/attente/primes/rejetes/{HUGE}/supprimer")
    assert dismiss.status_code in (403, 404)  # no CSRF token, and no such flow anyway
    menu = await logged_in.get("/")
    dismiss = await logged_in.post(
        f"/attente/primes/rejetes/{HUGE}/supprimer", data={"csrf": csrf_of(menu.text)}
    )
    assert dismiss.status_code == 404
