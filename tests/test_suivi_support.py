"""Shared by the Suivi tests: the samples routed through the real hub in the order of the
circuit, crafted follow-up files, and the sample referential loaded into the store.

(Named test_suivi_* to live beside the Suivi tests; it defines no test.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hubkit import HubUnderTest
from support import SAMPLES

from bdi.admin.wiring import service_for
from bdi.routing.writer import Record, Section, parse_file, write_file
from bdi.store.models import (
    Flow,
    FlowOccurrence,
    Job,
    Movement,
    Output,
)
from bdi.store.repo import Store

MAR = "200800311MAR0001234001"  # the seed 003 business (ALLIANZ GCS leads, SIACI brokers)
NAV = "200800638NAV0000077001"  # the incomplete répartition (AXA leads, COGEAS AASO)
BROKER, LEADER, CESAM = "COU010234", "CIE000311", "GIE000001"
GENERALI, AXA, COGEAS = "CIE000452", "CIE000638", "APE007566"
OUTSIDERS = ("COU010999", "AGT005120")

# every well-formed sample, in the order the circuit produces them
CIRCUIT = [
    "RCOU010234_00311_000001.edi",
    "RCOU010234_00311_000002.edi",
    "RCIE000311_00311_000001.edi",
    "RGIE000001_00311_000001.edi",
    "RGIE000001_00311_000002.edi",
    "RCIE000638_00638_000001.edi",
    "RAPE007566_00638_000001.edi",
    "PCOU010234_00311_000003.edi",
    "PCIE000311_00311_000002.edi",
    "PCIE000311_00311_000003.edi",
    "PGIE000001_00311_000001.edi",
    "BCOU010234_00311_000004.edi",
    "BGIE000001_00311_000002.edi",
    "DCOU010234_00311_000005.edi",
    "DCIE000311_00311_000004.edi",
    "CCOU010234_00311_000006.edi",
    "CCIE000311_00311_000005.edi",
    "IGIE000001_00311_000002.edi",
    "HGIE000001_00311_000003.edi",
    "SGIE000001_00311_000004.edi",
]


def uploader(name: str) -> str:
    """The sender EDI id of a conventional file name (type letter + sender + ...)."""
    return name[1:10]


async def send(hub: HubUnderTest, name: str, tmp: Path, data: bytes | None = None) -> None:
    """Upload one file as its sender and wait until the hub has routed it."""
    plain = data if data is not None else (SAMPLES / name).read_bytes()
    sender = uploader(name)
    await hub.upload(sender, name, hub.seal(sender, plain, tmp))
    await hub.settled()


async def load_referential(hub: HubUnderTest) -> None:
    """The sample referential, loaded the way the admin loads it."""
    text = (SAMPLES / "referentiel.toml").read_text(encoding="utf-8")
    await service_for(hub.server.hub, "test").load_referential(text)


async def route_circuit(hub: HubUnderTest, tmp: Path) -> None:
    """Every well-formed sample routed in the order of the circuit, referential loaded."""
    for name in CIRCUIT:
        await send(hub, name, tmp)
    await load_referential(hub)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def craft(name: str, change: Callable[[Section], Section]) -> bytes:
    """A sample file with each section changed (header and records as typed values)."""
    return write_file(change(s) for s in parse_file((SAMPLES / name).read_bytes()))


def readdress(sender: str, recipient: str) -> Callable[[Section], Section]:
    def change(section: Section) -> Section:
        header = {**section.header, "sender_id": sender, "recipient_id": recipient}
        return replace(section, header=header)

    return change


def only_flow(number: int) -> Callable[[Section], Section]:
    """Keep the `number`-th flow (0-based) of a section: its 2222222222 and what follows."""

    def change(section: Section) -> Section:
        flows: list[list[Record]] = []
        for record in section.records:
            if record.name.endswith("_2"):
                flows.append([])
            flows[-1].append(record)
        return replace(section, records=tuple(flows[number]))

    return change


def cesam_rejects(section: Section) -> Section:
    """The CESAM returns a flow rejected: every R record becomes C (§3.4)."""
    records = tuple(
        Record(r.name, {**r.values, "control_state": "C"})
        if r.values.get("control_state") == "R"
        else r
        for r in section.records
    )
    return replace(section, records=records)


def cesam_rejects_to_leader(section: Section) -> Section:
    return cesam_rejects(readdress(CESAM, LEADER)(section))


async def insert_allocations(
    store: Store, sender: str, recipient: str, count: int, insured: str = "ASSURE"
) -> list[int]:
    """`count` répartition flows sent from `sender` to `recipient`, written straight into the
    store (one job, one movement each) for volume tests; returns their flow ids."""
    now = datetime.now(UTC)
    async with store.session() as s:
        job = Job(
            participant_id=sender,
            upload_name="volume.edi",
            spool_name=f"v-{now.timestamp()}",
            size=0,
            received_at=now,
            state="done",
        )
        s.add(job)
        await s.flush()
        assert job.id is not None
        flow_ids = []
        for n in range(count):
            key = f"2008{recipient[-5:]}VOL{n:07d}001"
            output = Output(
                job_id=job.id,
                seq=n,
                kind="delivery",
                participant_id=recipient,
                name=f"R{sender}_{n:06d}.edi",
            )
            flow = Flow(layout="allocation", flow_key=key, optiflux_key=key)
            s.add_all([output, flow])
            await s.flush()
            assert output.id is not None and flow.id is not None
            movement = Movement(
                job_id=job.id,
                output_id=output.id,
                created_at=now + timedelta(microseconds=n),
                sender_id=sender,
                recipient_id=recipient,
                file_name=output.name,
                file_type="R",
                size=0,
                sha256="",
                content_path="none.edi",
                delivered=True,
            )
            s.add(movement)
            await s.flush()
            assert movement.id is not None
            fields = {
                "optiflux_key": key,
                "producer_code": "05120",
                "producer_policy_number": f"POL-{n}",
                "insured_name": f"{insured} {n}",
            }
            s.add(
                FlowOccurrence(
                    movement_id=movement.id,
                    flow_id=flow.id,
                    seq=0,
                    layout="allocation",
                    flow_code="REP",
                    optiflux_key=key,
                    control="S",
                    comment="",
                    fields_json=json.dumps(fields),
                    producer_code="05120",
                    insured_folded=f"{insured} {n}".upper(),
                )
            )
            flow_ids.append(flow.id)
        await s.commit()
    return flow_ids
