"""Check a plain Optiflux file in one streaming pass (OPTIFLUX.md §7.1-§7.3).

The file is read line by line and each section is checked as its records go by, so memory
is bounded by one flow, whatever the size of the file. Every check of a section runs in the
same pass; the stop rule (a structural problem hides the others) is applied when the
section closes.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache

from bdi.routing.errors import Code, Problem
from bdi.routing.fields import RecordCodec, codecs_for
from bdi.routing.flows import REJECTED_STATES, FlowBuilder
from bdi.routing.layout import FlowLayout, Layout, RecordSpec, default_layout
from bdi.routing.model import FileReport, Flow, SectionReport
from bdi.routing.order import OrderAutomaton, Runs

HEADER, FOOTER, REJECT = "1111111111", "9999999999", "7777777777"
STRUCTURAL = (Code.LONGUEUR, Code.FIN_MANQUANTE, Code.ENTETE, Code.TYPE_ENREG)
# a section with one of these problems reports only them (`_reported`): the other checks of
# its records can no longer change its outcome nor its `.log`, and are skipped
_SETTLING = frozenset(STRUCTURAL)
FOOTER_REPEATS = ("file_type", "flow_code", "sender_id", "recipient_id", "section_number")


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What the checks need beyond the file: who uploaded it and who may receive."""

    upload_name: str
    uploader: str | None = None
    recipient_active: Callable[[str], bool] | None = None
    layout: Layout = field(default_factory=default_layout)
    collect_flows: bool = False
    # with collect_flows: each flow handed over as soon as it is complete, with the report of
    # its section so far, instead of being kept until the section closes (a section may be
    # as big as the file); the caller drops those of a section that ends refused
    on_flow: Callable[[SectionReport, Flow], None] | None = None
    # False: the final report lists no section (each came with its SectionChecked event),
    # so that a file of a hundred thousand sections keeps no report of each
    keep_sections: bool = True


@dataclass(frozen=True, slots=True)
class SectionChecked:
    report: SectionReport
    flows: tuple[Flow, ...]


@dataclass(frozen=True, slots=True)
class FileChecked:
    report: FileReport


Event = SectionChecked | FileChecked


def strip_upload_suffix(file_name: str, layout: Layout) -> str:
    """The upload name: the file name without an added .pgp/.gpg/.asc (HUB.md)."""
    for suffix in layout.name_suffixes_ignored:
        if file_name.lower().endswith(suffix):
            return file_name[: -len(suffix)]
    return file_name


def name_problems(upload_name: str, layout: Layout) -> list[Problem]:
    """NOM and TYPE_FICHIER: the upload name's syntax and its type letter (rule n°5)."""
    problems = []
    if not re.fullmatch(layout.formats["file_name"], upload_name):
        problems.append(Problem(Code.NOM, 0, upload_name))
    letter = upload_name[:1]
    if letter not in layout.file_types:
        problems.append(Problem(Code.TYPE_FICHIER, 0, letter))
    return problems


def _slice(text: str, spec: RecordSpec, name: str) -> str:
    f = spec.field(name)
    return text[f.start : f.end]


def _length_problem(line: int, width: int, length: int) -> Problem | None:
    if width == length:
        return None
    return Problem(Code.LONGUEUR, line, f"{width} au lieu de {length}")


@dataclass(frozen=True, slots=True)
class _Record:
    """A functional record type of a flow layout, as its lines are checked."""

    marker: str
    letter: str  # in the section's order (`FlowLayout.order`)
    order: OrderAutomaton
    codec: RecordCodec
    ends: bool  # it ends a flow (it starts one where flows have no end record)


@cache
def _records(layout: Layout, name: str | None) -> Mapping[str, _Record]:
    """A flow layout's record types by marker (none without a flow layout)."""
    if name is None:
        return {}
    flow_layout, codecs = layout.layouts[name], codecs_for(layout)
    ends = flow_layout.flow_ends_with or flow_layout.flow_starts_with
    return {
        marker: _Record(marker, marker[0], flow_layout.order, codecs[name], marker == ends)
        for marker, name in flow_layout.records.items()
    }


class _Section:
    """The running state of one section while its lines go by."""

    def __init__(
        self, ctx: CheckContext, number: int, line: int, offset: int, text: str, width: int
    ) -> None:
        self.ctx, self.layout, self.header_text = ctx, ctx.layout, text
        self.codecs = codecs_for(ctx.layout)
        header = self.layout.header
        self.report = SectionReport(
            number=number,
            first_line=line,
            last_line=line,
            start=offset,
            end=offset,
            file_type=_slice(text, header, "file_type").strip(),
            flow_code=_slice(text, header, "flow_code").strip(),
            sender_id=_slice(text, header, "sender_id").strip(),
            recipient_id=_slice(text, header, "recipient_id").strip(),
        )
        self.problems: dict[Code, list[Problem]] = defaultdict(list)
        self.settled = False  # a structural problem found: only structural checks still run
        # the order of its records so far (`FlowLayout.order`) and its first runs
        self.order, self.runs = OrderAutomaton.DEAD, Runs()
        self.functional = self.rejects = self.total = 0
        self.first_functional: int | None = None
        self.pending_reject: int | None = None
        self.footer_seen = False
        self.flows: list[Flow] = []
        self.flow_starts = 0
        self.flow_layout = self._header(line, text, width)
        if self.flow_layout is not None:
            self.order = self.flow_layout.order.start
        self.records = _records(ctx.layout, self.flow_layout and self.flow_layout.name)
        self.builder = (
            FlowBuilder(
                self.flow_layout,
                self.report.flow_code,
                number,
                self.codecs,
            )
            if self.flow_layout and ctx.collect_flows and not self.problems
            else None
        )

    def _add(self, problem: Problem | None) -> None:
        if problem is not None:
            self.problems[problem.code].append(problem)
            self.settled = self.settled or problem.code in _SETTLING
            # a section with a problem is refused: its flows are not wanted, and none of its
            # values is ever decoded (a value its check refused must not be read as valid)
            self.builder = None

    def _header(self, line: int, text: str, width: int) -> FlowLayout | None:
        """Structural header checks (ENTETE); the flow layout the section's records follow."""
        length = self.layout.record_length
        self._add(_length_problem(line, width, length))
        bad = (
            [f.name for f in self.codecs[self.layout.header.name].bad_fields(text)]
            if (width == length)
            else []
        )
        number = _slice(text, self.layout.header, "section_number")
        # a header of the wrong length has no field checks: '²²²' passes isdigit, not int()
        if (
            "section_number" not in bad
            and number.isascii()
            and number.isdigit()
            and int(number) != self.report.number
        ):
            bad.append("section_number")
        file_type = self.layout.file_types.get(self.report.file_type)
        code = self.report.flow_code
        if (
            file_type
            and code in self.layout.flow_layouts_by_code
            and code not in file_type.flow_codes
        ):
            bad.append("flow_code")
        for name in bad:
            self._add(Problem(Code.ENTETE, line, name))
        if code in self.layout.flow_layouts_by_code:
            return self.layout.flow_layout(code)
        return None

    def line(self, line: int, start: int, end: int, text: str, width: int) -> None:
        """One line after the header, from byte `start` to `end` of the file (terminator
        included), `width` characters long (its text may be cut past them: `check_text`)."""
        report = self.report
        report.last_line, report.end = line, end
        marker = text[:10]
        if marker == FOOTER:
            self._footer(line, text, width)
        elif width != self.layout.record_length:
            self._add(_length_problem(line, width, self.layout.record_length))
        elif marker == REJECT:
            self._reject(line, text)
        elif (record := self.records.get(marker)) is not None:
            self._functional(line, record, text, start, end)
        else:
            self._add(Problem(Code.TYPE_ENREG, line, marker))

    def _format(self, line: int, codec: RecordCodec, text: str) -> None:
        for spec in codec.bad_fields(text):
            self._add(Problem(Code.FORMAT, line, f"{codec.spec.name}.{spec.name}"))

    def _reject(self, line: int, text: str) -> None:
        self.rejects += 1
        if self.settled:
            return
        if self.pending_reject is None:
            self._add(Problem(Code.ORDRE, line, "7777777777 sans enregistrement rejeté avant lui"))
        self.pending_reject = None
        codec = self.codecs[self.layout.reject.name]
        self._format(line, codec, text)
        if self.builder is not None:
            self.builder.reject(_slice(text, self.layout.reject, "reject_message"))

    def _unanswered_reject(self) -> None:
        if self.pending_reject is not None:
            self._add(
                Problem(Code.ORDRE, self.pending_reject, "enregistrement rejeté sans 7777777777")
            )
            self.pending_reject = None

    def _functional(self, line: int, record: _Record, text: str, start: int, end: int) -> None:
        self.functional += 1
        self.flow_starts += record.ends
        if self.settled:  # counted for the report's flow counts, not checked further
            return
        if self.pending_reject is not None:
            self._unanswered_reject()
        if self.first_functional is None:
            self.first_functional = line
        self.order = record.order.step(self.order, record.letter)
        if not self.runs.full:
            self.runs.add(record.letter)
        codec = record.codec
        total = codec.checked_total(text)
        if total is None:
            total = codec.amount_total(text)
            self._format(line, codec, text)
        self.total += total
        if text[10] in REJECTED_STATES:
            self.pending_reject = line
        if self.builder is not None:
            flow = self.builder.record(line, record.marker, text, start, end)
            if flow is not None:
                self._flow(flow)

    def _flow(self, flow: Flow) -> None:
        if self.ctx.on_flow is not None:
            self.ctx.on_flow(self.report, flow)
        else:
            self.flows.append(flow)

    def _footer(self, line: int, text: str, width: int) -> None:
        self.footer_seen = True
        self._unanswered_reject()
        problem = _length_problem(line, width, self.layout.record_length)
        if problem:
            self._add(problem)
            return
        if self.settled:
            return
        footer, header = self.layout.footer, self.layout.header
        bad = [f.name for f in self.codecs[footer.name].bad_fields(text)]
        bad += [
            name
            for name in FOOTER_REPEATS
            if name not in bad
            and _slice(text, footer, name) != _slice(self.header_text, header, name)
        ]
        if bad:
            self._add(Problem(Code.FIN, line, ", ".join(bad)))
            return
        self._count(
            Code.NOMBRE, line, _slice(text, footer, "functional_record_count"), self.functional
        )
        self._count(
            Code.NOMBRE_REJETS, line, _slice(text, footer, "reject_record_count"), self.rejects
        )
        announced, computed = int(_slice(text, footer, "control_total")), self.total % 10**18
        if announced != computed:
            self._add(Problem(Code.TOTAL, line, f"annoncé {announced}, calculé {computed}"))

    def _count(self, code: Code, line: int, announced_text: str, found: int) -> None:
        announced = int(announced_text)
        if announced != found:
            self._add(Problem(code, line, f"annoncé {announced}, trouvé {found}"))

    def close(self) -> SectionChecked:
        """Apply the end-of-section checks and the stop rule."""
        report = self.report
        if not self.footer_seen:
            self._add(Problem(Code.FIN_MANQUANTE, report.last_line))
        if not self.settled:
            self._unanswered_reject()
            if self.flow_layout is not None and self.order not in self.flow_layout.order.accepting:
                at = self.first_functional or report.first_line
                self._add(Problem(Code.ORDRE, at, f"types {self.runs.text() or 'aucun'}"))
            self._header_checks()
        report.problems = self._reported()
        if self.flow_layout is not None:
            report.flow_counts = {self.flow_layout.fr: self.flow_starts}
        if self.builder is not None:
            last = self.builder.finish()
            if last is not None:
                self._flow(last)
        return SectionChecked(report, tuple(self.flows) if report.accepted else ())

    def _header_checks(self) -> None:
        """REGLE5, SIGNATURE, DESTINATAIRE, EMETTEUR: who sends what to whom."""
        r, line, ctx = self.report, self.report.first_line, self.ctx
        letter = ctx.upload_name[:1]
        if r.file_type != letter:
            self._add(Problem(Code.REGLE5, line, f"{r.file_type} / {letter}"))
        if ctx.uploader is not None and r.sender_id != ctx.uploader:
            self._add(Problem(Code.SIGNATURE, line, f"{r.sender_id} / {ctx.uploader}"))
        if ctx.recipient_active is not None and not ctx.recipient_active(r.recipient_id):
            self._add(Problem(Code.DESTINATAIRE, line, r.recipient_id))
            return
        if not self.layout.route_allowed(r.sender_id, r.recipient_id, r.file_type, r.flow_code):
            self._add(Problem(Code.EMETTEUR, line, r.recipient_id))

    def _reported(self) -> list[Problem]:
        for code in STRUCTURAL:
            if self.problems.get(code):
                return sorted(self.problems[code], key=lambda p: p.line)
        out: list[Problem] = []
        for code in self.layout.check_order:
            if code not in STRUCTURAL:
                out += sorted(self.problems.get(code, ()), key=lambda p: p.line)
        return out


def check_lines(pieces: Iterable[bytes], ctx: CheckContext) -> Iterator[Event]:
    """Check a file given as its bytes, in pieces cut anywhere (its lines, as a binary file
    iterates; or the chunks of a big plaintext): `check_text` of their text."""
    encoding = ctx.layout.encoding
    return check_text((piece.decode(encoding) for piece in pieces), ctx)


def check_text(pieces: Iterable[str], ctx: CheckContext) -> Iterator[Event]:
    """Check a file given as its decoded text, in pieces cut anywhere; one event per
    section, then one `FileChecked` with the file problems and every section report.

    Lines end at "\\n" (a "\\r" before it is dropped too); a line's offsets in the file are
    those of its characters, one byte each (`layout.single_byte`). Cutting a megabyte of
    text at once costs less than cutting its bytes line by line, then decoding each. A line
    longer than LINE_KEPT is kept cut (`_LongLine`): a file of one line of a gigabyte took
    twice its size in memory, and time growing with its square."""
    file = _FileCheck(ctx)
    number = offset = 0
    rest, long = "", None
    for piece in pieces:
        if long is not None:  # the line being read is too long: its end, maybe
            piece = long.add(piece)
            if long.open:
                continue
            number += 1
            offset, event = long.deliver(file, number, offset)
            if event is not None:
                yield event
            long = None
        lines = (rest + piece).split("\n") if rest else piece.split("\n")
        rest = lines.pop()
        for text in lines:
            number += 1
            end = offset + len(text) + 1
            if text[-1:] == "\r":
                text = text[:-1]
            event = file.line(number, offset, end, text, len(text))
            if event is not None:
                yield event
            offset = end
        if len(rest) > LINE_KEPT:
            rest, long = "", _LongLine(rest)
    if long is not None or rest:  # a last line with no terminator
        _, event = (long or _LongLine(rest)).deliver(file, number + 1, offset, terminated=False)
        if event is not None:
            yield event
    yield from file.end()


LINE_KEPT = 1 << 16  # characters of a line kept for its checks (a record has 640)


class _LongLine:
    """A line too long to be kept whole: its first LINE_KEPT characters, its width, and
    whether it holds anything but spaces (a line outside any section is an error then)."""

    def __init__(self, text: str) -> None:
        self.kept, self.width, self.open = text[:LINE_KEPT], 0, True
        self.blank, self.last = True, ""  # blank up to its last character, which is last
        self._more(text)

    def _more(self, text: str) -> None:
        if text:
            n = len(text)
            spaces = text.count(" ", 0, n - 1) == n - 1  # counted, not copied
            self.blank = self.blank and self.last in ("", " ") and spaces
            self.width += n
            self.last = text[-1]

    def add(self, piece: str) -> str:
        """The next piece of the file: what follows the line's end (the whole piece is the
        line's while it goes on)."""
        end = piece.find("\n")
        self._more(piece if end < 0 else piece[:end])
        self.open = end < 0
        return "" if end < 0 else piece[end + 1 :]

    def deliver(
        self, file: _FileCheck, number: int, start: int, terminated: bool = True
    ) -> tuple[int, SectionChecked | None]:
        """Give the line to the checks, from byte `start`: where the next one starts, and
        the event of the section it closes, if any."""
        end = start + self.width + terminated
        cr = terminated and self.last == "\r"  # dropped, as a short line's
        blank = self.blank and (cr or self.last == " ")
        # a mark past the kept characters only where they alone would look blank
        text = self.kept + "x" if not blank and not self.kept.strip(" ") else self.kept
        return end, file.line(number, start, end, text, self.width - cr)


class _FileCheck:
    """A file's checks as its lines go by: the section being read, and the file's report."""

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.report = FileReport(
            upload_name=ctx.upload_name, problems=name_problems(ctx.upload_name, ctx.layout)
        )
        self.orphans: list[Problem] = []
        self.section: _Section | None = None
        self.sections = 0

    def line(
        self, number: int, start: int, end: int, text: str, width: int
    ) -> SectionChecked | None:
        """One line (terminator dropped), `width` characters long: the event of the section
        it closes, if any."""
        section = self.section
        if text[:10] == HEADER:
            closed = None if section is None else _closed(section, self.report, self.ctx)
            self.sections += 1
            self.section = _Section(self.ctx, self.sections, number, start, text, width)
            self.section.report.end = end
            return closed
        if section is not None:
            section.line(number, start, end, text, width)
            if section.footer_seen:
                self.section = None
                return _closed(section, self.report, self.ctx)
        elif text.strip(" "):
            self.orphans.append(Problem(Code.HORS_SECTION, number))
        return None

    def end(self) -> Iterator[Event]:
        if self.section is not None:
            yield _closed(self.section, self.report, self.ctx)
        self.report.problems += [Problem(Code.VIDE)] if self.sections == 0 else self.orphans
        yield FileChecked(self.report)


def _closed(section: _Section, report: FileReport, ctx: CheckContext) -> SectionChecked:
    event = section.close()
    if ctx.keep_sections:
        report.sections.append(event.report)
    return event


def check_bytes(data: bytes, ctx: CheckContext) -> FileReport:
    """Check an in-memory file (tests, small files)."""
    return last_report(check_lines(io.BytesIO(data), ctx))


def last_report(events: Iterable[Event]) -> FileReport:
    for event in events:
        if isinstance(event, FileChecked):
            return event.report
    raise RuntimeError("check_lines ended without a FileChecked event")
