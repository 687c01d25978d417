"""Flows: the streaming second pass gives exactly the flows the check collected."""

from __future__ import annotations

import io

import pytest
from support import SAMPLES, manifest

from bdi.routing.flows import iter_flows
from bdi.routing.layout import default_layout
from bdi.routing.scan import CheckContext, SectionChecked, check_lines


@pytest.mark.parametrize("sample", manifest(), ids=lambda s: s["path"])
def test_second_pass_yields_the_checked_flows(sample: dict[str, str]) -> None:
    data = (SAMPLES / sample["path"]).read_bytes()
    ctx = CheckContext(sample["path"].split("/")[-1], sample["uploaded_by"], collect_flows=True)
    events = [e for e in check_lines(io.BytesIO(data), ctx) if isinstance(e, SectionChecked)]
    checked = [f for e in events for f in e.flows]
    accepted = {e.report.number: e.report.flow_code for e in events if e.report.accepted}
    assert list(iter_flows(io.BytesIO(data), default_layout(), accepted)) == checked
    assert checked or not accepted


def test_flow_keys_and_controls_of_the_samples() -> None:
    data = (SAMPLES / "PCIE000311_00311_000002.edi").read_bytes()
    [flow] = iter_flows(io.BytesIO(data), default_layout(), {1: "PRI"})
    assert flow.key == "200800311MAR0001234001|AV-2008-002|01"
    assert flow.control == "R"
    assert flow.reject_message == "TAUX DE COURTAGE DIFFERENT DU TAUX DE L'APERITEUR"
    data = (SAMPLES / "CCOU010234_00311_000006.edi").read_bytes()
    [account] = iter_flows(io.BytesIO(data), default_layout(), {1: "CPF"})
    assert account.key == "10234|EUR|2008030001"
    assert len(account.lines) == 7 and account.fields["balance"] is not None
