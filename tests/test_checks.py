"""The BDI checks of OPTIFLUX.md §7.1-7.2 and layout.toml `[bdi.errors]`, one by one.

Every check has a failing input and a near-identical valid twin. Inputs are the samples with a
few bytes changed, or samples re-written with `write_file` after editing typed values (which
recomputes the footer). Line numbers follow each code's `line` rule in layout.toml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from _pytest.mark import ParameterSet
from support import SAMPLES, manifest

from bdi.routing.errors import Code, Problem
from bdi.routing.layout import default_layout
from bdi.routing.logs import log_files
from bdi.routing.model import FileReport
from bdi.routing.referential import parse_referential
from bdi.routing.scan import CheckContext, check_bytes, strip_upload_suffix
from bdi.routing.writer import Record, Section, parse_file, write_file

LAYOUT = default_layout()
UPLOADERS = {Path(s["path"]).name: s["uploaded_by"] for s in manifest()}
REFERENTIAL = parse_referential((SAMPLES / "referentiel.toml").read_text("utf-8"), LAYOUT)
ANY = "<any detail>"  # ORDRE: the spec only says the detail tells "what is wrong"

# The samples used below (line numbers are those of these files).
REP = "RCOU010234_00311_000001.edi"  # 1 header, 2 allocation_2, 3-6 allocation_4, 7 footer
RCC = "RCOU010234_00311_000002.edi"  # COU010234 -> GIE000001, the broker's RCC exception
RCA = "RAPE007566_00638_000001.edi"  # 1 header, 2 allocation_2, 3-4 allocation_4, 5 footer
MULTI = "RGIE000001_00311_000001.edi"  # three sections of 7 lines, to 3 recipients
BUL = "BCOU010234_00311_000004.edi"  # 1 header, 2 claim_advice_2, 3 footer
PRI = "PCOU010234_00311_000003.edi"  # 2 3333 5555 (x4), 2 3 5, footer line 14
PRI_REJECTED = "PCIE000311_00311_000002.edi"  # 2 7 3 7 5 7 in state R, footer line 8
LONG = "broken/PCOU010234_00311_000090.edi"
COUNT = "broken/BCOU010234_00311_000091.edi"
BROKER_TO_CESAM = "broken/PCOU010234_00311_000092.edi"
RULE5 = "broken/ICIE000311_00311_000093.edi"
SIGNED = "broken/RCOU010234_00311_000094.edi"
TOTAL = "broken/DCOU010234_00311_000095.edi"

Found = tuple[str, int, str | None]
Mutation = Callable[[bytes], bytes]


def read(path: str) -> bytes:
    return (SAMPLES / path).read_bytes()


def found(problems: list[Problem]) -> list[Found]:
    return [(p.code.value, p.line, p.detail) for p in problems]


def assert_problems(problems: list[Problem], expected: list[Found]) -> None:
    got = found(problems)
    assert [(c, line) for c, line, _ in got] == [(c, line) for c, line, _ in expected]
    for (_, _, detail), (_, _, wanted) in zip(got, expected, strict=True):
        if wanted == ANY:
            assert detail
        else:
            assert detail == wanted


# ---------------------------------------------------------------------------------------------
# Mutations of a file's bytes (LF samples; line numbers are 1-based)
# ---------------------------------------------------------------------------------------------


def _lines(data: bytes) -> list[bytes]:
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def set_field(line: int, record: str, name: str, text: str) -> Mutation:
    """Overwrite field `record.name` of `line` with `text` (exactly the field's width)."""
    spec = LAYOUT.records[record].field(name)
    raw = text.encode("latin-1")
    assert len(raw) == spec.length, (record, name, text)

    def mutate(data: bytes) -> bytes:
        lines = _lines(data)
        assert lines[line - 1][:10] == LAYOUT.records[record].marker.encode()
        lines[line - 1] = lines[line - 1][: spec.start] + raw + lines[line - 1][spec.end :]
        return _join(lines)

    return mutate


def set_line(line: int, change: Callable[[bytes], bytes]) -> Mutation:
    def mutate(data: bytes) -> bytes:
        lines = _lines(data)
        lines[line - 1] = change(lines[line - 1])
        return _join(lines)

    return mutate


def truncate(line: int, by: int = 1) -> Mutation:
    return set_line(line, lambda text: text[:-by])


def extend(line: int, by: int = 1) -> Mutation:
    return set_line(line, lambda text: text + b" " * by)


def set_marker(line: int, marker: str) -> Mutation:
    return set_line(line, lambda text: marker.encode() + text[10:])


def drop(line: int) -> Mutation:
    def mutate(data: bytes) -> bytes:
        lines = _lines(data)
        del lines[line - 1]
        return _join(lines)

    return mutate


def insert(before: int, content: bytes) -> Mutation:
    def mutate(data: bytes) -> bytes:
        lines = _lines(data)
        lines.insert(before - 1, content)
        return _join(lines)

    return mutate


def swap(a: int, b: int) -> Mutation:
    def mutate(data: bytes) -> bytes:
        lines = _lines(data)
        lines[a - 1], lines[b - 1] = lines[b - 1], lines[a - 1]
        return _join(lines)

    return mutate


# ---------------------------------------------------------------------------------------------
# Edits of typed values, re-written by the writer (the footer is recomputed)
# ---------------------------------------------------------------------------------------------

SectionsEdit = Callable[[list[Section]], list[Section]]


def rewrite(edit: SectionsEdit) -> Mutation:
    return lambda data: write_file(edit(parse_file(data)))


def header(number: int = 1, **changes: Any) -> Mutation:
    def edit(sections: list[Section]) -> list[Section]:
        s = sections[number - 1]
        sections[number - 1] = Section({**s.header, **changes}, s.records)
        return sections

    return rewrite(edit)


def record(index: int, **changes: Any) -> Mutation:
    """Change values of the index-th record (0-based) of the first section."""

    def edit(sections: list[Section]) -> list[Section]:
        s = sections[0]
        records = list(s.records)
        records[index] = Record(records[index].name, {**records[index].values, **changes})
        sections[0] = Section(s.header, tuple(records))
        return sections

    return rewrite(edit)


def records(change: Callable[[list[Record]], list[Record]]) -> Mutation:
    def edit(sections: list[Section]) -> list[Section]:
        s = sections[0]
        sections[0] = Section(s.header, tuple(change(list(s.records))))
        return sections

    return rewrite(edit)


def chain(*mutations: Mutation) -> Mutation:
    def mutate(data: bytes) -> bytes:
        for m in mutations:
            data = m(data)
        return data

    return mutate


# ---------------------------------------------------------------------------------------------
# Uploads
# ---------------------------------------------------------------------------------------------

_DEFAULT = object()


@dataclass(frozen=True)
class Upload:
    data: bytes
    name: str
    uploader: str | None
    active: Callable[[str], bool] | None = None

    def check(self) -> FileReport:
        return check_bytes(self.data, CheckContext(self.name, self.uploader, self.active))


def upload(
    path: str,
    *mutations: Mutation,
    name: str | None = None,
    uploader: Any = _DEFAULT,
    active: Callable[[str], bool] | None = None,
) -> Upload:
    base = Path(path).name
    return Upload(
        data=chain(*mutations)(read(path)),
        name=name or base,
        uploader=UPLOADERS[base] if uploader is _DEFAULT else uploader,
        active=active,
    )


def registered(mailbox: str) -> bool:
    return mailbox in REFERENTIAL.mailboxes


def single_section(report: FileReport) -> list[Problem]:
    assert report.problems == []
    [section] = report.sections
    return section.problems


def test_good_samples_are_clean() -> None:
    for sample in manifest():
        if all(s["expect"] == "deliver" for s in sample["sections"]):
            report = upload(sample["path"], active=registered).check()
            assert report.fully_accepted, sample["path"]


# ---------------------------------------------------------------------------------------------
# Section checks: one failing input and its valid twin per case
# ---------------------------------------------------------------------------------------------

SECTION_CASES = [
    # LONGUEUR: one line per faulty record, the record's line, 'N au lieu de 640'
    pytest.param(
        upload(REP, truncate(3)),
        upload(REP),
        [("LONGUEUR", 3, "639 au lieu de 640")],
        id="LONGUEUR-639",
    ),
    pytest.param(
        upload(REP, extend(4)),
        upload(REP),
        [("LONGUEUR", 4, "641 au lieu de 640")],
        id="LONGUEUR-641",
    ),
    pytest.param(
        upload(REP, truncate(3), truncate(5, 40)),
        upload(REP),
        [("LONGUEUR", 3, "639 au lieu de 640"), ("LONGUEUR", 5, "600 au lieu de 640")],
        id="LONGUEUR-two-records",
    ),
    pytest.param(
        upload(REP, truncate(1)),
        upload(REP),
        [("LONGUEUR", 1, "639 au lieu de 640")],
        id="LONGUEUR-header",
    ),
    pytest.param(
        upload(REP, truncate(7)),
        upload(REP),
        [("LONGUEUR", 7, "639 au lieu de 640")],
        id="LONGUEUR-footer",
    ),
    # FIN_MANQUANTE: the last line of the unterminated section
    pytest.param(
        upload(REP, drop(7)), upload(REP), [("FIN_MANQUANTE", 6, None)], id="FIN_MANQUANTE"
    ),
    pytest.param(
        upload(BROKER_TO_CESAM, header(recipient_id="CIE000311"), drop(11)),
        upload(BROKER_TO_CESAM, header(recipient_id="CIE000311")),
        [("FIN_MANQUANTE", 10, None)],
        id="FIN_MANQUANTE-premium",
    ),
    # ENTETE: the header line, detail = the field
    pytest.param(
        upload(REP, set_field(1, "header", "environment", "X")),
        upload(REP, set_field(1, "header", "environment", "T")),
        [("ENTETE", 1, "environment")],
        id="ENTETE-environment",
    ),
    pytest.param(
        upload(REP, set_field(1, "header", "format_version", "0201")),
        upload(REP, set_field(1, "header", "format_version", "0200")),
        [("ENTETE", 1, "format_version")],
        id="ENTETE-format_version",
    ),
    pytest.param(
        upload(REP, set_field(1, "header", "section_number", "002")),
        upload(REP, set_field(1, "header", "section_number", "001")),
        [("ENTETE", 1, "section_number")],
        id="ENTETE-section_number",
    ),
    pytest.param(
        # PRI is a flow code, but not one of file type R
        upload(RCA, header(flow_code="PRI")),
        upload(RCA, header(flow_code="REP")),
        [("ENTETE", 1, "flow_code")],
        id="ENTETE-flow_code-for-file_type",
    ),
    pytest.param(
        upload(REP, set_field(1, "header", "creation_date", "2008-02-30")),
        upload(REP, set_field(1, "header", "creation_date", "2008-02-29")),
        [("ENTETE", 1, "creation_date")],
        id="ENTETE-creation_date",
    ),
    pytest.param(
        upload(
            REP,
            set_field(1, "header", "creation_time", "24:00:00"),
            set_field(1, "header", "environment", " "),
        ),
        upload(REP, set_field(1, "header", "creation_time", "23:59:59")),
        [("ENTETE", 1, "creation_time"), ("ENTETE", 1, "environment")],
        id="ENTETE-two-fields",
    ),
    # TYPE_ENREG: the record, detail = its marker
    pytest.param(
        upload(REP, set_marker(3, "3333333333")),
        upload(REP, set_marker(3, "4444444444")),
        [("TYPE_ENREG", 3, "3333333333")],
        id="TYPE_ENREG-3333-in-allocation",
    ),
    pytest.param(
        upload(PRI, set_marker(3, "8888888888")),
        upload(PRI),
        [("TYPE_ENREG", 3, "8888888888")],
        id="TYPE_ENREG-8888",
    ),
    # REGLE5: the header line, detail 'header type / name letter'
    pytest.param(
        upload(RULE5),
        upload(RULE5, name="CCIE000311_00311_000093.edi"),
        [("REGLE5", 1, "C / I")],
        id="REGLE5-seed-case",
    ),
    pytest.param(
        upload(REP, name="PCOU010234_00311_000001.edi"),
        upload(REP),
        [("REGLE5", 1, "R / P")],
        id="REGLE5-R-named-P",
    ),
    # SIGNATURE: the header line, detail 'declared / uploader'
    pytest.param(
        upload(SIGNED),
        upload(SIGNED, uploader="COU010999"),
        [("SIGNATURE", 1, "COU010999 / COU010234")],
        id="SIGNATURE-seed-case",
    ),
    pytest.param(
        upload(REP, uploader="COU010999"),
        upload(REP, uploader="COU010234"),
        [("SIGNATURE", 1, "COU010234 / COU010999")],
        id="SIGNATURE-other-uploader",
    ),
    # DESTINATAIRE: the header line, detail = the recipient
    pytest.param(
        upload(REP, header(recipient_id="CIE000999"), active=registered),
        upload(REP, header(recipient_id="CIE000452"), active=registered),
        [("DESTINATAIRE", 1, "CIE000999")],
        id="DESTINATAIRE-unknown",
    ),
    pytest.param(
        upload(REP, active=lambda mailbox: mailbox != "CIE000311"),
        upload(REP, active=lambda mailbox: True),
        [("DESTINATAIRE", 1, "CIE000311")],
        id="DESTINATAIRE-inactive",
    ),
    # EMETTEUR: the header line, detail = the recipient
    pytest.param(
        upload(BROKER_TO_CESAM),
        upload(BROKER_TO_CESAM, header(recipient_id="CIE000311")),
        [("EMETTEUR", 1, "GIE000001")],
        id="EMETTEUR-broker-premium-to-CESAM",
    ),
    pytest.param(
        upload(RCC, header(flow_code="REP")),
        upload(RCC),
        [("EMETTEUR", 1, "GIE000001")],
        id="EMETTEUR-broker-REP-to-CESAM",
    ),
    pytest.param(
        # CIE -> CIE is in the matrix, but sender and recipient must differ
        upload(PRI_REJECTED, header(recipient_id="CIE000311")),
        upload(PRI_REJECTED, header(recipient_id="CIE000452")),
        [("EMETTEUR", 1, "CIE000311")],
        id="EMETTEUR-sender-is-recipient",
    ),
    # ORDRE: order_regex broken -> first functional record (the header if there is none)
    pytest.param(upload(REP, swap(2, 3)), upload(REP), [("ORDRE", 2, ANY)], id="ORDRE-4-before-2"),
    pytest.param(
        upload(PRI, drop(3), drop(3), drop(3), drop(3), records(lambda r: r)),
        upload(PRI, drop(4), drop(4), drop(4), records(lambda r: r)),
        [("ORDRE", 2, ANY)],
        id="ORDRE-premium-without-3",
    ),
    pytest.param(
        upload(BUL, records(lambda r: [])),
        upload(BUL),
        [("ORDRE", 1, ANY)],
        id="ORDRE-no-functional-record",
    ),
    # ORDRE: a rejected record without its 7777777777 -> that record
    pytest.param(
        upload(REP, set_field(3, "allocation_4", "control_state", "R")),
        upload(REP, set_field(3, "allocation_4", "control_state", "V")),
        [("ORDRE", 3, ANY)],
        id="ORDRE-R-without-reject",
    ),
    pytest.param(
        upload(PRI_REJECTED, drop(7), records(lambda r: r)),
        upload(PRI_REJECTED, records(lambda r: r)),
        [("ORDRE", 6, ANY)],
        id="ORDRE-last-R-without-reject",
    ),
    # ORDRE: a 7777777777 that follows no rejected record -> that 7777777777
    pytest.param(
        upload(PRI_REJECTED, set_field(2, "premium_2", "control_state", "V")),
        upload(PRI_REJECTED, set_field(2, "premium_2", "control_state", "C")),
        [("ORDRE", 3, ANY)],
        id="ORDRE-reject-after-V",
    ),
    pytest.param(
        upload(PRI_REJECTED, records(lambda r: [*r[:2], r[1], *r[2:]])),
        upload(PRI_REJECTED, records(lambda r: r)),
        [("ORDRE", 4, ANY)],
        id="ORDRE-two-rejects",
    ),
    # FORMAT: the record, detail '<record>.<field>', one line per field
    pytest.param(
        upload(REP, set_field(2, "allocation_2", "hull_or_cargo", "X")),
        upload(REP, set_field(2, "allocation_2", "hull_or_cargo", "F")),
        [("FORMAT", 2, "allocation_2.hull_or_cargo")],
        id="FORMAT-closed-values",
    ),
    pytest.param(
        upload(REP, set_field(2, "allocation_2", "allocation_effective_date", "2008-02-30")),
        upload(REP, set_field(2, "allocation_2", "allocation_effective_date", "2008-02-29")),
        [("FORMAT", 2, "allocation_2.allocation_effective_date")],
        id="FORMAT-no-such-date",
    ),
    pytest.param(
        upload(REP, set_field(4, "allocation_4", "line_number", "0A2")),
        upload(REP, set_field(4, "allocation_4", "line_number", "012")),
        [("FORMAT", 4, "allocation_4.line_number")],
        id="FORMAT-numeric",
    ),
    pytest.param(
        upload(REP, set_field(2, "allocation_2", "optiflux_key", "200800311MAR000123400X")),
        upload(REP, set_field(2, "allocation_2", "optiflux_key", "200800311MAR0001234009")),
        [("FORMAT", 2, "allocation_2.optiflux_key")],
        id="FORMAT-pattern",
    ),
    pytest.param(
        upload(REP, set_field(5, "allocation_4", "insured_name", " " * 40)),
        upload(REP, set_field(5, "allocation_4", "insured_name", "X" + " " * 39)),
        [("FORMAT", 5, "allocation_4.insured_name")],
        id="FORMAT-required-blank",
    ),
    pytest.param(
        upload(REP, set_field(5, "allocation_4", "insured_name", " ARMEMENT".ljust(40))),
        upload(REP, set_field(5, "allocation_4", "insured_name", "ARMEMENT".ljust(40))),
        [("FORMAT", 5, "allocation_4.insured_name")],
        id="FORMAT-not-left-aligned",
    ),
    pytest.param(
        upload(REP, set_field(5, "allocation_4", "insured_name", "ARM\x07".ljust(40))),
        upload(REP, set_field(5, "allocation_4", "insured_name", "ARMÉ".ljust(40))),
        [("FORMAT", 5, "allocation_4.insured_name")],
        id="FORMAT-not-printable",
    ),
    pytest.param(
        upload(REP, set_line(6, lambda text: text[:-1] + b"X")),
        upload(REP),
        [("FORMAT", 6, "allocation_4.filler")],
        id="FORMAT-filler",
    ),
    pytest.param(
        upload(
            REP,
            set_field(3, "allocation_4", "office_code", "0031 "),
            set_field(3, "allocation_4", "company_share", "0300000A"),
            set_field(2, "allocation_2", "international_or_domestic", "X"),
        ),
        upload(REP, set_field(3, "allocation_4", "office_code", "00312")),
        [
            ("FORMAT", 2, "allocation_2.international_or_domestic"),
            ("FORMAT", 3, "allocation_4.office_code"),
            ("FORMAT", 3, "allocation_4.company_share"),
        ],
        id="FORMAT-one-per-field",
    ),
    pytest.param(
        upload(PRI_REJECTED, set_field(5, "reject", "reject_message", " " * 120)),
        upload(PRI_REJECTED, set_field(5, "reject", "reject_message", "X" * 120)),
        [("FORMAT", 5, "reject.reject_message")],
        id="FORMAT-reject-record",
    ),
    pytest.param(
        upload(PRI_REJECTED, set_field(5, "reject", "rejected_record_type", "7")),
        upload(PRI_REJECTED, set_field(5, "reject", "rejected_record_type", "2")),
        [("FORMAT", 5, "reject.rejected_record_type")],
        id="FORMAT-reject-record-type",
    ),
    # FIN: the footer line, detail = the fields
    pytest.param(
        upload(REP, set_field(7, "footer", "sender_id", "COU010999")),
        upload(REP, set_field(7, "footer", "sender_id", "COU010234")),
        [("FIN", 7, "sender_id")],
        id="FIN-sender",
    ),
    pytest.param(
        upload(
            REP,
            set_field(7, "footer", "file_type", "P"),
            set_field(7, "footer", "recipient_id", "CIE000452"),
        ),
        upload(REP),
        [("FIN", 7, "file_type, recipient_id")],
        id="FIN-two-fields",
    ),
    pytest.param(
        upload(REP, set_field(7, "footer", "section_number", "002")),
        upload(REP, set_field(7, "footer", "section_number", "001")),
        [("FIN", 7, "section_number")],
        id="FIN-section_number",
    ),
    pytest.param(
        upload(REP, set_field(7, "footer", "functional_record_count", "0000000X")),
        upload(REP, set_field(7, "footer", "functional_record_count", "00000005")),
        [("FIN", 7, "functional_record_count")],
        id="FIN-malformed-count",
    ),
    # NOMBRE: the footer line, 'annoncé N, trouvé M'
    pytest.param(
        upload(COUNT),
        upload(COUNT, set_field(3, "footer", "functional_record_count", "00000001")),
        [("NOMBRE", 3, "annoncé 2, trouvé 1")],
        id="NOMBRE-seed-case",
    ),
    pytest.param(
        upload(REP, drop(6)),
        upload(REP, drop(6), records(lambda r: r)),
        [("NOMBRE", 6, "annoncé 5, trouvé 4")],
        id="NOMBRE-record-removed",
    ),
    # NOMBRE_REJETS: the footer line, 'annoncé N, trouvé M'
    pytest.param(
        upload(PRI_REJECTED, set_field(8, "footer", "reject_record_count", "00000002")),
        upload(PRI_REJECTED, set_field(8, "footer", "reject_record_count", "00000003")),
        [("NOMBRE_REJETS", 8, "annoncé 2, trouvé 3")],
        id="NOMBRE_REJETS",
    ),
    # TOTAL: the footer line, 'annoncé X, calculé Y'
    pytest.param(
        upload(TOTAL),
        upload(TOTAL, set_field(5, "footer", "control_total", "3158000".zfill(18))),
        [("TOTAL", 5, "annoncé 1, calculé 3158000")],
        id="TOTAL-seed-case",
    ),
    pytest.param(
        upload(PRI, set_field(2, "premium_2", "brokerage_amount", "000000000003751")),
        upload(PRI, record(0, brokerage_amount=Decimal("37.51"))),
        [("TOTAL", 14, "annoncé 102410, calculé 102411")],
        id="TOTAL-amount-changed",
    ),
]


@pytest.mark.parametrize(("bad", "good", "expected"), SECTION_CASES)
def test_section_check(bad: Upload, good: Upload, expected: list[Found]) -> None:
    assert_problems(single_section(bad.check()), expected)
    twin = good.check()
    assert single_section(twin) == []
    assert twin.fully_accepted
    # near-identical: same number of lines, or one line apart
    assert abs(bad.data.count(b"\n") - good.data.count(b"\n")) <= 1


def expected_of(case: ParameterSet) -> list[Found]:
    expected = case.values[2]
    assert isinstance(expected, list)
    return expected


def test_every_code_is_exercised() -> None:
    """Every code but DECHIFFREMENT (the OpenPGP layer) and INTERNE (the hub's own failure,
    tests/test_quarantine.py) has a failing case in this file."""
    section_codes = {code for case in SECTION_CASES for code, _, _ in expected_of(case)}
    file_codes = {"NOM", "TYPE_FICHIER", "VIDE", "HORS_SECTION"}  # tests below
    assert section_codes | file_codes == {c.value for c in Code} - {"DECHIFFREMENT", "INTERNE"}


# ---------------------------------------------------------------------------------------------
# The seed's broken samples, through the same checks
# ---------------------------------------------------------------------------------------------


def test_longueur_refuses_only_its_section() -> None:
    report = upload(LONG).check()
    assert report.problems == []
    assert [s.number for s in report.sections] == [1, 2]
    assert report.sections[0].problems == []
    assert found(report.sections[1].problems) == [("LONGUEUR", 8, "639 au lieu de 640")]
    assert [s.number for s in report.delivered_sections] == [1]
    assert [s.recipient_id for s in report.delivered_sections] == ["CIE000311"]


def test_emetteur_for_broker_premium_to_cesam() -> None:
    report = upload(BROKER_TO_CESAM, active=registered).check()
    assert found(single_section(report)) == [("EMETTEUR", 1, "GIE000001")]
    assert report.delivered_sections == []


# ---------------------------------------------------------------------------------------------
# The stop rule
# ---------------------------------------------------------------------------------------------

# Non-structural problems of REP (with uploader COU010999): SIGNATURE, ORDRE, FORMAT, NOMBRE.
SEVERAL = (
    set_field(3, "allocation_4", "control_state", "R"),
    set_field(2, "allocation_2", "hull_or_cargo", "X"),
    set_field(7, "footer", "functional_record_count", "00000009"),
)
SEVERAL_FOUND: list[Found] = [
    ("SIGNATURE", 1, "COU010234 / COU010999"),
    ("ORDRE", 3, ANY),
    ("FORMAT", 2, "allocation_2.hull_or_cargo"),
    ("NOMBRE", 7, "annoncé 9, trouvé 5"),
]


def test_non_structural_checks_all_run_in_check_order() -> None:
    bad = upload(REP, *SEVERAL, name="PCOU010234_00311_000001.edi", uploader="COU010999")
    assert_problems(
        single_section(bad.check()),
        [
            ("REGLE5", 1, "R / P"),
            ("SIGNATURE", 1, "COU010234 / COU010999"),
            ("ORDRE", 3, ANY),
            ("FORMAT", 2, "allocation_2.hull_or_cargo"),
            ("NOMBRE", 7, "annoncé 9, trouvé 5"),
        ],
    )


@pytest.mark.parametrize(
    ("structural", "expected"),
    [
        pytest.param(truncate(4), [("LONGUEUR", 4, "639 au lieu de 640")], id="LONGUEUR"),
        pytest.param(drop(7), [("FIN_MANQUANTE", 6, None)], id="FIN_MANQUANTE"),
        pytest.param(
            set_field(1, "header", "environment", "X"), [("ENTETE", 1, "environment")], id="ENTETE"
        ),
        pytest.param(
            set_marker(5, "5555555555"), [("TYPE_ENREG", 5, "5555555555")], id="TYPE_ENREG"
        ),
    ],
)
def test_structural_problem_hides_the_later_checks(
    structural: Mutation, expected: list[Found]
) -> None:
    without = upload(REP, *SEVERAL, uploader="COU010999")
    assert_problems(single_section(without.check()), SEVERAL_FOUND)
    bad = upload(REP, *SEVERAL, structural, uploader="COU010999")
    assert found(single_section(bad.check())) == expected


@pytest.mark.parametrize(
    ("mutations", "expected"),
    [
        pytest.param(
            (truncate(3), drop(7)),
            [("LONGUEUR", 3, "639 au lieu de 640")],
            id="LONGUEUR>FIN_MANQUANTE",
        ),
        pytest.param(
            (truncate(2), set_field(1, "header", "environment", "X")),
            [("LONGUEUR", 2, "639 au lieu de 640")],
            id="LONGUEUR>ENTETE",
        ),
        pytest.param(
            (drop(7), set_field(1, "header", "environment", "X")),
            [("FIN_MANQUANTE", 6, None)],
            id="FIN_MANQUANTE>ENTETE",
        ),
        pytest.param(
            (set_marker(3, "3333333333"), set_field(1, "header", "environment", "X")),
            [("ENTETE", 1, "environment")],
            id="ENTETE>TYPE_ENREG",
        ),
    ],
)
def test_first_structural_check_wins(
    mutations: tuple[Mutation, ...], expected: list[Found]
) -> None:
    assert found(single_section(upload(REP, *mutations).check())) == expected


def test_emetteur_not_run_when_destinataire_fails() -> None:
    inactive = upload(BROKER_TO_CESAM, active=lambda mailbox: False, uploader="COU010999")
    assert found(single_section(inactive.check())) == [
        ("SIGNATURE", 1, "COU010234 / COU010999"),
        ("DESTINATAIRE", 1, "GIE000001"),
    ]
    active = upload(BROKER_TO_CESAM, active=lambda mailbox: True, uploader="COU010999")
    assert found(single_section(active.check())) == [
        ("SIGNATURE", 1, "COU010234 / COU010999"),
        ("EMETTEUR", 1, "GIE000001"),
    ]


def test_counts_and_total_not_run_when_fin_fails() -> None:
    counts = (
        set_field(8, "footer", "functional_record_count", "00000009"),
        set_field(8, "footer", "reject_record_count", "00000009"),
        set_field(8, "footer", "control_total", "9".zfill(18)),
    )
    wrong_counts = upload(PRI_REJECTED, *counts).check()
    assert found(single_section(wrong_counts)) == [
        ("NOMBRE", 8, "annoncé 9, trouvé 3"),
        ("NOMBRE_REJETS", 8, "annoncé 9, trouvé 3"),
        ("TOTAL", 8, "annoncé 9, calculé 14160"),
    ]
    fin = upload(PRI_REJECTED, *counts, set_field(8, "footer", "flow_code", "REP")).check()
    assert found(single_section(fin)) == [("FIN", 8, "flow_code")]


def test_refused_section_does_not_stop_the_others() -> None:
    report = upload(MULTI, set_field(9, "allocation_2", "hull_or_cargo", "X")).check()
    assert report.problems == []
    assert [found(s.problems) for s in report.sections] == [
        [],
        [("FORMAT", 9, "allocation_2.hull_or_cargo")],
        [],
    ]
    assert [(s.number, s.recipient_id) for s in report.delivered_sections] == [
        (1, "CIE000311"),
        (3, "CIE000638"),
    ]


def test_structural_problem_in_one_section_does_not_stop_the_others() -> None:
    # section 1 loses its footer: it ends where section 2 starts
    report = upload(MULTI, drop(7)).check()
    assert [(s.number, s.first_line, s.last_line, found(s.problems)) for s in report.sections] == [
        (1, 1, 6, [("FIN_MANQUANTE", 6, None)]),
        (2, 7, 13, []),
        (3, 14, 20, []),
    ]
    assert [s.number for s in report.delivered_sections] == [2, 3]


def test_header_alone_at_end_of_file() -> None:
    second_header = set_field(1, "header", "section_number", "002")(read(REP))[: 640 + 1]
    report = upload(REP, lambda d: d + second_header).check()
    assert [found(s.problems) for s in report.sections] == [[], [("FIN_MANQUANTE", 8, None)]]


# ---------------------------------------------------------------------------------------------
# File checks: NOM, TYPE_FICHIER, VIDE, HORS_SECTION refuse the whole upload
# ---------------------------------------------------------------------------------------------


def file_problems(data: bytes, name: str = REP) -> list[Found]:
    return found(check_bytes(data, CheckContext(name, "COU010234")).problems)


@pytest.mark.parametrize(
    "name",
    [
        "RCOU010234_00311_000001.txt",
        "RCOU010234 00311 000001.edi",
        "RCOU010234_00311_000001.EDI",
        "RCOU010234_00311_000001.edi~",
        "R/COU010234.edi",
        "RCOUé.edi",
        "R" + "x" * 60 + ".edi",  # 65 characters
        "R.edi.pgp",  # the caller drops .pgp; the checker sees the name it is given
    ],
)
def test_nom(name: str) -> None:
    assert file_problems(read(REP), name) == [("NOM", 0, name)]


@pytest.mark.parametrize(
    "name",
    [REP, "R.edi", "R" + "x" * 59 + ".edi", "R-x.y_z.edi", "Rcou010234_00311_000001.edi"],
)
def test_nom_absent(name: str) -> None:
    assert len(name) <= 64
    assert file_problems(read(REP), name) == []


@pytest.mark.parametrize("suffix", [".pgp", ".gpg", ".asc", ".PGP"])
def test_signature_suffix_is_dropped_before_nom(suffix: str) -> None:
    name = strip_upload_suffix(REP + suffix, LAYOUT)
    assert name == REP
    assert file_problems(read(REP), name) == []


@pytest.mark.parametrize("letter", ["X", "A", "r", "0"])
def test_type_fichier(letter: str) -> None:
    name = letter + REP[1:]
    report = check_bytes(read(REP), CheckContext(name, "COU010234"))
    assert found(report.problems) == [("TYPE_FICHIER", 0, letter)]
    assert report.delivered_sections == []


@pytest.mark.parametrize("letter", list("RPBDCISH"))
def test_type_fichier_absent(letter: str) -> None:
    assert file_problems(read(REP), letter + REP[1:]) == []


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"   \n\n", b"hello\n", b"9999999999\n", read(REP)[640 + 1 :]],
    ids=["empty", "blank-line", "spaces", "text", "footer-only", "no-header"],
)
def test_vide_hides_hors_section(data: bytes) -> None:
    assert file_problems(data) == [("VIDE", 0, None)]


def test_vide_absent() -> None:
    assert file_problems(read(REP)) == []
    # a lone header is not VIDE: it is a section without its footer
    report = check_bytes(read(REP)[: 640 + 1], CheckContext(REP, "COU010234"))
    assert report.problems == []
    assert found(report.sections[0].problems) == [("FIN_MANQUANTE", 1, None)]


@pytest.mark.parametrize(
    ("mutation", "lines"),
    [
        pytest.param(insert(1, b"hello"), [1], id="before"),
        pytest.param(insert(8, b"garbage"), [8], id="after"),
        pytest.param(insert(8, b"\t"), [8], id="tab"),
        pytest.param(insert(8, read(REP).split(b"\n")[6]), [8], id="second-footer"),
        pytest.param(
            chain(insert(1, b"x"), insert(9, b"y"), insert(10, b" z")), [1, 9, 10], id="three"
        ),
    ],
)
def test_hors_section(mutation: Mutation, lines: list[int]) -> None:
    data = mutation(read(REP))
    report = check_bytes(data, CheckContext(REP, "COU010234"))
    assert found(report.problems) == [("HORS_SECTION", n, None) for n in lines]
    assert report.sections[0].problems == []  # the section itself is fine ...
    assert report.delivered_sections == []  # ... but nothing is delivered


def test_hors_section_between_sections() -> None:
    report = upload(MULTI, insert(8, b"ORPHAN")).check()
    assert found(report.problems) == [("HORS_SECTION", 8, None)]
    assert [s.first_line for s in report.sections] == [1, 9, 16]
    assert report.delivered_sections == []


def test_blank_lines_outside_sections_are_fine() -> None:
    blank = chain(
        insert(1, b""), insert(1, b"   "), insert(10, b""), insert(18, b"  "), lambda d: d + b"\n\n"
    )
    data = blank(read(MULTI))
    report = check_bytes(data, CheckContext(Path(MULTI).name, "GIE000001"))
    assert report.fully_accepted
    assert [(s.first_line, s.last_line) for s in report.sections] == [(3, 9), (11, 17), (19, 25)]
    assert len(report.delivered_sections) == 3


def test_file_problems_are_all_listed_and_refuse_everything() -> None:
    data = chain(insert(1, b"x"), lambda d: d + b"trailer\n")(read(MULTI))
    report = check_bytes(data, CheckContext("x bad name.txt", "GIE000001"))
    assert found(report.problems) == [
        ("NOM", 0, "x bad name.txt"),
        ("TYPE_FICHIER", 0, "x"),
        ("HORS_SECTION", 1, None),
        ("HORS_SECTION", 23, None),
    ]
    assert not report.accepted
    assert report.delivered_sections == []
    # the sections were still cut and checked
    assert [s.number for s in report.sections] == [1, 2, 3]


def test_nom_and_vide_are_both_listed() -> None:
    report = check_bytes(b"", CheckContext("bad name", None))
    assert found(report.problems) == [
        ("NOM", 0, "bad name"),
        ("TYPE_FICHIER", 0, "b"),
        ("VIDE", 0, None),
    ]


# ---------------------------------------------------------------------------------------------
# Line terminators and section byte ranges
# ---------------------------------------------------------------------------------------------

ALL_SAMPLES = [s["path"] for s in manifest()]


def outcome(report: FileReport) -> list[Any]:
    return [
        found(report.problems),
        [
            (s.number, s.first_line, s.last_line, s.recipient_id, found(s.problems))
            for s in report.sections
        ],
    ]


@pytest.mark.parametrize("path", ALL_SAMPLES)
def test_crlf_gives_the_same_result_as_lf(path: str) -> None:
    lf = upload(path, active=registered)
    crlf = Upload(lf.data.replace(b"\n", b"\r\n"), lf.name, lf.uploader, lf.active)
    assert b"\r\n" in crlf.data
    assert outcome(crlf.check()) == outcome(lf.check())


@pytest.mark.parametrize("path", ALL_SAMPLES)
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_last_record_without_terminator(path: str, newline: bytes) -> None:
    lf = upload(path, active=registered)
    data = lf.data.replace(b"\n", newline).removesuffix(newline)
    assert not data.endswith(b"\n")
    cut = Upload(data, lf.name, lf.uploader, lf.active)
    assert outcome(cut.check()) == outcome(lf.check())


def test_mixed_terminators() -> None:
    data = read(REP).replace(b"\n", b"\r\n", 3)
    assert data.count(b"\r\n") == 3
    assert Upload(data, REP, "COU010234").check().fully_accepted


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda d: d, id="LF"),
        pytest.param(lambda d: d.replace(b"\n", b"\r\n"), id="CRLF"),
        pytest.param(lambda d: d.removesuffix(b"\n"), id="no-final-terminator"),
        pytest.param(
            lambda d: b"\n  \n" + d.replace(b"\n1111111111", b"\n\n \n1111111111") + b"\n",
            id="blank-lines-around",
        ),
    ],
)
def test_section_offsets_slice_each_section(variant: Mutation) -> None:
    data = variant(read(MULTI))
    report = check_bytes(data, CheckContext(Path(MULTI).name, "GIE000001"))
    assert report.fully_accepted
    lines = data.splitlines(keepends=True)
    chunks = [data[s.start : s.end] for s in report.sections]
    assert b"".join(chunks) == b"".join(line for line in lines if line.strip())
    for section in report.sections:
        expected = b"".join(lines[section.first_line - 1 : section.last_line])
        chunk = data[section.start : section.end]
        assert chunk == expected
        assert chunk.startswith(b"1111111111")
        assert chunk.rstrip(b"\r\n").rsplit(b"\n", 1)[-1].startswith(b"9999999999")
        # the delivered bytes parse back to exactly that section
        [alone] = parse_file(chunk)
        assert alone.header["section_number"] == section.number


def test_section_offsets_on_the_multi_section_sample() -> None:
    data = read(MULTI)
    report = check_bytes(data, CheckContext(Path(MULTI).name, "GIE000001"))
    size = 7 * 641
    assert [(s.start, s.end) for s in report.sections] == [
        (0, size),
        (size, 2 * size),
        (2 * size, 3 * size),
    ]
    assert b"".join(data[s.start : s.end] for s in report.sections) == data
    crlf = data.replace(b"\n", b"\r\n")
    report = check_bytes(crlf, CheckContext(Path(MULTI).name, "GIE000001"))
    size = 7 * 642
    assert [(s.start, s.end) for s in report.sections] == [
        (0, size),
        (size, 2 * size),
        (2 * size, 3 * size),
    ]
    assert [crlf[s.start : s.end] for s in report.sections] == [
        crlf[i * size : (i + 1) * size] for i in range(3)
    ]


def test_refused_section_offsets() -> None:
    data = read(LONG)
    report = check_bytes(data, CheckContext(Path(LONG).name, "COU010234"))
    first, second = report.sections
    assert data[first.start : first.end] + data[second.start : second.end] == data
    assert data[second.start : second.end].count(b"\n") == 5
    assert first.end == second.start == 5 * 641


# ---------------------------------------------------------------------------------------------
# .log files
# ---------------------------------------------------------------------------------------------

WHEN = datetime(2008, 5, 2, 9, 0, 12)


def logs(report: FileReport) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(log.name, log.section, log.lines) for log in log_files(report, WHEN, LAYOUT)]


def test_log_of_a_refused_section_is_the_seed_example() -> None:
    assert logs(upload(LONG).check()) == [
        (
            "ERREURPCOU010234_00311_000090_2.log",
            2,
            (
                "2008-05-02 09:00:12 PCOU010234_00311_000090.edi section 2 line 8 LONGUEUR "
                "longueur de fichier incorrect. (639 au lieu de 640)",
            ),
        )
    ]


def test_log_for_each_refused_section_with_every_problem() -> None:
    report = upload(
        MULTI,
        set_field(2, "allocation_2", "hull_or_cargo", "X"),
        set_field(21, "footer", "functional_record_count", "00000007"),
        set_field(17, "allocation_4", "company_share", "0150000X"),
    ).check()
    prefix = "2008-05-02 09:00:12 RGIE000001_00311_000001.edi"
    assert logs(report) == [
        (
            "ERREURRGIE000001_00311_000001_1.log",
            1,
            (f"{prefix} section 1 line 2 FORMAT zone mal formatée (allocation_2.hull_or_cargo)",),
        ),
        (
            "ERREURRGIE000001_00311_000001_3.log",
            3,
            (
                f"{prefix} section 3 line 17 FORMAT zone mal formatée (allocation_4.company_share)",
                f"{prefix} section 3 line 21 NOMBRE nombre d'enregistrements fonctionnels "
                "incorrect (annoncé 7, trouvé 5)",
            ),
        ),
    ]
    log = log_files(report, WHEN, LAYOUT)[1]
    assert log.text() == "".join(line + "\n" for line in log.lines)


def test_log_of_the_seed_nombre_case() -> None:
    assert logs(upload(COUNT).check()) == [
        (
            "ERREURBCOU010234_00311_000091_1.log",
            1,
            (
                "2008-05-02 09:00:12 BCOU010234_00311_000091.edi section 1 line 3 NOMBRE "
                "nombre d'enregistrements fonctionnels incorrect (annoncé 2, trouvé 1)",
            ),
        )
    ]


def test_no_log_for_a_clean_upload() -> None:
    assert logs(upload(MULTI).check()) == []


def test_log_of_a_refused_upload() -> None:
    data = read(REP) + b"junk\n"
    report = check_bytes(data, CheckContext("XCOU010234_00311_000001.edi", "COU010234"))
    # one log for the whole upload, even though its section also has a problem (REGLE5)
    assert found(report.sections[0].problems) == [("REGLE5", 1, "R / X")]
    assert logs(report) == [
        (
            "ERREURXCOU010234_00311_000001.log",
            0,
            (
                "2008-05-02 09:00:12 XCOU010234_00311_000001.edi section 0 line 0 TYPE_FICHIER "
                "première lettre du nom différente d'un type de fichier connu (règle n°5) (X)",
                "2008-05-02 09:00:12 XCOU010234_00311_000001.edi section 0 line 8 HORS_SECTION "
                "enregistrement hors section",
            ),
        )
    ]


def test_log_of_an_empty_upload() -> None:
    report = check_bytes(b"", CheckContext(REP, "COU010234"))
    assert logs(report) == [
        (
            "ERREURRCOU010234_00311_000001.log",
            0,
            (
                "2008-05-02 09:00:12 RCOU010234_00311_000001.edi section 0 line 0 VIDE "
                "fichier vide ou sans entête",
            ),
        )
    ]


@pytest.mark.parametrize(
    ("name", "log_name"),
    [
        ("R COU/01 é.edi", "ERREURR_COU_01__.log"),
        ("RCOU010234_00311_000114 .edi", "ERREURRCOU010234_00311_000114_.log"),
        ("RCOU010234_00311_000001.txt", "ERREURRCOU010234_00311_000001.txt.log"),
        ("../../etc/passwd", "ERREUR.._.._etc_passwd.log"),
        ("R" + "é" * 70 + ".edi", "ERREURR" + "_" * 59 + ".log"),
        ("R" + "x" * 60 + ".edi", "ERREURR" + "x" * 59 + ".log"),
    ],
)
def test_log_name_of_an_upload_refused_by_nom(name: str, log_name: str) -> None:
    report = check_bytes(read(REP), CheckContext(name, "COU010234"))
    assert found(report.problems)[0] == ("NOM", 0, name)
    [(got_name, section, lines)] = logs(report)
    assert got_name == log_name
    assert section == 0
    assert lines[0] == (
        f"2008-05-02 09:00:12 {name} section 0 line 0 NOM nom de fichier incorrect ({name})"
    )


def test_signed_zero_is_written_plus() -> None:
    zero = "+" + "0" * 15
    negative_zero = "-" + "0" * 15
    base = "DCOU010234_00311_000005.edi"
    good = upload(base, set_field(2, "settlement_2", "fees_100", zero))
    bad = upload(base, set_field(2, "settlement_2", "fees_100", negative_zero))
    assert single_section(good.check()) == []
    assert found(single_section(bad.check())) == [("FORMAT", 2, "settlement_2.fees_100")]


def test_log_lines_stay_one_line_whatever_the_name() -> None:
    report = check_bytes(b"", CheckContext("a\nb.edi", "COU010234"))
    [log] = log_files(report, datetime(2008, 5, 2, 9, 0, 12), LAYOUT)
    assert len(log.text().splitlines()) == len(report.problems)
    assert all(" a?b.edi section 0 line 0 " in line for line in log.lines)


# ---------------------------------------------------------------------------------------------
# Digits that are not ASCII digits ('²'.isdigit() is True, int('²') raises): refused, never read
# ---------------------------------------------------------------------------------------------


def test_superscript_section_number_in_a_header_of_the_wrong_length() -> None:
    bad = upload(REP, set_field(1, "header", "section_number", "²²²"), extend(1))
    assert found(single_section(bad.check())) == [("LONGUEUR", 1, "641 au lieu de 640")]


def test_superscript_digits_in_an_amount() -> None:
    base = "DCOU010234_00311_000005.edi"
    bad = upload(base, set_field(2, "settlement_2", "fees_100", "+" + "²" * 15))
    assert found(single_section(bad.check())) == [("FORMAT", 2, "settlement_2.fees_100")]
