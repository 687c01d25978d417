"""`bdi check`: validate plain Optiflux files offline, as the hub would."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bdi.routing.errors import Problem
from bdi.routing.layout import Layout, default_layout
from bdi.routing.logs import LogFile, log_files
from bdi.routing.model import FileReport, SectionReport
from bdi.routing.referential import ReferentialError, parse_referential
from bdi.routing.scan import CheckContext, check_lines, last_report, strip_upload_suffix


@dataclass(frozen=True, slots=True)
class Checked:
    path: Path
    report: FileReport
    logs: list[LogFile]


def check_path(
    path: Path,
    layout: Layout,
    uploader: str | None,
    recipient_active: Callable[[str], bool] | None,
    now: datetime,
) -> Checked:
    name = strip_upload_suffix(path.name, layout)
    ctx = CheckContext(name, uploader, recipient_active, layout)
    with path.open("rb") as stream:  # by the megabyte, not by line: one may be the whole file
        report = last_report(check_lines(iter(partial(stream.read, 1 << 20), b""), ctx))
    return Checked(path, report, log_files(report, now, layout))


def paris_now(timezone: str = "Europe/Paris") -> datetime:
    return datetime.now(ZoneInfo(timezone)).replace(microsecond=0, tzinfo=None)


def _problem_json(p: Problem, layout: Layout) -> dict[str, Any]:
    return {
        "code": p.code.value,
        "line": p.line,
        "message": layout.message(p.code),
        "detail": p.detail,
    }


def _section_json(s: SectionReport, refused_upload: bool, layout: Layout) -> dict[str, Any]:
    return {
        "number": s.number,
        "sender": s.sender_id,
        "recipient": s.recipient_id,
        "file_type": s.file_type,
        "flow_code": s.flow_code,
        "flows": s.flow_counts,
        "lines": [s.first_line, s.last_line],
        "outcome": "deliver" if s.accepted and not refused_upload else "refuse",
        "problems": [_problem_json(p, layout) for p in s.problems],
    }


def to_json(checked: Checked, layout: Layout) -> dict[str, Any]:
    r = checked.report
    return {
        "file": str(checked.path),
        "upload_name": r.upload_name,
        "outcome": "deliver" if r.fully_accepted else "refuse",
        "problems": [_problem_json(p, layout) for p in r.problems],
        "sections": [_section_json(s, not r.accepted, layout) for s in r.sections],
        "logs": [{"name": log.name, "lines": list(log.lines)} for log in checked.logs],
    }


def render_text(checked: Checked, layout: Layout) -> str:
    r = checked.report
    out = [f"{checked.path}: {'OK' if r.fully_accepted else 'REFUSÉ'} ({r.upload_name})"]
    for p in r.problems:
        out.append(
            f"  fichier: line {p.line} {p.code.value} {layout.message(p.code)}"
            + (f" ({p.detail})" if p.detail else "")
        )
    for s in r.sections:
        flows = ", ".join(f"{n} × {kind}" for kind, n in s.flow_counts.items()) or "aucun flux"
        outcome = "livrée" if s.accepted and r.accepted else "refusée"
        out.append(
            f"  section {s.number}: {s.sender_id or '?'} → {s.recipient_id or '?'}  "
            f"type {s.file_type or '?'}  flux {s.flow_code or '?'}  {flows}  [{outcome}]"
        )
        for p in s.problems:
            detail = f" ({p.detail})" if p.detail else ""
            out.append(f"    line {p.line} {p.code.value} {layout.message(p.code)}{detail}")
    for log in checked.logs:
        out.append(f"  {log.name}:")
        out.extend(f"    {line}" for line in log.lines)
    return "\n".join(out)


def render_json(results: list[Checked], layout: Layout) -> str:
    return json.dumps([to_json(c, layout) for c in results], ensure_ascii=False, indent=2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bdi check",
        description="Validate plain Optiflux files as the hub would: sections, flows, problems, "
        ".log lines. Exit 0 when everything would be delivered, 1 when something would be "
        "refused, 2 on usage or I/O errors.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="plain Optiflux files")
    parser.add_argument("--uploader", help="EDI id of the uploading participant (SIGNATURE)")
    parser.add_argument(
        "--participants",
        type=Path,
        help="referential TOML: its mailboxes are the active recipients",
    )
    parser.add_argument(
        "--json", action="store_true", dest="as_json", help="machine-readable output"
    )
    return parser


def _fail(reason: str) -> int:
    sys.stderr.write(f"bdi: {reason}\n")
    return 2


def main(argv: list[str]) -> int:
    """`bdi check`: 0 all delivered, 1 something refused, 2 usage or I/O error."""
    args = _parser().parse_args(argv)
    layout = default_layout()
    active = None
    if args.participants is not None:
        try:
            text = args.participants.read_text(encoding="utf-8")
            active = parse_referential(text, layout).mailboxes.__contains__
        except (OSError, UnicodeDecodeError, ReferentialError) as exc:
            return _fail(f"{args.participants}: {exc}")
    now, results = paris_now(), []
    for path in args.files:
        try:
            results.append(check_path(path, layout, args.uploader, active, now))
        except OSError as exc:
            return _fail(f"{path}: {exc.strerror or exc}")
    out = (
        render_json(results, layout)
        if args.as_json
        else "\n".join(render_text(c, layout) for c in results)
    )
    sys.stdout.write(out + "\n")
    return 1 if any(not c.report.fully_accepted for c in results) else 0
