"""Fuzzing of the plain-text path: check -> split -> flows -> plan, total over any bytes.

Whatever a signed upload holds, every stage after decryption must end: a refused section gets
its `.log`, the good sections of the same file are still delivered, and nothing is indexed
that its check refused (issue 13). `exercise` runs the path as `pipeline.prepare` does,
without gpg, and asserts what holds for every input; the tests feed it every sample and
mutations built from layout.toml: each field of each record set to values outside its domain
(impossible dates, non-digits, signs, blanks, C1 controls, UTF-8, CR / LF / NUL), lines cut,
joined, doubled, dropped or swapped, nested headers, missing footers, many sections.

`bench/fuzz.py` drives the same `exercise` for a long, coverage-guided run.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st
from support import SAMPLES, manifest

from bdi.pipeline.plan import (
    Content,
    Upload,
    fields_json,
    group_by_recipient,
    occurrence,
    plan_outputs,
)
from bdi.pipeline.prepare import copy_ranges, cut_lines, delivered, delivered_sections
from bdi.routing.errors import Code
from bdi.routing.fields import codecs_for, encode_field
from bdi.routing.flows import grid_records, iter_flows
from bdi.routing.layout import FieldSpec, RecordSpec, default_layout
from bdi.routing.logs import log_files
from bdi.routing.model import FileReport, Flow
from bdi.routing.referential import parse_referential
from bdi.routing.scan import CheckContext, SectionChecked, check_lines, last_report
from bdi.routing.writer import Section, parse_file, write_file
from bdi.store.jobs import Occurrence, PlannedOutput

if TYPE_CHECKING:
    from bdi.hub import Hub

LAYOUT = default_layout()
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ACTIVE = parse_referential((SAMPLES / "referentiel.toml").read_text("utf-8"), LAYOUT).mailboxes
HUB = cast("Hub", SimpleNamespace(layout=LAYOUT))  # `delivered_sections` reads hub.layout only
HEADER, FOOTER, REJECT = b"1111111111", b"9999999999", b"7777777777"
LF = 0x0A
VALUE_TYPES = (str, int, Decimal, date, time, type(None))
T = TypeVar("T")
INPUTS = [0]  # uploads through `exercise`, told at the end of the module's tests


@dataclass(frozen=True, slots=True)
class Seed:
    """A sample as uploaded: its name, its uploader and its bytes."""

    name: str
    uploader: str
    data: bytes


SEEDS = tuple(
    Seed(Path(s["path"]).name, s["uploaded_by"], (SAMPLES / s["path"]).read_bytes())
    for s in manifest()
)


# ---------------------------------------------------------------------------------------------
# The path, with what holds for every input
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    report: FileReport
    flows: list[Flow]
    rows: list[Occurrence]
    outputs: list[PlannedOutput]


def exercise(data: bytes, name: str, uploader: str) -> Outcome:
    """Check, split, index and plan one plain upload as `prepare` does (no gpg): it must end,
    and its outcome must be consistent whatever the bytes."""
    INPUTS[0] += 1
    ctx = CheckContext(name, uploader, ACTIVE.__contains__, LAYOUT, collect_flows=True)
    events = list(check_lines(io.BytesIO(data), ctx))
    report = last_report(events)
    flows = [f for e in events if isinstance(e, SectionChecked) for f in e.flows]
    _assert_sections(report, data)
    _assert_flows(report, flows, data)
    delivered_now = delivered(report.delivered_sections)
    upload = Upload(1, uploader, name, NOW)
    rows = _occurrences(upload, delivered_now, flows)
    outputs = plan_outputs(
        upload,
        report,
        log_files(report, NOW, LAYOUT),
        lambda participant, wanted: f"{participant}/{wanted}",
        lambda recipient: _split(data, report, recipient),
    )
    _assert_plan(report, outputs, rows, data)
    _assert_spans(outputs, rows, [f for f in flows if f.section in delivered_now], data)
    return Outcome(report, flows, rows, outputs)


def _assert_spans(
    outputs: list[PlannedOutput], rows: list[Occurrence], flows: list[Flow], data: bytes
) -> None:
    """Each row's bytes of its recipient's content are its flow's bytes of the upload."""
    contents = {o.output.participant_id: o.content for o in outputs if o.output.kind == "delivery"}
    assert len(rows) == len(flows)
    for (recipient, _, row), flow in zip(rows, flows, strict=True):
        content = contents[recipient]
        assert content is not None
        assert content[row["content_start"] : row["content_end"]] == data[flow.start : flow.end]


def _assert_sections(report: FileReport, data: bytes) -> None:
    """Sections are numbered from 1, in file order, disjoint, each starting at a header."""
    assert [s.number for s in report.sections] == list(range(1, len(report.sections) + 1))
    previous_end = 0
    for s in report.sections:
        assert previous_end <= s.start < s.end <= len(data)
        assert data[s.start : s.start + 10] == HEADER
        assert s.first_line <= s.last_line
        previous_end = s.end


def _assert_flows(report: FileReport, flows: list[Flow], data: bytes) -> None:
    """Flows come from accepted sections only, with typed or textual values only, and the
    second pass of a big file finds the same ones."""
    accepted = {s.number: s.flow_code for s in report.sections if s.accepted}
    assert all(f.section in accepted for f in flows)
    assert [(f.section, f.line) for f in flows] == sorted((f.section, f.line) for f in flows)
    for flow in flows:
        assert flow.control in ("S", "V", "R")
        for values in (flow.fields, *(line.fields for line in flow.lines)):
            assert all(isinstance(v, VALUE_TYPES) for v in values.values())
        assert flow.fields_json == fields_json(flow.fields)
        _assert_records(flow, data)
    assert list(iter_flows(cut_lines(io.BytesIO(data)), LAYOUT, accepted)) == flows


def _assert_records(flow: Flow, data: bytes) -> None:
    """A flow's bytes are whole records, its first one its head; its grid read from them
    is the JSON of each grid record's decoded values, and has the flow's office codes."""
    records = data[flow.start : flow.end]
    assert flow.start == 0 or data[flow.start - 1] == LF
    assert records.endswith(b"\n") or flow.end == len(data)
    assert records[:10].decode() in LAYOUT.layouts[flow.layout].records
    grid = grid_records(records, LAYOUT, flow.layout)
    codec = codecs_for(LAYOUT)["allocation_4"]
    cut = [r.removesuffix(b"\r") for r in records.split(b"\n")]  # as the checks cut lines
    lines = [r.decode(LAYOUT.encoding) for r in cut if r[:10] == b"4444444444"]
    wanted = [json.loads(fields_json(codec.decode(text))) for text in lines]
    assert grid == (wanted if flow.layout == "allocation" else [])
    assert flow.offices == tuple(str(g["office_code"] or "").strip() for g in grid)


def _occurrences(
    upload: Upload, delivered: dict[int, tuple[str, str, int]], flows: list[Flow]
) -> list[Occurrence]:
    """The rows `occurrence_batches` gives, in one batch."""
    seq = dict.fromkeys((recipient for _, recipient, _ in delivered.values()), 0)
    rows = []
    for flow in flows:
        if flow.section in delivered:
            _, recipient, shift = delivered[flow.section]
            rows.append(occurrence(LAYOUT, upload, recipient, flow, seq[recipient], shift))
            seq[recipient] += 1
    return rows


def _split(data: bytes, report: FileReport, recipient: str) -> Content:
    """One recipient's content, cut from the plaintext as `store_contents` cuts it."""
    sections = group_by_recipient(report.delivered_sections)[recipient]
    out = io.BytesIO()
    digest = copy_ranges(io.BytesIO(data), [(s.start, s.end) for s in sections], out)
    assert out.getvalue() == b"".join(data[s.start : s.end] for s in sections)
    return Content("", digest, out.getvalue())


def _assert_plan(
    report: FileReport, outputs: list[PlannedOutput], rows: list[Occurrence], data: bytes
) -> None:
    """One delivery per recipient of a delivered section, then the logs; every row is JSON;
    a resumed job finds the delivered sections again from the outputs' byte ranges."""
    recipients = list(group_by_recipient(report.delivered_sections))
    deliveries = [o.output for o in outputs if o.output.kind == "delivery"]
    assert [o.participant_id for o in deliveries] == recipients
    logs = [o.output for o in outputs if o.output.kind == "log"]
    refused = 1 if report.problems else sum(1 for s in report.sections if s.problems)
    assert len(logs) == refused
    assert all(log.text.count("\n") >= 1 for log in logs)
    for _, _, row in rows:
        for column in ("fields_json", "lines_json", "grid_json"):
            json.loads(row[column])
    outs = [o.output for o in outputs]
    assert delivered_sections(HUB, io.BytesIO(data), outs) == delivered(report.delivered_sections)

    for s in report.delivered_sections[:3]:
        _assert_delivered_alone(data[s.start : s.end], report.upload_name, s.number)


def _assert_delivered_alone(section: bytes, name: str, number: int) -> None:
    """A delivered section, read alone as its recipient reads it, is still good (but for its
    position, when it was not the first)."""
    ctx = CheckContext(name, None, None, LAYOUT)
    [alone] = last_report(check_lines(io.BytesIO(section), ctx)).sections
    if number == 1:
        assert alone.problems == []
    else:
        assert [(p.code, p.detail) for p in alone.problems] == [(Code.ENTETE, "section_number")]


def assert_faithful(record: RecordSpec, line: str) -> None:
    """Each field of a 640-character record decodes to a typed value only when its text is
    the very text `encode_field` writes for that value; to its own text (None if blank) when
    it is not of its kind. Never to a value made up from a text its check refuses. Its JSON
    written from its text is that of its values; its checks' fast path agrees with theirs."""
    codec = codecs_for(LAYOUT)[record.name]
    values = codec.decode(line)
    assert codec.json_text(line) == fields_json(values)  # the Suivi's JSON, from the text
    # the checks' one call for a record that passes them: its total, or None when it fails
    assert codec.checked_total(line) == (codec.amount_total(line) if codec.valid(line) else None)
    for spec in record.fields:
        text, value = line[spec.start : spec.end], values[spec.name]
        if value is None:
            assert not text.strip(" "), (spec.name, text)
        elif isinstance(value, str):
            assert value == text.rstrip(" "), (spec.name, text)
        else:
            assert encode_field(spec, value) == text, (spec.name, text, value)


# ---------------------------------------------------------------------------------------------
# Out-of-domain values of each field, from its spec in layout.toml
# ---------------------------------------------------------------------------------------------

_ANY_KIND = (b"", b"\x00", b"\r", b"\n", b"\r\n", b"\t", b"\x80", b"\x9f", b"\xb2", b"\xff")
_NUMBER = (b"A", b"+", b"-", b" ", b"1_0", b"0x1", b"1e5", b"\xb2", b"\xb9", b"\xbc", b"9" * 40)
_DATE = (
    b"2024-13-01", b"2024-00-10", b"2024-02-30", b"2023-02-29", b"0000-01-01", b"2024-01-32",
    b"2024-1-1", b"20240101", b"2024-W01-1", b"2024/01/01", b"9999-12-31", b"2024-12-\xe2\x82\xac",
)  # fmt: skip
_TIME = (b"24:00:00", b"23:60:00", b"23:59:60", b"12", b"12:00", b"1:00:00", b"T12:00:00")
_MARKERS = (HEADER, FOOTER, REJECT, b"2222222222", b"5555555555", b"0000000000", b"111111111 ")


def _fit(raw: bytes, n: int, pad: bytes = b" ") -> bytes:
    return raw[:n].ljust(n, pad)


def out_of_domain(spec: FieldSpec) -> list[bytes]:
    """Values of the field's width (and one byte off) that its check may refuse."""
    n = spec.length
    values = [b" " * n, b"\x00" * n, _fit(b"\xe2\x82\xac" * n, n), b"\x85" * n]
    values += [_fit(v, n) for v in _ANY_KIND]
    if spec.kind in ("numeric", "amount", "rate", "signed_amount"):
        values += [_fit(v, n, b"0") for v in _NUMBER]
        values += [b"0" * n, b"-" + b"0" * (n - 1), b"+" + b"9" * (n - 1), b"9" * n]
    elif spec.kind == "date":
        values += [_fit(v, n) for v in _DATE]
    elif spec.kind == "time":
        values += [_fit(v, n) for v in _TIME]
    elif spec.kind == "marker":
        values += [_fit(v, n) for v in _MARKERS]
    else:
        values += [b" " + b"A" * (n - 1), b"a" * n, b"\xe9" * n]
        values += [_fit(v.lower().encode("latin-1"), n) for v in spec.values[:3]]
    values += [b"9" * (n + 1), b"9" * max(n - 1, 0)]
    return list(dict.fromkeys(values))


_out_of_domain = cache(out_of_domain)


def records_of(data: bytes) -> list[tuple[int, RecordSpec]]:
    """(line index, record spec) of each line whose record type the layout knows, following
    the flow code of the last header seen."""
    found: list[tuple[int, RecordSpec]] = []
    code = LAYOUT.header.field("flow_code")
    flow = ""
    for index, line in enumerate(data.split(b"\n")):
        marker = line[:10]
        if marker == HEADER:
            flow = line[code.start : code.end].decode(LAYOUT.encoding)
            found.append((index, LAYOUT.header))
        elif marker in (FOOTER, REJECT):
            found.append((index, LAYOUT.footer if marker == FOOTER else LAYOUT.reject))
        elif flow in LAYOUT.flow_layouts_by_code:
            spec = LAYOUT.record_for(flow, marker.decode(LAYOUT.encoding))
            if spec is not None:
                found.append((index, spec))
    return found


def set_field(data: bytes, index: int, spec: FieldSpec, raw: bytes) -> bytes:
    """`data` with the field at `spec` of line `index` (0-based) replaced by `raw`."""
    lines = data.split(b"\n")
    line = lines[index]
    lines[index] = line[: spec.start] + raw + line[spec.end :]
    return b"\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Line-level mutations
# ---------------------------------------------------------------------------------------------

Lines = list[bytes]
LineEdit = Callable[[Lines, int, int], Lines]  # (lines, at, amount) -> lines


def _drop(lines: Lines, at: int, _: int) -> Lines:
    return lines[:at] + lines[at + 1 :]


def _double(lines: Lines, at: int, _: int) -> Lines:
    return lines[: at + 1] + lines[at:]


def _swap(lines: Lines, at: int, amount: int) -> Lines:
    other = (at + amount) % len(lines)
    out = list(lines)
    out[at], out[other] = out[other], out[at]
    return out


def _cut(lines: Lines, at: int, amount: int) -> Lines:
    return [*lines[:at], lines[at][: amount % 700], *lines[at + 1 :]]


def _lengthen(lines: Lines, at: int, amount: int) -> Lines:
    return [*lines[:at], lines[at] + b" " * (amount % 90 + 1), *lines[at + 1 :]]


def _join(lines: Lines, at: int, _: int) -> Lines:
    if at + 1 >= len(lines):
        return lines
    return [*lines[:at], lines[at] + lines[at + 1], *lines[at + 2 :]]


def _split_line(lines: Lines, at: int, amount: int) -> Lines:
    line, cut = lines[at], amount % (len(lines[at]) + 1)
    return [*lines[:at], line[:cut], line[cut:], *lines[at + 1 :]]


def _empty(lines: Lines, at: int, _: int) -> Lines:
    return [*lines[:at], b"", *lines[at:]]


def _nested_header(lines: Lines, at: int, _: int) -> Lines:
    header = next((line for line in lines if line[:10] == HEADER), HEADER)
    return [*lines[:at], header, *lines[at:]]


def _no_footers(lines: Lines, at: int, _: int) -> Lines:
    return [line for i, line in enumerate(lines) if i < at or line[:10] != FOOTER]


def _marker(lines: Lines, at: int, amount: int) -> Lines:
    marker = _MARKERS[amount % len(_MARKERS)]
    return [*lines[:at], marker + lines[at][10:], *lines[at + 1 :]]


def _state(lines: Lines, at: int, amount: int) -> Lines:
    state = b"SVRCX \x00\xe9"[amount % 8 : amount % 8 + 1]
    return [*lines[:at], lines[at][:10] + state + lines[at][11:], *lines[at + 1 :]]


LINE_EDITS: tuple[LineEdit, ...] = (
    _drop, _double, _swap, _cut, _lengthen, _join, _split_line, _empty, _nested_header,
    _no_footers, _marker, _state,
)  # fmt: skip
TERMINATORS = (b"\n", b"\r\n", b"\r", b"\x00\n", b"\r\r\n", b"\n\n")


def with_terminator(data: bytes, terminator: bytes, final: bool) -> bytes:
    """The same lines with another terminator, and with or without one after the last."""
    lines = data[:-1].split(b"\n") if data.endswith(b"\n") else data.split(b"\n")
    return terminator.join(lines) + (terminator if final else b"")


def sections_of(data: bytes) -> list[bytes]:
    """The sections of a sample as byte strings (header to footer, terminators kept)."""
    out: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line[:10] == HEADER or not out:
            out.append(b"")
        out[-1] += line
    return out


def renumbered(sections: Sequence[bytes]) -> bytes:
    """Sections put one after the other, their header and footer numbered by position."""
    number = LAYOUT.header.field("section_number")
    again = LAYOUT.footer.field("section_number")
    out = io.BytesIO()
    for n, section in enumerate(sections, start=1):
        digits = str(n % 1000).zfill(number.length).encode()
        for line in section.splitlines(keepends=True):
            spec = number if line[:10] == HEADER else again if line[:10] == FOOTER else None
            if spec is not None and len(line) >= spec.end:
                line = line[: spec.start] + digits + line[spec.end :]
            out.write(line)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@lru_cache(maxsize=1024)
def _fields(data: bytes) -> tuple[tuple[int, FieldSpec], ...]:
    return tuple((index, spec) for index, record in records_of(data) for spec in record.fields)


class Choices(Protocol):
    """Where a mutation's choices come from: hypothesis here, libFuzzer in bench/fuzz.py."""

    def below(self, n: int) -> int:
        """A number in 0..n-1 (n >= 1)."""
        ...

    def raw(self, n: int) -> bytes:
        """n bytes."""
        ...


def pick(choices: Choices, items: Sequence[T]) -> T:
    return items[choices.below(len(items))]


def _spoil(c: Choices, data: bytes, random_bytes: bool) -> bytes:
    """`data` with one of its fields set out of its domain (or, maybe, to any bytes)."""
    fields = _fields(data)
    if not fields:
        return data
    index, spec = pick(c, fields)
    values = _out_of_domain(spec)
    choice = c.below(len(values) + random_bytes)
    raw = values[choice] if choice < len(values) else c.raw(spec.length)
    return set_field(data, index, spec, raw)


def field_mutated(c: Choices) -> Seed:
    """A sample with one to three fields set out of their domain (or to any bytes)."""
    seed = pick(c, SEEDS)
    data = seed.data
    for _ in range(c.below(3) + 1):
        data = _spoil(c, data, random_bytes=True)
    return Seed(seed.name, seed.uploader, data)


def line_mutated(c: Choices) -> Seed:
    """A sample with one to four line edits, then another terminator."""
    seed = pick(c, SEEDS)
    lines = seed.data.split(b"\n")
    for _ in range(c.below(4) + 1):
        if not lines:
            break
        edit = pick(c, LINE_EDITS)
        lines = edit(lines, c.below(len(lines)), c.below(1 << 16))
    data = b"\n".join(lines)
    terminator, final = pick(c, TERMINATORS), c.below(2) == 1
    return Seed(seed.name, seed.uploader, with_terminator(data, terminator, final))


def many_sections(c: Choices) -> Seed:
    """Up to 40 sections of one sample, renumbered, a few of them spoilt."""
    seed = pick(c, SEEDS)
    parts = sections_of(seed.data)
    chosen = [pick(c, parts) for _ in range(c.below(40) + 1)]
    for _ in range(c.below(4)):
        at = c.below(len(chosen))
        chosen[at] = _spoil(c, chosen[at], random_bytes=False)
    return Seed(seed.name, seed.uploader, renumbered(chosen))


_RECORD_TYPES = (b"", *_MARKERS, b"3333333333", b"4444444444", b"6666666666")


def arbitrary(c: Choices) -> Seed:
    """Lines of any bytes, some starting with a record type, after a sample's header or not."""
    seed = pick(c, SEEDS)
    header = seed.data.split(b"\n", 1)[0]
    lines = [header][: c.below(2)]
    lines += [pick(c, _RECORD_TYPES) + c.raw(c.below(701)) for _ in range(c.below(13))]
    return Seed(seed.name, seed.uploader, pick(c, TERMINATORS).join(lines))


MUTATORS: tuple[Callable[[Choices], Seed], ...] = (
    field_mutated,
    line_mutated,
    many_sections,
    arbitrary,
)


@cache
def _below(n: int) -> st.SearchStrategy[int]:
    """Strategies are built once: building one per draw was most of the fuzz tests' time."""
    return st.integers(0, n - 1)


@cache
def _bytes_of(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


@dataclass(frozen=True, slots=True)
class Drawn:
    """Choices drawn by hypothesis, so that it shrinks a failing input to a small one."""

    draw: st.DrawFn

    def below(self, n: int) -> int:
        return self.draw(_below(n))

    def raw(self, n: int) -> bytes:
        return self.draw(_bytes_of(n))


def uploads(mutator: Callable[[Choices], Seed]) -> st.SearchStrategy[Seed]:
    return st.composite(lambda draw: mutator(Drawn(draw)))()


# ---------------------------------------------------------------------------------------------
# The tests (CI run: 20 000+ inputs in all)
# ---------------------------------------------------------------------------------------------


def _targets(outcome: Outcome) -> None:
    """Steer towards files where much is refused and much still delivered."""
    sections = outcome.report.sections
    target(float(len(outcome.report.delivered_sections)), label="delivered sections")
    target(float(len({p.code for s in sections for p in s.problems})), label="problem codes")
    target(float(len(outcome.rows)), label="occurrences")


@pytest.mark.parametrize("seed", SEEDS, ids=[s.name for s in SEEDS])
@pytest.mark.parametrize("terminator", TERMINATORS, ids=repr)
@pytest.mark.parametrize("final", [True, False], ids=["final", "unterminated"])
def test_every_sample_with_every_terminator(seed: Seed, terminator: bytes, final: bool) -> None:
    exercise(with_terminator(seed.data, terminator, final), seed.name, seed.uploader)


def sweep() -> Iterator[tuple[str, Seed, int, FieldSpec]]:
    """For each record type, the first line of a good sample holding it, each of its fields."""
    seen: set[str] = set()
    for seed in (s for s in SEEDS if _outcomes(s.data, s.name, s.uploader)[1]):
        for index, record in records_of(seed.data):
            if record.name not in seen:
                seen.add(record.name)
                yield from ((record.name, seed, index, spec) for spec in record.fields)


def _args(seed: Seed) -> tuple[bytes, str, str]:
    return seed.data, seed.name, seed.uploader


@cache
def _outcomes(data: bytes, name: str, uploader: str) -> tuple[tuple[bool, ...], bool]:
    """Each section's outcome (accepted or not), and whether the whole file is accepted."""
    ctx = CheckContext(name, uploader, ACTIVE.__contains__, LAYOUT)
    report = last_report(check_lines(io.BytesIO(data), ctx))
    return tuple(s.accepted for s in report.sections), report.fully_accepted


SWEEP = list(sweep())


@pytest.mark.parametrize("record", sorted({r for r, *_ in SWEEP}))
def test_each_field_of_each_record_out_of_its_domain(record: str) -> None:
    """Every out-of-domain value of every field: the section holding it is refused when the
    field's check refuses it, the file's other sections keep their outcome, and the record
    decodes faithfully."""
    codec = codecs_for(LAYOUT)[record]
    for _, seed, index, spec in (case for case in SWEEP if case[0] == record):
        before = _outcomes(*_args(seed))[0]
        for raw in out_of_domain(spec):
            data = set_field(seed.data, index, spec, raw)
            report = exercise(data, seed.name, seed.uploader).report
            if b"\n" in raw or spec.name == "record_type" or len(raw) != spec.length:
                continue
            line = data.split(b"\n")[index].decode(LAYOUT.encoding)
            section = next(s for s in report.sections if s.first_line <= index + 1 <= s.last_line)
            if spec in codec.bad_fields(line):
                assert not section.accepted, (record, spec.name, raw)
            assert_faithful(codec.spec, line)
            others = [s.accepted for s in report.sections if s is not section]
            assert others == [a for n, a in enumerate(before, 1) if n != section.number]


@settings(FUZZ, max_examples=7000)
@given(uploads(field_mutated))
def test_fuzz_field_mutations(seed: Seed) -> None:
    _targets(exercise(*_args(seed)))
    lines = seed.data.split(b"\n")
    for index, record in records_of(seed.data):
        line = lines[index].decode(LAYOUT.encoding)
        if len(line) == LAYOUT.record_length:
            assert_faithful(record, line)


@settings(FUZZ, max_examples=5000)
@given(uploads(line_mutated))
def test_fuzz_line_mutations(seed: Seed) -> None:
    _targets(exercise(*_args(seed)))


@settings(FUZZ, max_examples=1500)
@given(uploads(many_sections))
def test_fuzz_many_sections(seed: Seed) -> None:
    _targets(exercise(*_args(seed)))


@settings(FUZZ, max_examples=2500)
@given(uploads(arbitrary))
def test_fuzz_arbitrary_lines(seed: Seed) -> None:
    _targets(exercise(*_args(seed)))


def test_thousands_of_sections_one_spoilt() -> None:
    """2 500 sections (the 3-digit section number wraps past 999), one with month 13."""
    seed = next(s for s in SEEDS if s.name == "RGIE000001_00311_000001.edi")
    parts = sections_of(seed.data) * 834
    fields = dict(((i, f.name), (i, f)) for i, f in _fields(parts[1]))
    index, spec = fields[(1, "allocation_effective_date")]
    parts[1] = set_field(parts[1], index, spec, b"2008-13-01")
    outcome = exercise(renumbered(parts), seed.name, seed.uploader)
    accepted = [s.number for s in outcome.report.sections if s.accepted]
    assert len(outcome.report.sections) == len(parts)
    assert 1 in accepted and 2 not in accepted and 3 in accepted
    assert outcome.report.problems == []
    assert len(outcome.rows) == len(accepted) > 900


def test_a_good_file_spoilt_in_one_section_still_delivers_the_others() -> None:
    """Issue 13, item 1, through `write_file`: five CESAM sections, the third with month 13."""
    [first, *_] = parse_file(next(s for s in SEEDS if s.name.startswith("RGIE")).data)
    recipients = ("CIE000311", "CIE000452", "CIE000638", "CIE000311", "CIE000452")
    data = write_file(
        Section({**first.header, "section_number": n, "recipient_id": r}, first.records)
        for n, r in enumerate(recipients, start=1)
    )
    index, spec = next((i, f) for i, f in _fields(data) if f.name == "allocation_effective_date")
    spoilt = set_field(data, index + 14, spec, b"2008-13-01")
    outcome = exercise(spoilt, "RGIE000001_00311_000009.edi", "GIE000001")
    assert [s.accepted for s in outcome.report.sections] == [True, True, False, True, True]
    assert len(outcome.rows) == 4
    [first_company, second_company, log] = [o.output for o in outcome.outputs]
    assert first_company.participant_id == "CIE000311"
    assert len(first_company.ranges.split(",")) == 2  # sections 1 and 4
    assert second_company.participant_id == "CIE000452"
    assert log.kind == "log" and log.name.endswith("_3.log")


def test_tell_how_many_inputs_went_through(capsys: pytest.CaptureFixture[str]) -> None:
    """Last of the module: the number of inputs of this run, in its output."""
    with capsys.disabled():
        sys.stdout.write(f"\ntest_fuzz: {INPUTS[0]} inputs through the plain path\n")
