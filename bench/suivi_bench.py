"""Benchmark of the Suivi's queries on a large store (OPTIFLUX.md §8.4).

1 M movements / 300 k flows are generated straight into a SQLite store (the hub's schema,
bulk inserts through the sqlite3 module): 25 producers, 10 leaders, the CESAM; each flow
goes producer -> leader -> CESAM -> leader, and one flow in three has a fourth movement
(the CESAM's distribution to the producer). Flows are répartitions, premiums, bulletins,
dispaches and comptes financiers in the proportions 4/3/1/1/1.

Measured through `bdi.suivi.queries.search_page` (count + first page, as the screen does),
for a producer, a leader and the CESAM:
  - search by partial clé (a substring of an existing clé) and by partial assuré;
  - target: p95 <= 150 ms for each;
Set SUIVI_BENCH_DB=/some/file.sqlite3 to keep the generated store and reuse it next time.
  - CSV export (`search_rows` -> `csv.encode`) of the CESAM's 120 k répartitions against a
    12 k-row export: target peak RSS growth of the large export <= the small one's + 32 MiB
    (memory flat in the number of rows).

The detail and content pages of a 5 000-flow file (issue 18), paged as served against the
same screens unpaged (one page holding the whole file, as before): server time through the
ASGI app, browser time in Chromium through Playwright; targets <= 200 ms and <= 1 s.
Set SUIVI_BENCH_PART=search or =file to run one part.

SUIVI_BENCH_DATABASE=postgresql (bench/run.py --only suivi-pg: the search part) runs the same
on a throwaway PostgreSQL cluster (bench/pg.py, fsync off: only the load writes): the store is
made by the schema's revisions, loaded with COPY (the tables' secondary indexes dropped during
the load and made again after it, foreign keys not checked: the rows are consistent by
construction), then ANALYZEd; the 5 000-flow file's data folder names its database by
BDI_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import random
import re
import socket
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from math import ceil
from pathlib import Path

import httpx
import pg
import psutil
import uvicorn
from playwright.async_api import Page, async_playwright
from starlette.applications import Starlette
from starlette.types import ASGIApp

from bdi.admin.passwords import hash_password
from bdi.config import load_settings
from bdi.datadir import initialise, open_hub
from bdi.hub import Hub
from bdi.pipeline.plan import Upload, occurrence
from bdi.pipeline.prepare import cut_lines
from bdi.routing.flows import iter_flows
from bdi.routing.layout import default_layout
from bdi.routing.writer import Record, parse_file, write_file
from bdi.store import textindex as textmarks
from bdi.store.db import make_engine
from bdi.store.journal import sync_engine
from bdi.store.models import Flow, FlowOccurrence, Job, Movement, Output, Participant
from bdi.store.repo import Store
from bdi.store.schema import upgrade_to_head
from bdi.suivi import csv, queries, textindex, views
from bdi.suivi.app import FilePaging, create_app
from bdi.suivi.queries import Search

Emit = Callable[[str], None]
FLOWS = 300_000
MB = 1_000_000
MIB = 1024 * 1024
P95_MS = 150.0
RSS_SLACK_MIB = 32
RUNS = 40
STAMP = "%Y-%m-%d %H:%M:%S.%f"
TABLES = ("job", "output", "movement", "flow", "flowoccurrence")  # those generated
DATABASE_VARIABLE = "SUIVI_BENCH_DATABASE"  # sqlite (default) or postgresql
CESAM = "GIE000001"
PRODUCERS = [f"COU0{n:05d}" for n in range(10_100, 10_120)] + [
    f"AGT00{n:04d}" for n in range(5120, 5125)
]
LEADERS = [f"CIE000{n:03d}" for n in range(300, 310)]
LAYOUTS = ["allocation"] * 4 + ["premium"] * 3 + ["claim_advice", "settlement", "financial_account"]
FLOW_CODES = {
    "allocation": "REP",
    "premium": "PRI",
    "claim_advice": "BUL",
    "settlement": "DIS",
    "financial_account": "CPF",
}
FILE_TYPES = {
    "allocation": "R",
    "premium": "P",
    "claim_advice": "B",
    "settlement": "D",
    "financial_account": "C",
}
WORDS = [
    "ARMEMENT",
    "NAVIGATION",
    "MARITIME",
    "TRANSPORTS",
    "CHARGEURS",
    "PECHE",
    "REMORQUAGE",
    "CROISIERES",
    "VRAC",
    "CONTENEURS",
]
CITIES = [
    "NORD",
    "OUEST",
    "ATLANTIQUE",
    "MANCHE",
    "MEDITERRANEE",
    "BRETAGNE",
    "GASCOGNE",
    "RHONE",
    "SEINE",
    "LOIRE",
]


@dataclass(frozen=True, slots=True)
class FlowSpec:
    n: int
    layout: str
    producer: str
    leader: str
    clé: str
    insured: str


def flow_spec(n: int) -> FlowSpec:
    layout = LAYOUTS[n % len(LAYOUTS)]
    leader = LEADERS[(n // 7) % len(LEADERS)]
    clé = f"{2008 + n % 18}{leader[-5:]}A{n:09d}001"
    insured = f"{WORDS[n % 10]} {CITIES[(n // 10) % 10]} {n % 997} SA"
    return FlowSpec(n, layout, PRODUCERS[n % len(PRODUCERS)], leader, clé, insured)


def head_fields(f: FlowSpec, control: str) -> dict[str, object]:
    """A head record about the size of a real one (~700 bytes of JSON)."""
    fields: dict[str, object] = {
        "record_type": "2222222222", "control_state": control, "optiflux_key": f.clé,
        "producer_code": f.producer[-5:], "producer_policy_number": f"POL-{f.n:08d}",
        "insured_name": f.insured, "act_number": f"AV-{f.n:08d}", "operation_code": "01",
        "leader_file_number": f"LF-{f.n:07d}", "producer_file_number": f"PF-{f.n:07d}",
        "claim_advice_number": 1, "settlement_number": 1, "paid_by": "3", "currency": "EUR",
        "account_reference": 2008030000 + f.n % 9999, "beneficiary_code": f.producer[-5:],
        "balance": "-1831.35", "gross_premium_100": "250.00", "brokerage_rate": "15.00000",
        "act_date": "2008-01-10", "effective_start_date": "2008-01-01",
        "effective_end_date": "2008-12-31", "french_market_share": "60.00000",
        "event_description": "AVARIE MACHINE AU LARGE DE BREST", "hull_or_cargo": "C",
    }  # fmt: skip
    return fields


def movements_of(f: FlowSpec) -> list[tuple[str, str, str]]:
    """(sender, recipient, control) of each movement of the flow, in order."""
    steps = [(f.producer, f.leader, "S"), (f.leader, CESAM, "V"), (CESAM, f.leader, "V")]
    if f.n % 3 == 0:
        steps.append((CESAM, f.producer, "V"))
    return steps


def generate(path: Path, emit: Emit) -> tuple[int, int]:
    """Bulk-insert the flows and their movements; returns (flows, movements)."""
    started = time.perf_counter()
    db = sqlite3.connect(path)
    db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;")
    base = datetime(2008, 1, 2, tzinfo=UTC)
    movement_id = 0
    for chunk in chunks(range(FLOWS), 20_000):
        rows = rows_for(chunk, base, movement_id)
        movement_id += len(rows["movement"])
        insert(db, rows)
        db.commit()
    db.execute("ANALYZE")
    db.close()
    emit(
        f"generated {FLOWS} flows, {movement_id} movements in {time.perf_counter() - started:.0f} s"
    )
    return FLOWS, movement_id


def chunks(values: range, size: int) -> Iterator[range]:
    for start in range(values.start, values.stop, size):
        yield range(start, min(start + size, values.stop))


def rows_for(
    flows: range, base: datetime, first_id: int, zone: str = ""
) -> dict[str, list[tuple[object, ...]]]:
    """The rows of `flows`; `zone` is appended to every time (PostgreSQL's timestamptz)."""
    rows: dict[str, list[tuple[object, ...]]] = {
        "job": [],
        "output": [],
        "movement": [],
        "flow": [],
        "flowoccurrence": [],
    }
    mid = first_id
    for n in flows:
        f = flow_spec(n)
        flow_id = n + 1
        rows["flow"].append((flow_id, f.layout, f.clé, f.clé))
        for step, (sender, recipient, control) in enumerate(movements_of(f)):
            mid += 1
            at = (base + timedelta(seconds=n * 1800 + step * 3600)).strftime(STAMP) + zone
            name = f"{FILE_TYPES[f.layout]}{sender}_{f.leader[-5:]}_{n % 999999:06d}.edi"
            rows["job"].append((mid, sender, name, f"s{mid}", 0, at, "done", "delivered", at))
            rows["output"].append((mid, mid, 0, "delivery", recipient, name, "", "", at))
            rows["movement"].append(
                (
                    mid,
                    mid,
                    mid,
                    at,
                    sender,
                    recipient,
                    name,
                    FILE_TYPES[f.layout],
                    3205,
                    "",
                    f"{mid}.edi",
                    1,
                )
            )
            fields = head_fields(f, control)
            lines = [fields] if f.layout == "financial_account" else []
            rows["flowoccurrence"].append(
                (
                    mid,
                    mid,
                    flow_id,
                    0,
                    f.layout,
                    FLOW_CODES[f.layout],
                    f.clé,
                    control,
                    "",
                    json.dumps(fields),
                    json.dumps(lines),
                    "[]",
                    f.producer[-5:],
                    f.insured,
                )
            )
    return rows


COLUMNS = {
    "job": "id participant_id upload_name spool_name size received_at state outcome finished_at",
    "output": "id job_id seq kind participant_id name ranges text delivered_at",
    "movement": "id job_id output_id created_at sender_id recipient_id file_name file_type size "
    "sha256 content_path delivered",
    "flow": "id layout flow_key optiflux_key",
    "flowoccurrence": "id movement_id flow_id seq layout flow_code optiflux_key control comment "
    "fields_json lines_json grid_json producer_code insured_folded",
}


def insert(db: sqlite3.Connection, rows: dict[str, list[tuple[object, ...]]]) -> None:
    for table, values in rows.items():
        marks = ", ".join("?" * len(values[0]))
        names = ", ".join(COLUMNS[table].split())
        db.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", values)


def generate_pg(url: str, emit: Emit) -> tuple[int, int]:
    """The same rows COPYed into PostgreSQL: secondary indexes dropped for the load and made
    again after it, foreign keys unchecked (session_replication_role), sequences moved past
    the ids given, then ANALYZE."""
    started = time.perf_counter()
    base = datetime(2008, 1, 2, tzinfo=UTC)
    movement_id = 0
    with pg.connect(url) as db:
        db.execute("SET maintenance_work_mem = '1GB'")
        db.execute("SET session_replication_role = replica")  # no FK triggers
        indexes = db.execute(
            "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "WHERE t.relname = ANY(%s) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
            (list(TABLES),),
        ).fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        for chunk in chunks(range(FLOWS), 20_000):
            rows = rows_for(chunk, base, movement_id, zone="+00")
            movement_id += len(rows["movement"])
            with db.transaction(), db.cursor() as cursor:
                for table, values in rows.items():
                    names = ", ".join(COLUMNS[table].split())
                    with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                        for row in values:
                            copy.write_row(row)
        loaded = time.perf_counter() - started
        for _, definition in indexes:
            db.execute(definition)
        for table in TABLES:
            db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        db.execute("ANALYZE")
    emit(
        f"generated {FLOWS} flows, {movement_id} movements in {time.perf_counter() - started:.0f} "
        f"s (COPY {loaded:.0f} s, then {len(indexes)} indexes made again and ANALYZE)"
    )
    return FLOWS, movement_id


async def timed(
    store: Store, user: str, search_id: str, criteria: dict[str, str]
) -> tuple[float, int]:
    search = Search.of(default_layout(), search_id, criteria)
    started = time.perf_counter()
    page = await queries.search_page(store, search, user, 1)
    return (time.perf_counter() - started) * 1000, page.total


def terms(rng: random.Random, kind: str) -> dict[str, str]:
    f = flow_spec(rng.randrange(FLOWS))
    if kind == "clé":
        return {"optiflux_key": f.clé[9:17].lower()}  # part of the affaire number
    word = f.insured.split()
    return {"insured_name": f"{word[1].lower()} {word[2]}"}


async def latency(store: Store, emit: Emit) -> bool:
    rng = random.Random(8)
    ok = True
    for who, user in (("producer", PRODUCERS[0]), ("leader", LEADERS[0]), ("CESAM", CESAM)):
        for kind in ("clé", "assuré"):
            for search_id in ("allocations", "premiums"):
                runs = [await timed(store, user, search_id, terms(rng, kind)) for _ in range(RUNS)]
                ms = sorted(r[0] for r in runs)
                p95 = ms[int(0.95 * (len(ms) - 1))]
                rows = statistics.mean(r[1] for r in runs)
                passed = p95 <= P95_MS
                ok &= passed
                verdict = "ok" if passed else "SLOW"
                emit(
                    f"{who:9} {search_id:12} by {kind:7} p50 {statistics.median(ms):6.1f} ms"
                    f"  p95 {p95:6.1f} ms  rows {rows:7.1f}  {verdict}"
                )
    return ok


async def export(store: Store, user: str) -> tuple[int, float, float]:
    """Rows, seconds and peak RSS growth (MiB) of a CSV export of the user's répartitions."""
    search = Search.of(default_layout(), "allocations", {})
    process = psutil.Process()
    base = peak = process.memory_info().rss
    rows, started = 0, time.perf_counter()
    hits = queries.search_rows(store, search, user)
    cells = views.csv_rows(hits, search.columns, search.kinds)
    async for chunk in csv.encode([c.fr for c in search.columns], cells):
        rows += chunk.count(b"\r\n")
        peak = max(peak, process.memory_info().rss)
    return rows - 1, time.perf_counter() - started, (peak - base) / MIB


async def memory(store: Store, emit: Emit) -> bool:
    small = await export(store, LEADERS[0])
    large = await export(store, CESAM)
    for label, (rows, seconds, growth) in (("small", small), ("large", large)):
        emit(
            f"CSV export {label}: {rows} rows in {seconds:.1f} s, peak RSS growth {growth:.1f} MiB"
        )
    return large[0] >= 100_000 and large[2] <= small[2] + RSS_SLACK_MIB


async def measure(url: str, emit: Emit) -> bool:
    engine = make_engine(url)
    store = Store(engine)
    try:
        started = time.perf_counter()
        indexed = await textindex.ready(store)
        emit(f"text indexes ready ({indexed}) in {time.perf_counter() - started:.1f} s")
        fast = await latency(store, emit)
        flat = await memory(store, emit)
    finally:
        await engine.dispose()
    return fast and flat


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def main(emit: Emit, kept: str | None, reuse: bool) -> bool:
    """Generate the store in a temporary folder, or reuse $SUIVI_BENCH_DB when it exists."""
    if kept and reuse:
        return await measure(sqlite_url(Path(kept)), emit)
    with tempfile.TemporaryDirectory(prefix="suivi-bench-") as tmp:
        path = Path(kept) if kept else Path(tmp) / "bdi.sqlite3"
        await upgrade_to_head(sqlite_url(path))
        engine = make_engine(sqlite_url(path))
        await engine.dispose()
        await asyncio.to_thread(generate, path, emit)
        await asyncio.to_thread(index_text, path, emit)
        return await measure(sqlite_url(path), emit)


def index_text(path: Path, emit: Emit) -> None:
    """The trigram indexes brought up to the rows just generated, as the hub's upkeep does
    (revision 0006: rows past the marks are searched by a scan until then)."""
    started = time.perf_counter()
    engine = sync_engine(sqlite_url(path))
    try:
        with engine.begin() as conn:
            if textmarks.marked(conn):
                textmarks.catch_up(conn, batch=10**9)
    finally:
        engine.dispose()
    emit(f"text indexes caught up in {time.perf_counter() - started:.1f} s")


async def main_pg(emit: Emit, template: str) -> bool:
    """The search part on PostgreSQL: a database of the cluster of `template`."""
    url = template.replace("{data}", "bdi_suivi_bench")
    emit(f"PostgreSQL: {url} (fsync off)")
    await upgrade_to_head(url)
    await asyncio.to_thread(generate_pg, url, emit)
    return await measure(url, emit)


# --- a 5 000-flow file's detail and content pages (issue 18, « The Suivi at scale ») --------
#
# One CESAM distribution of BIG_FLOWS répartitions to a broker (the sample
# RGIE000001_00311_000002.edi's flow repeated, each copy under its own clé: 16 MB, each flow
# with its grid), indexed by the pipeline's own functions into a fresh data folder, its content
# a file of <data>/contents/. Timed through the Suivi's ASGI app (server) and in Debian's
# Chromium through Playwright (browser: from the navigation to the first frame after the load
# event), paged as served and unpaged (one page holding everything, as before issue 18).

BIG_FLOWS = 5000
BIG_NAME = "RGIE000001_00311_000901.edi"
BIG_SAMPLE = Path(__file__).resolve().parents[2] / "shared/spec/samples/RGIE000001_00311_000002.edi"
BROKER = "COU010234"
SERVER_MS, BROWSER_MS = 200.0, 1000.0
SERVER_RUNS, BROWSER_RUNS, UNPAGED_RUNS = 7, 5, 2
UNPAGED = FilePaging(flows=10**6, records=10**8)
# measured on this machine before the pages (issue 18): (server s, browser s, page MB)
BEFORE = {"detail": (1.1, 4.2, 8.5), "content": (None, 9.0, 16.0)}
CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
NEXT_FRAME = "() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))"


def big_plain(flows: int) -> bytes:
    """The sample's one flow repeated under `flows` distinct clés, in one section."""
    [section] = parse_file(BIG_SAMPLE.read_bytes())

    def copy(n: int) -> tuple[Record, ...]:
        key = f"200800311MAR{n:07d}001"
        return tuple(Record(r.name, {**r.values, "optiflux_key": key}) for r in section.records)

    return write_file([replace(section, records=tuple(r for n in range(flows) for r in copy(n)))])


@dataclass(frozen=True, slots=True)
class BigFile:
    hub: Hub
    movement_id: int
    size: int
    password: str


async def big_hub(data: Path, emit: Emit) -> BigFile:
    """A data folder holding one 5 000-flow delivery CESAM -> broker, and the broker's login."""
    started = time.perf_counter()
    settings = load_settings(None, data=data, sftp_port=0, web_port=0)
    await initialise(settings)
    hub = await open_hub(settings)
    password = "bench-password-0123"
    now = datetime.now(UTC)
    for edi_id in (CESAM, BROKER):
        participant = Participant(
            id=edi_id, name=edi_id, role="bench", pgp_fingerprint=edi_id,
            password_hash=hash_password(password), created_at=now,
        )  # fmt: skip
        await hub.store.add_participant(participant)
    plain = big_plain(BIG_FLOWS)
    movement_id = await deliver(hub, plain, now)
    emit(
        f"5 000-flow file: {len(plain) / MB:.1f} MB, {BIG_FLOWS} flows indexed in "
        f"{time.perf_counter() - started:.0f} s"
    )
    return BigFile(hub, movement_id, len(plain), password)


async def deliver(hub: Hub, plain: bytes, now: datetime) -> int:
    """The movement of `plain` and its flow occurrences, as the pipeline records them."""
    upload = Upload(0, CESAM, BIG_NAME, now)
    flows = iter_flows(cut_lines(io.BytesIO(plain)), hub.layout, {1: "REP"})
    rows = [occurrence(hub.layout, upload, BROKER, f, seq) for seq, f in enumerate(flows)]
    async with hub.store.session() as s:
        job = Job(participant_id=CESAM, upload_name=BIG_NAME, spool_name="bench",
                  size=len(plain), received_at=now, state="done")  # fmt: skip
        s.add(job)
        await s.flush()
        assert job.id is not None
        output = Output(job_id=job.id, seq=0, kind="delivery", participant_id=BROKER,
                        name=BIG_NAME)  # fmt: skip
        s.add(output)
        await s.flush()
        assert output.id is not None
        name = f"{output.id:08d}-{BROKER}.edi"
        (hub.contents() / name).write_bytes(plain)
        movement = Movement(
            job_id=job.id, output_id=output.id, created_at=now, sender_id=CESAM,
            recipient_id=BROKER, file_name=BIG_NAME, file_type="R", size=len(plain),
            sha256=hashlib.sha256(plain).hexdigest(), content_path=name, delivered=True,
        )  # fmt: skip
        flow_rows = [
            Flow(layout="allocation", flow_key=key, optiflux_key=key) for _, key, _ in rows
        ]
        s.add(movement)
        s.add_all(flow_rows)
        await s.flush()
        ids = [flow.id for flow in flow_rows if flow.id is not None]
        assert movement.id is not None and len(ids) == len(rows)
        s.add_all(
            FlowOccurrence(movement_id=movement.id, flow_id=flow_id, **row)
            for (_, _, row), flow_id in zip(rows, ids, strict=True)
        )
        await s.commit()
        return movement.id


@dataclass(frozen=True, slots=True)
class Shown:
    """One page of the big file: `path` paged, `whole` the same screen unpaged."""

    label: str
    path: str
    whole: str


def screens(big: BigFile) -> list[Shown]:
    """The first, a middle and the last page of the file's flows and of its content."""
    paging, stride = FilePaging(), big.hub.layout.record_length + 1
    detail, content = f"/fichiers/{big.movement_id}", f"/fichiers/{big.movement_id}/contenu"
    shown = []
    for what, path, pages in (
        ("detail", detail, ceil(BIG_FLOWS / paging.flows)),
        ("content", content, ceil(big.size / (paging.records * stride))),
    ):
        for number in sorted({1, (pages + 1) // 2, pages}):
            shown.append(Shown(f"{what} p. {number}/{pages}", f"{path}?page={number}", path))
    return shown


@contextlib.asynccontextmanager
async def suivi_client(app: ASGIApp, base: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base, timeout=120) as client:
        yield client


async def log_in(client: httpx.AsyncClient, password: str) -> None:
    form = await client.get("/connexion")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    data = {"csrf": token.group(1), "identifiant": BROKER, "mot_de_passe": password}
    assert (await client.post("/connexion", data=data)).status_code == 303


async def server_ms(client: httpx.AsyncClient, path: str, runs: int) -> tuple[float, int]:
    """Median milliseconds of a GET through the app after one not counted (caches warm),
    and the page's size in bytes."""
    times, size = [], 0
    for run in range(runs + 1):
        started = time.perf_counter()
        response = await client.get(path)
        if run:
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
        size = len(response.content)
    return statistics.median(times), size


async def server_times(big: BigFile, emit: Emit) -> bool:
    """Each screen paged and unpaged, through the app in this process (no network)."""
    ok = True
    paged, whole = create_app_for(big, None), create_app_for(big, UNPAGED)
    async with suivi_client(paged, "http://suivi") as p, suivi_client(whole, "http://suivi") as w:
        await log_in(p, big.password)
        await log_in(w, big.password)
        unpaged: dict[str, tuple[float, int]] = {}
        for shown in screens(big):
            ms, size = await server_ms(p, shown.path, SERVER_RUNS)
            if shown.whole not in unpaged:
                unpaged[shown.whole] = await server_ms(w, shown.whole, UNPAGED_RUNS)
            before, before_size = unpaged[shown.whole]
            passed = ms <= SERVER_MS
            ok &= passed
            emit(
                f"  server  {shown.label:17} {ms:7.1f} ms {size / 1000:7.0f} kB   target <= "
                f"{SERVER_MS:.0f} ms   unpaged {before:7.0f} ms {before_size / MB:5.1f} MB"
                f"   {'ok' if passed else 'SLOW'}"
            )
        started = time.perf_counter()
        export = await p.get(f"/fichiers/{big.movement_id}/csv")
        rows = export.content.count(b"\r\n") - 1
        emit(f"  server  CSV of the file: {rows} rows in {time.perf_counter() - started:.2f} s")
        ok &= rows == BIG_FLOWS
    return ok


def create_app_for(big: BigFile, paging: FilePaging | None) -> Starlette:
    return create_app(big.hub, secret_key="bench-secret-key-0123456", paging=paging)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """The app on a loopback port of its own (bound before uvicorn starts)."""
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


async def browser_ms(page: Page, url: str, runs: int) -> float:
    """Median milliseconds from the navigation to the first frame after the load event,
    after one navigation not counted (the server's caches warm, as in `server_ms`)."""
    times = []
    for run in range(runs + 1):
        started = time.perf_counter()
        response = await page.goto(url, wait_until="load", timeout=120_000)
        await page.evaluate(NEXT_FRAME)
        if run:
            times.append((time.perf_counter() - started) * 1000)
        assert response is not None and response.status == 200, url
    return statistics.median(times)


async def browser_times(big: BigFile, emit: Emit) -> bool:
    if not HAVE_CHROMIUM:
        emit("  browser: Debian's chromium is not installed (apt-get install chromium): FAIL")
        return False
    ok = True
    async with (
        serving(create_app_for(big, None)) as paged,
        serving(create_app_for(big, UNPAGED)) as whole,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1366, "height": 860}, locale="fr-FR")
        await page.goto(f"{paged}/connexion")  # the cookie serves both ports (same host)
        await page.fill("#identifiant", BROKER)
        await page.fill("#mot_de_passe", big.password)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{paged}/")
        unpaged: dict[str, float] = {}
        for shown in screens(big):
            ms = await browser_ms(page, paged + shown.path, BROWSER_RUNS)
            if shown.whole not in unpaged:
                unpaged[shown.whole] = await browser_ms(page, whole + shown.whole, UNPAGED_RUNS)
            before = unpaged[shown.whole]
            passed = ms <= BROWSER_MS
            ok &= passed
            emit(
                f"  browser {shown.label:17} {ms:7.0f} ms              target <= "
                f"{BROWSER_MS:.0f} ms  unpaged {before:7.0f} ms"
                f"            {'ok' if passed else 'SLOW'}"
            )
        await browser.close()
    return ok


async def big_file(emit: Emit) -> bool:
    """Issue 18's targets on the detail and content pages of a 5 000-flow file."""
    emit("before (issue 18, one page per file): " + "; ".join(
        f"{what} {mb} MB, server {'?' if s is None else f'{s} s'}, browser {b} s"
        for what, (s, b, mb) in BEFORE.items()
    ))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="suivi-file-") as tmp:
        big = await big_hub(Path(tmp) / "data", emit)
        try:
            server = await server_times(big, emit)
            browser = await browser_times(big, emit)
        finally:
            await big.hub.store.engine.dispose()
            big.hub.pgp.stop_agent()
    return server and browser


def run(emit: Emit) -> bool:
    """Both parts; SUIVI_BENCH_PART=search or =file runs one, on the database of
    SUIVI_BENCH_DATABASE (sqlite, the default, or postgresql)."""
    part = os.environ.get("SUIVI_BENCH_PART", "")
    engine = os.environ.get(DATABASE_VARIABLE, "sqlite")
    if engine == "postgresql":
        return run_pg(emit, part)
    if engine != "sqlite":
        raise ValueError(f"{DATABASE_VARIABLE}={engine}: sqlite or postgresql")
    kept = os.environ.get("SUIVI_BENCH_DB")
    ok = True
    if part in ("", "search"):
        ok &= asyncio.run(main(emit, kept, bool(kept) and Path(str(kept)).exists()))
    if part in ("", "file"):
        ok &= asyncio.run(big_file(emit))
    return ok


def run_pg(emit: Emit, part: str) -> bool:
    """The parts on a throwaway PostgreSQL cluster; the file part's data folder reaches it
    through BDI_DATABASE_URL."""
    ok = True
    with pg.cluster(durable=False) as template:
        if part in ("", "search"):
            ok &= asyncio.run(main_pg(emit, template))
        if part in ("", "file"):
            saved = os.environ.get("BDI_DATABASE_URL")
            os.environ["BDI_DATABASE_URL"] = template
            try:
                ok &= asyncio.run(big_file(emit))
            finally:
                os.environ.pop("BDI_DATABASE_URL")
                if saved is not None:
                    os.environ["BDI_DATABASE_URL"] = saved
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if run(print) else 1)
