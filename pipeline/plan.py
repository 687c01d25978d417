"""Turn a checked upload into the outputs it owes: deliveries (with their movements and flow
occurrences) and `.log` files. Pure: names are chosen by the caller-supplied `name_for`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache

from bdi.routing.fields import Value
from bdi.routing.layout import Layout
from bdi.routing.logs import LogFile
from bdi.routing.model import FileReport, Flow, SectionReport
from bdi.store.folding import fold
from bdi.store.jobs import MovementRef, Occurrence, OutputRef, PlannedOutput

NameFor = Callable[[str, str], str]  # (participant, wanted name) -> free name
LOG_IN_STORE = 64 * 1024  # a `.log` up to this size is kept in the store's inbox


@dataclass(frozen=True, slots=True)
class Content:
    """One recipient's plain content, kept for the Suivi: a file of the contents folder
    (`name`), or, when small, bytes recorded in the store with its movement (`name` "")."""

    name: str
    sha256: str
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Upload:
    job_id: int
    sender: str
    upload_name: str
    received_at: datetime


def _json_value(value: Value) -> str | int | None:
    if isinstance(value, Decimal | date | time):
        return str(value)
    return value


def fields_json(fields: Mapping[str, Value]) -> str:
    return json.dumps(_plain(fields))


def comment(layout: Layout, sender: str, recipient: str, flow: Flow) -> str:
    """The interpretation label of §8.3, with the reject reason appended; none for accounts."""
    if flow.layout == "financial_account":
        return ""
    label = _label(layout, sender[:3], recipient[:3], flow.control)
    if flow.control == "R" and flow.reject_message:
        return f"{label} : {flow.reject_message}" if label else flow.reject_message
    return label


@cache
def _label(layout: Layout, sender_class: str, recipient_class: str, control: str) -> str:
    """The label of the first rule for those classes and state: the same for each of a big
    file's flows."""
    states = {"R": {"R", "C"}}.get(control, {control})
    return next(
        (
            rule.label
            for rule in layout.interpretations
            if sender_class in rule.senders
            and recipient_class in rule.recipients
            and states & rule.states
        ),
        "",
    )


def occurrence(
    layout: Layout, upload: Upload, recipient: str, flow: Flow, seq: int, shift: int = 0
) -> Occurrence:
    """The row of one flow in one recipient's movement (the store adds the ids); `shift`
    takes the flow's bytes from the checked file to the recipient's content (`shifts`)."""
    row = {
        "seq": seq,
        "layout": flow.layout,
        "flow_code": flow.flow_code,
        "optiflux_key": flow.optiflux_key,
        "control": flow.control,
        "comment": comment(layout, upload.sender, recipient, flow),
        "fields_json": flow.fields_json or fields_json(flow.fields),
        "lines_json": _json_list([{"control": line.control, **_plain(line.fields)}
                                  for line in flow.lines]),
        "grid_json": "[]",  # read from the content now (`content_start`): see FlowOccurrence
        "content_start": flow.start + shift,
        "content_end": flow.end + shift,
        "office_codes": office_codes(flow.offices),
        "producer_code": _text(flow.fields.get("producer_code")),
        "insured_folded": fold(_text(flow.fields.get("insured_name"))),
    }  # fmt: skip
    return recipient, flow.key, row


def office_codes(offices: Sequence[str]) -> str:
    """' 00311 00452 ': each code between spaces, so that a search for one is a substring."""
    return f" {' '.join(offices)} " if offices else ""


def shifts(spans: Iterable[tuple[int, int]]) -> dict[int, int]:
    """The spans of one recipient's content in the checked file, in order: what to add to a
    byte's offset in the file to have its offset in the content, by each span's start."""
    out, size = {}, 0
    for start, end in spans:
        out[start] = size - start
        size += end - start
    return out


_AS_IS = frozenset({str, int, type(None)})  # most values: no conversion to call for


def _plain(fields: Mapping[str, Value]) -> dict[str, str | int | None]:
    return {
        k: v if type(v) in _AS_IS else _json_value(v)  # type: ignore[misc]
        for k, v in fields.items()
        if k != "filler"
    }


def _json_list(items: list[dict[str, str | int | None]]) -> str:
    return json.dumps(items) if items else "[]"


def _text(value: Value) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def group_by_recipient(sections: Sequence[SectionReport]) -> dict[str, list[SectionReport]]:
    groups: dict[str, list[SectionReport]] = {}
    for section in sections:
        groups.setdefault(section.recipient_id, []).append(section)
    return groups


def delivery(
    upload: Upload,
    recipient: str,
    sections: list[SectionReport],
    name: str,
    seq: int,
    content: Content,
    sealed: bytes | None = None,
) -> PlannedOutput:
    """One recipient's file: its output and its movement (flows are stored afterwards);
    `sealed`: the file itself, when it is to be kept in the store's inbox."""
    output = OutputRef(
        job_id=upload.job_id,
        seq=seq,
        kind="delivery",
        participant_id=recipient,
        name=name,
        ranges=",".join(f"{s.start}-{s.end}" for s in sections),
    )
    movement = MovementRef(
        job_id=upload.job_id,
        created_at=upload.received_at,
        sender_id=upload.sender,
        recipient_id=recipient,
        file_name=name,
        file_type=sections[0].file_type,
        size=sum(s.end - s.start for s in sections),
        sha256=content.sha256,
        content_path=content.name,
    )
    return PlannedOutput(output, movement, content.data, sealed)


def log_output(upload: Upload, log: LogFile, name: str, seq: int) -> PlannedOutput:
    output = OutputRef(
        job_id=upload.job_id,
        seq=seq,
        kind="log",
        participant_id=upload.sender,
        name=name,
        text=log.text(),
    )
    data = output.text.encode("utf-8")
    return PlannedOutput(output, stored=data if len(data) <= LOG_IN_STORE else None)


def plan_outputs(
    upload: Upload,
    report: FileReport | None,
    logs: Sequence[LogFile],
    name_for: NameFor,
    content_for: Callable[[str], Content],
    sealed_for: Callable[[str], bytes | None] = lambda _: None,
) -> list[PlannedOutput]:
    """Deliveries first (one per recipient, sections in file order), then the `.log` files.
    `sealed_for`: a recipient's delivery when it was sealed in memory (kept in the store)."""
    planned: list[PlannedOutput] = []
    if report is not None:
        for recipient, sections in group_by_recipient(report.delivered_sections).items():
            seq = len(planned)
            name = name_for(recipient, upload.upload_name)
            content = content_for(recipient)
            sealed = sealed_for(recipient)
            planned.append(delivery(upload, recipient, sections, name, seq, content, sealed))
    for log in logs:
        planned.append(log_output(upload, log, name_for(upload.sender, log.name), len(planned)))
    return planned
