"""`bdi init` and `bdi serve` as commands: idempotent init, graceful stop on a signal."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bdi.config import load_settings
from bdi.store import schema

BDI = Path(sys.executable).with_name("bdi")


def bdi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BDI), *args], capture_output=True, text=True, check=False)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith("S.")  # agent sockets come and go
    }


def test_init_creates_then_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "d"
    first = bdi("init", "--data", str(data))
    assert first.returncode == 0, first.stderr
    assert "admin API token (shown once):" in first.stdout
    for name in ("ssh_host_ed25519_key", "hub-public-key.asc", "hub-fingerprint"):
        assert (data / name).exists(), name
    assert schema.current(load_settings(None, data=data).db_url) == schema.head()
    assert (data / "ssh_host_ed25519_key").stat().st_mode & 0o077 == 0
    before = digest(data)
    second = bdi("init", "--data", str(data))
    assert second.returncode == 0
    assert "already initialised" in second.stdout
    assert "token" not in second.stdout
    assert digest(data) == before


def test_serve_refuses_an_uninitialised_folder(tmp_path: Path) -> None:
    result = bdi("serve", "--data", str(tmp_path / "nothing"), "--sftp-port", "0")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "bdi init" in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server never listened")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_gracefully(tmp_path: Path, sig: signal.Signals) -> None:
    data = tmp_path / "d"
    assert bdi("init", "--data", str(data)).returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [str(BDI), "serve", "--data", str(data), "--sftp-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_listening(port, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert b'"event": "server.stopped"' in err
    frozen = next(json.loads(line) for line in err.splitlines() if b'"heap.frozen"' in line)
    assert frozen["objects"] > 10_000  # the start-up heap, kept out of the collector's walks


def serving(data: Path, port: int) -> subprocess.Popen[bytes]:
    argv = [str(BDI), "serve", "--data", str(data), "--sftp-port", str(port), "--web-port", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, process)
    return process


@pytest.mark.sqlite_only  # on PostgreSQL a second node is welcome: tests/test_nodes.py
def test_a_second_server_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert bdi("init", "--data", str(data)).returncode == 0
    port = free_port()
    first = serving(data, port)
    try:
        second = bdi("serve", "--data", str(data), "--sftp-port", "0", "--web-port", "0")
        assert second.returncode != 0
        assert "already running" in second.stderr and second.stderr.count("\n") == 1
        assert first.poll() is None
    finally:
        first.terminate()
        assert first.wait(timeout=30) == 0
    again = serving(data, port)  # the lock died with its holder
    again.terminate()
    assert again.wait(timeout=30) == 0
