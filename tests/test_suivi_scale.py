"""The Suivi on a big file (issue 18, « The Suivi at scale »): a file's flows and its content
come a page at a time, with plain links (first, previous, next, last) and a « go to page »
form, out-of-range pages answer 400, every page keeps the access rule, and the CSV export
and the download stay whole. Over HTTP (httpx against the app) and in Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
import uvicorn
from hubkit import HubUnderTest, Party, hub_running, make_parties
from playwright.async_api import Page, async_playwright, expect
from test_suivi_browser import ARGS, CHROMIUM, HAVE_CHROMIUM, assert_fits, log_in
from test_suivi_support import BROKER, CESAM, LEADER, sample, send

from bdi.routing.writer import Record, parse_file, write_file
from bdi.store.models import Flow, FlowOccurrence, Job, Movement, Output
from bdi.store.repo import Store
from bdi.suivi import contents
from bdi.suivi.app import FilePaging, create_app

pytestmark = pytest.mark.asyncio(loop_scope="module")
SECRET = "scale-test-secret-key-0123"
OUTSIDER = "COU010999"
FLOWS = 230  # three pages of 100 flows
BIG = "RGIE000001_00311_000900.edi"  # the CESAM's distribution to the broker, with grids
SMALL = "RCOU010234_00311_000001.edi"  # the broker's file to the leader, kept in the store
PER_PAGE = FilePaging().flows


def clé(n: int) -> str:
    return f"200800311MAR{n:07d}001"


def big_file(flows: int) -> bytes:
    """The CESAM's one-flow sample repeated, each copy under its own clé: `flows` flows."""
    [section] = parse_file(sample("RGIE000001_00311_000002.edi"))

    def copy(n: int) -> tuple[Record, ...]:
        return tuple(Record(r.name, {**r.values, "optiflux_key": clé(n)}) for r in section.records)

    records = tuple(r for n in range(flows) for r in copy(n))
    return write_file([replace(section, records=records)])


PLAIN = big_file(FLOWS)


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([CESAM, BROKER, LEADER, OUTSIDER]) as made:
        yield made


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def routed(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> AsyncIterator[HubUnderTest]:
    tmp = tmp_path_factory.mktemp("suivi-scale")
    async with hub_running(tmp / "data", parties) as hub:
        await send(hub, BIG, tmp, PLAIN)
        await send(hub, SMALL, tmp)
        yield hub


async def movement_of(hub: HubUnderTest, name: str) -> Movement:
    rows = await hub.server.hub.store.movements()
    return next(m for m in rows if m.file_name == name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def big(routed: HubUnderTest) -> Movement:
    found = await movement_of(routed, BIG)
    assert found.content_path, "a big content is a file of <data>/contents/"
    return found


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def small(routed: HubUnderTest) -> Movement:
    found = await movement_of(routed, SMALL)
    assert not found.content_path, "a small content is kept in the store"
    return found


@contextlib.asynccontextmanager
async def logged_in(
    hub: HubUnderTest, user: str, paging: FilePaging | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the Suivi (this paging), logged in as `user`."""
    app = create_app(hub.server.hub, secret_key=SECRET, paging=paging)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://suivi.test") as client:
        form = await client.get("/connexion")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        password = hub.parties[user].password
        data = {"csrf": token.group(1), "identifiant": user, "mot_de_passe": password}
        assert (await client.post("/connexion", data=data)).status_code == 303
        yield client


def flow_rows(page: str) -> list[str]:
    """The clé of each flow row of a detail page, in order."""
    return re.findall(r'class="loupe".*?<td class="">(\d{4}\w+)</td>', page, re.S)


def links(page: str) -> dict[str, str]:
    """The pager's links by their French label (the first pager of the page)."""
    found = re.findall(r'<a href="(\?[^"]+)"[^>]*>([^<]+)</a>', page)
    return {html.unescape(label): html.unescape(href) for href, label in reversed(found)}


def shown_text(page: str) -> str:
    found = re.search(r'<pre class="contenu">(.*?)</pre>', page, re.S)
    assert found is not None
    return html.unescape(found.group(1))


async def test_a_big_files_flows_come_a_page_at_a_time(routed: HubUnderTest, big: Movement) -> None:
    async with logged_in(routed, BROKER) as client:
        url = f"/fichiers/{big.id}"
        first = await client.get(url)
        assert first.status_code == 200
        assert flow_rows(first.text) == [clé(n) for n in range(PER_PAGE)]
        assert "Page 1 / 3" in first.text and "Répartitions (230)" in first.text
        assert (
            "<dd>230</dd>" in first.text and "Flux 1 à 100 sur <strong>230</strong>" in first.text
        )
        assert '<span class="inactif">« Première page</span>' in first.text
        pager = links(first.text)
        assert pager["Page suivante ›"] == "?page=2" and pager["Dernière page »"] == "?page=3"
        second = await client.get(url + pager["Page suivante ›"])
        assert flow_rows(second.text) == [clé(n) for n in range(PER_PAGE, 2 * PER_PAGE)]
        assert links(second.text)["« Première page"] == "?page=1"
        last = await client.get(url + pager["Dernière page »"])
        assert flow_rows(last.text) == [clé(n) for n in range(2 * PER_PAGE, FLOWS)]
        assert "Page 3 / 3" in last.text and "Page suivante ›</a>" not in last.text
        assert last.text.count("Grille de répartition") >= FLOWS - 2 * PER_PAGE


async def test_a_flow_on_page_two_is_reachable_and_tracking_opens_its_page(
    routed: HubUnderTest, big: Movement
) -> None:
    async with logged_in(routed, BROKER) as client:
        second = (await client.get(f"/fichiers/{big.id}?page=2")).text
        row = re.search(r'<tr id="flux-(\d+)">\s*<td class="outil"><a href="([^"]+)"', second)
        assert row is not None
        flow_id, track = row.groups()
        tracking = await client.get(track)
        assert tracking.status_code == 200 and clé(PER_PAGE) in tracking.text
        back = re.search(
            r'href="(/fichiers/\d+\?flux=\d+)#flux-(\d+)" class="contenu"', tracking.text
        )
        assert back is not None and back.group(2) == flow_id
        opened = await client.get(back.group(1))
        assert f'id="flux-{flow_id}"' in opened.text and "Page 2 / 3" in opened.text
        # a flow the file does not hold opens its first page; a malformed one is refused
        assert "Page 1 / 3" in (await client.get(f"/fichiers/{big.id}?flux=1")).text
        assert (await client.get(f"/fichiers/{big.id}?flux=x")).status_code == 400


OUT_OF_RANGE = ("0", "4", "-1", "abc", "1.5", "99999999999", "")


async def test_pages_out_of_range_answer_400(routed: HubUnderTest, big: Movement) -> None:
    async with logged_in(routed, BROKER) as client:
        for url in (f"/fichiers/{big.id}", f"/fichiers/{big.id}/contenu"):
            for number in OUT_OF_RANGE:
                if number == "":
                    continue  # no number: the first page
                response = await client.get(f"{url}?page={number}")
                assert response.status_code == 400, (url, number)
                assert "Requête invalide" in response.text
            assert (await client.get(f"{url}?page=3")).status_code == 200
            assert (await client.get(f"{url}?page=")).status_code == 200


async def test_every_page_keeps_the_access_rule(
    routed: HubUnderTest, big: Movement, small: Movement
) -> None:
    """The leader and an outsider get 404 on any page of the CESAM -> broker file (even one
    out of range: nothing tells them how many pages it has); its sender sees it all."""
    for user in (LEADER, OUTSIDER):
        async with logged_in(routed, user) as client:
            for page in ("1", "2", "3", "4"):
                for path in (f"/fichiers/{big.id}", f"/fichiers/{big.id}/contenu"):
                    response = await client.get(f"{path}?page={page}")
                    assert response.status_code == 404, (user, path, page)
            for path in ("csv", "contenu?brut=1"):
                assert (await client.get(f"/fichiers/{big.id}/{path}")).status_code == 404
            assert (await client.get(f"/fichiers/{big.id}?flux=1")).status_code == 404
    async with logged_in(routed, OUTSIDER) as client:
        assert (await client.get(f"/fichiers/{small.id}/contenu")).status_code == 404
    async with logged_in(routed, CESAM) as client:
        for page in ("1", "3"):
            assert (await client.get(f"/fichiers/{big.id}?page={page}")).status_code == 200
            assert (await client.get(f"/fichiers/{big.id}/contenu?page={page}")).status_code == 200
        assert (await client.get(f"/fichiers/{small.id}")).status_code == 404


async def test_the_csv_export_and_the_download_stay_whole(
    routed: HubUnderTest, big: Movement
) -> None:
    async with logged_in(routed, BROKER) as client:
        detail = await client.get(f"/fichiers/{big.id}?page=2")
        assert f'href="/fichiers/{big.id}/csv"' in detail.text
        export = await client.get(f"/fichiers/{big.id}/csv")
        assert export.headers["content-type"] == "text/csv; charset=utf-8"
        assert 'filename="RGIE000001_00311_000900.csv"' in export.headers["content-disposition"]
        lines = export.content.decode("utf-8-sig").split("\r\n")
        assert lines[0] == "Clé Optiflux;Apporteur;Police Apporteur;Assuré"
        assert [line.split(";")[0] for line in lines[1:-1]] == [clé(n) for n in range(FLOWS)]
        raw = await client.get(f"/fichiers/{big.id}/contenu?brut=1")
        assert raw.content == PLAIN and raw.headers["content-length"] == str(len(PLAIN))


async def test_a_big_content_comes_in_pages_of_whole_records(
    routed: HubUnderTest, big: Movement
) -> None:
    async with logged_in(routed, BROKER) as client:
        url = f"/fichiers/{big.id}/contenu"
        first = await client.get(url)
        assert "Page 1 / 3" in first.text
        pager = links(first.text)
        assert pager["Page suivante ›"] == "?page=2" and pager["Dernière page »"] == "?page=3"
        texts = [shown_text((await client.get(f"{url}?page={n}")).text) for n in (1, 2, 3)]
    assert "".join(texts) == PLAIN.decode("latin-1")
    for text in texts:
        assert {len(line) for line in text.splitlines()} == {640}
    assert texts[0].startswith("1111111111RREPGIE000001COU010234")
    assert len(texts[0].splitlines()) == FilePaging().records


async def test_a_content_kept_in_the_store_is_paged_by_the_database(
    routed: HubUnderTest, small: Movement
) -> None:
    plain = sample(SMALL)
    async with logged_in(routed, BROKER, FilePaging(flows=1, records=3)) as client:
        url = f"/fichiers/{small.id}/contenu"
        pages = [(await client.get(f"{url}?page={n}")).text for n in (1, 2, 3)]
        assert "Page 1 / 3" in pages[0]
        assert "".join(shown_text(p) for p in pages) == plain.decode("latin-1")
        assert [len(shown_text(p).splitlines()) for p in pages] == [3, 3, 1]
        assert (await client.get(f"{url}?page=4")).status_code == 400
        assert (await client.get(f"{url}?brut=1")).content == plain
        detail = await client.get(f"/fichiers/{small.id}")  # one flow a page: one page
        assert "Page 1 /" not in detail.text and "Répartitions (1)" in detail.text


async def mixed_file(store: Store) -> int:
    """A movement of a type no layout.toml type is (its flows are not all of one layout):
    répartition, prime, répartition, written straight into the store."""
    now = datetime.now(UTC)
    async with store.session() as s:
        job = Job(participant_id=CESAM, upload_name="mixed.edi", spool_name="mixed",
                  size=0, received_at=now, state="done")  # fmt: skip
        s.add(job)
        await s.flush()
        assert job.id is not None
        output = Output(job_id=job.id, seq=0, kind="delivery", participant_id=BROKER,
                        name="ZGIE000001_00311_000001.edi")  # fmt: skip
        s.add(output)
        await s.flush()
        assert output.id is not None
        movement = Movement(
            job_id=job.id, output_id=output.id, created_at=now, sender_id=CESAM,
            recipient_id=BROKER, file_name=output.name, file_type="Z", size=0, sha256="",
            content_path="none.edi", delivered=True,
        )  # fmt: skip
        flows = [Flow(layout=name, flow_key=f"MIX{n}", optiflux_key=f"MIX{n}")
                 for n, name in enumerate(("allocation", "premium", "allocation"))]  # fmt: skip
        s.add(movement)
        s.add_all(flows)
        await s.flush()
        for seq, flow in enumerate(flows):
            assert movement.id is not None and flow.id is not None
            values = {"optiflux_key": flow.flow_key, "act_number": f"AV-{seq}"}
            s.add(FlowOccurrence(
                movement_id=movement.id, flow_id=flow.id, seq=seq, layout=flow.layout,
                flow_code="X", optiflux_key=flow.flow_key, control="V",
                fields_json=json.dumps(values),
            ))  # fmt: skip
        await s.commit()
        assert movement.id is not None
        return movement.id


async def test_a_file_of_several_layouts_counts_and_exports_each(routed: HubUnderTest) -> None:
    """No file type of layout.toml mixes layouts; should one, its flows are grouped by layout
    on the page, each with its own count, and the CSV has the columns of both."""
    movement_id = await mixed_file(routed.server.hub.store)
    async with logged_in(routed, BROKER) as client:
        detail = html.unescape((await client.get(f"/fichiers/{movement_id}")).text)
        assert "Répartitions (2)" in detail and "Primes (1)" in detail
        assert detail.index("Répartitions (2)") < detail.index("Primes (1)")
        lines = (await client.get(f"/fichiers/{movement_id}/csv")).text.split("\r\n")
    assert lines[0].removeprefix("\ufeff") == (
        "Clé Optiflux;Apporteur;Police Apporteur;Assuré;N° Acte Apporteur;Code Opération;"
        "Code Apporteur"
    )
    assert lines[1:-1] == ["MIX0;;;;;;", "MIX1;;;;AV-1;;", "MIX2;;;;;;"]


class Bytes:
    """A content in memory, read as the Suivi reads its sources."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    async def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


def records(count: int, ends: list[bytes]) -> bytes:
    return b"".join(b"%010d" % n + b"x" * 630 + ends[n % len(ends)] for n in range(count))


@pytest.mark.parametrize(
    "data",
    [
        records(7, [b"\n"]),
        records(7, [b"\r\n"]),
        records(7, [b"\n", b"\r\n", b"\r\n"]),
        records(7, [b"\r\n"])[:-2],  # the last record without its terminator
        records(1, [b"\n"]),
        b"",
        b"no record at all, no line end",
    ],
)
async def test_pages_tile_the_content_at_record_boundaries(data: bytes) -> None:
    paging = contents.Paging(records=2, record_length=640)
    shown, number = [], 1
    while (page := await contents.page(Bytes(data), number, paging)) is not None:
        shown.append(page)
        number += 1
    assert b"".join(p.data for p in shown) == data
    assert all(p.start == 0 or data[p.start - 1 : p.start] == b"\n" for p in shown)
    assert all(len(p.data.splitlines()) <= 2 for p in shown)
    assert [p.number for p in shown] == list(range(1, shown[0].pages + 1))
    assert await contents.page(Bytes(data), 0, paging) is None


# --- in Chromium ----------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(routed: HubUnderTest) -> AsyncIterator[str]:
    app = create_app(routed.server.hub, secret_key=SECRET)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest_asyncio.fixture(loop_scope="module")
async def phone() -> AsyncIterator[tuple[Page, list[str]]]:
    if not HAVE_CHROMIUM:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = await browser.new_context(viewport={"width": 390, "height": 844}, locale="fr-FR")
        page = await context.new_page()
        refused: list[str] = []
        page.on(
            "console", lambda m: refused.append(m.text) if "Content Security" in m.text else None
        )
        yield page, refused
        await browser.close()


ROWS = "table.resultats > tbody > tr"


async def test_the_paged_detail_of_a_big_file_in_a_browser(
    routed: HubUnderTest, big: Movement, served: str, phone: tuple[Page, list[str]]
) -> None:
    """Page to page by the links and the « go to page » form, a grid opened, the content's
    pages: each fits a 390 px phone, with no script refused by the CSP."""
    page, refused = phone
    await log_in(page, served, BROKER, routed.parties[BROKER].password)
    await expect(page.locator("h1")).to_have_text("Menu principal")
    await page.goto(f"{served}/fichiers/{big.id}")
    await expect(page.locator(ROWS)).to_have_count(PER_PAGE)
    await expect(page.locator("section.resultat h2")).to_have_text("Répartitions (230)")
    await assert_fits(page, "détail, page 1")
    await page.locator("nav.pages-fichier").first.get_by_text("Page suivante ›").click()
    await expect(page.locator(ROWS).first).to_contain_text(clé(PER_PAGE))
    await page.locator("nav.pages-fichier").first.get_by_text("Dernière page »").click()
    await expect(page.locator(ROWS)).to_have_count(FLOWS - 2 * PER_PAGE)
    await expect(page.locator("nav.pages-fichier").first).to_contain_text("Page 3 / 3")
    await page.locator(ROWS).first.locator("details.grille summary").click()
    await expect(page.locator(ROWS).first.locator("table.grille tbody tr")).to_have_count(4)
    await page.fill("#page-flux", "2")
    await page.click("form.aller-page button")
    await expect(page.locator(ROWS).last).to_contain_text(clé(2 * PER_PAGE - 1))
    await assert_fits(page, "détail, page 2")
    await page.click("text=Afficher le contenu du fichier")
    await expect(page.locator("pre.contenu")).to_contain_text("1111111111RREPGIE000001COU010234")
    await assert_fits(page, "contenu, page 1")
    await page.locator("nav.pages-fichier").first.get_by_text("Dernière page »").click()
    await expect(page.locator("pre.contenu")).to_contain_text("9999999999")
    assert refused == []
