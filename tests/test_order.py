"""A section's record order, walked record by record (`routing.order`): the same verdict as
the layout's regex, its ORDRE message as before, and no memory that grows with the section."""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import SAMPLES

from bdi.routing.errors import Code
from bdi.routing.layout import default_layout
from bdi.routing.order import OrderAutomaton, Runs
from bdi.routing.scan import CheckContext, check_lines, last_report

LAYOUT = default_layout()
PATTERNS = [flow.order_regex.pattern for flow in LAYOUT.layouts.values()] + [
    "^(2|34)*5?$", "^a(b|c)+d*$", "^$", "^()+$", "^(2*)*$", "^2?(3|4|)+$",
]  # fmt: skip


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_the_automaton_accepts_what_the_regex_accepts(pattern: str, data: st.DataObject) -> None:
    letters = sorted(set(re.sub(r"[^0-9a-z]", "", pattern)) | {"9"})
    text = data.draw(st.text(alphabet=letters, max_size=14))
    assert OrderAutomaton(pattern).fullmatch(text) == bool(re.fullmatch(pattern, text))


@pytest.mark.parametrize("pattern", ["^2.4$", "^[24]+$", "^2{3}$", "^(24$", "^24)$", r"^\d$"])
def test_a_regex_it_cannot_read_fails_the_layout(pattern: str) -> None:
    with pytest.raises(ValueError, match="order regex"):
        OrderAutomaton(pattern)


def _runs(sequence: str, limit: int = 60) -> str:
    """The message's runs as written from the whole sequence (what `Runs` keeps less of)."""
    runs = [m[0] for m in re.finditer(r"(.)\1*", sequence)]
    text = " ".join(run[0] + (f"×{len(run)}" if len(run) > 1 else "") for run in runs)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="23456", max_size=300))
def test_the_runs_of_the_message_are_those_of_the_whole_sequence(sequence: str) -> None:
    runs = Runs()
    for letter in sequence:
        runs.add(letter)
    assert runs.text() == _runs(sequence)


def test_a_section_in_the_wrong_order_is_still_told_which() -> None:
    data = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
    lines = data.splitlines(keepends=True)
    swapped = b"".join([lines[0], lines[2], lines[1], *lines[3:]])
    report = last_report(check_lines([swapped], CheckContext("RCOU010234_00311_000001.edi")))
    [problem] = [p for p in report.sections[0].problems if p.code is Code.ORDRE]
    assert (problem.detail or "").startswith("types 4 2")


def _section(records: int) -> Iterator[bytes]:
    """A section of the sample's first flow repeated to `records` records, in 64 KiB
    pieces, never whole in memory."""
    lines = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes().splitlines(keepends=True)
    flow = b"".join(lines[1:-1])
    yield lines[0]
    piece = flow * (65536 // len(flow))
    for _ in range(records // (len(lines) - 2) // (65536 // len(flow))):
        yield piece
    yield lines[-1]


def test_a_huge_section_takes_no_memory_per_record() -> None:
    """300 000 records: the order was a list of their letters (2.4 MB), then a regex over
    their string (8-9 MB more)."""
    ctx = CheckContext("RCOU010234_00311_000001.edi", keep_sections=False)
    tracemalloc.start()
    try:
        events = list(check_lines(_section(300_000), ctx))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not events[0].report.accepted  # its counts are the sample's: NOMBRE
    assert all(p.code is not Code.ORDRE for p in events[0].report.problems)
    assert peak < 1_000_000, peak


def _one_line(first: bytes, megabytes: int, fill: bytes) -> Iterator[bytes]:
    """`first`, then a line of `megabytes` MiB of `fill` in 1 MiB pieces, ended by "\\r\\n",
    then 3 spaces with no terminator: a compressed upload inflates to such a file from a
    few hundred bytes."""
    yield first
    for _ in range(megabytes):
        yield fill * (1 << 20)
    yield b"\r\n   "


def _checked_in(pieces: Iterator[bytes]) -> tuple[list[Any], int]:
    ctx = CheckContext("RCOU010234_00311_000001.edi", keep_sections=False)
    tracemalloc.start()
    try:
        events = list(check_lines(pieces, ctx))
        return events, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_line_of_64_mib_is_checked_in_bounded_memory() -> None:
    """Its width and place are told as they are; it took twice its size, and joining its
    pieces grew with the square of its size."""
    header = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes().splitlines(keepends=True)[0]
    events, peak = _checked_in(_one_line(header, 64, b"2"))
    [section, _] = events
    width = 64 << 20
    assert [(p.code, p.detail) for p in section.report.problems if p.line == 2] == [
        (Code.LONGUEUR, f"{width} au lieu de 640")
    ]
    assert section.report.end == len(header) + width + 2 + 3  # its "\r\n", the last line
    assert peak < 4 << 20, peak  # a piece and its text


@pytest.mark.parametrize("fill", [b" ", b"x"])
def test_a_long_line_outside_sections_is_an_error_unless_blank(fill: bytes) -> None:
    sample = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
    events, peak = _checked_in(_one_line(sample, 2, fill))
    lines = sample.count(b"\n")
    assert [(p.code, p.line) for p in events[-1].report.problems] == (
        [] if fill == b" " else [(Code.HORS_SECTION, lines + 1)]
    )
    assert events[0].report.accepted
    assert peak < 4 << 20, peak


def test_a_last_line_with_no_terminator_is_checked_as_it_is() -> None:
    """The footer as the file's last bytes: the same reports as with its "\\n"."""
    data = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
    ctx = CheckContext("RCOU010234_00311_000001.edi")
    with_end = last_report(check_lines([data], ctx))
    without = last_report(check_lines([data.rstrip(b"\n")], ctx))
    assert without.sections[0].accepted
    assert [s.problems for s in without.sections] == [s.problems for s in with_end.sections]
    assert without.sections[-1].end == len(data) - 1
