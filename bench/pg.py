"""PostgreSQL for the benchmarks: the suite's throwaway cluster (tests/pgcluster.py, loaded by
path), a plain psycopg connection to a hub's database, and what the cluster did: its CPU (every
postgres process) and the WAL it wrote (read back with pg_walinspect).

`cluster(durable=True)` runs PostgreSQL with its own defaults (fsync, synchronous commits,
full page writes: what a production server does, and what the hub's SQLite does with
`synchronous=FULL`); `durable=False` is the test suite's cluster, which skips fsync.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import psycopg
from sqlalchemy.engine import make_url

TESTS = Path(__file__).resolve().parents[1] / "tests"


def _pgcluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pgcluster", TESTS / "pgcluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PGCLUSTER = _pgcluster()


@contextlib.contextmanager
def cluster(durable: bool = True) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a Unix socket; yields the URL template of
    `BDI_DATABASE_URL` (`{data}`: a database per data folder)."""
    with PGCLUSTER.cluster("" if durable else PGCLUSTER.FAST) as url:
        yield str(url)


def conninfo(url: str) -> dict[str, Any]:
    """psycopg's connection arguments for a SQLAlchemy URL (`{data}` already replaced)."""
    parsed = make_url(url)
    return {
        "dbname": parsed.database,
        "user": parsed.username,
        "host": parsed.query.get("host"),
        "port": parsed.query.get("port"),
    }


def connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A psycopg connection in autocommit: each statement sees the latest commits and no
    transaction stays open between polls."""
    return psycopg.connect(**conninfo(url), autocommit=True)


def postmaster(url: str) -> psutil.Process:
    """The cluster's postmaster (its pid is the first line of <data>/postmaster.pid)."""
    host = make_url(url).query.get("host")
    pid = (Path(str(host)) / "cluster" / "postmaster.pid").read_text().split()[0]
    return psutil.Process(int(pid))


def cluster_cpu(url: str) -> float:
    """CPU seconds (user + system) of the whole cluster so far: the postmaster, its live
    processes (backends, WAL writer, checkpointer...) and those it has reaped."""
    root = postmaster(url)
    own = root.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in root.children():
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            total += times.user + times.system
    return total


@dataclass(frozen=True, slots=True)
class Wal:
    """WAL written between two points: bytes, commit records, bytes of full-page images."""

    bytes: int
    commits: int
    full_page_bytes: int


@dataclass(frozen=True, slots=True)
class Activity:
    """The cluster at one moment: its CPU seconds so far, and its WAL position."""

    cpu: float
    lsn: str

    def since(self, before: Activity, url: str) -> tuple[float, Wal]:
        """CPU seconds spent and WAL written from `before` to this moment."""
        return self.cpu - before.cpu, wal_between(url, before.lsn, self.lsn)


def _maintenance(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """The cluster's `postgres` database, where pg_walinspect is made (never the hub's)."""
    return psycopg.connect(**{**conninfo(url), "dbname": "postgres"}, autocommit=True)


def activity(url: str) -> Activity:
    with _maintenance(url) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return Activity(cluster_cpu(url), str(row[0]))


def wal_between(url: str, start: str, end: str) -> Wal:
    """The WAL's records between two positions, read by pg_walinspect (PostgreSQL 15):
    commit records are the cluster's commits, counted exactly (the statistics views lag
    by up to 10 s behind idle backends)."""
    with _maintenance(url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        flushed = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        assert flushed is not None
        rows = conn.execute(
            'SELECT "resource_manager/record_type", count, fpi_size '
            "FROM pg_get_wal_stats(%s::pg_lsn, least(%s::pg_lsn, %s::pg_lsn), true)",
            (start, end, flushed[0]),
        ).fetchall()
        size = conn.execute("SELECT %s::pg_lsn - %s::pg_lsn", (end, start)).fetchone()
    assert size is not None
    commits = sum(int(n) for kind, n, _ in rows if kind == "Transaction/COMMIT")
    return Wal(int(size[0]), commits, sum(int(f) for _, _, f in rows))
