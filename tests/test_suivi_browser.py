"""The Suivi in a real browser: Debian's headless Chromium driven by Playwright, against the
app served by uvicorn on 127.0.0.1 over the samples routed through the real hub. Screenshots
of the main screens are written to docs/screenshots/ when BDI_SCREENSHOTS=1."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import uvicorn
from hubkit import HubUnderTest, Party, hub_running
from playwright.async_api import Browser, Page, async_playwright, expect
from support import REPO
from test_suivi_support import BROKER, LEADER, MAR, NAV, route_circuit

from bdi.suivi.app import create_app

pytestmark = pytest.mark.asyncio(loop_scope="module")
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HAVE_CHROMIUM = CHROMIUM.exists()
# the screenshots of the README are refreshed with BDI_SCREENSHOTS=1; otherwise they are
# taken all the same (they exercise the rendering) into a temporary folder
SHOTS = REPO / "docs" / "screenshots" if os.environ.get("BDI_SCREENSHOTS") else None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> AsyncIterator[tuple[HubUnderTest, str]]:
    """The hub with every sample routed, and the Suivi on a loopback port of its own."""
    tmp = tmp_path_factory.mktemp("suivi-browser")
    async with hub_running(tmp / "data", parties) as hub:
        await route_circuit(hub, tmp)
        app = create_app(hub.server.hub, secret_key="browser-test-secret-key")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # bound before uvicorn starts: the browser's first connection waits
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield hub, f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            await task
            sock.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(
        viewport={"width": 1366, "height": 860}, locale="fr-FR", accept_downloads=True
    )
    yield await context.new_page()
    await context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return SHOTS or tmp_path_factory.mktemp("screenshots")


async def shot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


async def log_in(page: Page, base: str, user: str, password: str) -> None:
    await page.goto(f"{base}/connexion")
    await page.fill("#identifiant", user)
    await page.fill("#mot_de_passe", password)
    await page.click("button[type=submit]")


async def test_login_search_by_partial_clé_track_and_open_content(
    served: tuple[HubUnderTest, str], page: Page, shots: Path
) -> None:
    hub, base = served
    await log_in(page, base, BROKER, "not the password")
    await expect(page.locator("#identifiant")).to_have_value("")
    await expect(page.locator("#mot_de_passe")).to_have_value("")
    await shot(page, shots, "connexion")
    await log_in(page, base, BROKER, hub.parties[BROKER].password)
    await expect(page.locator("h1")).to_have_text("Menu principal")
    await shot(page, shots, "menu")

    await page.click("text=Flux Répartitions")
    await page.wait_for_load_state("load")  # pickers.js (deferred) has run
    await page.select_option("#producer_code__label", "10234")  # the label fills the code
    await expect(page.locator("#producer_code")).to_have_value("10234")
    await page.fill("#optiflux_key", "mar000123")
    await page.click("button[name=envoyer]")
    await expect(page.locator(".compte-resultats")).to_contain_text("1 flux correspond")
    await expect(page.locator("table.resultats tbody tr")).to_have_count(1)
    await shot(page, shots, "recherche-repartitions")

    async with page.expect_download() as info:
        await page.click("text=Extraction au format CSV")
    download = await info.value
    data = await asyncio.to_thread(Path(await download.path()).read_bytes)
    assert data.startswith(
        b"\xef\xbb\xbfCl\xc3\xa9 Optiflux;Apporteur;Police Apporteur;Assur\xc3\xa9\r\n"
    )
    assert f"{MAR};10234;SIA-2008-00123;ARMEMENT EXEMPLE SA\r\n".encode() in data

    await page.click("a.loupe")
    await expect(page.locator("h1")).to_contain_text("Suivi du flux")
    await expect(page.locator("table.suivi tbody tr")).to_have_count(7)
    await expect(page.locator("span.barre")).to_have_count(4)  # files the broker cannot open
    await shot(page, shots, "suivi-flux")

    await page.locator("a.contenu").last.click()
    await expect(page.locator("h1")).to_contain_text("RGIE000001_00311_000002.edi")
    await page.click("details.grille summary")
    await expect(page.locator("table.grille tbody tr")).to_have_count(4)
    await shot(page, shots, "detail-fichier")
    await page.click("text=Afficher le contenu du fichier")
    await expect(page.locator("pre.contenu")).to_contain_text("1111111111RREPGIE000001COU010234")
    await shot(page, shots, "contenu-fichier")


async def test_dismiss_a_rejected_flow_with_the_trash_icon(
    served: tuple[HubUnderTest, str], page: Page, shots: Path
) -> None:
    hub, base = served
    await log_in(page, base, BROKER, hub.parties[BROKER].password)
    await (
        page.locator("tr", has=page.locator("th", has_text="Primes"))
        .locator("text=En Attente")
        .click()
    )
    rejected = page.locator("#rejetes table.resultats tbody tr")
    await expect(rejected).to_have_count(1)
    await expect(rejected).to_contain_text("AV-2008-002")
    await expect(page.locator("#en-cours table.resultats tbody tr")).to_have_count(1)
    await shot(page, shots, "flux-en-attente")
    await page.click("#rejetes button.poubelle")
    await expect(page.locator("#rejetes .vide")).to_have_text("Aucun flux dans cette liste.")
    await expect(page.locator("#en-cours table.resultats tbody tr")).to_have_count(1)


async def test_incomplete_répartitions_files_and_search_by_clé(
    served: tuple[HubUnderTest, str], page: Page, shots: Path
) -> None:
    hub, base = served
    await log_in(page, base, BROKER, hub.parties[BROKER].password)
    await page.click("text=Liste des Répartitions en attente de complément au CESAM")
    await expect(page.locator("table.resultats tbody tr")).to_contain_text(NAV)
    await shot(page, shots, "repartitions-incompletes")

    await page.goto(f"{base}/")
    await page.click("text=Recherche de Fichiers ayant transité par la BDI")
    await page.click("button[name=envoyer]")
    await expect(page.locator(".compte-resultats")).to_contain_text("fichiers correspondent")
    await shot(page, shots, "recherche-fichiers")

    await page.goto(f"{base}/")
    await page.click("text=Recherche par Clé Optiflux")
    await page.fill("#cle", MAR)
    await page.click("button[type=submit].principal")
    await expect(page.locator("section.resultat h2")).to_have_count(5)
    await shot(page, shots, "recherche-par-cle")


async def test_leader_pending_lists(
    served: tuple[HubUnderTest, str], page: Page, shots: Path
) -> None:
    hub, base = served
    await log_in(page, base, LEADER, hub.parties[LEADER].password)
    await page.goto(f"{base}/attente/dispaches")
    await expect(page.locator("section.liste-attente h2")).to_have_count(4)
    await expect(page.locator("#envoyes-cesam table.resultats tbody tr")).to_have_count(2)
    await shot(page, shots, "attente-aperiteur")


async def test_the_main_pages_fit_a_phone_390_pixels_wide(
    served: tuple[HubUnderTest, str], browser: Browser, shots: Path
) -> None:
    """No horizontal scroll of the page at 390 × 844 (wide tables scroll inside their box),
    and no Content-Security-Policy violation in the console."""
    hub, base = served
    context = await browser.new_context(viewport={"width": 390, "height": 844}, locale="fr-FR")
    phone = await context.new_page()
    refused: list[str] = []
    phone.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    try:
        await phone.goto(f"{base}/connexion")
        await assert_fits(phone, "connexion")
        await log_in(phone, base, BROKER, hub.parties[BROKER].password)
        await expect(phone.locator("h1")).to_have_text("Menu principal")
        for path in PHONE_PAGES:
            await phone.goto(f"{base}{path}")
            await phone.wait_for_load_state("load")
            await assert_fits(phone, path)
        await phone.goto(f"{base}/fichiers?envoyer=1")
        await shot(phone, shots, "telephone-fichiers")
        await phone.goto(f"{base}/recherche/allocations?envoyer=1")
        await phone.click("a.loupe")
        await expect(phone.locator("h1")).to_contain_text("Suivi du flux")
        await assert_fits(phone, "suivi")
        await shot(phone, shots, "telephone-suivi")
    finally:
        await context.close()
    assert refused == []


PHONE_PAGES = (
    "/",
    "/recherche/allocations",
    "/recherche/allocations?envoyer=1",
    "/recherche/accounts_by_balance?envoyer=1",
    "/attente/primes",
    "/repartitions-incompletes",
    "/fichiers",
    "/fichiers?envoyer=1",
    f"/cle?cle={MAR}",
    "/differences-courtages",
)


async def page_width(page: Page) -> int:
    return int(await page.evaluate("document.documentElement.scrollWidth"))


# the elements that stick out past the right edge of the viewport (for a failure's message)
STICKING_OUT = """() => Array.from(document.querySelectorAll('body *'))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
  .filter(e => !e.parentElement.closest('table'))
  .map(e => e.tagName.toLowerCase() + '.' + e.className + ' ' +
            Math.round(e.getBoundingClientRect().right))
  .slice(0, 8)"""


async def assert_fits(page: Page, what: str) -> None:
    width = await page_width(page)
    assert width <= 390, (what, width, await page.evaluate(STICKING_OUT))
