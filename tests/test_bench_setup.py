"""The benchmarks' set-ups still pass the hub's own rules (they are not run by CI: a rule of
the hub that a set-up breaks would only show at the next benchmark run, as the crowd's did
when a key registered twice was refused). Each runs small, in a fresh process, with the
project's interpreter and `bin/bdi`, from the bench folder as `bench/run.py` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

CROWD = """
import asyncio, json, sys, tempfile
from pathlib import Path
import crowd, soak_support
crowd.PARTICIPANTS = 3
work = Path(sys.argv[1])
with crowd.workplace("setup", 3, False, "hub.log", print) as place:
    for edi_id, home in zip((crowd.CANARY, crowd.CANARY_TO), place.homes):
        place.parties[edi_id] = soak_support.make_party(edi_id, home)
    keys = crowd.openpgp_keys(place.homes[2], crowd.PARTICIPANTS)
    try:
        crowd.prepare(crowd.BDI, work / "data", place.parties, work)
        members = asyncio.run(crowd.register_crowd(work / "data", keys))
    finally:
        crowd.kill_agent(work / "data" / "gnupg")
    place.passed = True
    print(json.dumps({"members": [m.edi_id for m in members], "keys": len(set(keys))}))
"""

HUB = """
import asyncio, json, sys
from pathlib import Path
import hub_bench
from bdi.config import load_settings
work = Path(sys.argv[1]) / "work"
settings = load_settings(None, data=work / "data", sftp_port=0, host="127.0.0.1")
with hub_bench.bench_parties(work, [work / "data"]) as parties:
    hub = asyncio.run(hub_bench.prepare(settings, list(parties.values())))
    print(json.dumps({"registered": sorted(hub.passwords)}))
"""


def run_setup(code: str, work: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code, str(work)],
        cwd=BENCH, capture_output=True, text=True, timeout=300, check=False,
        env={"PYTHONPATH": str(BENCH), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_the_crowd_bench_registers_its_participants_each_with_its_own_key(
    tmp_path: Path,
) -> None:
    result = run_setup(CROWD, tmp_path)
    assert result == {"members": ["COU800000", "COU800001", "COU800002"], "keys": 3}


@pytest.mark.slow
def test_the_hub_bench_registers_its_two_parties(tmp_path: Path) -> None:
    assert run_setup(HUB, tmp_path) == {"registered": ["CIE000311", "COU010234"]}
