"""The pipeline's database work: one connection in one thread, concurrent jobs committed
together.

A database with one writer (SQLite) gains nothing from several writing connections, and the
async driver costs about five times more CPU per statement than a plain connection in a
thread (measured: 1.0 ms against 0.19 ms per insert and commit). Work items queued while a
transaction runs go into the next one: under load one commit (one fsync) serves many jobs.
A transaction waits a few milliseconds after its first item for others to join it. A failing
item is retried alone so that it cannot take the others down with it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import structlog
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from bdi.store.db import connect_args, sqlite_pragmas

log = structlog.get_logger("bdi.store")
T = TypeVar("T")
Work = Callable[[Connection], Any]
MAX_GROUP = 64  # work items per transaction
# how long a transaction waits for more work after its first item: under load, fewer and
# larger commits (measured on 2 cores: ~1.5 items per commit without it, the journal's CPU
# per upload -20 %); alone, an item waits this much longer for its commit
GROUP_WAIT = 0.005
# PostgreSQL groups concurrent WAL flushes itself, and its journal's round trips, not its
# commits, are what a node waits on: 1 ms there gave +12 % small uploads a second (5 ms: 86-90
# files/s at 76-79 % of the machine busy; 1 ms: 97-102 at 91-92 %)
GROUP_WAIT_SERVER = 0.001
# the synchronous driver of each async one the hub can be configured with
_SYNC_DRIVERS = {
    "sqlite+aiosqlite": "sqlite+pysqlite",
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
}


def sync_url(url: str) -> str:
    """The same database through its synchronous driver."""
    parsed = make_url(url)
    driver = _SYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(f"no synchronous driver known for {parsed.drivername}")
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def sync_engine(url: str, readers: bool = False) -> Engine:
    """The journal's one connection, or (`readers`) a small pool for reads from worker
    threads (SQLite's WAL lets them read beside the writer; the names' reads, its only use,
    take one at a time under their lock: each node keeps few of PostgreSQL's connections)."""
    pool: dict[str, Any] = {"poolclass": StaticPool}
    if readers:
        pool = {"pool_pre_ping": not url.startswith("sqlite"), "pool_size": 2, "max_overflow": 0}
    engine = create_engine(sync_url(url), connect_args=connect_args(url), **pool)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", sqlite_pragmas)
    return engine


class _Item:
    __slots__ = ("future", "work")

    def __init__(self, work: Work) -> None:
        self.work = work
        self.future: Future[Any] = Future()

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


def _keep(pending: list[_Item], item: _Item) -> None:
    """Take an item unless its caller gave up before it started (it is then not done)."""
    if item.future.set_running_or_notify_cancel():
        pending.append(item)


def _refuse(items: list[_Item], error: BaseException) -> None:
    for item in items:
        if item.future.done():
            continue
        if item.future.running() or item.future.set_running_or_notify_cancel():
            item.settle(error=error)


_STOP = object()


class Journal:
    """Runs `work(connection)` functions in the writer thread, each in a committed transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._wait = GROUP_WAIT if engine.dialect.name == "sqlite" else GROUP_WAIT_SERVER
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="bdi-journal", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, url: str) -> Journal:
        return cls(sync_engine(url))

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Queue `work`; return its result once its transaction is committed. If the
        caller is cancelled meanwhile, the work is committed all the same."""
        result: T = await asyncio.wrap_future(self.submit(work))
        return result

    def call(self, work: Callable[[Connection], T]) -> T:
        """The same, for a worker thread: blocks until committed."""
        result: T = self.submit(work).result()
        return result

    def submit(self, work: Callable[[Connection], T]) -> Future[T]:
        """Queue `work` and return at once; the future is settled once it is committed (its
        done-callbacks then run in the journal's thread: keep them short)."""
        if not self._thread.is_alive():
            raise RuntimeError("the journal is closed")
        item = _Item(work)
        self._queue.put(item)
        return item.future

    async def close(self) -> None:
        """Finish the queued work, then stop the thread and close the connection."""
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._engine.dispose()

    def _main(self) -> None:
        pending: list[_Item] = []
        try:
            with self._engine.connect() as conn:
                while self._take(pending):
                    self._commit(conn, pending)
                    pending.clear()
                self._commit(conn, pending)
                pending.clear()
        except BaseException as exc:  # the connection itself failed: nothing can be written
            log.exception("journal.failed")
            _refuse([*pending, *self._drain()], RuntimeError(f"the journal stopped: {exc!r}"))
        else:  # queued after the stop: never run
            _refuse(self._drain(), RuntimeError("the journal is closed"))

    def _take(self, pending: list[_Item]) -> bool:
        """Wait for one item, then take what else comes within the group wait; False once told
        to stop."""
        first = self._queue.get()
        if first is _STOP:
            return False
        assert isinstance(first, _Item)
        _keep(pending, first)
        deadline = time.monotonic() + self._wait
        while len(pending) < MAX_GROUP:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return True
            if item is _STOP:
                return False
            assert isinstance(item, _Item)
            _keep(pending, item)
        return True

    def _drain(self) -> list[_Item]:
        items: list[_Item] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items
            if isinstance(item, _Item):
                items.append(item)

    def _commit(self, conn: Connection, items: list[_Item]) -> None:
        if not items:
            return
        try:
            with conn.begin():
                results = [item.work(conn) for item in items]
        except Exception as exc:
            if len(items) > 1:  # find the culprit: each item alone
                for item in items:
                    self._commit(conn, [item])
            else:
                items[0].settle(error=exc)
            return
        for item, result in zip(items, results, strict=True):
            item.settle(result)
