"""`.log` error files: their names and their lines (HUB.md, "`.log` error files")."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from bdi.routing.errors import Code, Problem
from bdi.routing.layout import Layout
from bdi.routing.model import FileReport

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class LogFile:
    """One `.log` to drop in the uploader's inbox: its base name and its text lines."""

    name: str
    section: int  # 0 = the whole upload
    lines: tuple[str, ...]

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def _stem(upload_name: str) -> str:
    return upload_name[: -len(".edi")] if upload_name.endswith(".edi") else upload_name


def log_name(upload_name: str, section: int, refused_by_nom: bool = False) -> str:
    """`ERREUR<name without .edi>[_<n>].log`; a name refused by NOM is made safe (and cut to
    60 characters) once its `.edi` is off."""
    if refused_by_nom:
        return f"ERREUR{_UNSAFE.sub('_', _stem(upload_name))[:60]}.log"
    suffix = f"_{section}" if section else ""
    return f"ERREUR{_stem(upload_name)}{suffix}.log"


@lru_cache(maxsize=16)
def _stamp(when: datetime) -> str:
    """A job's time as its `.log` lines give it (formatted once: a big upload may have a
    hundred thousand refused sections, all of one time)."""
    return f"{when:%Y-%m-%d %H:%M:%S}"


def log_line(
    problem: Problem, upload_name: str, section: int, when: datetime, layout: Layout
) -> str:
    detail = f" ({_CONTROL.sub('?', problem.detail)})" if problem.detail else ""
    name = _CONTROL.sub("?", upload_name)  # one line per problem, whatever the name holds
    return (
        f"{_stamp(when)} {name} section {section} line {problem.line} "
        f"{problem.code.value} {layout.message(problem.code)}{detail}"
    )


def _log(
    problems: Iterable[Problem],
    name: str,
    upload: str,
    section: int,
    when: datetime,
    layout: Layout,
) -> LogFile:
    lines = tuple(log_line(p, upload, section, when, layout) for p in problems)
    return LogFile(name=name, section=section, lines=lines)


def log_files(report: FileReport, when: datetime, layout: Layout) -> list[LogFile]:
    """The `.log` files an upload earns: one for a refused upload, else one per refused section."""
    upload = report.upload_name
    if report.problems:
        nom = any(p.code is Code.NOM for p in report.problems)
        return [_log(report.problems, log_name(upload, 0, nom), upload, 0, when, layout)]
    return [
        _log(s.problems, log_name(upload, s.number), upload, s.number, when, layout)
        for s in report.sections
        if s.problems
    ]


def whole_upload_log(upload_name: str, problem: Problem, when: datetime, layout: Layout) -> LogFile:
    """The log of an upload refused before its text could be read (DECHIFFREMENT)."""
    unsafe = not re.fullmatch(layout.formats["file_name"], upload_name)
    return _log([problem], log_name(upload_name, 0, unsafe), upload_name, 0, when, layout)
