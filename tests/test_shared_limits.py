"""The limits that hold across the nodes of one database (issue 17): the defender's score per
address, the failed passwords per user and address, the connections waiting per address and
the sessions per participant are summed over the live nodes.

The store's functions and the tallies run on the engine of the run (two node ids on one
database); the two-node tests start two real `bdi serve` on one PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import asyncssh
import httpx
import pgcluster
import pytest
import pytest_asyncio
from hubkit import Party, db_rows, make_parties, password_login, prepare_data, sftp_client, until
from sqlalchemy import select
from test_console_support import csrf_of
from test_nodes import Node

from bdi.config import Settings, load_settings
from bdi.defender import SCORES, Defender, DefenderPolicy, Event
from bdi.shared import Sharing, shared_limits
from bdi.ssh import SESSIONS, Gate, Sessions
from bdi.store import limits
from bdi.store.db import make_engine
from bdi.store.models import Node as NodeRow
from bdi.store.repo import Store
from bdi.store.schema import upgrade_to_head
from bdi.suivi.auth import LockoutPolicy
from bdi.throttle import LoginThrottle
from bdi.web import CONSOLE, SUIVI, shared_lockout

ATTACKER = "203.0.113.9"
PARTICIPANT = "COU010234"
two_nodes = pytest.mark.skipif(not pgcluster.wanted(), reason="several nodes need PostgreSQL")


def now() -> datetime:
    return datetime.now(UTC)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store of the run's engine, with live nodes a and b and node c silent."""
    (tmp_path / "data").mkdir()
    url = load_settings(None, data=tmp_path / "data").db_url
    await upgrade_to_head(url)
    opened = Store(make_engine(url))
    async with opened.session() as s:
        for node, seen in (("a", now()), ("b", now()), ("c", now() - timedelta(minutes=5))):
            s.add(NodeRow(id=node, host="h", pid=1, started_at=seen, seen_at=seen))
        await s.commit()
    yield opened
    await opened.engine.dispose()


def alive_since() -> datetime:
    return now() - timedelta(seconds=20)


# --- the store ---------------------------------------------------------------------------------


async def test_a_node_reads_the_sum_of_the_other_live_nodes(store: Store) -> None:
    await limits.write(store, "a", [(SCORES, ATTACKER, 3), (SESSIONS, PARTICIPANT, 2)])
    await limits.write(store, "b", [(SCORES, ATTACKER, 4)])
    await limits.write(store, "c", [(SCORES, ATTACKER, 100)])  # silent: its lease ran out
    assert sorted(await limits.others(store, "b", alive_since())) == [
        (SCORES, ATTACKER, 3),
        (SESSIONS, PARTICIPANT, 2),
    ]
    assert sorted(await limits.others(store, "x", alive_since())) == [
        (SCORES, ATTACKER, 7),
        (SESSIONS, PARTICIPANT, 2),
    ]
    await limits.write(store, "a", [(SCORES, ATTACKER, 5), (SESSIONS, PARTICIPANT, 0)])
    assert await limits.others(store, "b", alive_since()) == [(SCORES, ATTACKER, 5)]


async def test_a_node_that_leaves_or_is_forgotten_has_its_rows_deleted(store: Store) -> None:
    for node in ("a", "b", "c"):
        await limits.write(store, node, [(SCORES, ATTACKER, 1)])
    assert await limits.clear(store, "a") == 1
    assert await limits.sweep(store) == 0  # c is silent, not gone: its row stays, uncounted
    async with store.session() as s:
        await s.delete(await s.get(NodeRow, "c"))
        await s.commit()
    assert await limits.sweep(store) == 1
    async with store.engine.connect() as conn:
        left = (await conn.execute(select(limits.COUNT.c.node))).scalars().all()
    assert left == ["b"]


# --- the tallies, two node ids on one store ---------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def synced(*sharings: Sharing) -> None:
    """Each node writes its counts, then each reads the others' (what a second does)."""
    for sharing in sharings:
        await sharing.sync()
    for sharing in sharings:
        await sharing.sync()


async def test_guesses_spread_over_two_nodes_ban_at_the_threshold(store: Store) -> None:
    clock, policy = Clock(), DefenderPolicy(threshold=6)
    a, b = Sharing(store, "a", 20), Sharing(store, "b", 20)
    here, there = Defender(store, policy, clock, a), Defender(store, policy, clock, b)
    for _ in range(3):
        assert not here.record(ATTACKER, Event.SSH_PASSWORD)
    await synced(a, b)
    assert there.shared is not None and there.shared.other(ATTACKER) == 3
    assert not there.record(ATTACKER, Event.SSH_PASSWORD)
    assert not there.record(ATTACKER, Event.SSH_PASSWORD)
    assert there.record(ATTACKER, Event.SSH_PASSWORD)  # 3 here and 3 there
    await there.flush()
    await here.refresh()  # the ban reaches the other node; its score starts again at 0
    assert here.is_banned(ATTACKER)
    await synced(a, b)
    assert await limits.others(store, "x", alive_since()) == []


async def test_a_score_leaves_the_other_nodes_with_its_window(store: Store) -> None:
    clock, policy = Clock(), DefenderPolicy(threshold=6, window_s=60)
    a, b = Sharing(store, "a", 20), Sharing(store, "b", 20)
    here, there = Defender(store, policy, clock, a), Defender(store, policy, clock, b)
    here.record(ATTACKER, Event.SSH_PASSWORD)
    clock.now += 30
    here.record(ATTACKER, Event.SSH_PASSWORD)
    await synced(a, b)
    assert there.shared is not None and there.shared.other(ATTACKER) == 2
    clock.now += 31  # the first failure leaves the window
    await synced(a, b)
    assert there.shared.other(ATTACKER) == 1
    clock.now += 30
    await synced(a, b)
    assert there.shared.other(ATTACKER) == 0
    assert await limits.others(store, "x", alive_since()) == []


async def test_failed_passwords_on_two_nodes_pause_the_pair(store: Store) -> None:
    clock = Clock()
    a, b = Sharing(store, "a", 20), Sharing(store, "b", 20)
    here = LoginThrottle(5, 300, clock, a)
    there = LoginThrottle(5, 300, clock, b)
    pair, other = (PARTICIPANT, ATTACKER), (PARTICIPANT, "198.51.100.20")
    for _ in range(3):
        here.record(pair, False)
    there.record(pair, False)
    await synced(a, b)
    assert not there.blocked(pair)
    there.record(pair, False)
    assert there.blocked(pair) and not there.blocked(other)
    await synced(a, b)
    assert here.blocked(pair)
    clock.now += 301  # the window: both rows fall
    await synced(a, b)
    assert not here.blocked(pair) and not there.blocked(pair)


async def test_web_login_failures_on_two_nodes_lock_the_pair_at_the_total(store: Store) -> None:
    clock, policy = Clock(), LockoutPolicy(max_failures=10, lock_seconds=900)
    a, b = Sharing(store, "a", 20), Sharing(store, "b", 20)
    here, there = shared_lockout(a), shared_lockout(b)
    here.policy = there.policy = policy
    here.clock = there.clock = clock
    for tally in (*a.tallies.values(), *b.tallies.values()):
        tally.clock = clock
    for _ in range(6):
        here.failed(PARTICIPANT, ATTACKER)
    for _ in range(3):
        there.failed(PARTICIPANT, ATTACKER)
    await synced(a, b)
    assert not there.locked(PARTICIPANT, ATTACKER)
    assert there.delay(PARTICIPANT) == policy.max_delay  # 9 failures on the id in all
    there.failed(PARTICIPANT, ATTACKER)  # the tenth, on node b
    assert there.locked(PARTICIPANT, ATTACKER)
    assert not there.locked(PARTICIPANT, "198.51.100.20")  # the owner's own address
    await synced(a, b)
    assert here.locked(PARTICIPANT, ATTACKER)
    clock.now += 901  # the lock served, the failures quiet: both rows fall
    await synced(a, b)
    assert not here.locked(PARTICIPANT, ATTACKER) and not there.locked(PARTICIPANT, ATTACKER)
    assert here.delay(PARTICIPANT) == there.delay(PARTICIPANT) == 0.0
    assert await limits.others(store, "x", alive_since()) == []


async def test_a_web_login_that_succeeds_clears_its_node_s_shared_failures(store: Store) -> None:
    a, b = Sharing(store, "a", 20), Sharing(store, "b", 20)
    here, there = shared_lockout(a), shared_lockout(b)
    for _ in range(4):
        here.failed(PARTICIPANT, ATTACKER)
    await synced(a, b)
    assert there.delay(PARTICIPANT) > 0
    here.succeeded(PARTICIPANT, ATTACKER)
    await synced(a, b)
    assert there.delay(PARTICIPANT) == 0.0
    assert await limits.others(store, "x", alive_since()) == []


class Waiting:
    def abort(self) -> None:
        pass


async def test_connections_waiting_and_sessions_count_on_every_node(store: Store) -> None:
    a, b = Sharing(store, "a", 20), Sharing(store, "b", 20)
    gate_a, gate_b = Gate(2, 512, a.tally("waiting")), Gate(2, 512, b.tally("waiting"))
    assert gate_a.enter(ATTACKER, Waiting()) is None
    sessions_a, sessions_b = Sessions.among(a), Sessions.among(b)
    conn = cast(asyncssh.SSHServerConnection, object())
    sessions_a.add(PARTICIPANT, conn, 0)
    await synced(a, b)
    assert gate_b.enter(ATTACKER, Waiting()) is None
    assert gate_b.enter(ATTACKER, Waiting()) is not None  # 1 here, 1 there
    assert sessions_b.total(PARTICIPANT) == 1 and sessions_b.count(PARTICIPANT) == 0
    sessions_a.remove(PARTICIPANT, conn)
    await synced(a, b)
    assert sessions_b.total(PARTICIPANT) == 0


async def test_sqlite_shares_nothing(store: Store) -> None:
    async with shared_limits(store, "a", 20) as sharing:
        assert (sharing is None) == (store.engine.dialect.name == "sqlite")


# --- two real nodes on one PostgreSQL ---------------------------------------------------------


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([PARTICIPANT]) as made:
        yield made


@contextlib.asynccontextmanager
async def two_serving(
    tmp_path: Path, parties: dict[str, Party], **env: str
) -> AsyncIterator[tuple[Settings, Node, Node]]:
    data = tmp_path / "data"
    settings = load_settings(None, data=data)
    await prepare_data(settings, parties)
    first, second = Node(data, "node-a", **env), Node(data, "node-b", **env)
    try:
        await asyncio.gather(first.listening(), second.listening())
        yield settings, first, second
    finally:
        first.stop()
        second.stop()


async def login(node: Node, user: str, password: str) -> str:
    return await password_login(node.port, user, password)


def counted(settings: Settings, node: str, kind: str, key: str) -> int:
    query = "SELECT count FROM sharedcount WHERE node = :n AND kind = :k AND key = :key"
    rows = db_rows(settings, query, n=node, k=kind, key=key)
    return int(rows[0][0]) if rows else 0


@two_nodes
async def test_guesses_spread_over_two_nodes_ban_the_address_at_the_total(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """A made-up user weighs 2, its connection gone before a login 1: 3 per try. After 5 tries
    on node a and 1 on node b, each seen by the other, b bans within 4 more tries (b alone
    would take 9 more)."""
    async with two_serving(tmp_path, parties, BDI_DEFENDER_THRESHOLD="30") as (settings, a, b):
        for n in range(5):
            assert await login(a, f"COU9{n:05}", "guess") == "denied"

        async def a_wrote() -> bool:
            return counted(settings, "node-a", SCORES, "127.0.0.1") == 15

        await until(a_wrote, 10)
        assert await login(b, "COU800000", "guess") == "denied"

        async def b_synced() -> bool:  # b's sync writes its row, then reads a's at once
            return counted(settings, "node-b", SCORES, "127.0.0.1") == 3

        await until(b_synced, 10)
        tries = [await login(b, f"COU8{n:05}", "guess") for n in range(1, 6)]
        assert tries == ["denied"] * 4 + ["refused"], tries

        async def a_refuses() -> bool:
            return await login(a, PARTICIPANT, parties[PARTICIPANT].password) == "refused"

        await until(a_refuses, 10)  # the ban reaches the other node
        query = "SELECT score FROM ban WHERE address = '127.0.0.1'"
        assert [r[0] >= 30 for r in db_rows(settings, query)] == [True]


@two_nodes
async def test_web_login_failures_on_a_node_are_counted_for_the_others(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """The web port's lockouts (the Suivi's login and /api/uploads; the console's) write their
    counts for the other nodes; what they do with them: the tests on `shared_lockout` above."""
    async with two_serving(tmp_path, parties, BDI_DEFENDER_THRESHOLD="1000") as (settings, a, _):
        url = f"http://127.0.0.1:{a.web_port}/api/uploads/RCOU010234_00311_000001.edi"
        async with httpx.AsyncClient(auth=(PARTICIPANT, "guess"), timeout=30) as client:

            async def answers() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get(url, auth=None)).status_code == 401
                return False

            await until(answers, 30)
            for _ in range(3):
                assert (await client.get(url)).status_code == 401
        console = f"http://127.0.0.1:{a.web_port}/exploitation/connexion"
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(2):
                form = {"csrf": csrf_of((await client.get(console)).text),
                        "identifiant": "ops", "mot_de_passe": "guess"}  # fmt: skip
                assert (await client.post(console, data=form)).status_code == 401

        async def a_wrote() -> bool:
            pair = counted(settings, "node-a", SUIVI[0], f"{PARTICIPANT} 127.0.0.1")
            ops = counted(settings, "node-a", CONSOLE[0], "OPS 127.0.0.1")
            return (pair, counted(settings, "node-a", SUIVI[1], PARTICIPANT), ops) == (3, 3, 2)

        await until(a_wrote, 10)


@contextlib.asynccontextmanager
async def session(node: Node, party: Party) -> AsyncIterator[asyncssh.SFTPClient]:
    async with sftp_client(node.port, party) as sftp:
        await sftp.listdir("/")
        yield sftp


async def ignore_errors(*exc: object) -> bool:
    return True


async def refused(node: Node, party: Party) -> bool:
    """A further session of the party on `node` is refused (one accepted is closed again)."""
    try:
        async with session(node, party):
            return False
    except (OSError, asyncssh.Error):
        return True


@two_nodes
async def test_sessions_spread_over_two_nodes_are_refused_at_the_cap_and_a_killed_node_stops_counting(  # noqa: E501
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    party = parties[PARTICIPANT]
    env = {"BDI_SESSIONS_PER_PARTICIPANT": "2", "BDI_NODE_BEAT_S": "0.5",
           "BDI_NODE_LEASE_S": "3"}  # fmt: skip
    async with two_serving(tmp_path, parties, **env) as (settings, a, b):
        async with contextlib.AsyncExitStack() as held:
            held.push_async_exit(ignore_errors)  # the session on the killed node is gone
            await held.enter_async_context(session(a, party))
            await held.enter_async_context(session(b, party))

            async def both_written() -> bool:
                return all(counted(settings, n, SESSIONS, PARTICIPANT) == 1
                           for n in ("node-a", "node-b"))  # fmt: skip

            await until(both_written, 10)

            async def a_refuses() -> bool:
                return await refused(a, party)

            async def b_refuses() -> bool:
                return await refused(b, party)

            await until(a_refuses, 10)  # 1 on a and 1 on b: the cap, on either node
            await until(b_refuses, 10)
            a.process.send_signal(signal.SIGKILL)
            a.process.wait()

            async def b_accepts() -> bool:
                return not await refused(b, party)

            await until(b_accepts, 15)  # a's session counts no more: a is dead
        b.stop()
        rows = db_rows(settings, "SELECT count(*) FROM sharedcount WHERE node = 'node-b'")
        assert rows == [(0,)]  # a clean stop deletes the node's rows


@two_nodes
async def test_a_node_paused_past_its_lease_counts_no_more_until_it_beats_again(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """Its process is alive (not forgotten): only the lease leaves its rows out."""
    party = parties[PARTICIPANT]
    env = {"BDI_SESSIONS_PER_PARTICIPANT": "2", "BDI_NODE_BEAT_S": "0.5",
           "BDI_NODE_LEASE_S": "3"}  # fmt: skip
    async with (
        two_serving(tmp_path, parties, **env) as (_, a, b),
        session(a, party),
        session(b, party),
    ):

        async def b_refuses() -> bool:
            return await refused(b, party)

        async def b_accepts() -> bool:
            return not await refused(b, party)

        await until(b_refuses, 10)
        a.process.send_signal(signal.SIGSTOP)
        try:
            await until(b_accepts, 15)  # a silent past its lease
        finally:
            a.process.send_signal(signal.SIGCONT)
        await until(b_refuses, 15)  # a beats again: its session counts again
