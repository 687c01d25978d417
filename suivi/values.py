"""How a field value is shown and compared (OPTIFLUX.md §8.4).

One place decides the French form of every value, so that the HTML tables and the CSV
exports agree: decimal comma, a leading `-` for negative amounts, dates `JJ/MM/AAAA`,
numeric references zero-padded as on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from bdi.routing.layout import Column, Layout, RecordSpec
from bdi.routing.model import CONTROL_LABELS

NUMBER_KINDS = frozenset({"amount", "signed_amount", "rate", "numeric"})
PARIS = ZoneInfo("Europe/Paris")
# special fields of [suivi] columns: where they come from and their kind
ACCOUNT_BALANCE = "account.balance"
LINE_CONTROL = "line.control"


@dataclass(frozen=True, slots=True)
class Cell:
    """A shown value; `number` tells the CSV writer never to neutralise it, `amount` that
    it is an amount or a rate (right-aligned on screen)."""

    text: str
    number: bool = False
    amount: bool = False


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    length: int


def kinds_of(layout: Layout, record: str) -> dict[str, Kind]:
    """Field name -> kind for a record, plus the special fields of the Suivi columns."""
    spec: RecordSpec = layout.records[record]
    kinds = {f.name: Kind(f.kind, f.length) for f in spec.fields}
    balance = layout.records["financial_account_6"].field("balance")
    kinds[ACCOUNT_BALANCE] = Kind(balance.kind, balance.length)
    kinds[LINE_CONTROL] = Kind("control", 1)
    return kinds


def text_of(value: object, kind: Kind | None) -> str:
    """The comparable text of a value: trimmed, numeric references zero-padded."""
    if value is None:
        return ""
    if kind is not None and kind.kind == "numeric" and isinstance(value, int):
        return str(value).zfill(kind.length)
    return str(value).strip()


def cell(value: object, kind: Kind | None) -> Cell:
    """The French display form of one value."""
    text = text_of(value, kind)
    if kind is None or not text:
        return Cell(text)
    if kind.kind in ("amount", "signed_amount", "rate"):
        return Cell(text.lstrip("+").replace(".", ","), number=True, amount=True)
    if kind.kind == "numeric":
        return Cell(text, number=True)
    if kind.kind == "date":
        return Cell(french_date(date.fromisoformat(text)))
    if kind.kind == "control":
        return Cell(CONTROL_LABELS.get(text, text))
    return Cell(text)


def row_cells(
    values: Mapping[str, object], columns: tuple[Column, ...], kinds: Mapping[str, Kind]
) -> list[Cell]:
    return [cell(values.get(c.field), kinds.get(c.field)) for c in columns]


def french_date(day: date) -> str:
    return day.strftime("%d/%m/%Y")


def as_utc(at: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back naive."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def paris(at: datetime) -> datetime:
    """Every displayed time is in Europe/Paris (§8.4)."""
    return as_utc(at).astimezone(PARIS)


def paris_date(at: datetime) -> str:
    return french_date(paris(at).date())


def paris_time(at: datetime) -> str:
    return paris(at).strftime("%H:%M:%S")


def paris_stamp(at: datetime) -> str:
    return f"{paris_date(at)} {paris_time(at)}"


def control_label(control: str) -> str:
    return CONTROL_LABELS.get(control, control)
