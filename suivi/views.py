"""What the templates show, computed once in Python: tables of French cells, pickers,
page links. Handlers stay thin and templates hold no logic beyond loops."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException

from bdi.routing.layout import Column, Criterion, Layout
from bdi.store.models import ReferentialParticipant
from bdi.suivi.queries import Hit
from bdi.suivi.values import Cell, Kind, paris_date, paris_time, row_cells

# the fields of `[[suivi.searches]]` criteria that get a code + label picker (§8.4)
PICKERS = {
    "producer_code": "participants",
    "beneficiary_code": "participants",
    "operation_code": "operations",
}
LAYOUT_SLUGS: Mapping[str, str] = {
    "allocation": "repartitions",
    "claim_advice": "bulletins",
    "settlement": "dispaches",
    "premium": "primes",
    "financial_account": "comptes-financiers",
}
SLUG_LAYOUTS = {v: k for k, v in LAYOUT_SLUGS.items()}
PASSAGE_LABELS = ("Date", "Heure", "Expéditeur", "Destinataire", "Commentaire")
MAX_PAGE = 1_000_000  # past it, a page's offset would outgrow what a database takes
MAX_ID = 2**31 - 1  # the store's ids are INTEGER: 32-bit on PostgreSQL


@dataclass(frozen=True, slots=True)
class Option:
    code: str
    label: str


@dataclass(frozen=True, slots=True)
class Field:
    """One criterion of a search form, with its picker options if it is a code."""

    name: str
    fr: str
    value: str
    options: tuple[Option, ...] = ()


@dataclass(slots=True)
class TableRow:
    cells: list[Cell]
    track: str = ""
    dismiss: str = ""
    grid: list[list[Cell]] = field(default_factory=list)
    anchor: str = ""  # the row's id, for links to one flow of a file's page


@dataclass(frozen=True, slots=True)
class Pickers:
    participants: tuple[Option, ...]
    mailboxes: tuple[Option, ...]
    operations: tuple[Option, ...]

    def for_field(self, name: str) -> tuple[Option, ...]:
        kind = PICKERS.get(name)
        return getattr(self, kind) if kind else ()


def pickers(layout: Layout, referential: Sequence[ReferentialParticipant]) -> Pickers:
    """Code + label lists from the participant referential and the operation-code table."""
    return Pickers(
        participants=tuple(Option(p.code, p.name) for p in referential),
        mailboxes=tuple(
            sorted(
                {Option(p.edi_id, p.name) for p in referential if p.edi_id}, key=lambda o: o.code
            )
        ),
        operations=tuple(
            Option(c, str(v.get("fr", ""))) for c, v in sorted(layout.operation_codes.items())
        ),
    )


def text_param(params: QueryParams, name: str) -> str:
    """A typed text, trimmed, without control characters: none is in any field of a file,
    and PostgreSQL refuses a NUL in a query's text."""
    return "".join(c for c in params.get(name, "") if c.isprintable()).strip()


def resolve_code(params: QueryParams, name: str) -> str:
    """The code typed, else the one whose label was picked (« choosing a label fills the code »)."""
    return text_param(params, name) or text_param(params, f"{name}__label")


def criteria_of(params: QueryParams, criteria: Sequence[Criterion]) -> dict[str, str]:
    return {c.field: resolve_code(params, c.field) for c in criteria}


def form_fields(
    criteria: Sequence[Criterion], values: Mapping[str, str], pick: Pickers
) -> list[Field]:
    return [
        Field(c.field, c.fr, values.get(c.field, ""), pick.for_field(c.field)) for c in criteria
    ]


def with_page(params: QueryParams, key: str, number: int) -> str:
    """The current query string with one page number changed."""
    items = [(k, v) for k, v in params.multi_items() if k != key]
    return "?" + urlencode([*items, (key, str(number))])


def page_number(params: QueryParams, key: str = "page") -> int:
    """The page asked for (1 when none is): a number from 1 to MAX_PAGE, else a bad request."""
    raw = params.get(key) or "1"
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_PAGE))):
        raise HTTPException(400, "numéro de page invalide")
    number = int(raw)
    if not 1 <= number <= MAX_PAGE:
        raise HTTPException(400, "numéro de page invalide")
    return number


def flow_param(params: QueryParams, key: str = "flux") -> int | None:
    """The flow a link asks to show (the page of a file holding it); a bad one: 400."""
    raw = params.get(key)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_ID))):
        raise HTTPException(400, "numéro de flux invalide")
    number = int(raw)
    if number > MAX_ID:
        raise HTTPException(400, "numéro de flux invalide")
    return number


def page_of_position(position: int, size: int) -> int:
    return position // size + 1


def hit_row(
    hit: Hit, columns: tuple[Column, ...], kinds: Mapping[str, Kind], track: str
) -> TableRow:
    return TableRow(row_cells(hit.values, columns, kinds), track=track)


def row_cells_of(hit: Hit, columns: tuple[Column, ...], kinds: Mapping[str, Kind]) -> list[Cell]:
    return row_cells(hit.values, columns, kinds)


def passage_cells(hit: Hit) -> list[Cell]:
    """Date, time, sender, recipient and comment of a movement (pending lists)."""
    return [
        Cell(paris_date(hit.at)),
        Cell(paris_time(hit.at)),
        Cell(hit.sender_id),
        Cell(hit.recipient_id),
        Cell(hit.comment),
    ]


@dataclass(frozen=True, slots=True)
class FileColumns:
    """The columns of a file's CSV export: each layout's search columns, once each (a file
    holds one layout; a mixed one gets the union, blank where a layout has no such column)."""

    labels: list[str]
    by_layout: Mapping[str, tuple[tuple[Column, ...], Mapping[str, Kind]]]

    def cells(self, hit: Hit) -> list[Cell]:
        columns, kinds = self.by_layout[hit.layout]
        cells = row_cells(hit.values, columns, kinds)
        found = dict(zip((c.fr for c in columns), cells, strict=True))
        return [found.get(label, Cell("")) for label in self.labels]


def file_columns(
    by_layout: Mapping[str, tuple[tuple[Column, ...], Mapping[str, Kind]]],
) -> FileColumns:
    labels = list(dict.fromkeys(c.fr for columns, _ in by_layout.values() for c in columns))
    return FileColumns(labels, by_layout)


async def csv_rows(
    hits: AsyncIterator[Hit],
    columns: tuple[Column, ...],
    kinds: Mapping[str, Kind],
    passage: bool = False,
) -> AsyncIterator[list[Cell]]:
    async for hit in hits:
        cells = row_cells(hit.values, columns, kinds)
        yield cells + passage_cells(hit) if passage else cells
