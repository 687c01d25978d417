"""Cut a section's records into flows (`[layouts.*]`) and extract what the Suivi needs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from bdi.routing.fields import RecordCodec, Value, codecs_for
from bdi.routing.layout import FlowLayout, Layout
from bdi.routing.model import Flow, FlowLine

REJECTED_STATES = frozenset({"R", "C"})


def aggregate_control(states: str) -> str:
    """Rejeté if any record is R or C, Validé if all are V, Suspens otherwise (§8.2)."""
    if any(s in REJECTED_STATES for s in states):
        return "R"
    return "V" if states and all(s == "V" for s in states) else "S"


def flow_key(parts: tuple[str, ...], values: Mapping[str, Value]) -> str:
    """Join the `flow_key` fields; `a|b` takes b when a is blank."""
    out = []
    for part in parts:
        choice = ""
        for name in part.split("|"):
            choice = str(values.get(name) or "").strip()
            if choice:
                break
        out.append(choice)
    return "|".join(out)


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
        grid_values: bool = True,
    ) -> None:
        self.layout = flow_layout
        self.grid_values = grid_values  # False: grid records only as JSON
        self.flow_code = flow_code
        self.section = section
        self.codecs = codecs
        self._reset()

    def _reset(self) -> None:
        self.head: dict[str, Value] | None = None
        self.head_json: str | None = None
        self.head_line = 0
        self.states: list[str] = []
        self.lines: list[FlowLine] = []
        self.grid: list[dict[str, Value]] = []
        self.grid_json: list[str] = []
        self.reject_message: str | None = None

    def record(self, line: int, marker: str, text: str) -> Flow | None:
        """Take a functional record of this flow layout; return the flow it completes, if any."""
        done = None
        starts = marker == self.layout.flow_starts_with
        if self.layout.flow_ends_with is None:
            if starts:
                done = self._complete()
            if starts or self.head is not None:
                self._add(line, marker, text)
            return done
        return self._add_account(line, marker, text)

    def _add(self, line: int, marker: str, text: str) -> None:
        codec = self.codecs[self.layout.records[marker]]
        if self.head is None:
            self.head, self.head_line = codec.decode(text), line
            self.head_json = codec.json_text(text)
        elif marker == "4444444444" and self.layout.name == "allocation":
            if self.grid_values:
                self.grid.append(codec.decode(text))
            self.grid_json.append(codec.json_text(text))
        self.states.append(_state(text))

    def _add_account(self, line: int, marker: str, text: str) -> Flow | None:
        codec = self.codecs[self.layout.records[marker]]
        if not self.states:
            self.head_line = line
        state = _state(text)
        self.states.append(state)
        if marker == self.layout.flow_starts_with:
            self.lines.append(FlowLine(line, aggregate_control(state), codec.decode(text)))
        if marker == self.layout.flow_ends_with:
            self.head, self.head_json = codec.decode(text), codec.json_text(text)
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
            key=flow_key(self.layout.flow_key, head),
            optiflux_key=optiflux_key,
            control=aggregate_control("".join(self.states)),
            fields=head,
            reject_message=self.reject_message,
            lines=tuple(self.lines),
            grid=tuple(self.grid),
            fields_json=self.head_json,
            grid_json=f"[{', '.join(self.grid_json)}]" if self.grid_json else "[]",
        )
        self._reset()
        return flow

    def finish(self) -> Flow | None:
        """The last flow of the section (an unclosed compte financier account is dropped)."""
        if self.layout.flow_ends_with is not None:
            return None
        return self._complete()


def iter_flows(
    lines: Iterable[bytes], layout: Layout, accepted: Mapping[int, str]
) -> Iterator[Flow]:
    """The flows of the accepted sections of an already checked file, one at a time.

    `accepted` maps each delivered section number to its flow code. The file is read once
    more rather than keeping every flow of a big file in memory between check and storage.
    Total over any bytes and any `accepted` (a record its flow layout has no place for, or a
    flow code without a layout, is passed over): a resumed job reads its file again here."""
    codecs = codecs_for(layout)
    message = layout.reject.field("reject_message")
    builder: FlowBuilder | None = None
    number = 0
    for line, raw in enumerate(lines, start=1):
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
            flow = builder.record(line, marker, text)
            if flow is not None:
                yield flow


def _builder(
    layout: Layout, code: str | None, section: int, codecs: Mapping[str, RecordCodec]
) -> FlowBuilder | None:
    """The builder of an accepted section's flows; None for a section not to index."""
    if code is None or code not in layout.flow_layouts_by_code:
        return None
    return FlowBuilder(layout.flow_layout(code), code, section, codecs)
