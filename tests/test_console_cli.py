"""`bdi admin operator …`, `bdi admin inboxes` and `bdi admin audit` against the data folder of
a running hub: the same acts as the console, seen at once by it (a password issued by the CLI
opens the console; disabling from the CLI ends the console session)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hubkit import HubUnderTest, hub_running
from test_console_support import console, log_in

pytestmark = pytest.mark.asyncio(loop_scope="module")
BDI = Path(sys.executable).with_name("bdi")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HubUnderTest]:
    async with hub_running(tmp_path_factory.mktemp("console-cli") / "data", {}) as running:
        yield running


async def bdi(hub: HubUnderTest, *args: str, ok: bool = True) -> str:
    """A `bdi admin` command on the hub's data folder; its stdout (stderr if it failed)."""
    proc = await asyncio.create_subprocess_exec(
        str(BDI), "admin", *args, "--data", str(hub.settings.data),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert (proc.returncode == 0) == ok, (args, out, err)
    return (out if ok else err).decode()


async def test_an_operator_made_by_the_cli_uses_the_console(hub: HubUnderTest) -> None:
    added = json.loads(await bdi(hub, "operator", "add", "paul.leroy", "--email", "p@l.test",
                                 "--json"))  # fmt: skip
    assert added["name"] == "paul.leroy" and len(added["password"]) == 24
    listed = json.loads(await bdi(hub, "operator", "list", "--json"))
    assert [(o["name"], o["state"], o["totp"]) for o in listed] == [("paul.leroy", "active", False)]
    async with console(hub) as c:
        assert (await log_in(c, "paul.leroy", added["password"])).status_code == 303
        assert (await c.get("/exploitation/participants")).status_code == 200
        assert "disabled" in await bdi(hub, "operator", "disable", "paul.leroy")
        assert (await c.get("/exploitation/participants")).status_code == 303  # ended at once
        assert (await log_in(c, "paul.leroy", added["password"])).status_code == 401
    await bdi(hub, "operator", "enable", "paul.leroy")
    reset = json.loads(await bdi(hub, "operator", "reset-password", "paul.leroy", "--reset-totp",
                                 "--json"))  # fmt: skip
    async with console(hub) as c:
        assert (await log_in(c, "paul.leroy", added["password"])).status_code == 401
        assert (await log_in(c, "paul.leroy", reset["password"])).status_code == 303
    trail = json.loads(await bdi(hub, "audit", "--search", "paul.leroy operator", "--json"))
    actions = ["operator.reset-password", "operator.enable", "operator.disable", "operator.add"]
    assert [e["action"] for e in trail if e["actor"] == "cli"] == actions
    assert all(e["address"] is None for e in trail if e["actor"] == "cli")
    assert any(e["action"] == "operator.login" and e["address"] == "127.0.0.1" for e in trail)


async def test_refusals_inboxes_and_audit_as_text(hub: HubUnderTest) -> None:
    """Independent commands, run together (each `bdi` start costs seconds)."""
    refused = [("operator", "add", "Bad Name", "--email", "x@y.test"),
               ("operator", "disable", "nobody"), ("audit", "--from", "2024-13-01")]  # fmt: skip
    *errors, inboxes, old = await asyncio.gather(
        *(bdi(hub, *args, ok=False) for args in refused),
        bdi(hub, "inboxes", "--json"),
        bdi(hub, "audit", "--to", "2001-01-01"),
    )
    for err in errors:
        assert err.startswith("bdi: ") and err.count("\n") == 1, err
    assert json.loads(inboxes) == [] and old == "no event\n"
