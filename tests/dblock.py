"""Another process (or connection) holding the hub's database locked, on either engine:
SQLite's write lock (BEGIN EXCLUSIVE), or PostgreSQL's ACCESS EXCLUSIVE on the tables a
take-in and a job write. The hub waits 10 s for a lock on both (busy_timeout, lock_timeout),
then fails with a fault of its own."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bdi.config import Settings
from bdi.store.journal import sync_engine

TABLES = "job, output, movement, inboxfile, flow, flowoccurrence"

# run as `python -c LOCKER <database url> <seconds>`: prints "ready", waits for a line on
# its standard input, then locks, prints "locked", holds, lets go. Started ahead, so that
# the lock is taken within a millisecond of the line, before a job ends, however loaded
# the machine (Python's start-up alone may take longer than the job).
LOCKER = f"""
import sys, time
url, seconds = sys.argv[1], float(sys.argv[2])
if url.startswith("sqlite"):
    import sqlite3
    lock = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, timeout=30)
    print("ready", flush=True)
    sys.stdin.readline()
    lock.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(seconds)
    lock.execute("ROLLBACK")
else:
    from sqlalchemy import text
    from bdi.store.journal import sync_engine
    with sync_engine(url).connect() as conn:
        print("ready", flush=True)
        sys.stdin.readline()
        conn.execute(text("LOCK TABLE {TABLES} IN ACCESS EXCLUSIVE MODE"))
        print("locked", flush=True)
        time.sleep(seconds)
        conn.rollback()
"""


@contextlib.contextmanager
def database_locked(settings: Settings) -> Iterator[None]:
    """The database locked by another connection while the block runs."""
    url = settings.db_url
    if url.startswith("sqlite"):
        lock = sqlite3.connect(str(make_url(url).database), isolation_level=None, timeout=10)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            yield
            lock.execute("ROLLBACK")
        finally:
            lock.close()
        return
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f"LOCK TABLE {TABLES} IN ACCESS EXCLUSIVE MODE"))
            yield
            conn.rollback()
    finally:
        engine.dispose()
