"""The counts toward the limits that hold across the nodes of one database (issue 17; HUB.md,
"Limits that protect the market"): each node writes its own rows (`SharedCount`) and reads
the sums of the other live nodes' (a node whose lease ran out, or that left, counts no more).

A node writes only rows under its own id: the nodes never write the same row, so a batch is
a plain delete and insert in one transaction, the same SQL on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, select

from bdi.store.models import Node, SharedCount
from bdi.store.repo import Store

COUNT = cast(Table, cast(Any, SharedCount).__table__)
NODE = cast(Table, cast(Any, Node).__table__)
Change = tuple[str, str, int]  # kind, key, this node's count now (0: none)

_DELETE = delete(COUNT).where(
    COUNT.c.node == bindparam("b_node"),
    COUNT.c.kind == bindparam("b_kind"),
    COUNT.c.key == bindparam("b_key"),
)


async def write(store: Store, node: str, changes: Sequence[Change]) -> None:
    """This node's counts that changed, in one transaction (a count of 0 deletes its row)."""
    if not changes:
        return
    keys = [{"b_node": node, "b_kind": kind, "b_key": key} for kind, key, _ in changes]
    rows = [{"node": node, "kind": k, "key": key, "count": n} for k, key, n in changes if n > 0]
    async with store.engine.begin() as conn:
        await conn.execute(_DELETE, keys)
        if rows:
            await conn.execute(COUNT.insert(), rows)


async def others(store: Store, node: str, alive_since: datetime) -> list[Change]:
    """The other nodes' counts, summed per kind and key, of the nodes seen since
    `alive_since` (those gone from the node table, or silent, left out)."""
    alive = and_(NODE.c.id == COUNT.c.node, NODE.c.id != node, NODE.c.seen_at >= alive_since)
    query = (
        select(COUNT.c.kind, COUNT.c.key, func.sum(COUNT.c.count))
        .select_from(COUNT.join(NODE, alive))
        .group_by(COUNT.c.kind, COUNT.c.key)
    )
    async with store.engine.connect() as conn:
        result = await conn.execute(query)
        return [(kind, key, int(total)) for kind, key, total in result]


async def clear(store: Store, node: str) -> int:
    """Delete a node's rows (its start, its clean stop); how many there were."""
    async with store.engine.begin() as conn:
        result = await conn.execute(delete(COUNT).where(COUNT.c.node == node))
    return int(result.rowcount)


async def sweep(store: Store) -> int:
    """Delete the rows of the nodes no longer in the node table (forgotten: dead on their
    host); a silent node's stay, uncounted, until it comes back or is forgotten."""
    gone = delete(COUNT).where(COUNT.c.node.not_in(select(NODE.c.id)))
    async with store.engine.begin() as conn:
        result = await conn.execute(gone)
    return int(result.rowcount)
