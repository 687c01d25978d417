"""Every sample of the specification gives, through `bdi check`, the manifest's outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import SAMPLES, manifest

BDI = Path(sys.executable).with_name("bdi")


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BDI), "check", *args], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("sample", manifest(), ids=lambda s: s["path"])
def test_sample_outcome_matches_manifest(sample: dict[str, Any]) -> None:
    result = run_check(
        str(SAMPLES / sample["path"]),
        "--uploader",
        sample["uploaded_by"],
        "--participants",
        str(SAMPLES / "referentiel.toml"),
        "--json",
    )
    [report] = json.loads(result.stdout)
    got = [
        (s["number"], s["recipient"], s["outcome"], [p["code"] for p in s["problems"]])
        for s in report["sections"]
    ]
    expected = [
        (s["number"], s["recipient"], s["expect"], s.get("problems", []))
        for s in sample["sections"]
    ]
    assert report["problems"] == []
    assert got == expected
    refused = any(s["expect"] == "refuse" for s in sample["sections"])
    assert result.returncode == (1 if refused else 0), result.stderr
    log_names = [log["name"] for log in report["logs"]]
    stem = Path(sample["path"]).name.removesuffix(".edi")
    assert log_names == [
        f"ERREUR{stem}_{s['number']}.log" for s in sample["sections"] if s["expect"] == "refuse"
    ]


def test_seed_example_log_line() -> None:
    result = run_check(str(SAMPLES / "broken/PCOU010234_00311_000090.edi"), "--json")
    [report] = json.loads(result.stdout)
    [log] = report["logs"]
    assert log["name"] == "ERREURPCOU010234_00311_000090_2.log"
    [line] = log["lines"]
    assert line[19:] == (
        " PCOU010234_00311_000090.edi section 2 line 8 LONGUEUR "
        "longueur de fichier incorrect. (639 au lieu de 640)"
    )


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_check(str(tmp_path / "absent.edi"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "absent.edi" in result.stderr


def test_bad_referential_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "ref.toml"
    bad.write_text('[participants]\n"1234" = { type = "C", name = "X", edi_id = "" }\n')
    result = run_check(str(SAMPLES / "RCOU010234_00311_000001.edi"), "--participants", str(bad))
    assert result.returncode == 2
    assert "line 2" in result.stderr
