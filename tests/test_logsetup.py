"""Every log line is one JSON event, the standard library's too, and a flood of identical
warnings or errors is cut down to a burst per window, with the count of what was dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import structlog
from typer.testing import CliRunner

from bdi.cli import app
from bdi.logsetup import RateLimit

FLOOD = """
import asyncio, logging, structlog
from bdi.logsetup import configure_logging
configure_logging()
try:
    raise OSError(24, "Too many open files")
except OSError:
    for _ in range(5000):
        logging.getLogger("asyncio").error("socket.accept() out of system resource", exc_info=True)
logging.getLogger("uvicorn.error").info("Started server process")
log = structlog.get_logger("bdi.test")
for n in range(5000):
    log.error("job.failed", job=n)
log.info("server.started", port=1)
"""


def test_a_flood_is_json_and_cut_down() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FLOOD], capture_output=True, text=True, check=True, timeout=60
    )
    lines = done.stderr.splitlines()
    events = [json.loads(line) for line in lines]  # every line is JSON
    asyncio_errors = [e for e in events if e.get("logger") == "asyncio"]
    assert len(asyncio_errors) == 20
    assert "Traceback" in asyncio_errors[0]["exception"]
    assert [e["event"] for e in events if e.get("logger") == "uvicorn.error"] == [
        "Started server process"
    ]
    assert len([e for e in events if e["event"] == "job.failed"]) == 20
    assert events[-1]["event"] == "server.started"  # information is never cut
    assert len(lines) == 42


def test_the_next_record_after_a_window_tells_what_was_dropped() -> None:
    now = [0.0]
    limit = RateLimit(burst=2, window=10, clock=lambda: now[0])
    kind = ("asyncio", "boom", "error")
    assert [limit.allow(kind) for _ in range(5)] == [(True, 0), (True, 0)] + [(False, 0)] * 3
    assert limit.allow(("other", "boom", "error")) == (True, 0)
    now[0] = 10.0
    assert limit.allow(kind) == (True, 3)
    assert limit.allow(kind) == (True, 0)


def test_an_admin_command_run_in_process_leaves_logging_usable(tmp_path: Path) -> None:
    """CliRunner swaps sys.stderr for a stream it closes afterwards: the admin commands'
    events must not keep it (every later event of the process failed, 284 tests with it)."""
    data = tmp_path / "d"
    subprocess.run([str(Path(sys.executable).with_name("bdi")), "init", "--data", str(data)],
                   capture_output=True, check=True)  # fmt: skip
    result = CliRunner().invoke(app, ["admin", "bans", "list", "--data", str(data)])
    assert result.exit_code == 0, result.output
    structlog.get_logger("bdi.test").info("after.cli")  # raised ValueError: closed file
