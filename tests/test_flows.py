"""Flows: the streaming second pass gives exactly the flows the check collected; a field
its check refuses is never decoded as if valid, and never stops the other sections."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest
from support import SAMPLES, manifest

from bdi.pipeline.plan import Content, Upload, occurrence, plan_outputs
from bdi.pipeline.prepare import cut_lines
from bdi.routing.errors import Code
from bdi.routing.fields import LazyRecord, RecordCodec, Value, codecs_for, decode_field
from bdi.routing.flows import grid_records, iter_flows
from bdi.routing.layout import FieldSpec, default_layout
from bdi.routing.logs import log_files
from bdi.routing.model import FileReport
from bdi.routing.scan import CheckContext, SectionChecked, check_lines, last_report
from bdi.routing.writer import Section, parse_file, write_file
from bdi.store.jobs import Occurrence, PlannedOutput


@pytest.mark.parametrize("sample", manifest(), ids=lambda s: s["path"])
def test_second_pass_yields_the_checked_flows(sample: dict[str, str]) -> None:
    data = (SAMPLES / sample["path"]).read_bytes()
    ctx = CheckContext(sample["path"].split("/")[-1], sample["uploaded_by"], collect_flows=True)
    events = [e for e in check_lines(io.BytesIO(data), ctx) if isinstance(e, SectionChecked)]
    checked = [f for e in events for f in e.flows]
    accepted = {e.report.number: e.report.flow_code for e in events if e.report.accepted}
    assert list(iter_flows(cut_lines(io.BytesIO(data)), default_layout(), accepted)) == checked
    assert checked or not accepted


def test_flow_keys_and_controls_of_the_samples() -> None:
    data = (SAMPLES / "PCIE000311_00311_000002.edi").read_bytes()
    [flow] = iter_flows(cut_lines(io.BytesIO(data)), default_layout(), {1: "PRI"})
    assert flow.key == "200800311MAR0001234001|AV-2008-002|01"
    assert flow.control == "R"
    assert flow.reject_message == "TAUX DE COURTAGE DIFFERENT DU TAUX DE L'APERITEUR"
    data = (SAMPLES / "CCOU010234_00311_000006.edi").read_bytes()
    [account] = iter_flows(cut_lines(io.BytesIO(data)), default_layout(), {1: "CPF"})
    assert account.key == "10234|EUR|2008030001"
    assert len(account.lines) == 7 and account.fields["balance"] is not None


# ---------------------------------------------------------------------------------------------
# Issue 13, item 1: a refused field is never decoded as if valid, and nothing after the checks
# raises on it; the good sections of the same file are still delivered.
# ---------------------------------------------------------------------------------------------

LAYOUT = default_layout()
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
CESAM = "GIE000001"
CESAM_FILE = "RGIE000001_00311_000009.edi"
RECIPIENTS = ("CIE000311", "CIE000452", "CIE000638", "CIE000100", "CIE000200")
BAD_SECTION = 3
BAD_LINE = 2 * 7 + 2  # the allocation_2 of section 3 (sections of 7 lines)


def five_sections() -> bytes:
    """The CESAM distribution sample re-written as five sections to five companies."""
    [first, *_] = parse_file((SAMPLES / "RGIE000001_00311_000001.edi").read_bytes())
    return write_file(
        Section({**first.header, "section_number": n, "recipient_id": r}, first.records)
        for n, r in enumerate(RECIPIENTS, start=1)
    )


def with_field(data: bytes, line: int, record: str, name: str, raw: bytes) -> bytes:
    """`data` with field `record.name` of `line` overwritten by `raw`, padded to its width."""
    spec = LAYOUT.records[record].field(name)
    lines = data.split(b"\n")
    assert lines[line - 1][:10] == LAYOUT.records[record].marker.encode()
    old = lines[line - 1]
    lines[line - 1] = old[: spec.start] + raw.ljust(spec.length)[: spec.length] + old[spec.end :]
    return b"\n".join(lines)


@dataclass(frozen=True, slots=True)
class Planned:
    report: FileReport
    outputs: list[PlannedOutput]
    rows: list[Occurrence]


def plan(data: bytes, collect: bool) -> Planned:
    """The pure path of `prepare`: checks, flows (collected by the checks, or read again as
    a big file's are), occurrences and planned outputs."""
    ctx = CheckContext(CESAM_FILE, CESAM, collect_flows=collect)
    events = list(check_lines(io.BytesIO(data), ctx))
    report = last_report(events)
    delivered = {s.number: (s.flow_code, s.recipient_id) for s in report.delivered_sections}
    flows = [f for e in events if isinstance(e, SectionChecked) for f in e.flows]
    if not collect:
        accepted = {n: code for n, (code, _) in delivered.items()}
        flows = list(iter_flows(cut_lines(io.BytesIO(data)), LAYOUT, accepted))
    upload = Upload(1, CESAM, CESAM_FILE, NOW)
    seq = dict.fromkeys(RECIPIENTS, 0)
    rows = []
    for flow in flows:
        recipient = delivered[flow.section][1]
        rows.append(occurrence(LAYOUT, upload, recipient, flow, seq[recipient]))
        seq[recipient] += 1
    outputs = plan_outputs(
        upload,
        report,
        log_files(report, NOW, LAYOUT),
        lambda _, name: name,
        lambda _: Content("", "0" * 64, b""),
    )
    return Planned(report, outputs, rows)


BAD_VALUES = [  # (record, field, raw bytes, what is wrong)
    ("allocation_2", "allocation_effective_date", b"2008-13-01", "month 13"),
    ("allocation_2", "main_renewal_date", b"2009-02-29", "no such day"),
    ("allocation_2", "cover_end_date", b"2008-12-\xe2\x82\xac", "non-Latin-1 bytes (UTF-8 €)"),
    ("allocation_2", "line_count", b"0A4", "non-digits in a numeric field"),
    ("allocation_2", "leader_brokerage_rate", b"+0000100", "a sign where none is allowed"),
    ("allocation_2", "cesam_members_share", b"\xb2\xb2\xb2\xb2\xb2\xb2\xb2\xb2", "'²' digits"),
    ("allocation_2", "line_count", b"   ", "a blank number"),
]


@pytest.mark.parametrize("collect", [True, False], ids=["collected", "read-again"])
@pytest.mark.parametrize(
    ("record", "name", "raw", "why"), BAD_VALUES, ids=[b[3] for b in BAD_VALUES]
)
def test_a_refused_field_refuses_its_section_only(
    record: str, name: str, raw: bytes, why: str, collect: bool
) -> None:
    data = with_field(five_sections(), BAD_LINE, record, name, raw)
    planned = plan(data, collect)
    bad = planned.report.sections[BAD_SECTION - 1]
    assert [(p.code, p.line, p.detail) for p in bad.problems] == [
        (Code.FORMAT, BAD_LINE, f"{record}.{name}")
    ], why
    deliveries = [o.output for o in planned.outputs if o.output.kind == "delivery"]
    assert [o.participant_id for o in deliveries] == [
        r for n, r in enumerate(RECIPIENTS, start=1) if n != BAD_SECTION
    ]
    [log] = [o.output for o in planned.outputs if o.output.kind == "log"]
    assert log.name == f"ERREUR{CESAM_FILE[:-4]}_{BAD_SECTION}.log"
    assert [recipient for recipient, _, _ in planned.rows] == [o.participant_id for o in deliveries]
    for _, _, row in planned.rows:
        assert json.loads(row["fields_json"])["allocation_effective_date"] == "2008-01-01"


def test_the_unmutated_five_sections_are_all_delivered() -> None:
    planned = plan(five_sections(), collect=True)
    assert planned.report.fully_accepted and len(planned.rows) == len(RECIPIENTS)


@pytest.mark.parametrize(
    ("record", "name", "raw", "why"), BAD_VALUES, ids=[b[3] for b in BAD_VALUES]
)
def test_a_refused_field_decodes_to_its_own_text(
    record: str, name: str, raw: bytes, why: str
) -> None:
    line = with_field(five_sections(), BAD_LINE, record, name, raw).split(b"\n")[BAD_LINE - 1]
    text = line.decode(LAYOUT.encoding)
    spec = LAYOUT.records[record].field(name)
    values = codecs_for(LAYOUT)[record].decode(text)
    assert values[name] == (text[spec.start : spec.end].rstrip(" ") or None), why
    assert values["record_type"] == "2222222222"
    assert values["allocation_effective_date"] in (date(2008, 1, 1), "2008-13-01")


def test_the_checks_decode_no_record_of_a_refused_section(monkeypatch: pytest.MonkeyPatch) -> None:
    record, name, raw, _ = BAD_VALUES[0]
    data = with_field(five_sections(), BAD_LINE, record, name, raw)
    decoded: list[str] = []
    decode, lazy = RecordCodec.decode, RecordCodec.lazy

    def spy(codec: RecordCodec, text: str) -> dict[str, Value]:
        decoded.append(text)
        return decode(codec, text)

    def lazy_spy(codec: RecordCodec, text: str) -> LazyRecord:
        decoded.append(text)
        return lazy(codec, text)

    monkeypatch.setattr(RecordCodec, "decode", spy)
    monkeypatch.setattr(RecordCodec, "lazy", lazy_spy)
    assert len(plan(data, collect=True).rows) == len(RECIPIENTS) - 1
    lines = data.decode(LAYOUT.encoding).split("\n")
    good = [line for i, line in enumerate(lines) if i // 7 != BAD_SECTION - 1]
    # the head of each good section's flow: its grid lines are read when shown, from the content
    assert decoded == [line for line in good if line[:10] == "2222222222"]


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("date", "2008-13-01"),
        ("date", "0000-01-01"),  # found by test_fuzz: 'year 0 is out of range'
        ("date", "2008-12-\xe2\x82"),  # UTF-8 read as ISO-8859-1
        ("date", "20080101  "),
        ("date", "2008-W01-1"),
        ("time", "12        "),
        ("time", "24:00:00"),
        ("numeric", "1_000"),
        ("amount", "\x00\x00\x00"),  # found by test_fuzz: int() of NULs
        ("numeric", " 12"),
        ("numeric", "+12"),
        ("amount", "١٢٣"),  # Arabic-Indic digits: int() takes them, the checks do not
        ("signed_amount", "0012"),
        ("signed_amount", "+1_00"),
        ("signed_amount", "+"),
        ("signed_amount", "-000"),  # zero is written '+'
        ("rate", ""),
    ],
)
def test_a_value_not_of_its_kind_keeps_its_text(kind: str, raw: str) -> None:
    spec = FieldSpec("f", "f", 0, max(len(raw), 1), kind, True, decimals=2)
    assert decode_field(spec, raw) == (raw.rstrip(" ") or None)


@pytest.mark.parametrize(
    ("kind", "raw", "value"),
    [
        ("date", "2008-02-29", date(2008, 2, 29)),
        ("date", "          ", None),
        ("time", "23:59:59", time(23, 59, 59)),
        ("numeric", "012", 12),
        ("amount", "00012345", Decimal("123.45")),
        ("signed_amount", "-0012345", Decimal("-123.45")),
        ("signed_amount", "+0000000", Decimal("0.00")),
        ("text", "ABC  ", "ABC"),
    ],
)
def test_a_valid_value_decodes_to_its_type(kind: str, raw: str, value: object) -> None:
    spec = FieldSpec("f", "f", 0, len(raw), kind, True, decimals=2)
    assert decode_field(spec, raw) == value


def test_iter_flows_passes_over_what_has_no_layout() -> None:
    """A resumed job reads its file again: whatever `accepted` says, nothing raises."""
    lines = five_sections().split(b"\n")
    lines[1] = lines[1][:11]  # a head record cut after its state
    lines[2] = b"3333333333" + lines[2][10:]  # no such record in a répartition
    lines[8] = lines[8][:5]  # section 2 loses its head record
    data = b"\n".join(lines)
    accepted = {1: "REP", 2: "REP", 3: "XXX", 4: ""}
    flows = list(iter_flows(cut_lines(io.BytesIO(data)), LAYOUT, accepted))
    assert [(f.section, f.control, f.key) for f in flows] == [(1, "V", "")]
    assert flows[0].fields["allocation_effective_date"] is None
    assert len(flows[0].offices) == 3
    assert len(grid_records(data[flows[0].start : flows[0].end], LAYOUT, "allocation")) == 3


def test_a_lazy_record_reads_as_the_whole_decoded_record() -> None:
    """Field by field (each decoded alone when read) and whole, every record of the good
    samples gives what `decode` gives; an unknown name is a KeyError, as in a dict."""
    codecs = codecs_for(LAYOUT)
    seen = 0
    for path in sorted(SAMPLES.glob("*.edi")):
        for line in path.read_text(LAYOUT.encoding).splitlines():
            codec = next((c for c in codecs.values() if c.spec.marker == line[:10]), None)
            if codec is None:
                continue
            whole = codec.decode(line)
            assert {name: codec.lazy(line)[name] for name in whole} == whole
            lazy = codec.lazy(line)
            assert lazy == whole and dict(lazy) == whole and len(lazy) == len(whole)
            assert lazy.get("no such field") is None
            with pytest.raises(KeyError):
                codec.lazy(line)["no such field"]
            seen += 1
    assert seen > 20
