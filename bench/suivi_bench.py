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
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from bdi.routing.layout import default_layout
from bdi.store.db import create_schema, make_engine
from bdi.store.repo import Store
from bdi.suivi import csv, queries, textindex, views
from bdi.suivi.queries import Search

Emit = Callable[[str], None]
FLOWS = 300_000
MIB = 1024 * 1024
P95_MS = 150.0
RSS_SLACK_MIB = 32
RUNS = 40
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


def rows_for(flows: range, base: datetime, first_id: int) -> dict[str, list[tuple[object, ...]]]:
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
            at = (base + timedelta(seconds=n * 1800 + step * 3600)).strftime("%Y-%m-%d %H:%M:%S.%f")
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


async def measure(path: Path, emit: Emit) -> bool:
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
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


async def main(emit: Emit, kept: str | None, reuse: bool) -> bool:
    """Generate the store in a temporary folder, or reuse $SUIVI_BENCH_DB when it exists."""
    if kept and reuse:
        return await measure(Path(kept), emit)
    with tempfile.TemporaryDirectory(prefix="suivi-bench-") as tmp:
        path = Path(kept) if kept else Path(tmp) / "bdi.sqlite3"
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        await create_schema(engine)
        await engine.dispose()
        await asyncio.to_thread(generate, path, emit)
        return await measure(path, emit)


def run(emit: Emit) -> bool:
    kept = os.environ.get("SUIVI_BENCH_DB")
    return asyncio.run(main(emit, kept, bool(kept) and Path(str(kept)).exists()))
