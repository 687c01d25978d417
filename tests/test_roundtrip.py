"""Property tests: the writer and the reader are inverse, and what the writer produces from
values that respect `layout.toml` passes every BDI check (OPTIFLUX.md §6.1, §7.2)."""

from __future__ import annotations

import re
from datetime import time
from decimal import Decimal
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SAMPLES, manifest

from bdi.routing.fields import Value
from bdi.routing.layout import FieldSpec, default_layout
from bdi.routing.scan import CheckContext, check_bytes
from bdi.routing.writer import Record, Section, parse_file, write_file

LAYOUT = default_layout()
# Printable ISO-8859-1 (kinds.alnum): the ASCII graphic range and space, then NBSP..ÿ.
PRINTABLE = "".join(chr(c) for c in (*range(0x20, 0x7F), *range(0xA0, 0x100)))
REJECTED = ("R", "C")
# One mailbox of every account class, all registered and active.
MAILBOXES = ("COU010234", "AGT005120", "APE007566", "CIE000311", "CIE000452", "GIE000001")
STAR_CLASS = re.compile(r"\^(\[[^\]]*\])\*\$")
MAX_SECTIONS = 2

PROPERTY = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Strategy = st.SearchStrategy


def _chars(char_class: str) -> str:
    """The printable ISO-8859-1 characters a one-character regex class accepts."""
    return "".join(c for c in PRINTABLE if re.fullmatch(char_class, c))


def _free_text(alphabet: str, length: int) -> Strategy[str]:
    """Left-aligned text of at most `length` characters of `alphabet`, right-stripped."""
    first = st.sampled_from([c for c in alphabet if c != " "])
    rest = st.text(alphabet, max_size=length - 1)
    return st.builds(lambda a, b: (a + b).rstrip(" "), first, rest)


def _text(spec: FieldSpec) -> Strategy[str]:
    """alnum / code: a value from `values`, matching `pattern`, or printable text; left-aligned
    (no leading space) and right-stripped, as the reader gives it back; blank if optional."""
    star = STAR_CLASS.fullmatch(spec.pattern or "")
    if spec.values:
        present: Strategy[str] = st.sampled_from(spec.values)
    elif star:
        present = _free_text(_chars(star.group(1)), spec.length)
    elif spec.pattern:
        present = st.from_regex(spec.pattern, fullmatch=True)
    else:
        present = _free_text(PRINTABLE, spec.length)
    return present if spec.required else st.one_of(st.just(""), present)


def _number(spec: FieldSpec) -> Strategy[int]:
    if spec.value is not None:
        return st.just(int(spec.value))
    if spec.values:
        return st.sampled_from(spec.values).map(int)
    if spec.pattern:
        return st.from_regex(spec.pattern, fullmatch=True).map(int)
    return st.integers(0, 10**spec.length - 1)


def _decimal(spec: FieldSpec) -> Strategy[Decimal]:
    digits = spec.length - (1 if spec.kind == "signed_amount" else 0)
    top = 10**digits - 1
    low = -top if spec.kind == "signed_amount" else 0
    return st.integers(low, top).map(lambda i: Decimal(i).scaleb(-spec.decimals))


def _optional(spec: FieldSpec, present: Strategy[Value]) -> Strategy[Value]:
    return present if spec.required else st.one_of(st.none(), present)


def field_values(spec: FieldSpec) -> Strategy[Value]:
    """Valid typed values of one field, as `parse_file` returns them."""
    if spec.name == "filler":
        return st.just("")
    if spec.kind == "marker":
        return st.just(spec.value)
    if spec.kind == "numeric":
        return _number(spec)
    if spec.kind in ("amount", "rate", "signed_amount"):
        return _decimal(spec)
    if spec.kind == "date":
        return _optional(spec, st.dates())
    if spec.kind == "time":
        whole_seconds = st.builds(time, st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
        return _optional(spec, whole_seconds)
    assert spec.kind in ("alnum", "code"), spec
    return _text(spec)


@cache
def record_values(name: str) -> Strategy[dict[str, Value]]:
    spec = LAYOUT.records[name]
    return st.fixed_dictionaries({f.name: field_values(f) for f in spec.fields})


# An `order_regex` item: a record-type digit or a group of items, and its quantifier.
Item = tuple["str | list[Item]", str]


def _parse_order(pattern: str, i: int = 0) -> tuple[list[Item], int]:
    """The items of an `order_regex` (digits and groups, each with '', '*' or '+')."""
    items: list[Item] = []
    while i < len(pattern) and pattern[i] != ")":
        atom: str | list[Item]
        if pattern[i] == "(":
            atom, i = _parse_order(pattern, i + 1)
            i += 1  # the ')'
        else:
            atom, i = pattern[i], i + 1
        quantifier = pattern[i] if i < len(pattern) and pattern[i] in "*+" else ""
        i += len(quantifier)
        items.append((atom, quantifier))
    return items, i


def _order_strategy(items: list[Item]) -> Strategy[str]:
    parts = []
    for atom, quantifier in items:
        one = st.just(atom) if isinstance(atom, str) else _order_strategy(atom)
        low = {"": 1, "+": 1, "*": 0}[quantifier]
        high = 1 if quantifier != "+" else 2
        parts.append(st.lists(one, min_size=low, max_size=high).map("".join))
    return st.tuples(*parts).map("".join)


@cache
def record_order(order_regex: str) -> Strategy[str]:
    """Strings of record-type digits that `order_regex` (e.g. '^(24+)+$') accepts; to keep
    sections small, 'x+' gives one or two x and 'x*' none or one."""
    body = order_regex.removeprefix("^").removesuffix("$")
    items, end = _parse_order(body)
    assert end == len(body) and set(body) <= set("23456()*+"), order_regex
    return _order_strategy(items)


def _routes() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(sender, file type) -> the (flow code, recipient) pairs the routing matrix allows."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for letter, file_type in LAYOUT.file_types.items():
        for sender in MAILBOXES:
            pairs = [
                (code, recipient)
                for code in sorted(file_type.flow_codes)
                for recipient in MAILBOXES
                if LAYOUT.route_allowed(sender, recipient, letter, code)
            ]
            if pairs:
                out[sender, letter] = pairs
    return out


ROUTES = _routes()


@st.composite
def section_records(draw: st.DrawFn, flow_code: str) -> tuple[Record, ...]:
    """Functional records in the layout's order (`order_regex`), each R/C record followed by
    its 7777777777."""
    flow = LAYOUT.flow_layout(flow_code)
    order = draw(record_order(flow.order_regex.pattern))
    assert flow.order_regex.fullmatch(order), order
    records: list[Record] = []
    for digit in order:
        name = flow.records[digit * 10]
        values = draw(record_values(name))
        records.append(Record(name, values))
        state = values["control_state"]
        if state in REJECTED:
            reject = draw(record_values(LAYOUT.reject.name))
            reject.update(control_state=state, rejected_record_type=int(digit))
            records.append(Record(LAYOUT.reject.name, reject))
    return tuple(records)


@st.composite
def uploads(draw: st.DrawFn, flow_code: str) -> tuple[str, str, list[Section]]:
    """(upload name, uploader, sections): a legal file whose first section has `flow_code`;
    every section has the file's type (rule n°5), the uploader as sender and a legal route."""
    candidates = sorted(
        (sender, letter)
        for (sender, letter), pairs in ROUTES.items()
        if any(code == flow_code for code, _ in pairs)
    )
    sender, letter = draw(st.sampled_from(candidates))
    pairs = ROUTES[sender, letter]
    first = st.sampled_from([p for p in pairs if p[0] == flow_code])
    count = draw(st.integers(1, MAX_SECTIONS))
    sections = []
    for number in range(1, count + 1):
        code, recipient = draw(first if number == 1 else st.sampled_from(pairs))
        header = draw(record_values(LAYOUT.header.name))
        header.update(
            file_type=letter,
            flow_code=code,
            sender_id=sender,
            recipient_id=recipient,
            section_number=number,
        )
        sections.append(Section(header, draw(section_records(code))))
    return f"{letter}{sender}_00311_000001.edi", sender, sections


FLOW_CODES = sorted(LAYOUT.flow_layouts_by_code)


def _active(mailbox: str) -> bool:
    return mailbox in MAILBOXES


def _check(data: bytes, name: str, uploader: str) -> list[tuple[int, list[str]]]:
    report = check_bytes(data, CheckContext(name, uploader, _active))
    assert report.problems == []
    return [(s.number, [p.code.value for p in s.problems]) for s in report.sections]


def test_every_flow_code_and_file_type_can_be_generated() -> None:
    assert FLOW_CODES == ["BUL", "CPF", "DIS", "PRI", "RCA", "RCC", "REP"]
    assert {letter for _, letter in ROUTES} == set(LAYOUT.file_types)
    assert {code for pairs in ROUTES.values() for code, _ in pairs} == set(FLOW_CODES)


@pytest.mark.parametrize(
    "sample",
    [s for s in manifest() if all(x["expect"] == "deliver" for x in s["sections"])],
    ids=lambda s: s["path"],
)
def test_samples_round_trip_byte_for_byte(sample: dict[str, Any]) -> None:
    data = (SAMPLES / sample["path"]).read_bytes()
    sections = parse_file(data)
    assert [s.header["section_number"] for s in sections] == [
        x["number"] for x in sample["sections"]
    ]
    assert write_file(sections) == data


@pytest.mark.parametrize(
    "path", ["broken/BCOU010234_00311_000091.edi", "broken/DCOU010234_00311_000095.edi"]
)
def test_rewriting_recomputes_a_wrong_footer(path: str) -> None:
    data = (SAMPLES / path).read_bytes()
    name = path.removeprefix("broken/")
    assert check_bytes(data, CheckContext(name, "COU010234")).sections[0].problems
    rewritten = write_file(parse_file(data))
    assert rewritten != data
    assert rewritten.splitlines()[:-1] == data.splitlines()[:-1]
    assert _check(rewritten, name, "COU010234") == [(1, [])]


@pytest.mark.parametrize("flow_code", FLOW_CODES)
@PROPERTY
@given(data=st.data())
def test_parse_inverts_write_and_written_files_pass_every_check(
    flow_code: str, data: st.DataObject
) -> None:
    name, uploader, sections = data.draw(uploads(flow_code))
    clean: list[tuple[int, list[str]]] = [(n, []) for n in range(1, len(sections) + 1)]
    for newline in ("\n", "\r\n"):
        written = write_file(sections, newline=newline)
        assert parse_file(written) == sections
        assert write_file(parse_file(written), newline=newline) == written
        assert _check(written, name, uploader) == clean
        # the last record may lack its terminator
        assert _check(written.removesuffix(newline.encode()), name, uploader) == clean
