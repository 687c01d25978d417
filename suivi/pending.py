"""Pending flows (OPTIFLUX.md §8.8) and incomplete répartitions (§8.9).

For mailbox U and a flow, `last` is the latest movement of the flow that U sent or received
(from January 2008 on); every list is a condition on `last`, so that each transition of the
seed (send, answer, reject, re-send, distribute) moves the flow by itself.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import col

from bdi.routing.layout import Layout
from bdi.store.models import Dismissal, FlowOccurrence, Movement, ReferentialParticipant
from bdi.store.repo import Store
from bdi.suivi import sql
from bdi.suivi.queries import CESAM, Hit, Page, hit_of, page_of
from bdi.suivi.values import PARIS

Occ, Mov = FlowOccurrence, Movement
PRODUCERS = ("COU", "AGT")
LEADERS = ("CIE", "APE")
Condition = Callable[[str], ColumnElement[bool]]


@dataclass(frozen=True, slots=True)
class PendingList:
    """One list of §8.8: its id (URLs, dismissals), French title, and its rule on `last`."""

    name: str
    fr: str
    rule: Condition
    dismissable: bool = False


def _rejected() -> ColumnElement[bool]:
    return col(Occ.control) == "R"


def _received_by_leader(user: str) -> ColumnElement[bool]:
    """From a producer; for an AASO also from a company handing it the flow (§8.8)."""
    senders = PRODUCERS + (LEADERS if user.startswith("APE") else ())
    return and_(col(Mov.recipient_id) == user, sql.sent_from(senders, col(Mov.sender_id)))


PRODUCER_LISTS = (
    PendingList("en-cours", "Flux en cours de traitement", lambda u: col(Mov.sender_id) == u),
    PendingList(
        "rejetes",
        "Flux rejetés",
        lambda u: and_(col(Mov.recipient_id) == u, _rejected()),
        dismissable=True,
    ),
)
LEADER_LISTS = (
    PendingList("recus-apporteur", "Flux reçus de l'apporteur non validés", _received_by_leader),
    PendingList(
        "envoyes-cesam",
        "Flux envoyés au CESAM en attente de retour",
        lambda u: and_(col(Mov.sender_id) == u, col(Mov.recipient_id) == CESAM),
    ),
    PendingList(
        "rejetes-cesam",
        "Flux rejetés par le CESAM",
        lambda u: and_(col(Mov.sender_id) == CESAM, col(Mov.recipient_id) == u, _rejected()),
        dismissable=True,
    ),
    PendingList(
        "rejetes-apporteur",
        "Flux rejetés vers l'apporteur",
        lambda u: and_(
            col(Mov.sender_id) == u, sql.sent_from(PRODUCERS, col(Mov.recipient_id)), _rejected()
        ),
        dismissable=True,
    ),
)
CESAM_LISTS = (PendingList("recus", "Flux reçus", lambda u: col(Mov.recipient_id) == u),)


def lists_for(user: str) -> tuple[PendingList, ...]:
    """Producer view (two lists), leader view (four), the CESAM's one list."""
    if user.startswith(PRODUCERS):
        return PRODUCER_LISTS
    if user.startswith(LEADERS):
        return LEADER_LISTS
    return CESAM_LISTS


def list_named(user: str, name: str) -> PendingList | None:
    return next((p for p in lists_for(user) if p.name == name), None)


def pending_since(layout: Layout) -> datetime:
    """`pending_from` (January 2008) at midnight in Paris, as a stored UTC time."""
    day = date.fromisoformat(layout.pending_from)
    return datetime.combine(day, time(), tzinfo=PARIS).astimezone(UTC)


def _not_dismissed(user: str, name: str) -> ColumnElement[bool]:
    """No dismissal by the user of this flow from this list since `last` (§8.8)."""
    return ~exists().where(
        col(Dismissal.participant_id) == user,
        col(Dismissal.list_name) == name,
        col(Dismissal.flow_id) == col(Occ.flow_id),
        col(Dismissal.at) >= col(Mov.created_at),
    )


def pending_stmt(layout: Layout, user: str, layout_name: str, pending: PendingList) -> Select[Any]:
    where = [col(Occ.layout) == layout_name, sql.since(pending_since(layout))]
    stmt = sql.rows_of(sql.latest_visible(user, where)).where(pending.rule(user))
    if pending.dismissable:
        stmt = stmt.where(_not_dismissed(user, pending.name))
    return stmt.order_by(*sql.NEWEST_FIRST)


async def pending_page(
    store: Store, layout: Layout, user: str, layout_name: str, pending: PendingList, number: int
) -> Page[Hit]:
    hits = pending_rows(store, layout, user, layout_name, pending)
    return await page_of(hits, number, layout.page_size)


async def pending_rows(
    store: Store, layout: Layout, user: str, layout_name: str, pending: PendingList
) -> AsyncIterator[Hit]:
    async for row in sql.stream(store, pending_stmt(layout, user, layout_name, pending)):
        yield hit_of(row)


async def dismiss(
    store: Store, layout: Layout, user: str, layout_name: str, name: str, flow_id: int, at: datetime
) -> bool:
    """The trash icon: only a flow now in one of the user's rejected lists can be dismissed."""
    pending = list_named(user, name)
    if pending is None or not pending.dismissable:
        return False
    stmt = pending_stmt(layout, user, layout_name, pending).where(col(Occ.flow_id) == flow_id)
    if not await sql.all_rows(store, stmt):
        return False
    async with store.session() as s:
        s.add(Dismissal(participant_id=user, list_name=name, flow_id=flow_id, at=at))
        await s.commit()
    return True


# --- §8.9 incomplete répartitions --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Referential:
    """Participant codes: type letter and mailbox of each (apport.txt)."""

    types: Mapping[str, str]
    mailboxes: Mapping[str, str]

    def codes_of(self, user: str) -> list[str]:
        return [code for code, edi in self.mailboxes.items() if edi == user]


async def load_referential(store: Store) -> Referential:
    rows: list[ReferentialParticipant] = await store.referential()
    return Referential({r.code: r.type for r in rows}, {r.code: r.edi_id for r in rows if r.edi_id})


def aaso_offices(optiflux_key: str, office_codes: str, ref: Referential) -> set[str]:
    """Type B office codes of the grid's lines other than the clé's office (§8.9);
    `office_codes` as the row keeps them (' 00311 00452 ')."""
    office = optiflux_key[4:9]
    return {c for c in office_codes.split() if c != office and ref.types.get(c) == "B"}


def audience(hit: Hit, aasos: set[str], ref: Referential) -> set[str]:
    """Who sees an incomplete répartition: its sender, its producer, the AASOs it names."""
    producer = ref.mailboxes.get(str(hit.values.get("producer_code") or ""))
    return {hit.sender_id, *(ref.mailboxes[c] for c in aasos if c in ref.mailboxes)} | (
        {producer} if producer else set()
    )


def _answered_later() -> ColumnElement[bool]:
    """A later REP movement from the CESAM for the same clé, whatever its state."""
    o2, m2 = aliased(Occ), aliased(Mov)
    later = or_(
        col(m2.created_at) > col(Mov.created_at),
        and_(col(m2.created_at) == col(Mov.created_at), col(m2.id) > col(Mov.id)),
    )
    return exists().where(
        col(m2.id) == col(o2.movement_id),
        col(o2.optiflux_key) == col(Occ.optiflux_key),
        col(o2.flow_code) == "REP",
        col(m2.sender_id) == CESAM,
        later,
    )


def _concerns(user: str, ref: Referential) -> ColumnElement[bool]:
    """SQL pre-filter: sent by the user, or naming one of its codes (re-checked in Python)."""
    codes = ref.codes_of(user)
    named = [sql.contains(col(Occ.office_codes), f" {c} ") for c in codes]
    return or_(col(Mov.sender_id) == user, col(Occ.producer_code).in_(codes), *named)


def incomplete_stmt(layout: Layout, user: str, ref: Referential) -> Select[Any]:
    return (
        select(*sql.ROW_COLUMNS, sql.OFFICES)
        .join(Mov, sql.JOIN)
        .where(
            col(Occ.flow_code) == "REP",
            sql.sent_from(LEADERS, col(Mov.sender_id)),
            col(Mov.recipient_id) == CESAM,
            sql.since(pending_since(layout)),
            _concerns(user, ref),
            ~_answered_later(),
        )
        .order_by(*sql.NEWEST_FIRST)
    )


async def incomplete_rows(store: Store, layout: Layout, user: str) -> AsyncGenerator[Hit, None]:
    """The incomplete répartitions the user sees, one per flow, newest first."""
    ref = await load_referential(store)
    seen: set[int] = set()
    async for row in sql.stream(store, incomplete_stmt(layout, user, ref)):
        hit = hit_of(row)
        aasos = aaso_offices(str(hit.values.get("optiflux_key") or ""), row.office_codes, ref)
        if hit.flow_id in seen or not aasos or user not in audience(hit, aasos, ref):
            continue
        seen.add(hit.flow_id)
        yield hit


async def incomplete_page(store: Store, layout: Layout, user: str, number: int) -> Page[Hit]:
    return await page_of(incomplete_rows(store, layout, user), number, layout.page_size)


async def incomplete_hit(store: Store, layout: Layout, user: str, flow_id: int) -> Hit | None:
    """The row the user's list of incomplete répartitions shows for this flow, if any."""
    async with aclosing(incomplete_rows(store, layout, user)) as rows:
        async for hit in rows:
            if hit.flow_id == flow_id:
                return hit
    return None


async def incomplete_flow_ids(store: Store, layout: Layout, user: str) -> set[int]:
    """Flows whose tracking the §8.9 exception opens to the user."""
    return {hit.flow_id async for hit in incomplete_rows(store, layout, user)}
