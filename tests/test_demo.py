"""`bdi demo` prepares a demo market once and reuses it; its data are the spec's samples."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import SAMPLES

from bdi.admin.wiring import admin_service
from bdi.config import load_settings
from bdi.demo import demo_files, prepare_demo


def test_packaged_demo_data_are_the_spec_samples() -> None:
    files = demo_files()
    expected = {p.name for p in SAMPLES.glob("*.edi")} | {"referentiel.toml"}
    assert set(files) == expected
    assert all(files[name] == (SAMPLES / name).read_bytes() for name in expected)


@pytest.fixture
def demo() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="d", dir="/tmp"))  # short: GnuPG socket paths
    yield folder
    for home in folder.iterdir():
        subprocess.run(["gpgconf", "--homedir", str(home / "gnupg"), "--kill", "gpg-agent"],
                       check=False)  # fmt: skip
    shutil.rmtree(folder)


def passwords_in(demo: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in demo.glob("*/password")}


async def test_demo_twice_registers_once(tmp_path: Path, demo: Path) -> None:
    settings = load_settings(None, data=tmp_path / "data", sftp_port=2299, web_port=8099)
    steps = await prepare_demo(settings, demo)
    passwords = passwords_in(demo)
    again = await prepare_demo(settings, demo)
    async with admin_service(settings) as service:
        registered = {p["id"] for p in await service.list()}
    assert steps == again and len(steps) == 3
    assert "bdi kit send" in steps[0] and "bdi kit receive" in steps[1]
    assert passwords_in(demo) == passwords  # nothing reissued
    assert set(passwords) == registered == {
        "GIE000001", "COU010234", "COU010999", "AGT005120",
        "CIE000311", "CIE000452", "CIE000638", "APE007566",
    }  # fmt: skip
