"""What checking a plain Optiflux file produces: sections, flows and problems."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bdi.routing.errors import Code, Problem
from bdi.routing.fields import Value

# Control state of a flow occurrence (OPTIFLUX.md §8.2): S Suspens, V Validé, R Rejeté.
CONTROL_LABELS: Mapping[str, str] = {"S": "Suspens", "V": "Validé", "R": "Rejeté"}


@dataclass(frozen=True, slots=True)
class FlowLine:
    """One compte financier line (a 2222222222), indexed on its own for the line searches."""

    line: int
    control: str
    fields: Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow occurrence of a section, with what the Suivi needs to find and show it."""

    section: int
    layout: str
    flow_code: str
    line: int
    key: str
    optiflux_key: str
    control: str
    fields: Mapping[str, Value]
    reject_message: str | None = None
    lines: tuple[FlowLine, ...] = ()
    # the Suivi's JSON of `fields` (as `json.dumps` writes them, filler left out), written
    # from the record's text by the checks; None: to make from the values
    fields_json: str | None = None
    # where the flow's records are in the checked file: from its first record's first byte
    # to its last record's terminator. The Suivi reads a répartition's grid from there
    # (`grid_records`) rather than keeping it: the grid is most of a flow's bytes.
    start: int = 0
    end: int = 0
    # the office codes of a répartition's grid, in file order (the AASO search, §8.9)
    offices: tuple[str, ...] = ()


@dataclass(slots=True)
class SectionReport:
    """The outcome of one section: where it is, who it is for, and what is wrong with it."""

    number: int
    first_line: int
    last_line: int
    start: int  # byte offset of the header
    end: int  # byte offset after the section's last line (terminator included)
    file_type: str
    flow_code: str
    sender_id: str
    recipient_id: str
    problems: list[Problem] = field(default_factory=list)
    flow_counts: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class FileReport:
    """The outcome of one upload's plain text: file problems refuse everything."""

    upload_name: str
    problems: list[Problem] = field(default_factory=list)
    sections: list[SectionReport] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.problems

    @property
    def delivered_sections(self) -> list[SectionReport]:
        return [s for s in self.sections if s.accepted] if self.accepted else []

    @property
    def fully_accepted(self) -> bool:
        return self.accepted and all(s.accepted for s in self.sections)

    def codes(self) -> list[Code]:
        return [p.code for p in self.problems]
