"""The console in a real browser: Debian's headless Chromium driven by Playwright, against the
real web port of a running hub. The journey of an operator: log in, register a participant
from its public key file, see its password once, disable it, see the audit line; and every
screen fitting a phone. Screenshots go to docs/screenshots/ when BDI_SCREENSHOTS=1."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from hubkit import HubUnderTest, Party, hub_running
from playwright.async_api import Browser, Page, async_playwright, expect
from test_console_support import new_operator, participant_key
from test_suivi_browser import ARGS, CHROMIUM, HAVE_CHROMIUM, SHOTS, assert_fits
from test_suivi_support import CIRCUIT, load_referential, send

pytestmark = pytest.mark.asyncio(loop_scope="module")
OPERATOR = "claire.bernard"
NEW_ID = "COU010888"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> AsyncIterator[tuple[HubUnderTest, str, str]]:
    """The hub with a few files routed (some inboxes wait), an operator, its console URL."""
    tmp = tmp_path_factory.mktemp("console-browser")
    async with hub_running(tmp / "data", parties) as hub:
        for name in CIRCUIT[:3]:
            await send(hub, name, tmp)
        await load_referential(hub)
        password = await new_operator(hub, OPERATOR)
        yield hub, f"http://127.0.0.1:{hub.server.web_port}/exploitation", password


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return SHOTS or tmp_path_factory.mktemp("screenshots")


async def shot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


async def log_in(page: Page, base: str, password: str) -> None:
    await page.goto(f"{base}/connexion")
    await page.fill("#identifiant", OPERATOR)
    await page.fill("#mot_de_passe", password)
    await page.click("button[type=submit]")


async def suivi_login(hub: HubUnderTest, user: str, password: str) -> int:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.server.web_port}") as c:
        form = await c.get("/connexion")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token
        data = {"csrf": token.group(1), "identifiant": user, "mot_de_passe": password}
        return (await c.post("/connexion", data=data)).status_code


async def test_register_a_participant_then_disable_it(
    served: tuple[HubUnderTest, str, str], browser: Browser, shots: Path, tmp_path: Path
) -> None:
    hub, base, password = served
    key_file = tmp_path / f"{NEW_ID}.asc"
    key = await asyncio.to_thread(participant_key, f"Courtage Exemple <{NEW_ID.lower()}@ex.test>")
    key_file.write_text(key, encoding="utf-8")
    context = await browser.new_context(viewport={"width": 1366, "height": 860}, locale="fr-FR")
    page = await context.new_page()
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    try:
        await page.goto(f"{base}/connexion")
        await shot(page, shots, "console-connexion")
        await log_in(page, base, password)
        await expect(page.locator("h1")).to_have_text("Console d'exploitation")
        await shot(page, shots, "console-accueil")

        await page.click("header >> text=Participants")
        await expect(page.locator("table.participants tbody tr")).to_have_count(len(hub.parties))
        await page.click("text=Inscrire un participant")
        await page.fill("#identifiant", NEW_ID)
        await page.fill("#nom", "Courtage Exemple")
        await page.fill("#email", "contact@courtage.test")
        await page.set_input_files("#cle_fichier", str(key_file))
        await page.click("text=Vérifier la clé")
        preview = page.locator("section.apercu")
        await expect(preview).to_contain_text(f"{NEW_ID.lower()}@ex.test")
        await expect(preview).to_contain_text("EdDSA ed25519")
        await expect(preview).to_contain_text("Aucun problème")
        await shot(page, shots, "console-apercu-cle")

        await page.click("text=Enregistrer le participant")
        await expect(page.locator("h1")).to_have_text(f"Participant {NEW_ID} inscrit")
        issued = (await page.locator("#mot-de-passe").inner_text()).strip()
        assert len(issued) == 24
        await shot(page, shots, "console-mot-de-passe")
        assert await suivi_login(hub, NEW_ID, issued) == 303  # the password works

        await page.click(f"text=Voir la fiche de {NEW_ID}")
        assert issued not in await page.content()  # shown once
        await page.click("button.danger")
        await expect(page.locator("#etat")).to_have_text("Désactivé")
        await expect(page.locator("p.succes")).to_contain_text("est désactivé")
        await shot(page, shots, "console-participant")
        assert await suivi_login(hub, NEW_ID, issued) == 401  # disabled

        await page.click("header >> text=Journal")
        await page.fill("#q", NEW_ID)
        await page.click("text=Rechercher")
        lines = page.locator("table.journal tbody tr")
        await expect(lines.first).to_contain_text("participant.disable")
        await expect(lines.first).to_contain_text(f"exploitation:{OPERATOR}")
        await expect(lines.first).to_contain_text("127.0.0.1")
        await expect(lines.nth(1)).to_contain_text("participant.add")
        await shot(page, shots, "console-journal")

        for name, path in (("console-boites", "boites"), ("console-hub", "hub"),
                           ("console-traitements", "traitements?liste=all")):  # fmt: skip
            await page.goto(f"{base}/{path}")
            await shot(page, shots, name)
    finally:
        await context.close()
    assert refused == []


PHONE_PAGES = ("/", "/participants", "/participants/nouveau", "/referentiel",
               "/traitements?liste=all", "/boites", "/adresses-bloquees", "/audit", "/hub",
               "/compte")  # fmt: skip


async def test_every_screen_fits_a_phone_390_pixels_wide(
    served: tuple[HubUnderTest, str, str], browser: Browser, shots: Path
) -> None:
    hub, base, password = served
    context = await browser.new_context(viewport={"width": 390, "height": 844}, locale="fr-FR")
    phone = await context.new_page()
    refused: list[str] = []
    phone.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    try:
        await phone.goto(f"{base}/connexion")
        await assert_fits(phone, "connexion")
        await log_in(phone, base, password)
        await expect(phone.locator("h1")).to_have_text("Console d'exploitation")
        first = sorted(hub.parties)[0]
        for path in (*PHONE_PAGES, f"/participants/{first}"):
            await phone.goto(f"{base}{path}")
            await assert_fits(phone, path)
        await phone.goto(f"{base}/compte")
        await phone.click("text=Activer la double authentification")
        await expect(phone.locator("img.qr")).to_be_visible()
        await assert_fits(phone, "totp")
        await shot(phone, shots, "console-telephone-totp")
        await phone.goto(f"{base}/participants")
        await shot(phone, shots, "console-telephone-participants")
    finally:
        await context.close()
    assert refused == []
