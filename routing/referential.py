"""The participant referential (apport.txt): 5-digit codes, type letter, name, mailbox.

Format of `samples/referentiel.toml`; parsing is pure so that a malformed file can be
refused before anything is replaced.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bdi.routing.layout import Layout

PARTICIPANT_TYPES = frozenset("ABCDG")


class ReferentialError(ValueError):
    """A malformed referential; the message names the line when it can."""


@dataclass(frozen=True, slots=True)
class Participant:
    code: str
    type: str
    name: str
    edi_id: str  # "" for codes outside the hub (e.g. 88889 AUTRES)


@dataclass(frozen=True, slots=True)
class Referential:
    participants: Mapping[str, Participant]
    companies: Mapping[str, str]
    tables: Mapping[str, Mapping[str, str]]

    @property
    def mailboxes(self) -> frozenset[str]:
        return frozenset(p.edi_id for p in self.participants.values() if p.edi_id)


def _line_of(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith((f'"{key}"', f"{key} ", f"{key}=")):
            return number
    return 0


def _participant(code: str, raw: Any, text: str, layout: Layout) -> Participant:
    where = f"line {_line_of(text, code)}"
    if not isinstance(raw, dict):
        raise ReferentialError(f"{where}: participant {code} must be a table")
    if not re.fullmatch(layout.formats["participant_code"], code):
        raise ReferentialError(f"{where}: participant code {code!r} is not 5 digits")
    kind, edi_id = raw.get("type"), raw.get("edi_id", "")
    if kind not in PARTICIPANT_TYPES:
        raise ReferentialError(f"{where}: participant {code}: type {kind!r} not in A B C D G")
    if not isinstance(raw.get("name"), str) or not raw["name"].strip():
        raise ReferentialError(f"{where}: participant {code}: name missing")
    if not isinstance(edi_id, str) or (
        edi_id and not re.fullmatch(layout.formats["edi_id"], edi_id)
    ):
        raise ReferentialError(f"{where}: participant {code}: edi_id {edi_id!r} is not an EDI id")
    return Participant(code=code, type=kind, name=raw["name"], edi_id=edi_id)


def parse_referential(text: str, layout: Layout) -> Referential:
    """Parse and validate a referential; raise `ReferentialError` naming the faulty line."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ReferentialError(str(exc)) from exc
    raw_participants = doc.get("participants")
    if not isinstance(raw_participants, dict) or not raw_participants:
        raise ReferentialError("line 0: no [participants] table")
    participants = {
        code: _participant(code, raw, text, layout) for code, raw in raw_participants.items()
    }
    companies = doc.get("companies", {})
    tables = {k: v for k, v in doc.items() if k not in ("participants", "companies")}
    return Referential(
        participants=MappingProxyType(participants),
        companies=MappingProxyType({str(k): str(v) for k, v in companies.items()}),
        tables=MappingProxyType(
            {
                k: MappingProxyType({str(c): str(lbl) for c, lbl in v.items()})
                for k, v in tables.items()
                if isinstance(v, dict)
            }
        ),
    )
