"""« Extraction au format CSV » (OPTIFLUX.md §8.4): a text file a French Excel opens as is.

`;` separator, a header row of French labels, CRLF, UTF-8 with a BOM; values come already in
their French form (decimal comma, JJ/MM/AAAA) from `bdi.suivi.values`. Text cells that a
spreadsheet would take for a formula are neutralised; numbers are left alone so that they stay
numbers. Rows are streamed in chunks: an export of any size keeps a flat memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from bdi.suivi.values import Cell

BOM = "\ufeff"
SEPARATOR = ";"
NEWLINE = "\r\n"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CHUNK_BYTES = 64 * 1024


def neutralise(text: str) -> str:
    """A leading apostrophe makes Excel show a would-be formula as text."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def quote(text: str) -> str:
    if any(c in text for c in (SEPARATOR, '"', "\r", "\n")):
        return '"' + text.replace('"', '""') + '"'
    return text


def cell_text(cell: Cell) -> str:
    return quote(cell.text if cell.number else neutralise(cell.text))


def line(cells: Sequence[Cell]) -> str:
    return SEPARATOR.join(cell_text(c) for c in cells) + NEWLINE


def header(labels: Sequence[str]) -> str:
    return BOM + line([Cell(label) for label in labels])


async def encode(
    labels: Sequence[str], rows: AsyncIterator[Sequence[Cell]]
) -> AsyncIterator[bytes]:
    """The whole export as UTF-8 chunks of about 64 KiB."""
    buffer = [header(labels)]
    size = 0
    async for cells in rows:
        text = line(cells)
        buffer.append(text)
        size += len(text)
        if size >= CHUNK_BYTES:
            yield "".join(buffer).encode("utf-8")
            buffer, size = [], 0
    yield "".join(buffer).encode("utf-8")


def file_name(stem: str) -> str:
    """A safe download name: letters, digits, `-` and `_` only."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in stem)
    return f"{safe or 'extraction'}.csv"
