"""Several `bdi serve` on one database (PostgreSQL): each node's heartbeat, and the jobs of
a node that stopped beating, taken over by another.

A job belongs to the node that took it in (`Job.node`). Its node alone plans and finishes
it: those transitions are fenced on `node` (`JobTaken` when another node has it now). A
node that starts, or notices that another has stopped beating for `lease_s`, claims such
jobs with `FOR UPDATE SKIP LOCKED`: two nodes claiming at once never get the same job.
The node's id is kept in its journal connection's `info` (`bind`), where the store's job
functions read it, so that the pipeline carries no node of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, and_, delete, or_, select, update

from bdi.store.models import Job, Node

NODE = cast(Table, cast(Any, Node).__table__)
JOB = cast(Table, cast(Any, Job).__table__)
_KEY = "bdi.node"


class JobTaken(RuntimeError):
    """The job is another node's now: this node stopped beating long enough to lose it."""


class NodeBusy(OSError):
    """Another live process already runs under this node id (as `HubBusy`: `bdi serve`
    says so in one line)."""


@dataclass(frozen=True, slots=True)
class NodeRef:
    id: str
    host: str
    pid: int


def bind(conn: Connection, node: str) -> None:
    conn.info[_KEY] = node


def bound(conn: Connection) -> str | None:
    node = conn.info.get(_KEY)
    return node if isinstance(node, str) else None


def join(conn: Connection, node: NodeRef, at: datetime, lease_s: float) -> None:
    """Record the node as alive; refused while another process beats under its id."""
    row = conn.execute(select(NODE.c.host, NODE.c.pid, NODE.c.seen_at).where(NODE.c.id == node.id))
    found = row.first()
    if found is not None and (found.host, found.pid) != (node.host, node.pid):
        _refuse_if_alive(node.id, found.host, int(found.pid), _aware(found.seen_at), at, lease_s)
    conn.execute(delete(NODE).where(NODE.c.id == node.id))
    conn.execute(NODE.insert().values(id=node.id, host=node.host, pid=node.pid, started_at=at,
                                      seen_at=at))  # fmt: skip


def _refuse_if_alive(
    node: str, host: str, pid: int, seen: datetime, at: datetime, lease_s: float
) -> None:
    if seen > at - timedelta(seconds=lease_s):
        raise NodeBusy(f"node {node} runs already (pid {pid} on {host})")


def beat(conn: Connection, node: str, at: datetime) -> None:
    conn.execute(update(NODE).where(NODE.c.id == node).values(seen_at=at))


def nodes(conn: Connection) -> list[tuple[str, str, int, datetime]]:
    """Every node recorded: id, host, pid, last seen."""
    rows = conn.execute(select(NODE.c.id, NODE.c.host, NODE.c.pid, NODE.c.seen_at))
    return [(i, h, int(p), _aware(s)) for i, h, p, s in rows]


def forget(conn: Connection, node: str) -> None:
    """A node known dead (its process is gone from this host): its jobs are orphans now."""
    conn.execute(delete(NODE).where(NODE.c.id == node))


def leave(conn: Connection, node: str) -> None:
    """A node stopping cleanly: its unfinished jobs are anyone's at once."""
    conn.execute(update(JOB).where(JOB.c.node == node, JOB.c.state != "done").values(node=None))
    conn.execute(delete(NODE).where(NODE.c.id == node))


def claimable(node: str, alive_since: datetime, own: bool) -> Any:
    """Unfinished, not quarantined jobs of no node or of a node not seen since
    `alive_since` (or unknown); and this node's own when `own` (at its start: a restart
    under the same id), never at runtime, when its own are in its hands."""
    others_alive = select(NODE.c.id).where(NODE.c.seen_at >= alive_since, NODE.c.id != node)
    orphaned: ColumnElement[bool] = JOB.c.node.not_in(others_alive)
    if not own:
        orphaned = and_(JOB.c.node != node, orphaned)
    return and_(JOB.c.state != "done", JOB.c.quarantined_at.is_(None),
                or_(JOB.c.node.is_(None), orphaned))  # fmt: skip


def claim(conn: Connection, node: str, alive_since: datetime, own: bool, limit: int) -> list[int]:
    """Make claimable jobs this node's; their ids, oldest first."""
    ids = (
        select(JOB.c.id).where(claimable(node, alive_since, own)).order_by(JOB.c.id)
        .limit(limit).with_for_update(skip_locked=True)
    )  # fmt: skip
    taken = [int(i) for i in conn.execute(ids).scalars()]
    if taken:
        conn.execute(update(JOB).where(JOB.c.id.in_(taken)).values(node=node))
    return taken


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
