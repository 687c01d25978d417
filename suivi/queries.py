"""The Suivi's queries (OPTIFLUX.md §8), testable without HTTP.

Every function takes the user's EDI id and applies the access rule (§8.1) in SQL: a user
only ever gets flows with at least one movement it sent or received (plus the one exception
of §8.9, in `bdi.suivi.pending`), and files it sent or received. A result row shows the
values of the latest occurrence in the user's own movements, so that a search never shows
the content of a file the user may not open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from math import ceil
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Label, Row, Select, func, select
from sqlmodel import col

from bdi.routing.layout import Column, Layout, SearchSpec
from bdi.store.folding import fold
from bdi.store.models import FlowOccurrence, Movement, StoredContent
from bdi.store.repo import Store
from bdi.suivi import sql, textindex
from bdi.suivi.values import ACCOUNT_BALANCE, LINE_CONTROL, PARIS, Kind, kinds_of, text_of

T = TypeVar("T")
Occ, Mov = FlowOccurrence, Movement
CESAM = "GIE000001"
ACCOUNT_HEAD = "financial_account_6"
LINE_RECORD = "financial_account_2"
# the search whose columns show a flow of each layout (file detail, pending lists, by clé)
SEARCH_OF_LAYOUT: Mapping[str, str] = {
    "allocation": "allocations",
    "claim_advice": "claim_advices",
    "settlement": "settlements",
    "premium": "premiums",
    "financial_account": "accounts_by_balance",
}
# the flow types as the manual names them (menu, tables of the search by clé)
FLOW_TYPES: Mapping[str, str] = {
    "allocation": "Répartitions",
    "claim_advice": "Bulletins",
    "settlement": "Dispaches",
    "premium": "Primes",
    "financial_account": "Comptes Financiers",
}
# `only_when` of `[[suivi.searches]]` (§8.10), spelled as layout.toml spells it
ONLY_WHEN_CESAM_FLAG = "sender is GIE000001 and differentiated_brokerage_flag = O"
ONLY_WHEN_H = "file type H"
# above this many candidate flows a search runs as one SQL statement instead of by flow ids
CANDIDATE_LIMIT = 5000


@dataclass(frozen=True, slots=True)
class Hit:
    """One result row: a flow, or a compte financier line, as the user sees it."""

    flow_id: int
    occurrence_id: int
    movement_id: int
    at: datetime
    sender_id: str
    recipient_id: str
    file_name: str
    file_type: str
    layout: str
    flow_code: str
    control: str
    comment: str
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    number: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, ceil(self.total / self.size))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def hit_of(row: Row[Any], values: Mapping[str, Any] | None = None) -> Hit:
    return Hit(
        flow_id=row.flow_id,
        occurrence_id=row.oid,
        movement_id=row.movement_id,
        at=row.created_at,
        sender_id=row.sender_id,
        recipient_id=row.recipient_id,
        file_name=row.file_name,
        file_type=row.file_type,
        layout=row.layout,
        flow_code=row.flow_code,
        control=row.control,
        comment=row.comment,
        values=values if values is not None else json.loads(row.fields_json),
    )


def page_slice(number: int, size: int) -> tuple[int, int]:
    start = (max(1, number) - 1) * size
    return start, start + size


async def page_of(items: AsyncIterator[T], number: int, size: int) -> Page[T]:
    """Count everything, keep one page: memory stays one page whatever the total."""
    start, end = page_slice(number, size)
    kept: list[T] = []
    total = 0
    async for item in items:
        if start <= total < end:
            kept.append(item)
        total += 1
    return Page(kept, total, max(1, number), size)


# --- criteria ----------------------------------------------------------------------------


def clean_criteria(spec: SearchSpec, raw: Mapping[str, str]) -> dict[str, str]:
    """The criteria given (trimmed, empty ones dropped), keyed by layout field."""
    wanted = {c.field for c in spec.criteria}
    return {k: v.strip() for k, v in raw.items() if k in wanted and v.strip()}


def matches(
    spec: SearchSpec,
    criteria: Mapping[str, str],
    values: Mapping[str, Any],
    kinds: Mapping[str, Kind],
) -> bool:
    """§8.4: codes exact, other text a case- and accent-insensitive substring, all
    criteria ANDed."""
    for criterion in spec.criteria:
        wanted = criteria.get(criterion.field)
        if wanted is None:
            continue
        got = fold(text_of(values.get(criterion.field), kinds.get(criterion.field))) or ""
        if criterion.match == "exact" and got != (fold(wanted) or ""):
            return False
        if criterion.match != "exact" and (fold(wanted) or "") not in got:
            return False
    return True


def _json_safe(text: str) -> bool:
    """Text that appears verbatim in our JSON (ASCII, nothing json.dumps escapes)."""
    return all(32 <= ord(c) < 127 and c not in '"\\' for c in text)


@dataclass(slots=True)
class Narrowing:
    """SQL conditions derived from criteria; `exact` when they decide the search alone."""

    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    exact: bool = True


def head_narrowing(
    spec: SearchSpec, criteria: Mapping[str, str], kinds: Mapping[str, Kind]
) -> Narrowing:
    """Indexed columns for the clé, the code apporteur and the insured name; a JSON text
    pre-filter (a superset, re-checked in Python) for the rest."""
    out = Narrowing()
    layout_has_key_clé = spec.record != ACCOUNT_HEAD
    for name, wanted in criteria.items():
        if name == "optiflux_key" and layout_has_key_clé:
            out.conditions.append(sql.clé_contains(wanted))
        elif name == "producer_code":
            out.conditions.append(col(Occ.producer_code) == wanted)
        elif name == "insured_name":
            out.conditions.append(sql.contains(col(Occ.insured_folded), fold(wanted) or ""))
        else:
            out.exact = False
            _json_narrowing(out, col(Occ.fields_json), wanted, kinds.get(name))
    return out


def line_narrowing(criteria: Mapping[str, str], kinds: Mapping[str, Kind]) -> Narrowing:
    out = Narrowing(exact=False)
    for name, wanted in criteria.items():
        _json_narrowing(out, col(Occ.lines_json), wanted, kinds.get(name))
    return out


def _json_narrowing(out: Narrowing, column: Any, wanted: str, kind: Kind | None) -> None:
    numeric = kind is not None and kind.kind == "numeric"
    if _json_safe(wanted) and not numeric:
        out.conditions.append(sql.icontains(column, wanted))


# --- flow searches (§8.4, §8.10) ---------------------------------------------------------


def spec_layout(layout: Layout, spec: SearchSpec) -> str:
    return layout.records[spec.record].layout


def only_when(spec: SearchSpec) -> list[ColumnElement[bool]]:
    """SQL part of a search's `only_when` (§8.10); the brokerage flag is checked on values."""
    if spec.only_when is None:
        return []
    if spec.only_when == ONLY_WHEN_CESAM_FLAG:
        return [col(Mov.sender_id) == CESAM]
    if spec.only_when == ONLY_WHEN_H:
        return [col(Mov.file_type) == "H"]
    raise ValueError(f"unknown only_when {spec.only_when!r}")


def value_condition(spec: SearchSpec, values: Mapping[str, Any]) -> bool:
    if spec.only_when == ONLY_WHEN_CESAM_FLAG:
        return str(values.get("differentiated_brokerage_flag") or "") == "O"
    return True


def is_line_search(spec: SearchSpec) -> bool:
    return spec.record == LINE_RECORD


@dataclass(frozen=True, slots=True)
class Search:
    """One search kind of `[[suivi.searches]]` bound to the layout, with its criteria."""

    layout: Layout
    spec: SearchSpec
    criteria: Mapping[str, str]

    @classmethod
    def of(cls, layout: Layout, search_id: str, raw: Mapping[str, str]) -> Search:
        spec = layout.search(search_id)
        return cls(layout, spec, clean_criteria(spec, raw))

    @property
    def kinds(self) -> dict[str, Kind]:
        return kinds_of(self.layout, self.spec.record)

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.spec.columns

    def where(self) -> list[ColumnElement[bool]]:
        return [col(Occ.layout) == spec_layout(self.layout, self.spec), *only_when(self.spec)]


async def search_page(store: Store, search: Search, user: str, number: int) -> Page[Hit]:
    """One page of a flow search, with the count of every matching row."""
    size = search.layout.page_size
    if is_line_search(search.spec):
        return await page_of(_line_hits(store, search, user), number, size)
    flows = await candidates(store, search)
    if flows is not None:
        return await page_of(_candidate_hits(store, search, user, flows), number, size)
    narrowing = head_narrowing(search.spec, search.criteria, search.kinds)
    if narrowing.exact and search.spec.only_when != ONLY_WHEN_CESAM_FLAG:
        return await _sql_page(store, search, user, narrowing, number)
    return await page_of(_head_hits(store, search, user, narrowing), number, size)


async def search_rows(store: Store, search: Search, user: str) -> AsyncIterator[Hit]:
    """Every matching row, streamed (CSV exports are never paged)."""
    if is_line_search(search.spec):
        rows = _line_hits(store, search, user)
    elif (flows := await candidates(store, search)) is not None:
        rows = _candidate_hits(store, search, user, flows)
    else:
        narrowing = head_narrowing(search.spec, search.criteria, search.kinds)
        rows = _head_hits(store, search, user, narrowing)
    async for hit in rows:
        yield hit


async def candidates(store: Store, search: Search) -> set[int] | None:
    """The flows a search can return, from its clé and insured criteria alone (text indexes);
    None when it has neither, or when they leave too many flows to list by id."""
    criteria, found = search.criteria, None
    if "optiflux_key" in criteria and search.spec.record != ACCOUNT_HEAD:
        found = set(await textindex.flows_by_clé(store, criteria["optiflux_key"]))
    if "insured_name" in criteria:
        layout_name = spec_layout(search.layout, search.spec)
        insured = set(
            await textindex.flows_by_insured(store, criteria["insured_name"], layout_name)
        )
        found = insured if found is None else found & insured
    return found if found is not None and len(found) <= CANDIDATE_LIMIT else None


async def _candidate_hits(
    store: Store, search: Search, user: str, flows: set[int]
) -> AsyncIterator[Hit]:
    """The latest visible occurrence of each candidate flow, every criterion checked."""
    if not flows:
        return
    where = [*search.where(), col(Occ.flow_id).in_(sorted(flows))]
    stmt = sql.rows_of(sql.latest_visible(user, where)).order_by(*sql.NEWEST_FIRST)
    kinds = search.kinds
    async for row in sql.stream(store, stmt):
        values = json.loads(row.fields_json)
        if value_condition(search.spec, values) and matches(
            search.spec, search.criteria, values, kinds
        ):
            yield hit_of(row, values)


def _head_stmt(search: Search, user: str, narrowing: Narrowing) -> Select[Any]:
    ids = sql.latest_visible(user, search.where(), narrowing.conditions)
    return sql.rows_of(ids).where(*narrowing.conditions).order_by(*sql.NEWEST_FIRST)


async def _sql_page(
    store: Store, search: Search, user: str, narrowing: Narrowing, number: int
) -> Page[Hit]:
    stmt = _head_stmt(search, user, narrowing)
    size = search.layout.page_size
    total = await sql.count(store, stmt)
    start, _ = page_slice(number, size)
    rows = await sql.all_rows(store, stmt.offset(start).limit(size))
    return Page([hit_of(r) for r in rows], total, max(1, number), size)


async def _head_hits(
    store: Store, search: Search, user: str, narrowing: Narrowing
) -> AsyncIterator[Hit]:
    kinds = search.kinds
    async for row in sql.stream(store, _head_stmt(search, user, narrowing)):
        values = json.loads(row.fields_json)
        if value_condition(search.spec, values) and matches(
            search.spec, search.criteria, values, kinds
        ):
            yield hit_of(row, values)


# --- compte financier lines --------------------------------------------------------------


def line_identity(flow_id: int, line: Mapping[str, Any]) -> tuple[object, ...]:
    """§8.2: account + clé + (act, or file number + dispache number) + term + operation.

    The producer's file number comes first, as in the dispache flow key, so that the
    broker's line and the leader's completed copy are one line."""
    file_number = line.get("producer_file_number") or line.get("leader_file_number") or ""
    act = line.get("act_number") or ""
    reference = (act,) if act else (file_number, line.get("settlement_number"))
    return (
        flow_id,
        line.get("optiflux_key"),
        *reference,
        line.get("instalment_number"),
        line.get("operation_code"),
    )


def line_values(line: Mapping[str, Any], head: Mapping[str, Any]) -> dict[str, Any]:
    return {**line, ACCOUNT_BALANCE: head.get("balance"), LINE_CONTROL: line.get("control")}


async def _line_hits(store: Store, search: Search, user: str) -> AsyncIterator[Hit]:
    """Each line identity once, from the latest of the user's occurrences holding it."""
    narrowing = line_narrowing(search.criteria, search.kinds)
    base = [sql.party(user), *search.where()]
    stmt = select(*sql.ROW_COLUMNS, sql.LINES).join(Mov, sql.JOIN).where(*base)
    if narrowing.conditions:
        flows = select(col(Occ.flow_id)).join(Mov, sql.JOIN).where(*base, *narrowing.conditions)
        flows = flows.correlate(None)
        stmt = stmt.where(col(Occ.flow_id).in_(flows))
    latest: dict[tuple[object, ...], Hit] = {}
    async for row in sql.stream(store, stmt.order_by(*sql.OLDEST_FIRST)):
        head = json.loads(row.fields_json)
        for line in json.loads(row.lines_json):
            latest.pop(key := line_identity(row.flow_id, line), None)
            latest[key] = hit_of(row, line_values(line, head))
    for hit in reversed(list(latest.values())):
        if _line_wanted(search, hit.values):
            yield hit


def _line_wanted(search: Search, values: Mapping[str, Any]) -> bool:
    family = search.spec.operation_family
    code = str(values.get("operation_code") or "")
    if family and search.layout.operation_codes.get(code, {}).get("family") != family:
        return False
    return matches(search.spec, search.criteria, values, search.kinds)


# --- tracking (§8.5) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Passage:
    """One movement of a tracked flow; `openable` when the user sent or received it."""

    hit: Hit
    openable: bool


async def flow_visible(store: Store, user: str, flow_id: int) -> bool:
    stmt = (
        select(col(Occ.id))
        .join(Mov, sql.JOIN)
        .where(col(Occ.flow_id) == flow_id, sql.party(user))
        .limit(1)
    )
    return bool(await sql.all_rows(store, stmt))


async def tracking(
    store: Store, user: str, flow_id: int, *, granted: bool = False
) -> list[Passage] | None:
    """Every movement of the flow, oldest first; None when the user may not see the flow.

    `granted` is the §8.9 exception, decided by the caller (`pending.incomplete_flow_ids`)."""
    if not granted and not await flow_visible(store, user, flow_id):
        return None
    stmt = select(*sql.ROW_COLUMNS).join(Mov, sql.JOIN).where(col(Occ.flow_id) == flow_id)
    rows = await sql.all_rows(store, stmt.order_by(*sql.OLDEST_FIRST))
    return [Passage(hit_of(r), user in (r.sender_id, r.recipient_id)) for r in rows] or None


def own_latest(passages: Sequence[Passage]) -> Hit | None:
    """The occurrence a search row shows for the flow (§8.2): the latest of the user's own
    movements, so that the tracking's summary and the search agree and neither shows the
    content of a file the user may not open. None when the user has no movement of it."""
    return next((p.hit for p in reversed(passages) if p.openable), None)


# --- files (§8.6) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileCriteria:
    name: str = ""
    file_type: str = ""  # "" = « Tous »
    start: date | None = None
    end: date | None = None
    sender: str = ""
    recipient: str = ""

    def with_default_period(self, today: date) -> FileCriteria:
        """§8.6: the period defaults to today (Europe/Paris)."""
        if self.start is None and self.end is None:
            return FileCriteria(
                self.name, self.file_type, today, today, self.sender, self.recipient
            )
        return self


def paris_today(now: datetime) -> date:
    return now.astimezone(PARIS).date()


def day_start_utc(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=PARIS).astimezone(UTC)


def file_stmt(user: str, c: FileCriteria) -> Select[Any]:
    stmt = select(Movement).where(sql.party(user))
    if c.name:
        stmt = stmt.where(sql.icontains(col(Mov.file_name), c.name))
    if c.file_type:
        stmt = stmt.where(col(Mov.file_type) == c.file_type.upper())
    if c.start is not None:
        stmt = stmt.where(col(Mov.created_at) >= day_start_utc(c.start))
    if c.end is not None:
        stmt = stmt.where(col(Mov.created_at) < day_start_utc(c.end + timedelta(days=1)))
    if c.sender:
        stmt = stmt.where(col(Mov.sender_id) == c.sender.upper())
    if c.recipient:
        stmt = stmt.where(col(Mov.recipient_id) == c.recipient.upper())
    return stmt.order_by(col(Mov.created_at).desc(), col(Mov.id).desc())


async def file_page(
    store: Store, user: str, c: FileCriteria, number: int, size: int
) -> Page[Movement]:
    stmt = file_stmt(user, c)
    total = await sql.count(store, stmt)
    start, _ = page_slice(number, size)
    async with sql.session(store) as s:
        rows = list((await s.execute(stmt.offset(start).limit(size))).scalars().all())
    return Page(rows, total, max(1, number), size)


async def file_rows(store: Store, user: str, c: FileCriteria) -> AsyncIterator[Movement]:
    async for row in sql.stream(store, file_stmt(user, c)):
        yield row[0]


async def movement(store: Store, user: str, movement_id: int) -> Movement | None:
    """A file the user sent or received; None otherwise (the caller answers 404)."""
    async with sql.session(store) as s:
        row = await s.get(Movement, movement_id)
    if row is None or not row.delivered or user not in (row.sender_id, row.recipient_id):
        return None
    return row


@dataclass(frozen=True, slots=True)
class FileFlow:
    """A flow of a file; its répartition grid is read from the file's content, where its
    records are (`span`), by `contents.with_grids` (a row recorded before revision 0007 kept
    its grid as JSON: `grid` given, `span` None)."""

    hit: Hit
    grid: list[dict[str, Any]]
    span: tuple[int, int] | None = None


def file_flow(row: Any) -> FileFlow:
    if row.content_start is None:
        return FileFlow(hit_of(row), json.loads(row.grid_json))
    return FileFlow(hit_of(row), [], (row.content_start, row.content_end))


@dataclass(frozen=True, slots=True)
class FileFlows:
    """One page of a file's flows, with the file's count of flows of each layout."""

    movement: Movement
    counts: list[tuple[str, int]]  # (layout, flows), in the order the file first has them
    page: Page[FileFlow]


async def file_flow_page(
    store: Store, layout: Layout, user: str, movement_id: int, number: int, size: int
) -> FileFlows | None:
    """One page of a file's flows in file order: a 5 000-flow file costs one page of rows,
    not the whole file. None when the user may not open the file."""
    row = await movement(store, user, movement_id)
    if row is None:
        return None
    counts = await flow_counts(store, layout, row)
    total = sum(n for _, n in counts)
    items = await _flow_slice(store, movement_id, *page_slice(number, size)) if total else []
    return FileFlows(row, counts, Page(items, total, max(1, number), size))


def layouts_of_type(layout: Layout, file_type: str) -> set[str]:
    """The layouts a file of this type may hold: the checks keep each section's flow code
    to those of the file's type (R: REP, RCA, RCC, all répartitions)."""
    found = layout.file_types.get(file_type)
    codes = found.flow_codes if found is not None else frozenset()
    return {layout.flow_layouts_by_code[c] for c in codes if c in layout.flow_layouts_by_code}


async def flow_counts(store: Store, layout: Layout, file: Movement) -> list[tuple[str, int]]:
    """(layout, flows) of a file, in the order the file first has each layout.

    A file whose type allows one layout (every type of layout.toml) is counted on the
    movement index alone; reading each of 5 000 rows for its layout cost more than the page."""
    possible = layouts_of_type(layout, file.file_type)
    if len(possible) == 1:
        total = await sql.count(store, _file_order(file.id or 0))
        return [(possible.pop(), total)] if total else []
    first = func.min(col(Occ.id)).label("first")
    counted: tuple[Label[Any], ...] = (col(Occ.layout).label("layout"), func.count().label("n"))
    stmt = (
        select(*counted, first)
        .where(col(Occ.movement_id) == file.id)
        .group_by(col(Occ.layout))
        .order_by(first)
    )
    return [(r.layout, int(r.n)) for r in await sql.all_rows(store, stmt)]


def _file_order(movement_id: int) -> Select[Any]:
    """The ids of a file's occurrences in file order, read from the movement index alone.

    By id: the pipeline records a file's occurrences in its order (seq), and a redelivery
    copies them in that order; sorting on seq instead read every row of the file."""
    return select(col(Occ.id)).where(col(Occ.movement_id) == movement_id).order_by(col(Occ.id))


async def _flow_slice(store: Store, movement_id: int, start: int, end: int) -> list[FileFlow]:
    ids = _file_order(movement_id).offset(start).limit(end - start)
    stmt = (
        select(*sql.ROW_COLUMNS, *sql.GRID)
        .join(Mov, sql.JOIN)
        .where(col(Occ.id).in_(ids))
        .order_by(col(Occ.id))
    )
    return [file_flow(r) for r in await sql.all_rows(store, stmt)]


async def flow_position(store: Store, movement_id: int, flow_id: int) -> int | None:
    """Where a flow first comes in a file (0-based), to open the file at its page."""
    stmt = (
        select(col(Occ.id))
        .where(col(Occ.movement_id) == movement_id, col(Occ.flow_id) == flow_id)
        .order_by(col(Occ.id))
        .limit(1)
    )
    found = await sql.all_rows(store, stmt)
    if not found:
        return None
    return await sql.count(store, _file_order(movement_id).where(col(Occ.id) < found[0][0]))


async def file_flow_rows(store: Store, user: str, movement_id: int) -> AsyncIterator[FileFlow]:
    """Every flow of a file, streamed in file order (the CSV export is never paged)."""
    if await movement(store, user, movement_id) is None:
        return
    stmt = (
        select(*sql.ROW_COLUMNS)
        .join(Mov, sql.JOIN)
        .where(col(Occ.movement_id) == movement_id)
        .order_by(col(Occ.id))
    )
    async for row in sql.stream(store, stmt):
        yield FileFlow(hit_of(row), [])


async def content(store: Store, contents: Path, user: str, movement_id: int) -> bytes | None:
    """The decrypted content of a file, for its sender or recipient only (§8.1)."""
    row = await movement(store, user, movement_id)
    if row is None:
        return None
    if not row.content_path:  # kept in the store
        async with sql.session(store) as s:
            stored = await s.get(StoredContent, movement_id)
        return stored.data if stored is not None else None
    return await asyncio.to_thread(_read_content, contents, row.content_path)


def _read_content(contents: Path, name: str) -> bytes | None:
    """Blocking: the stored plain content, never outside the contents folder."""
    path = (contents / name).resolve()
    if contents.resolve() not in path.parents or not path.is_file():
        return None
    return path.read_bytes()


# --- search by clé (§8.7) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyTable:
    search_id: str
    fr: str
    columns: tuple[Column, ...]
    kinds: Mapping[str, Kind]
    page: Page[Hit]


async def by_key(
    store: Store, layout: Layout, user: str, clé: str, pages: Mapping[str, int]
) -> list[KeyTable]:
    """One table per flow type of the flows with exactly this clé."""
    clé = clé.strip().upper()
    tables = []
    for layout_name, search_id in SEARCH_OF_LAYOUT.items():
        spec = layout.search(search_id)
        hits = _key_hits(store, user, layout_name, clé)
        page = await page_of(hits, pages.get(search_id, 1), layout.page_size)
        fr = FLOW_TYPES[layout_name]
        tables.append(
            KeyTable(search_id, fr, spec.by_key_columns, kinds_of(layout, spec.record), page)
        )
    return tables


async def _key_hits(store: Store, user: str, layout_name: str, clé: str) -> AsyncIterator[Hit]:
    where = [col(Occ.layout) == layout_name]
    if layout_name != "financial_account":
        narrowing = [col(Occ.optiflux_key) == clé]
    else:
        narrowing = [sql.contains(col(Occ.lines_json), f'"{clé}"')]
    stmt = sql.rows_of(sql.latest_visible(user, where, narrowing), sql.LINES).where(*narrowing)
    async for row in sql.stream(store, stmt.order_by(*sql.NEWEST_FIRST)):
        lines = json.loads(row.lines_json)
        if layout_name != "financial_account" or any(
            line.get("optiflux_key") == clé for line in lines
        ):
            yield hit_of(row)


def columns_for(layout: Layout, layout_name: str) -> tuple[tuple[Column, ...], dict[str, Kind]]:
    spec = layout.search(SEARCH_OF_LAYOUT[layout_name])
    return spec.columns, kinds_of(layout, spec.record)
