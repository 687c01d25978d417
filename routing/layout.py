"""Typed view of `layout.toml`, the wire-format contract.

Every position, code and message used by the hub comes from here, so the TOML file
stays the single source of truth: no field position is copied into code.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from bdi.routing.errors import Code
from bdi.routing.order import OrderAutomaton

LAYOUT_RESOURCE = "layout.toml"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    fr: str
    start: int  # 0-based offset in the record
    length: int
    kind: str
    required: bool
    decimals: int = 0
    value: str | None = None
    values: tuple[str, ...] = ()
    pattern: str | None = None

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True, slots=True)
class RecordSpec:
    name: str
    marker: str
    layout: str
    fields: tuple[FieldSpec, ...]

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.name}.{name}")

    def has_field(self, name: str) -> bool:
        return any(spec.name == name for spec in self.fields)

    @property
    def amount_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.kind in ("amount", "signed_amount"))


@dataclass(frozen=True, slots=True)
class FlowLayout:
    name: str
    fr: str
    records: Mapping[str, str]  # marker -> record name
    flow_starts_with: str
    flow_ends_with: str | None
    order_regex: re.Pattern[str]
    order: OrderAutomaton  # the same regex, walked record by record by the checks
    flow_key: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FileType:
    letter: str
    fr: str
    flow_codes: frozenset[str]


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: Code
    scope: str  # file | structure | section
    message: str
    line_rule: str


@dataclass(frozen=True, slots=True)
class RoutingRule:
    senders: frozenset[str]
    recipients: frozenset[str]
    file_types: frozenset[str]
    flow_codes: frozenset[str]

    def allows(self, sender: str, recipient: str, file_type: str, flow_code: str) -> bool:
        return (
            sender in self.senders
            and recipient in self.recipients
            and file_type in self.file_types
            and flow_code in self.flow_codes
        )


@dataclass(frozen=True, slots=True)
class Criterion:
    fr: str
    field: str
    match: str


@dataclass(frozen=True, slots=True)
class Column:
    fr: str
    field: str


@dataclass(frozen=True, slots=True)
class SearchSpec:
    id: str
    fr: str
    record: str
    criteria: tuple[Criterion, ...]
    columns: tuple[Column, ...]
    by_key_columns: tuple[Column, ...]
    operation_family: str | None
    only_when: str | None


@dataclass(frozen=True, slots=True)
class Interpretation:
    senders: frozenset[str]
    recipients: frozenset[str]
    states: frozenset[str]
    label: str


@dataclass(frozen=True, slots=True, eq=False)
class Layout:
    record_length: int
    encoding: str
    format_version: str
    formats: Mapping[str, str]
    file_types: Mapping[str, FileType]
    flow_layouts_by_code: Mapping[str, str]  # flow code -> layout name
    layouts: Mapping[str, FlowLayout]
    records: Mapping[str, RecordSpec]
    header: RecordSpec
    footer: RecordSpec
    reject: RecordSpec
    functional_markers: frozenset[str]
    routing: tuple[RoutingRule, ...]
    errors: Mapping[Code, ErrorSpec]
    check_order: tuple[Code, ...]
    name_suffixes_ignored: tuple[str, ...]
    searches: tuple[SearchSpec, ...]
    interpretations: tuple[Interpretation, ...]
    operation_codes: Mapping[str, Mapping[str, str]]
    page_size: int
    pending_from: str
    raw: Mapping[str, Any]

    def message(self, code: Code) -> str:
        return self.errors[code].message

    def flow_layout(self, flow_code: str) -> FlowLayout:
        return self.layouts[self.flow_layouts_by_code[flow_code]]

    def record_for(self, flow_code: str, marker: str) -> RecordSpec | None:
        name = self.flow_layout(flow_code).records.get(marker)
        return self.records[name] if name else None

    def search(self, search_id: str) -> SearchSpec:
        for spec in self.searches:
            if spec.id == search_id:
                return spec
        raise KeyError(search_id)

    def route_allowed(self, sender: str, recipient: str, file_type: str, flow_code: str) -> bool:
        """Apply the `[[routing]]` matrix to EDI ids (their 3-letter class prefix)."""
        if sender == recipient:
            return False
        s_class, r_class = sender[:3], recipient[:3]
        return any(rule.allows(s_class, r_class, file_type, flow_code) for rule in self.routing)


@cache
def single_byte(encoding: str) -> str:
    """The files' encoding, which must write every character as one byte (ISO-8859-1): the
    checks count a line's place in the file in characters (`scan.check_text`). Any byte
    pair read as one character gives it away."""
    pairs = bytearray(2 * 256 * 256)
    pairs[0::2] = b"".join(bytes([i]) * 256 for i in range(256))
    pairs[1::2] = bytes(range(256)) * 256
    if len(pairs.decode(encoding, errors="replace")) != len(pairs):
        raise ValueError(f"layout: {encoding} does not write each character as one byte")
    return encoding


def _field(raw: Mapping[str, Any]) -> FieldSpec:
    return FieldSpec(
        name=raw["name"],
        fr=raw["fr"],
        start=int(raw["start"]) - 1,
        length=int(raw["length"]),
        kind=raw["kind"],
        required=bool(raw["required"]),
        decimals=int(raw.get("decimals", 0)),
        value=raw.get("value"),
        values=tuple(raw.get("values", ())),
        pattern=raw.get("pattern"),
    )


def _record(name: str, raw: Mapping[str, Any], length: int) -> RecordSpec:
    fields = tuple(_field(f) for f in raw["fields"])
    position = 0
    for spec in fields:
        if spec.start != position:
            raise ValueError(f"layout: {name}.{spec.name} does not start at {position + 1}")
        position = spec.end
    if position != length:
        raise ValueError(f"layout: record {name} is {position} characters, not {length}")
    return RecordSpec(name=name, marker=raw["marker"], layout=raw["layout"], fields=fields)


def _flow_layout(name: str, raw: Mapping[str, Any], regex: str) -> FlowLayout:
    return FlowLayout(
        name=name,
        fr=raw["fr"],
        records=MappingProxyType(dict(raw["records"])),
        flow_starts_with=raw["flow_starts_with"],
        flow_ends_with=raw.get("flow_ends_with"),
        order_regex=re.compile(regex),
        order=OrderAutomaton(regex),
        flow_key=tuple(raw["flow_key"]),
    )


def _columns(raw: list[Mapping[str, str]]) -> tuple[Column, ...]:
    return tuple(Column(fr=c["fr"], field=c["field"]) for c in raw)


def _search(raw: Mapping[str, Any]) -> SearchSpec:
    return SearchSpec(
        id=raw["id"],
        fr=raw["fr"],
        record=raw["record"],
        criteria=tuple(
            Criterion(fr=c["fr"], field=c["field"], match=c["match"]) for c in raw["criteria"]
        ),
        columns=_columns(raw["columns"]),
        by_key_columns=_columns(raw.get("by_key_columns", raw["columns"])),
        operation_family=raw.get("operation_family"),
        only_when=raw.get("only_when"),
    )


def _errors(raw: Mapping[str, Any]) -> dict[Code, ErrorSpec]:
    return {
        Code(code): ErrorSpec(
            code=Code(code), scope=e["scope"], message=e["message"], line_rule=e["line"]
        )
        for code, e in raw.items()
    }


def _frozen(values: list[str]) -> frozenset[str]:
    return frozenset(values)


def build_layout(doc: Mapping[str, Any]) -> Layout:
    """Build the typed layout from a parsed `layout.toml` document."""
    length = int(doc["meta"]["record_length"])
    records = {name: _record(name, raw, length) for name, raw in doc["records"].items()}
    envelope = doc["envelope"]
    layouts = {
        name: _flow_layout(name, raw, envelope["order_regex"][name])
        for name, raw in doc["layouts"].items()
    }
    suivi = doc["suivi"]
    return Layout(
        record_length=length,
        encoding=single_byte(doc["meta"]["encoding"]),
        format_version=doc["meta"]["format_version"],
        formats=MappingProxyType({k: v for k, v in doc["formats"].items() if isinstance(v, str)}),
        file_types=MappingProxyType(
            {
                letter: FileType(letter, raw["fr"], _frozen(raw["flow_codes"]))
                for letter, raw in doc["file_types"].items()
            }
        ),
        flow_layouts_by_code=MappingProxyType(
            {code: raw["layout"] for code, raw in doc["flow_codes"].items()}
        ),
        layouts=MappingProxyType(layouts),
        records=MappingProxyType(records),
        header=records[envelope["header"]],
        footer=records[envelope["footer"]],
        reject=records[envelope["reject"]],
        functional_markers=_frozen(envelope["functional_markers"]),
        routing=tuple(
            RoutingRule(
                _frozen(r["senders"]),
                _frozen(r["recipients"]),
                _frozen(r["file_types"]),
                _frozen(r["flow_codes"]),
            )
            for r in doc["routing"]
        ),
        errors=MappingProxyType(_errors(doc["bdi"]["errors"])),
        check_order=tuple(Code(c) for c in doc["bdi"]["check_order"]),
        name_suffixes_ignored=tuple(doc["bdi"]["name_suffixes_ignored"]),
        searches=tuple(_search(s) for s in suivi["searches"]),
        interpretations=tuple(
            Interpretation(
                _frozen(i["senders"]), _frozen(i["recipients"]), _frozen(i["states"]), i["label"]
            )
            for i in suivi["interpretation"]
        ),
        operation_codes=MappingProxyType(
            dict(doc["referentials"]["operation_codes"]["values"].items())
        ),
        page_size=int(suivi["page_size"]),
        pending_from=str(suivi["pending_from"]),
        raw=MappingProxyType(dict(doc)),
    )


def layout_bytes() -> bytes:
    """The packaged copy of `layout.toml`."""
    return resources.files("bdi.routing").joinpath(LAYOUT_RESOURCE).read_bytes()


@cache
def default_layout() -> Layout:
    """The packaged layout, parsed once; the result is immutable."""
    return build_layout(tomllib.loads(layout_bytes().decode("utf-8")))
