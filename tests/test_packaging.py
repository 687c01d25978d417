"""The package installs clean: no setuptools warning, and every data file is in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_builds_without_warnings_and_holds_the_data(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    output = built.stdout + built.stderr
    assert "absent from the `packages` configuration" not in output
    (wheel,) = tmp_path.glob("bdi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, pattern in [("demo_data", "*.edi"), ("demo_data", "*.toml")]:
        for f in (ROOT / "bdi" / folder).glob(pattern):
            assert f"bdi/{folder}/{f.name}" in names
    for sub in ("static", "templates"):
        for f in (ROOT / "suivi" / sub).iterdir():
            assert f"bdi/suivi/{sub}/{f.name}" in names
    assert "bdi/pipeline/workers.py" in names
    assert "bdi/routing/layout.toml" in names
