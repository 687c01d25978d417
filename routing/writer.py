"""Write valid Optiflux files from typed values, and read them back as typed values.

The writer pads every record and computes the footer (counts and control total), so tests,
benchmarks and the participant kit never hand-build 640-character lines.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from bdi.routing.fields import Value, codecs_for
from bdi.routing.layout import Layout, default_layout
from bdi.routing.scan import FOOTER, HEADER


@dataclass(frozen=True, slots=True)
class Record:
    """A record as typed values; `name` is its record spec (`premium_2`, `reject`, ...)."""

    name: str
    values: Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class Section:
    """A section as typed values: the header, its records; the footer is derived."""

    header: Mapping[str, Value]
    records: tuple[Record, ...] = field(default=())


def write_record(record: Record, layout: Layout) -> str:
    return codecs_for(layout)[record.name].encode(record.values)


def footer_values(section: Section, layout: Layout) -> dict[str, Value]:
    """Footer of a section: repeats the header, counts its records, sums its amounts."""
    codecs = codecs_for(layout)
    functional = sum(
        1 for r in section.records if codecs[r.name].spec.marker in layout.functional_markers
    )
    rejects = sum(1 for r in section.records if r.name == layout.reject.name)
    total = sum(
        codecs[r.name].amount_total(write_record(r, layout))
        for r in section.records
        if codecs[r.name].spec.marker in layout.functional_markers
    )
    values: dict[str, Value] = {
        name: section.header.get(name)
        for name in ("file_type", "flow_code", "sender_id", "recipient_id", "section_number")
    }
    values.update(
        functional_record_count=functional,
        reject_record_count=rejects,
        control_total=total % 10**18,
    )
    return values


def section_lines(section: Section, layout: Layout) -> Iterator[str]:
    codecs = codecs_for(layout)
    yield codecs[layout.header.name].encode(section.header)
    for record in section.records:
        yield write_record(record, layout)
    yield codecs[layout.footer.name].encode(footer_values(section, layout))


def write_file(
    sections: Iterable[Section], layout: Layout | None = None, newline: str = "\n"
) -> bytes:
    """The bytes of a file (ISO-8859-1, one record per line)."""
    lay = layout or default_layout()
    out = io.StringIO()
    for section in sections:
        for line in section_lines(section, lay):
            out.write(line + newline)
    return out.getvalue().encode(lay.encoding)


def read_sections(lines: Iterable[bytes], layout: Layout | None = None) -> Iterator[Section]:
    """Typed sections of a well-formed file, one at a time (the footer is dropped: it is
    derived data). Use `check_lines` first for files that may be malformed."""
    lay = layout or default_layout()
    codecs = codecs_for(lay)
    header: Mapping[str, Value] | None = None
    records: list[Record] = []
    for raw in lines:
        text = raw.rstrip(b"\r\n").decode(lay.encoding)
        marker = text[:10]
        if marker == HEADER:
            header, records = codecs[lay.header.name].decode(text), []
        elif marker == FOOTER and header is not None:
            yield Section(header, tuple(records))
            header = None
        elif header is not None:
            records.append(_record(text, marker, header, lay))


def _record(text: str, marker: str, header: Mapping[str, Value], layout: Layout) -> Record:
    if marker == layout.reject.marker:
        name = layout.reject.name
    else:
        spec = layout.record_for(str(header["flow_code"]), marker)
        if spec is None:
            raise ValueError(f"record type {marker} unknown for flow {header['flow_code']}")
        name = spec.name
    return Record(name, codecs_for(layout)[name].decode(text))


def parse_file(data: bytes, layout: Layout | None = None) -> list[Section]:
    return list(read_sections(io.BytesIO(data), layout))
