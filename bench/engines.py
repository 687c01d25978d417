"""Benchmark: the hub's routed rate of small uploads on SQLite and on PostgreSQL, one node
each, in one run (issue 17).

Two data folders are prepared as bench/hub_bench.py prepares one (the same broker and
company registered in each, each folder with its own hub key): one on SQLite, one on a
throwaway PostgreSQL cluster running with its durable defaults (fsync, synchronous commits,
as the hub's SQLite runs with `synchronous=FULL`). Both `bdi serve` run side by side for the
whole bench; one of them works at a time. Each round routes FILES small uploads (hub_bench's
(a): sealed beforehand, 4 SFTP sessions, timed from the first upload to the moment the
recipient's inbox holds them all) through each engine, in the order SQLite, PostgreSQL, then
PostgreSQL, SQLite (ABBA: a drift of the machine cancels out to first order). Each round's
ratio is PostgreSQL's rate over SQLite's in that round; the figure is their median.

Per upload: the server process's CPU (on SQLite it includes the database's work), its gpg,
the hub's gpg-agent, this process's SFTP clients, and on PostgreSQL the cluster's own CPU
(every postgres process), its commits, WAL bytes and WAL syncs.

There is no target: the figures size PostgreSQL against SQLite. HUB_BENCH_DATABASE=postgresql
runs the whole of bench/hub_bench.py (the (a)/(b) target included) on PostgreSQL instead.

    .venv/bin/python bench/engines.py        (or bench/run.py --only engines)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pg
from hub_bench import (
    BDI,
    CLIENTS,
    FILES,
    RECIPIENT,
    SENDER,
    BenchError,
    Clients,
    Cpu,
    Emit,
    Hub,
    Inboxes,
    Inputs,
    Party,
    Server,
    Upload,
    bench_parties,
    cpu_now,
    empty_inbox,
    hub_agent,
    inboxes,
    make_inputs,
    prepare,
    serving,
    sessions,
    upload_all,
    visible,
    wait_for,
    warm_up,
)

from bdi.config import load_settings
from bdi.datadir import hub_key_file

ROUNDS = 4  # rounds of both engines, ordered ABBA
SUFFIX = re.compile(r"_\d+(?=\.edi$)")  # `_2`, `_3`... inserted when a name is taken
URL_VARIABLE = "BDI_DATABASE_URL"


@dataclass(frozen=True, slots=True)
class Measured:
    """One round of one engine: FILES uploads routed end to end."""

    seconds: float  # first upload -> all delivered
    uploaded: float  # first upload -> every upload acknowledged
    cpu: Cpu  # servers summed, their gpg summed; agent, clients, machine once
    db: tuple[float, pg.Wal] | None  # PostgreSQL's CPU seconds and WAL; None on SQLite
    per_node: tuple[float, ...]  # each server's own CPU seconds
    renamed: int  # deliveries under a suffixed name (`_2`...) though the inbox was empty

    @property
    def rate(self) -> float:
        return FILES / self.seconds


@contextlib.asynccontextmanager
async def spread_sessions(hub: Hub, servers: Sequence[Server]) -> AsyncIterator[Clients]:
    """CLIENTS SFTP sessions, dealt to the servers in turn: with two servers, consecutive
    files go to one and to the other (upload_all deals files to sessions in turn)."""
    async with contextlib.AsyncExitStack() as stack:
        per = [
            await stack.enter_async_context(
                sessions(server.port, SENDER, hub.passwords[SENDER], CLIENTS // len(servers))
            )
            for server in servers
        ]
        dealt = [c.sftp[i] for i in range(CLIENTS // len(servers)) for c in per]
        yield Clients(dealt, per[0].cipher)


async def wait_named(watch: Inboxes, names: Sequence[str]) -> int:
    """Poll until each name is in the recipient's (emptied) inbox, as itself or with a
    suffix (`_2`, `_3`...: the hub took the name for a taken one); how many had one. Each
    poll reads every kept row (several nodes: ids are not in commit order) and lists the
    inbox folder."""
    wanted, seen, renamed = set(names), set[str](), set[str]()

    def done() -> bool:
        found = [name for _, name in watch.stored(RECIPIENT)]
        found += visible(watch.hub.inbox(RECIPIENT))
        for name in found:
            base = name if name in wanted else SUFFIX.sub("", name)
            if base in wanted:
                seen.add(base)
                if base != name:
                    renamed.add(name)
        return seen == wanted

    await wait_for(done, watch, f"{len(names)} deliveries")
    return len(renamed)


def total_cpu(servers: Sequence[Server], hub: Hub) -> tuple[Cpu, tuple[float, ...]]:
    """The servers' CPU and their gpg's summed; the agent, this process and the machine once."""
    agent = hub_agent(hub.settings.gnupg_home)
    each = [cpu_now(server.process(), agent) for server in servers]
    first = each[0]
    summed = Cpu(
        server=sum(c.server for c in each),
        gpg=sum(c.gpg for c in each),
        agent=first.agent,
        client=first.client,
        machine=first.machine,
    )
    return summed, tuple(c.server for c in each)


async def route(
    hub: Hub,
    servers: Sequence[Server],
    uploads: Sequence[Upload],
    first: Upload,
    url: str | None,
    running: Sequence[Server] = (),
) -> Measured:
    """Route `uploads` through `servers` (dealt in turn), after `first` (untimed, through
    the first server); the sessions are opened and the inbox emptied before the clock
    starts. `url`: the PostgreSQL database, whose activity is measured too. The CPU is
    that of `running` (default: `servers`), idle ones included."""
    running = running or servers
    await empty_inbox(hub, servers[0].port, RECIPIENT)
    async with spread_sessions(hub, servers) as clients:
        with inboxes(hub) as watch:
            await warm_up(watch, clients.sftp[0], first)
            db_before = await asyncio.to_thread(pg.activity, url) if url else None
            before, nodes_before = total_cpu(running, hub)
            start = time.perf_counter()
            await upload_all(clients.sftp, uploads)
            uploaded = time.perf_counter() - start
            renamed = await wait_named(watch, [name for name, _ in uploads])
            seconds = time.perf_counter() - start
            after, nodes_after = total_cpu(running, hub)
            db = None
            if url and db_before is not None:
                db_after = await asyncio.to_thread(pg.activity, url)
                db = await asyncio.to_thread(db_after.since, db_before, url)
    per_node = tuple(a - b for a, b in zip(nodes_after, nodes_before, strict=True))
    return Measured(seconds, uploaded, after - before, db, per_node, renamed)


def report(label: str, m: Measured, emit: Emit) -> None:
    per = 1000 / FILES
    c = m.cpu
    db = f", PostgreSQL {m.db[0] * per:.2f}" if m.db is not None else ""
    busy = c.machine / (m.seconds * (os.cpu_count() or 1))
    emit(
        f"  {label:24} {m.seconds:5.2f} s (uploaded {m.uploaded:5.2f} s) -> {m.rate:6.1f} "
        f"files/s; CPU ms per upload: "
        f"server {c.server * per:.2f}{db}, gpg {c.gpg * per:.1f}, agent {c.agent * per:.1f}, "
        f"clients {c.client * per:.1f}, machine {c.machine * per:.1f} (busy {busy:.0%})"
    )
    if m.renamed:
        emit(f"      UNEXPECTED: {m.renamed} delivered under a suffixed name (the inbox was empty)")
    if len(m.per_node) > 1:
        emit("      each node's server CPU ms per upload: " + ", ".join(
            f"{s * per:.2f}" for s in m.per_node
        ))  # fmt: skip
    if m.db is not None:
        wal = m.db[1]
        emit(
            f"      PostgreSQL per upload: {wal.commits / FILES:.2f} commits, "
            f"{wal.bytes / FILES / 1024:.1f} KiB of WAL (full-page images "
            f"{wal.full_page_bytes / FILES / 1024:.1f} KiB)"
        )


def load(emit: Emit) -> None:
    emit("load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


@dataclass(frozen=True, slots=True)
class Engine:
    label: str
    hub: Hub
    inputs: Inputs
    url: str | None  # the hub's PostgreSQL database (template filled in); None: SQLite
    env: dict[str, str]  # for its `bdi serve`


def prepared(work: Path, label: str, template: str | None, parties: dict[str, Party],
             emit: Emit) -> Engine:  # fmt: skip
    """A data folder registered as hub_bench's, and its inputs sealed to its hub key."""
    folder = work / label
    folder.mkdir()
    settings = load_settings(None, data=folder / "data", sftp_port=0, host="127.0.0.1",
                             database_url=template)  # fmt: skip
    hub = asyncio.run(prepare(settings, list(parties.values())))
    parties[SENDER].pgp.import_public(hub_key_file(settings).read_text())
    inputs = make_inputs(folder, hub, parties[SENDER], emit, big=False)
    url = settings.db_url if template else None
    return Engine(label, hub, inputs, url, {URL_VARIABLE: template} if template else {})


@contextlib.contextmanager
def no_url() -> Iterator[None]:
    """BDI_DATABASE_URL unset here (the SQLite hub must not inherit it), restored after."""
    saved = os.environ.pop(URL_VARIABLE, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[URL_VARIABLE] = saved


def compare(work: Path, engines: Sequence[Engine], emit: Emit) -> None:
    sqlite, postgres = engines
    results: dict[str, list[Measured]] = {e.label: [] for e in engines}
    with (
        serving(sqlite.hub, work / "sqlite.log", sqlite.env) as s1,
        serving(postgres.hub, work / "postgresql.log", postgres.env) as s2,
    ):
        servers = {sqlite.label: s1, postgres.label: s2}
        for n in range(1, ROUNDS + 1):
            order = engines if n % 2 else list(reversed(engines))
            emit(f"round {n} of {ROUNDS}:")
            for engine in order:
                measured = asyncio.run(
                    route(engine.hub, [servers[engine.label]], engine.inputs.uploads,
                          engine.inputs.warm_ups[0], engine.url)
                )  # fmt: skip
                results[engine.label].append(measured)
                report(engine.label, measured, emit)
            load(emit)
    summary(results[sqlite.label], results[postgres.label], emit)


def summary(sqlite: Sequence[Measured], postgres: Sequence[Measured], emit: Emit) -> None:
    ratios = [p.rate / s.rate for s, p in zip(sqlite, postgres, strict=True)]
    per = 1000 / FILES

    def median(values: Sequence[Measured], of: Callable[[Measured], float]) -> float:
        return statistics.median(of(m) for m in values)

    s_rate, p_rate = median(sqlite, lambda m: m.rate), median(postgres, lambda m: m.rate)
    s_cpu = median(sqlite, lambda m: m.cpu.server) * per
    p_cpu = median(postgres, lambda m: m.cpu.server) * per
    p_db = median(postgres, lambda m: m.db[0] if m.db else 0.0) * per
    emit(
        f"SQLite: median {s_rate:.1f} files/s, server CPU {s_cpu:.2f} ms per upload (its "
        f"database inside)"
    )
    emit(
        f"PostgreSQL: median {p_rate:.1f} files/s, server CPU {p_cpu:.2f} ms + PostgreSQL's "
        f"{p_db:.2f} ms = {p_cpu + p_db:.2f} ms per upload"
    )
    emit(
        f"PostgreSQL / SQLite routed rate: median {statistics.median(ratios):.0%} (rounds: "
        f"{', '.join(f'{r:.0%}' for r in ratios)})"
    )


def run(emit: Emit) -> bool:
    if not BDI.exists():
        raise BenchError(f"{BDI} not found: run with the project's venv python")
    work = Path(tempfile.mkdtemp(prefix="bdi-engines-", dir="/tmp"))
    load(emit)
    folders = [work / label / "data" for label in ("SQLite", "PostgreSQL")]
    with bench_parties(work, folders) as parties, no_url(), pg.cluster(durable=True) as template:
        emit(f"PostgreSQL: {template} (fsync on); SQLite: synchronous=FULL")
        engines = [prepared(work, "SQLite", None, parties, emit),
                   prepared(work, "PostgreSQL", template, parties, emit)]  # fmt: skip
        emit(
            f"{FILES} small uploads per round and engine over {CLIENTS} SFTP sessions, "
            f"one `bdi serve` per engine (both running, one working at a time)"
        )
        compare(work, engines, emit)
    return True


if __name__ == "__main__":
    sys.exit(0 if run(print) else 1)
