"""Cut a section's records into flows (`[layouts.*]`) and extract what the Suivi needs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from bdi.routing.fields import RecordCodec, Value, codecs_for
from bdi.routing.layout import FlowLayout, Layout
from bdi.routing.model import Flow, FlowLine

REJECTED_STATES = frozenset({"R", "C"})
ALLOCATION, GRID_MARKER = "allocation", "4444444444"  # a répartition and its grid's lines


def aggregate_control(states: str) -> str:
    """Rejeté if any record is R or C, Validé if all are V, Suspens otherwise (§8.2)."""
    if not REJECTED_STATES.isdisjoint(states):
        return "R"
    return "V" if states and states.count("V") == len(states) else "S"


def key_parts(flow_key: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """A layout's `flow_key`, each part as its choices (`a|b`: a, else b when a is blank)."""
    return tuple(tuple(part.split("|")) for part in flow_key)


def flow_key(parts: tuple[tuple[str, ...], ...], values: Mapping[str, Value]) -> str:
    """Join the `flow_key` fields (`key_parts`)."""
    out = []
    for choices in parts:
        choice = ""
        for name in choices:
            choice = str(values.get(name) or "").strip()
            if choice:
                break
        out.append(choice)
    return "|".join(out)


def _office_slice(flow_layout: FlowLayout, codecs: Mapping[str, RecordCodec]) -> slice | None:
    """Where a répartition's grid record has its office code; None for other layouts."""
    if flow_layout.name != ALLOCATION or GRID_MARKER not in flow_layout.records:
        return None
    spec = codecs[flow_layout.records[GRID_MARKER]].spec.field("office_code")
    return slice(spec.start, spec.end)


def grid_records(records: bytes, layout: Layout, flow_layout: str) -> list[dict[str, Any]]:
    """The répartition grid of a flow whose records are `records` (its `start`-`end` bytes
    in a content): each grid line as the Suivi shows it, the values of its JSON form; none
    for a flow of another layout."""
    if flow_layout != ALLOCATION:
        return []
    codec = codecs_for(layout)[layout.layouts[ALLOCATION].records[GRID_MARKER]]
    out = []
    for raw in records.split(b"\n"):  # lines as the checks cut them
        text = raw.removesuffix(b"\r").decode(layout.encoding)
        if text[:10] == GRID_MARKER:
            out.append(json.loads(codec.json_text(text)))
    return out


def _state(text: str) -> str:
    """The control state of a record ('' for a line too short to hold one)."""
    return text[10:11]


class FlowBuilder:
    """Accumulates the records of the current flow of one section; bounded by one flow."""

    def __init__(
        self,
        flow_layout: FlowLayout,
        flow_code: str,
        section: int,
        codecs: Mapping[str, RecordCodec],
    ) -> None:
        self.layout = flow_layout
        self.flow_code = flow_code
        self.section = section
        self.codecs = codecs
        self.office = _office_slice(flow_layout, codecs)
        self.key_parts = key_parts(flow_layout.flow_key)
        self.starts, self.account = flow_layout.flow_starts_with, flow_layout.flow_ends_with
        self._reset()

    def _reset(self) -> None:
        self.head: Mapping[str, Value] | None = None
        self.head_json: str | None = None
        self.head_line = self.start = self.end = 0
        self.states: list[str] = []
        self.lines: list[FlowLine] = []
        self.offices: list[str] = []
        self.reject_message: str | None = None

    def record(self, line: int, marker: str, text: str, start: int, end: int) -> Flow | None:
        """Take a functional record of this flow layout, from byte `start` of the file to
        `end` (after its terminator); return the flow it completes, if any."""
        if self.account is not None:
            return self._add_account(line, marker, text, start, end)
        done = None
        if marker == self.starts:
            done = self._complete()
            codec = self.codecs[self.layout.records[marker]]
            self.head, self.head_line, self.start = codec.lazy(text), line, start
            self.head_json = codec.json_text(text)
        elif self.head is None:
            return None
        elif marker == GRID_MARKER and self.office is not None:
            self.offices.append(text[self.office].strip())
        self.states.append(_state(text))
        self.end = end
        return done

    def _add_account(self, line: int, marker: str, text: str, start: int, end: int) -> Flow | None:
        codec = self.codecs[self.layout.records[marker]]
        if not self.states:
            self.head_line, self.start = line, start
        self.end = end
        state = _state(text)
        self.states.append(state)
        if marker == self.layout.flow_starts_with:
            self.lines.append(FlowLine(line, aggregate_control(state), codec.decode(text)))
        if marker == self.layout.flow_ends_with:
            self.head, self.head_json = codec.lazy(text), codec.json_text(text)
            self.states = [state]
            return self._complete()
        return None

    def reject(self, reject_message: str) -> None:
        if self.reject_message is None and (self.head is not None or self.states):
            self.reject_message = reject_message.rstrip() or None

    def _complete(self) -> Flow | None:
        if self.head is None:
            return None
        head = self.head
        optiflux_key = str(head.get("optiflux_key") or "")
        if not optiflux_key and self.lines:
            optiflux_key = str(self.lines[0].fields.get("optiflux_key") or "")
        flow = Flow(
            section=self.section,
            layout=self.layout.name,
            flow_code=self.flow_code,
            line=self.head_line,
            key=flow_key(self.key_parts, head),
            optiflux_key=optiflux_key,
            control=aggregate_control("".join(self.states)),
            fields=head,
            reject_message=self.reject_message,
            lines=tuple(self.lines),
            fields_json=self.head_json,
            start=self.start,
            end=self.end,
            offices=tuple(self.offices),
        )
        self._reset()
        return flow

    def finish(self) -> Flow | None:
        """The last flow of the section (an unclosed compte financier account is dropped)."""
        if self.layout.flow_ends_with is not None:
            return None
        return self._complete()


def iter_flows(
    lines: Iterable[tuple[int, bytes]], layout: Layout, accepted: Mapping[int, str]
) -> Iterator[Flow]:
    """The flows of the accepted sections of an already checked file, one at a time.

    `accepted` maps each delivered section number to its flow code. The file is read once
    more rather than keeping every flow of a big file in memory between check and storage.
    Total over any bytes and any `accepted` (a record its flow layout has no place for, or a
    flow code without a layout, is passed over): a resumed job reads its file again here.
    Each line comes with its length in the file: a long one may be cut (`cut_lines`)."""
    codecs = codecs_for(layout)
    message = layout.reject.field("reject_message")
    builder: FlowBuilder | None = None
    number = 0
    offset = 0
    for line, (length, raw) in enumerate(lines, start=1):
        at = (offset, offset + length)
        offset = at[1]
        text = raw.rstrip(b"\r\n").decode(layout.encoding)
        marker = text[:10]
        if marker == "1111111111":
            number += 1
            builder = _builder(layout, accepted.get(number), number, codecs)
        elif builder is None:
            continue
        elif marker == "9999999999":
            last = builder.finish()
            if last is not None:
                yield last
            builder = None
        elif marker == "7777777777":
            builder.reject(text[message.start : message.end])
        elif marker in builder.layout.records:
            flow = builder.record(line, marker, text, *at)
            if flow is not None:
                yield flow


def _builder(
    layout: Layout, code: str | None, section: int, codecs: Mapping[str, RecordCodec]
) -> FlowBuilder | None:
    """The builder of an accepted section's flows; None for a section not to index."""
    if code is None or code not in layout.flow_layouts_by_code:
        return None
    return FlowBuilder(layout.flow_layout(code), code, section, codecs)
