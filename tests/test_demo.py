"""`bdi demo` prepares a demo market once and reuses it; its data are the spec's samples."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
from support import SAMPLES

from bdi.admin.wiring import admin_service
from bdi.config import load_settings
from bdi.demo import demo_files, prepare_demo

BDI = Path(sys.executable).with_name("bdi")


def test_packaged_demo_data_are_the_spec_samples() -> None:
    files = demo_files()
    expected = {p.name for p in SAMPLES.glob("*.edi")} | {"referentiel.toml"}
    assert set(files) == expected
    assert all(files[name] == (SAMPLES / name).read_bytes() for name in expected)


@pytest.fixture
def demo() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="d", dir="/tmp"))  # short: GnuPG socket paths
    yield folder
    for home in [*folder.iterdir(), *folder.glob("*/*")]:  # kit homes, here or a level down
        if (home / "gnupg").is_dir():
            subprocess.run(["gpgconf", "--homedir", str(home / "gnupg"), "--kill", "gpg-agent"],
                           check=False)  # fmt: skip
    shutil.rmtree(folder)


def passwords_in(demo: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in demo.glob("*/password")}


async def test_demo_twice_registers_once(tmp_path: Path, demo: Path) -> None:
    settings = load_settings(None, data=tmp_path / "data", sftp_port=2299, web_port=8099)
    await prepare_demo(settings, demo)
    passwords = passwords_in(demo)
    await prepare_demo(settings, demo)
    async with admin_service(settings) as service:
        registered = {p["id"] for p in await service.list()}
    assert passwords_in(demo) == passwords  # nothing reissued
    assert set(passwords) == registered == {
        "GIE000001", "COU010234", "COU010999", "AGT005120",
        "CIE000311", "CIE000452", "CIE000638", "APE007566",
    }  # fmt: skip


def read_lines(stream: IO[str] | None, count: int, timeout: float = 120) -> list[str]:
    """`count` lines of a child's stdout, or fail after `timeout` seconds."""
    assert stream is not None
    lines: list[str] = []

    def read() -> None:
        for _ in range(count):
            lines.append(stream.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert not reader.is_alive(), f"only {lines} were printed"
    return lines


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def test_the_walk_through_is_printed_once_the_ports_are_bound_and_works_as_printed(
    demo: Path,
) -> None:
    """Run as `make run` runs it: by the venv's path, which is not on the user's PATH; on
    ports 0, so that the ports printed can only be those bound."""
    command = os.path.relpath(BDI, demo)  # like `.venv/bin/bdi demo` from the repository
    argv = [command, "demo", "--data", "data", "--sftp-port", "0", "--web-port", "0"]
    with (demo / "stderr").open("wb") as err:
        process = subprocess.Popen(argv, cwd=demo, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        header, *steps = read_lines(process.stdout, 4)
        found = re.search(r"SFTP on ([\d.]+):(\d+), Suivi on http://[\d.]+:(\d+)/", header)
        assert found, header
        host, sftp, web = found.group(1), int(found.group(2)), int(found.group(3))
        assert sftp and web and listening(host, sftp) and listening(host, web)
        assert [s[:3] for s in steps] == ["1. ", "2. ", "3. "], steps
        send, receive, browse = (s[3:].strip() for s in steps)
        assert send.startswith(f"{command} kit send ") and receive.startswith(f"{command} kit ")
        shell = {**os.environ, "PATH": "/usr/bin:/bin"}  # no venv on it, no `bdi`
        for step in (send, receive):
            done = subprocess.run(["bash", "-c", step], cwd=demo, env=shell, capture_output=True,
                                  text=True, timeout=120, check=False)  # fmt: skip
            assert done.returncode == 0, (step, done.stderr)
        received = demo / "demo" / "CIE000311" / "received"
        assert (received / "RCOU010234_00311_000001.edi").is_file()
        opened = re.fullmatch(r"open (\S+) and log in as CIE000311 .* in (\S+)", browse)
        assert opened, browse
        assert httpx.get(opened.group(1) + "connexion").status_code == 200
        assert (demo / shlex.split(opened.group(2))[0]).is_file()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


@pytest.mark.parametrize("option", ["--sftp-port", "--web-port"])
def test_a_port_taken_is_one_line_and_no_walk_through(tmp_path: Path, option: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        ports = {"--sftp-port": "0", "--web-port": "0", option: str(port)}
        folders = ["--data", str(tmp_path / "data"), "--demo", str(tmp_path / "demo")]
        argv = [str(BDI), "demo", *folders, *(x for kv in ports.items() for x in kv)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert result.stdout == ""  # no walk-through
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and option in result.stderr
    assert not (tmp_path / "demo").exists()  # refused before anything was prepared
