"""A throwaway PostgreSQL cluster for the suite's PostgreSQL run (`BDI_TEST_DATABASE=postgresql`).

Debian's `postgresql` package: `initdb` and `pg_ctl` from /usr/lib/postgresql/*/bin, run as
the `postgres` user when the tests run as root (PostgreSQL refuses root). The cluster only
listens on a Unix socket in its own folder, trusts local connections, and skips fsync: it
dies with the test run.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

ENGINE_VARIABLE = "BDI_TEST_DATABASE"
FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"  # dies with the run


def wanted() -> bool:
    return os.environ.get(ENGINE_VARIABLE, "sqlite") == "postgresql"


def _bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}")) or []
    if found:
        return str(found[-1])
    on_path = shutil.which(name)
    if on_path is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package")
    return on_path


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(*argv: str, check: bool = True) -> None:
    subprocess.run(_as_owner(list(argv)), check=check, capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def cluster(settings: str = FAST) -> Iterator[str]:
    """Start a cluster; yield a SQLAlchemy URL template naming each data folder's database.
    `settings`: server options (`-c name=value ...`); the default skips fsync (benchmarks
    that measure commits give "" for PostgreSQL's own durable defaults)."""
    folder = Path(tempfile.mkdtemp(prefix="bdi-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    data, port = folder / "cluster", _free_port()
    _run(_bin("initdb"), "-D", str(data), "-U", "bdi", "--auth=trust", "-E", "UTF8",
         "--locale=C.UTF-8")  # fmt: skip
    options = f"-k {folder} -p {port} -c listen_addresses='' -c max_connections=400 " + settings
    _run(_bin("pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(folder / "log"), "start")
    try:
        yield f"postgresql+psycopg://bdi@/{{data}}?host={folder}&port={port}"
    finally:
        _run(_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(folder, ignore_errors=True)
