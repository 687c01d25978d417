"""A file's plain content, a page at a time (OPTIFLUX.md §8.6, « Afficher le contenu »).

A page is a byte range cut at record boundaries: a 16 MB content shows as pages of a few
hundred records, each read with one seek (a file of `<data>/contents/`) or one `substr`
(a small content kept in the store), never the whole content. Both ends of every page go
through the same `align`, so that consecutive pages neither overlap nor leave a gap, even
if LF and CRLF terminators are mixed. The download (`?brut=1`) streams the whole content.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from math import ceil
from pathlib import Path
from typing import Protocol

from sqlalchemy import func, select
from sqlmodel import col

from bdi.routing.flows import ALLOCATION, grid_records
from bdi.routing.layout import Layout
from bdi.store.models import Movement, StoredContent
from bdi.store.repo import Store
from bdi.suivi import queries, sql

LF = 0x0A
DOWNLOAD_CHUNK = 1024 * 1024
GRID_WINDOW = 4 * 1024 * 1024


class ContentGone(Exception):
    """The content went away between two reads (purged by the retention)."""


class Source(Protocol):
    """Random access to one content: its size and any range of its bytes."""

    @property
    def size(self) -> int: ...

    async def read(self, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class FileSource:
    """A content stored as a file of the contents folder."""

    path: Path
    size: int

    async def read(self, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(_read_range, self.path, offset, length)


def _read_range(path: Path, offset: int, length: int) -> bytes:
    """Blocking: one seek and one read, whatever the file's size."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(length)
    except FileNotFoundError:
        raise ContentGone(str(path)) from None


@dataclass(frozen=True, slots=True)
class StoredSource:
    """A small content kept in the store: ranges are cut by the database."""

    store: Store
    movement_id: int
    size: int

    async def read(self, offset: int, length: int) -> bytes:
        piece = func.substr(col(StoredContent.data), offset + 1, length)
        stmt = select(piece).where(col(StoredContent.movement_id) == self.movement_id)
        rows = await sql.all_rows(self.store, stmt)
        if not rows:
            raise ContentGone(f"stored content {self.movement_id}")
        return bytes(rows[0][0] or b"")


async def source(store: Store, contents: Path, user: str, movement_id: int) -> Source | None:
    """The content of a file its sender or recipient opens (§8.1); None otherwise."""
    row = await queries.movement(store, user, movement_id)
    return None if row is None else await source_of(store, contents, row)


async def source_of(store: Store, contents: Path, row: Movement) -> Source | None:
    """The content of a movement the user was found to see; None if it has none."""
    if not row.content_path:  # kept in the store
        stmt = select(func.length(col(StoredContent.data))).where(
            col(StoredContent.movement_id) == row.id
        )
        found = await sql.all_rows(store, stmt)
        return StoredSource(store, row.id or 0, int(found[0][0] or 0)) if found else None
    return await asyncio.to_thread(_file_source, contents, row.content_path)


def has_grid(flow: queries.FileFlow) -> bool:
    """A répartition whose grid is to be read from the content (not an older row's JSON)."""
    return flow.span is not None and flow.hit.layout == ALLOCATION


async def with_grids(
    src: Source | None, flows: list[queries.FileFlow], layout: Layout
) -> list[queries.FileFlow]:
    """The flows with their répartition grids read from the content: the records of
    consecutive flows by one read of up to GRID_WINDOW bytes (a page of 100 répartitions is
    one read of ~320 KB). A content gone leaves the grids empty."""
    out = list(flows)
    spans = [(i, f.span) for i, f in enumerate(flows) if has_grid(f) and f.span is not None]
    for window in _windows(spans):
        low, high = window[0][1][0], max(span[1] for _, span in window)
        try:
            data = b"" if src is None else await src.read(low, high - low)
        except ContentGone:
            data = b""
        for i, (start, end) in window:
            records = data[start - low : end - low]
            out[i] = replace(flows[i], grid=grid_records(records, layout, flows[i].hit.layout))
    return out


def _windows(
    spans: list[tuple[int, tuple[int, int]]],
) -> Iterator[list[tuple[int, tuple[int, int]]]]:
    """The spans cut into runs that each fit one read of GRID_WINDOW bytes at most."""
    run: list[tuple[int, tuple[int, int]]] = []
    for item in sorted(spans, key=lambda item: item[1][0]):
        if run and item[1][1] - run[0][1][0] > GRID_WINDOW:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def _file_source(contents: Path, name: str) -> FileSource | None:
    """Blocking: the content's file, never outside the contents folder."""
    path = (contents / name).resolve()
    if contents.resolve() not in path.parents or not path.is_file():
        return None
    return FileSource(path, path.stat().st_size)


@dataclass(frozen=True, slots=True)
class ContentPage:
    """Bytes `start` to `end` of a content of `size` bytes: page `number` of `pages`."""

    data: bytes
    number: int
    pages: int
    start: int
    end: int
    size: int

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


@dataclass(frozen=True, slots=True)
class Paging:
    """How a content is cut: `records` records of `record_length` characters a page."""

    records: int
    record_length: int

    @property
    def longest_line(self) -> int:
        return self.record_length + 2  # CRLF

    def page_bytes(self, stride: int) -> int:
        return self.records * stride

    def pages(self, size: int, stride: int) -> int:
        return max(1, ceil(size / self.page_bytes(stride)))


def stride_of(head: bytes, paging: Paging) -> int:
    """Bytes per record from the first record's terminator (LF: 641, CRLF: 642)."""
    end = head.find(b"\n")
    return end + 1 if 0 < end < paging.longest_line else paging.record_length + 1


def align(window: bytes, window_start: int, at: int, size: int, longest: int) -> int:
    """The first record boundary at or after byte `at`: `at` itself when the byte before it
    ends a line, else just past the next LF, looked for over one line's length only (a
    longer line is cut where it is, so the answer never depends on the window read)."""
    if at <= 0 or at >= size:
        return max(0, min(at, size))
    local = at - 1 - window_start
    found = window.find(b"\n", local, local + longest)
    return window_start + found + 1 if found >= 0 else at


async def page(src: Source, number: int, paging: Paging) -> ContentPage | None:
    """Page `number` of the content (1-based); None past the last page."""
    stride = stride_of(await src.read(0, paging.longest_line), paging)
    pages = paging.pages(src.size, stride)
    if not 1 <= number <= pages:
        return None
    nominal = paging.page_bytes(stride)
    low, high = (number - 1) * nominal, min(number * nominal, src.size)
    window_start = max(0, low - 1)
    window_end = min(src.size, high - 1 + paging.longest_line)
    window = await src.read(window_start, window_end - window_start)
    start = align(window, window_start, low, src.size, paging.longest_line)
    end = align(window, window_start, high, src.size, paging.longest_line)
    data = window[start - window_start : end - window_start]
    return ContentPage(data, number, pages, start, end, src.size)


async def chunks(src: Source) -> AsyncIterator[bytes]:
    """The whole content in chunks of 1 MiB (the download keeps a flat memory)."""
    for offset in range(0, src.size, DOWNLOAD_CHUNK):
        yield await src.read(offset, DOWNLOAD_CHUNK)
