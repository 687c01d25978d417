"""The Suivi over HTTP (httpx against the ASGI app, in the hub's own event loop): login,
sessions, CSRF, lockout per (id, address), pages, paging, CSV exports and the 404 answer to other
participants' flow and file ids."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from hubkit import HubUnderTest, Party, hub_running
from starlette.types import ASGIApp
from test_suivi_support import (
    BROKER,
    COGEAS,
    GENERALI,
    LEADER,
    MAR,
    NAV,
    insert_allocations,
    route_circuit,
)

from bdi.suivi import pending as p
from bdi.suivi import queries as q
from bdi.suivi.app import create_app
from bdi.suivi.auth import COOKIE, Lockout, LockoutPolicy

pytestmark = pytest.mark.asyncio(loop_scope="module")
SECRET = "test-secret-key-0123456789"
VOLUME_USER, VOLUME_LEADER = "AGT005120", "CIE000452"
STRANGER, OWNER = "203.0.113.66", "198.51.100.7"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def routed(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> AsyncIterator[HubUnderTest]:
    tmp = tmp_path_factory.mktemp("suivi-http")
    async with hub_running(tmp / "data", parties) as hub:
        await route_circuit(hub, tmp)
        await insert_allocations(hub.server.hub.store, VOLUME_USER, VOLUME_LEADER, 120)
        yield hub


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture(loop_scope="module")
async def client(routed: HubUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(routed.server.hub, secret_key=SECRET)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://suivi.test") as c:
        yield c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def login(client: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    form = await client.get("/connexion")
    data = {"csrf": csrf_of(form.text), "identifiant": user, "mot_de_passe": password}
    return await client.post("/connexion", data=data)


async def logged_in(
    client: httpx.AsyncClient, routed: HubUnderTest, user: str
) -> httpx.AsyncClient:
    response = await login(client, user, routed.parties[user].password)
    assert response.status_code == 303, response.text
    return client


async def test_login_then_logout(client: httpx.AsyncClient, routed: HubUnderTest) -> None:
    assert (await client.get("/")).headers["location"] == "/connexion"
    response = await login(client, BROKER, routed.parties[BROKER].password)
    assert (response.status_code, response.headers["location"]) == (303, "/")
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    menu = await client.get("/")
    assert menu.status_code == 200
    assert "Recherche par Flux" in menu.text and "Recherche par Fichier" in menu.text
    assert BROKER in menu.text and "Liste des Répartitions en attente de complément" in menu.text
    out = await client.post("/deconnexion", data={"csrf": csrf_of(menu.text)})
    assert (out.status_code, out.headers["location"]) == (303, "/connexion")
    assert (await client.get("/")).status_code == 303


async def test_wrong_credentials_clear_both_fields(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    for user, password in ((BROKER, "wrong"), ("COU999999", "x"), ("", "")):
        response = await login(client, user, password)
        assert response.status_code == 401
        assert 'name="identifiant" value=""' in response.text
        assert 'name="mot_de_passe" type="password" value=""' in response.text
        assert (await client.get("/")).status_code == 303


async def test_secure_cookies_when_served_over_tls(routed: HubUnderTest) -> None:
    app = create_app(routed.server.hub, secret_key=SECRET, secure_cookies=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://suivi.test") as c:
        response = await login(c, BROKER, routed.parties[BROKER].password)
        assert "Secure" in response.headers["set-cookie"]
        assert (await c.get("/")).status_code == 200


async def test_every_post_needs_the_sessions_csrf_token(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    await client.get("/connexion")
    password = routed.parties[BROKER].password
    refused = await client.post(
        "/connexion", data={"identifiant": BROKER, "mot_de_passe": password}
    )
    assert refused.status_code == 403
    await logged_in(client, routed, BROKER)
    assert (await client.post("/deconnexion", data={"csrf": "forged"})).status_code == 403
    assert (await client.post("/deconnexion")).status_code == 403
    assert (await client.get("/")).status_code == 200  # still logged in
    flow = await rejected_flow(routed)
    url = f"/attente/primes/rejetes/{flow}/supprimer"
    assert (await client.post(url, data={"csrf": "forged"})).status_code == 403
    assert flow in await rejected_ids(routed)


async def rejected_flow(routed: HubUnderTest) -> int:
    (flow,) = await rejected_ids(routed)
    return flow


async def rejected_ids(routed: HubUnderTest) -> list[int]:
    hub = routed.server.hub
    plist = p.list_named(BROKER, "rejetes")
    assert plist is not None
    return [
        h.flow_id async for h in p.pending_rows(hub.store, hub.layout, BROKER, "premium", plist)
    ]


async def test_repeated_failures_lock_that_address_out_of_that_id_only(
    routed: HubUnderTest,
) -> None:
    """A stranger failing on an id locks itself out, not the participant (HUB.md)."""
    clock = Clock()
    policy = LockoutPolicy(free_failures=2, delay_step=0.0, max_failures=4, lock_seconds=60)
    app = create_app(routed.server.hub, secret_key=SECRET, lockout=Lockout(policy, clock))
    password = routed.parties[LEADER].password
    async with client_from(app, STRANGER) as c:
        statuses = [(await login(c, LEADER, "bad")).status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        locked = await login(c, LEADER, password)
        assert locked.status_code == 429 and "Trop de tentatives" in locked.text
        assert (await login(c, BROKER, routed.parties[BROKER].password)).status_code == 303
    async with client_from(app, OWNER) as c:
        assert (await login(c, LEADER, password)).status_code == 303
    clock.now += 61
    async with client_from(app, STRANGER) as c:
        assert (await login(c, LEADER, password)).status_code == 303


def client_from(app: ASGIApp, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://suivi.test")


async def test_failures_from_anywhere_only_slow_an_id_down() -> None:
    clock = Clock()
    lockout = Lockout(
        LockoutPolicy(free_failures=2, delay_step=1.5, max_delay=4, max_failures=3), clock
    )
    delays = []
    for n in range(5):
        delays.append(lockout.delay("cou010234"))
        lockout.failed("COU010234", f"192.0.2.{n}")  # never 3 from one address: no lock
    assert delays == [0, 0, 1.5, 3.0, 4]
    assert not any(lockout.locked("COU010234", f"192.0.2.{n}") for n in range(5))
    clock.now += 15 * 60 + 1  # a quiet spell as long as a lock
    assert lockout.delay("COU010234") == 0
    lockout.failed("COU010234", STRANGER)
    lockout.succeeded("COU010234", OWNER)
    assert lockout.delay("COU010234") == 0 and not lockout.locked("COU010234", OWNER)


async def test_changed_credentials_close_the_session(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    await logged_in(client, routed, COGEAS)
    assert (await client.get("/")).status_code == 200
    store = routed.server.hub.store
    row = await store.participant(COGEAS)
    assert row is not None
    await store.update_participant(COGEAS, credentials_version=row.credentials_version + 1)
    try:
        assert (await client.get("/")).status_code == 303
    finally:
        await store.update_participant(COGEAS, credentials_version=row.credentials_version)


async def test_a_forged_or_expired_cookie_is_no_session(routed: HubUnderTest) -> None:
    clock = Clock()
    app = create_app(routed.server.hub, secret_key=SECRET, clock=clock, session_seconds=60)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://suivi.test") as c:
        await logged_in(c, routed, BROKER)
        good = c.cookies[COOKIE]
        c.cookies.set(COOKIE, good[:-3] + "AAA")
        assert (await c.get("/")).status_code == 303
        c.cookies.set(COOKIE, good)
        assert (await c.get("/")).status_code == 200
        clock.now += 61
        assert (await c.get("/")).status_code == 303


async def test_fifty_rows_a_page_with_previous_and_next(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    await logged_in(client, routed, VOLUME_USER)
    url = "/recherche/allocations?envoyer=1"
    first = await client.get(url)
    assert "<strong>120</strong> flux correspondent" in first.text
    assert first.text.count('class="loupe"') == 50
    assert "Page 1 / 3" in first.text and first.text.count("Suivant »</a>") == 2
    assert '<span class="inactif">« Précédent</span>' in first.text
    third = await client.get(url + "&page=3")
    assert third.text.count('class="loupe"') == 20
    assert "« Précédent</a>" in third.text and "Suivant »</a>" not in third.text
    narrowed = await client.get(url + "&insured_name=assure 11")
    assert "<strong>11</strong> flux" in narrowed.text  # ASSURE 11, 110..119


async def test_csv_export_has_every_row_in_excels_french_format(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    await logged_in(client, routed, VOLUME_USER)
    response = await client.get("/recherche/allocations/csv?envoyer=1")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="allocations.csv"' in response.headers["content-disposition"]
    body = response.content
    assert body.startswith(b"\xef\xbb\xbf")
    lines = body.decode("utf-8-sig").split("\r\n")
    assert lines[0] == "Clé Optiflux;Apporteur;Police Apporteur;Assuré"
    assert len(lines) == 1 + 120 + 1 and lines[-1] == ""
    assert lines[1].split(";")[1:] == ["05120", "POL-119", "ASSURE 119"]


async def test_csv_amounts_dates_and_formula_neutralisation(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    await logged_in(client, routed, BROKER)
    balance = await client.get("/recherche/accounts_by_balance/csv")
    assert balance.content.decode("utf-8-sig").split("\r\n")[1] == "2008030001;10234;-3029,75;EUR"
    lines = await client.get("/attente/primes/en-cours/csv")
    header, row = lines.content.decode("utf-8-sig").split("\r\n")[:2]
    assert header.endswith(";Date;Heure;Expéditeur;Destinataire;Commentaire")
    assert re.search(
        r";\d\d/\d\d/20\d\d;\d\d:\d\d:\d\d;COU010234;CIE000311;Reçu par l'apériteur$", row
    )
    store = routed.server.hub.store
    await insert_allocations(store, "AGT005120", "APE007566", 1, insured="=HYPERLINK(1)")
    await logged_in(client, routed, COGEAS)
    text = (await client.get("/recherche/allocations/csv?insured_name=hyperlink")).text
    assert text.split("\r\n")[1].endswith(";05120;POL-0;'=HYPERLINK(1) 0")


async def test_pages_of_every_screen(client: httpx.AsyncClient, routed: HubUnderTest) -> None:
    await logged_in(client, routed, BROKER)
    hub = routed.server.hub
    search = q.Search.of(hub.layout, "allocations", {})
    (hit,) = [h async for h in q.search_rows(hub.store, search, BROKER)]
    pages = {
        "/recherche/allocations": "Numéro de Police Apporteur",
        f"/recherche/allocations?envoyer=1&optiflux_key={MAR[4:12].lower()}": MAR,
        "/recherche/premiums?envoyer=1&producer_code__label=10234": "AV-2008-002",
        "/recherche/accounts_claims_paid?envoyer=1": "SIN-2008-0057",
        "/recherche/brokerage_diff_paid_by_premium?envoyer=1": "AV-2008-001",
        f"/suivi/{hit.flow_id}": "Validé par l'apériteur",
        "/attente/primes": "Flux rejetés",
        "/attente/repartitions": "Flux en cours de traitement",
        "/repartitions-incompletes": NAV,
        "/fichiers?envoyer=1": "HGIE000001_00311_000003.edi",
        "/fichiers?envoyer=1&nom=hgie": "1</strong> fichier correspond",
        f"/cle?cle={MAR}": "Comptes Financiers",
        "/differences-courtages": "Différences de Courtages sur Prime Emise",
    }
    for url, expected in pages.items():
        response = await client.get(url)
        assert response.status_code == 200, url
        assert expected in html.unescape(response.text), url
    tracking = await client.get(f"/suivi/{hit.flow_id}")
    assert tracking.text.count('class="barre"') == 4 and tracking.text.count('class="contenu"') == 3


async def test_file_detail_grid_and_content(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    await logged_in(client, routed, GENERALI)
    listing = await client.get("/fichiers?envoyer=1&nom=RGIE")
    movement = int(re.findall(r'href="/fichiers/(\d+)"', listing.text)[0])
    detail = await client.get(f"/fichiers/{movement}")
    assert "Grille de répartition" in detail.text and "Part de marché" in detail.text
    assert "15,00000" in detail.text  # GENERALI's 15 %
    content = await client.get(f"/fichiers/{movement}/contenu")
    assert content.status_code == 200 and "1111111111RREPGIE000001CIE000452" in content.text
    raw = await client.get(f"/fichiers/{movement}/contenu?brut=1")
    assert raw.content.startswith(b"1111111111RREP")


async def test_other_participants_flow_and_file_ids_answer_404(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    hub = routed.server.hub
    search = q.Search.of(hub.layout, "allocations", {})
    (mar,) = [h async for h in q.search_rows(hub.store, search, BROKER)]
    to_generali = next(m for m in await hub.store.movements(GENERALI) if m.file_type == "R")
    flow = await rejected_flow(routed)
    await logged_in(client, routed, "COU010999")
    menu = await client.get("/")
    for url in (
        f"/suivi/{mar.flow_id}",
        f"/fichiers/{to_generali.id}",
        f"/fichiers/{to_generali.id}/contenu",
        f"/fichiers/{to_generali.id}/contenu?brut=1",
        "/suivi/999999",
        "/fichiers/999999",
        "/recherche/nope",
        "/attente/nope",
    ):
        response = await client.get(url)
        assert response.status_code == 404, url
        assert "Page introuvable" in response.text
    dismiss = await client.post(
        f"/attente/primes/rejetes/{flow}/supprimer", data={"csrf": csrf_of(menu.text)}
    )
    assert dismiss.status_code == 404
    await logged_in(client, routed, BROKER)  # the broker sees the flow, not GENERALI's file
    assert (await client.get(f"/suivi/{mar.flow_id}")).status_code == 200
    assert (await client.get(f"/fichiers/{to_generali.id}")).status_code == 404
    assert (await client.get(f"/fichiers/{to_generali.id}/contenu")).status_code == 404


async def test_trash_icon_dismisses_a_rejected_flow(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    await logged_in(client, routed, LEADER)
    page = await client.get("/attente/primes")
    assert page.text.count('class="poubelle"') == 1  # rejected lists only
    action = re.search(r'action="(/attente/primes/rejetes-apporteur/\d+/supprimer)"', page.text)
    assert action is not None
    done = await client.post(action.group(1), data={"csrf": csrf_of(page.text)})
    assert (done.status_code, done.headers["location"]) == (303, "/attente/primes")
    assert 'class="poubelle"' not in (await client.get("/attente/primes")).text
    again = await client.post(action.group(1), data={"csrf": csrf_of(page.text)})
    assert again.status_code == 404
    assert await rejected_ids(routed)  # the broker's own list is untouched


def result_rows(page: str) -> list[tuple[str, dict[str, str]]]:
    """Each row of a result table: its tracking link and its cells by column label."""
    labels = [html.unescape(x) for x in re.findall(r'<th scope="col">([^<]*)</th>', page)]
    rows = []
    for body in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        link = re.search(r'<a href="([^"]+)" class="loupe"', body)
        if link:
            cells = [html.unescape(c) for c in re.findall(r'<td class="(?:num)?">(.*?)</td>', body)]
            rows.append((link.group(1), dict(zip(labels, cells, strict=True))))
    return rows


def tracking_summary(page: str) -> dict[str, str]:
    found = re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", page)
    return {
        html.unescape(label): "" if text == "—" else html.unescape(text) for label, text in found
    }


async def test_the_tracking_summary_shows_what_the_search_row_shows(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    """One value, one answer: both read the latest occurrence of the user's own movements."""
    for user, file_number in ((BROKER, ""), (LEADER, "AGCS-S08-0057")):
        await logged_in(client, routed, user)
        url = "/recherche/settlements?envoyer=1&producer_file_number=SIN-2008-0057"
        [(track, cells)] = result_rows((await client.get(url)).text)
        # the leader adds its file number in the leader -> CESAM file: the broker may not
        # open that file, so neither its search nor the tracking shows that number
        assert cells["Dossier Apériteur"] == file_number, user
        assert tracking_summary((await client.get(track)).text) == cells, user
    for user in (BROKER, LEADER, GENERALI):
        await logged_in(client, routed, user)
        for search_id in q.SEARCH_OF_LAYOUT.values():
            rows = result_rows((await client.get(f"/recherche/{search_id}?envoyer=1")).text)
            for track, cells in rows:
                summary = tracking_summary((await client.get(track)).text)
                assert summary == cells, (user, search_id, track)
    await logged_in(client, routed, BROKER)  # the §8.9 exception: the incomplete list's row
    [(track, cells)] = result_rows((await client.get("/repartitions-incompletes")).text)
    assert cells["Clé Optiflux"] == NAV
    assert tracking_summary((await client.get(track)).text) == cells


async def test_the_incomplete_list_is_no_search_and_does_not_say_so(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    await logged_in(client, routed, BROKER)
    listed = html.unescape((await client.get("/repartitions-incompletes")).text)
    assert "<strong>1</strong> répartition en attente de complément" in listed
    await logged_in(client, routed, "COU010999")
    empty = html.unescape((await client.get("/repartitions-incompletes")).text)
    assert "Aucune répartition en attente de complément" in empty
    for page in (listed, empty):
        assert "votre recherche" not in page and "correspond" not in page


async def test_no_csv_export_button_for_an_empty_result(
    client: httpx.AsyncClient, routed: HubUnderTest
) -> None:
    await logged_in(client, routed, BROKER)
    buttons = {
        "/recherche/allocations?envoyer=1": 1,
        "/recherche/allocations?envoyer=1&optiflux_key=NOPE": 0,
        "/recherche/allocations?envoyer=1&page=9": 1,  # past the last page: rows to export
        "/fichiers?envoyer=1": 1,
        "/fichiers?envoyer=1&nom=NOPE": 0,
        "/attente/primes": 2,  # en cours, rejetés
        "/attente/repartitions": 0,  # answered by the CESAM, nothing rejected
        "/repartitions-incompletes": 1,
    }
    for url, count in buttons.items():
        page = (await client.get(url)).text
        assert page.count('class="bouton"') == count, url
        assert page.count("Extraction") == count, url
    await logged_in(client, routed, "COU010999")
    for url in ("/recherche/premiums?envoyer=1", "/attente/primes", "/repartitions-incompletes"):
        page = (await client.get(url)).text
        assert 'class="bouton"' not in page and "Extraction" not in page, url
