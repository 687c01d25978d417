"""Benchmark: one node against two on one PostgreSQL and one data folder (issue 17).

One data folder is prepared as bench/hub_bench.py prepares one, its database on a throwaway
PostgreSQL cluster running with its durable defaults (fsync on). Two `bdi serve` run on it
for the whole bench ("node-a" and "node-b": their own ports and node ids). A round routes
FILES small uploads (hub_bench's (a), 4 SFTP sessions, timed from the first upload to the
moment the recipient's inbox holds them all) either through node-a alone (node-b idle) or
through both, the sessions dealt to the nodes in turn so that consecutive uploads alternate
between them. Rounds go one, two, two, one, ... (ABBA: a drift of the machine cancels out to
first order); each pair's ratio is the two-node rate over the one-node rate.

Target: two nodes at least TARGET of one node's rate (median of the pairs). Both nodes share
this machine's 2 cores: they cannot be faster; the target says that a second node costs
little. Each round also checks the hub's multi-node book-keeping: every upload delivered once,
under its own name (the recipient empties its inbox through node-a before each round), each
node's jobs those it took in, no job left unfinished; the nodes' warnings are listed.

The per-upload costs (each node's server CPU and its gpg, the agent, PostgreSQL's CPU,
commits and WAL) give the 4-node estimate of docs/performance.md.

    .venv/bin/python bench/nodes.py        (or bench/run.py --only nodes)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pg
from engines import Measured, load, no_url, prepared, report, route
from hub_bench import (
    BDI,
    FILES,
    RECIPIENT,
    BenchError,
    Emit,
    Hub,
    Party,
    Server,
    bench_parties,
    serving,
)

ROUNDS = 6  # rounds, ordered one, two, two, one, one, two
TARGET = 0.90
NODES = ("node-a", "node-b")


@dataclass(frozen=True, slots=True)
class Books:
    """The hub's own records, read from its database."""

    jobs: dict[str | None, int]  # done jobs per node
    unfinished: int
    deliveries: int  # the recipient's inbox files kept in the store


def books(url: str) -> Books:
    with pg.connect(url) as conn:
        done = conn.execute("SELECT node, count(*) FROM job WHERE state = 'done' GROUP BY node")
        jobs = {node: int(n) for node, n in done.fetchall()}
        left = conn.execute("SELECT count(*) FROM job WHERE state <> 'done'").fetchone()
        kept = conn.execute(
            "SELECT count(*) FROM inboxfile WHERE participant_id = %s", (RECIPIENT,)
        ).fetchone()
    assert left is not None and kept is not None
    return Books(jobs, int(left[0]), int(kept[0]))


def data_files(data: Path) -> tuple[int, int]:
    """Files and bytes under the data folder, its GnuPG home and logs aside."""
    count = size = 0
    for folder, dirs, names in os.walk(data):
        dirs[:] = [d for d in dirs if d != "gnupg"]
        for name in names:
            with contextlib.suppress(OSError):
                size += (Path(folder) / name).stat().st_size
                count += 1
    return count, size


def check_books(before: Books, after: Books, servers: Sequence[Server], emit: Emit) -> bool:
    """Each upload delivered once (one more for the warm-up), by the node it went to."""
    took = {
        node: after.jobs.get(node, 0) - before.jobs.get(node, 0)
        for node in set(after.jobs) | set(before.jobs)
    }
    took = {node: n for node, n in took.items() if n}
    expected = FILES + 1  # and the warm-up, through the first node
    ok = sum(took.values()) == expected and after.unfinished == 0
    ok &= after.deliveries == expected  # the inbox was emptied before the round
    if len(servers) == 1:
        ok &= set(took) == {NODES[0]}
    else:
        ok &= set(took) == set(NODES) and abs(took[NODES[0]] - took[NODES[1]]) <= 1
    shares = ", ".join(f"{node} {n}" for node, n in sorted(took.items(), key=str))
    emit(
        f"      jobs done by node: {shares}; unfinished {after.unfinished}; recipient's kept "
        f"deliveries {after.deliveries} (expected {expected}){'' if ok else '  UNEXPECTED'}"
    )
    return ok


def warnings(log: Path) -> collections.Counter[str]:
    """The node's log lines at warning or above, by event."""
    seen: collections.Counter[str] = collections.Counter()
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("level") in ("warning", "error", "critical"):
                seen[f"{event.get('level')} {event.get('event')}"] += 1
    return seen


@contextlib.contextmanager
def two_nodes(hub: Hub, work: Path, env: dict[str, str]) -> Iterator[list[Server]]:
    """`bdi serve` for each of NODES on the hub's data folder, each its log in `work`."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(serving(hub, work / f"{node}.log", {**env, "BDI_NODE_ID": node}))
            for node in NODES
        ]


def measure(work: Path, template: str, parties: dict[str, Party], emit: Emit) -> bool:
    engine = prepared(work, "nodes", template, parties, emit)
    assert engine.url is not None
    url = engine.url
    ok = True
    results: dict[int, list[Measured]] = {1: [], 2: []}
    with two_nodes(engine.hub, work, engine.env) as servers:
        emit(f"{FILES} small uploads per round over 4 SFTP sessions; nodes {', '.join(NODES)}")
        for n in range(1, ROUNDS + 1):
            count = 1 if n % 4 in (0, 1) else 2
            using = servers[:count]
            before, files_before = books(url), data_files(engine.hub.settings.data)
            inputs = engine.inputs
            routed = route(engine.hub, using, inputs.uploads, inputs.warm_ups[0], url, servers)
            measured = asyncio.run(routed)
            results[count].append(measured)
            emit(f"round {n} of {ROUNDS}:")
            report("one node" if count == 1 else "two nodes", measured, emit)
            files_after = data_files(engine.hub.settings.data)
            emit(
                f"      data folder (GnuPG home aside): {files_after[0] - files_before[0]:+d} "
                f"files, {(files_after[1] - files_before[1]) / 1000:+.0f} kB"
            )
            ok &= check_books(before, books(url), using, emit) and not measured.renamed
            load(emit)
    for node in NODES:
        seen = warnings(work / f"{node}.log")
        emit(f"{node}'s warnings: " + (", ".join(f"{k} x{v}" for k, v in seen.items()) or "none"))
    return summary(results[1], results[2], emit) and ok


def summary(one: Sequence[Measured], two: Sequence[Measured], emit: Emit) -> bool:
    ratios = [b.rate / a.rate for a, b in zip(one, two, strict=True)]
    ratio = statistics.median(ratios)
    per = 1000 / FILES
    for label, rounds in (("one node", one), ("two nodes", two)):
        m = statistics.median
        emit(
            f"{label}: median {m(r.rate for r in rounds):.1f} files/s; CPU ms per upload: "
            f"servers {m(r.cpu.server for r in rounds) * per:.2f}, gpg "
            f"{m(r.cpu.gpg for r in rounds) * per:.1f}, agent "
            f"{m(r.cpu.agent for r in rounds) * per:.1f}, "
            f"PostgreSQL {m(r.db[0] if r.db else 0.0 for r in rounds) * per:.2f}, commits "
            f"{m(r.db[1].commits if r.db else 0 for r in rounds) / FILES:.2f}, WAL "
            f"{m(r.db[1].bytes if r.db else 0 for r in rounds) / FILES / 1024:.1f} KiB"
        )
    passed = ratio >= TARGET
    emit(
        f"target: two nodes >= {TARGET:.0%} of one: {'PASS' if passed else 'FAIL'} (median "
        f"{ratio:.0%}; pairs: {', '.join(f'{r:.0%}' for r in ratios)})"
    )
    return passed


def run(emit: Emit) -> bool:
    if not BDI.exists():
        raise BenchError(f"{BDI} not found: run with the project's venv python")
    work = Path(tempfile.mkdtemp(prefix="bdi-nodes-", dir="/tmp"))
    load(emit)
    with (
        bench_parties(work, [work / "nodes" / "data"]) as parties,
        no_url(),
        pg.cluster(durable=True) as template,
    ):
        emit(f"PostgreSQL: {template} (fsync on)")
        return measure(work, template, parties, emit)


if __name__ == "__main__":
    sys.exit(0 if run(print) else 1)
