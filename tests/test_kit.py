"""Admin and participant kit through a real `bdi serve` stack: registration by CLI and API,
a full exchange between kits, key rotation, a crashed `receive`, API authentication."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hubkit import HubUnderTest, hub_running, run_bdi, short_home
from openapi_spec_validator import validate
from support import SAMPLES

BDI = Path(sys.executable).with_name("bdi")


@dataclass
class Kit:
    edi_id: str
    home: Path
    public_key: Path

    def password_file(self) -> Path:
        return self.home / "password"


@pytest.fixture
def homes() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for home in made:
        subprocess.run(["gpgconf", "--homedir", str(home / "gnupg"), "--kill", "gpg-agent"],
                       check=False)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)


async def keygen(edi_id: str, homes: list[Path]) -> Kit:
    home = short_home()
    homes.append(home)
    out = json.loads((await run_bdi("kit", "keygen", edi_id, "--home", str(home), "--json")).stdout)
    return Kit(edi_id, home, Path(out["public_key"]))


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[HubUnderTest]:
    async with hub_running(tmp_path / "data", {}) as running:
        yield running


async def admin_token(hub: HubUnderTest) -> str:
    out = await run_bdi("admin", "token", "rotate", "--data", str(hub.settings.data), "--json")
    return str(json.loads(out.stdout)["token"])


async def register_cli(hub: HubUnderTest, kit: Kit, *extra: str) -> None:
    out = await run_bdi(
        "admin", "participant", "add", kit.edi_id, "--name", kit.edi_id,
        "--email", "x@example.test", "--pgp-key", str(kit.public_key),
        "--data", str(hub.settings.data), "--json", *extra,
    )  # fmt: skip
    kit.password_file().write_text(json.loads(out.stdout)["password"])


def api(hub: HubUnderTest, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{hub.server.web_port}/api/admin", headers=headers
    )


async def register_api(hub: HubUnderTest, kit: Kit, token: str) -> None:
    async with api(hub, token) as client:
        body = {"id": kit.edi_id, "name": kit.edi_id, "email": "x@example.test",
                "pgp_key": kit.public_key.read_text()}  # fmt: skip
        response = await client.post("/participants", json=body)
    assert response.status_code == 201, response.text
    kit.password_file().write_text(response.json()["password"])


def remote(hub: HubUnderTest, kit: Kit) -> list[str]:
    return [
        "--home", str(kit.home), "--host", "127.0.0.1", "--port", str(hub.port),
        "--user", kit.edi_id, "--password-file", str(kit.password_file()),
    ]  # fmt: skip


async def send(hub: HubUnderTest, kit: Kit, *files: Path, ok: bool = True) -> list[Any]:
    out = await run_bdi(
        "kit", "send", *map(str, files), *remote(hub, kit), "--wait",
        "--web-port", str(hub.server.web_port), "--json", ok=ok,
    )  # fmt: skip
    return list(json.loads(out.stdout))


async def receive(hub: HubUnderTest, kit: Kit, to: Path) -> list[Any]:
    out = await run_bdi("kit", "receive", *remote(hub, kit), "--to", str(to), "--json")
    return list(json.loads(out.stdout))


async def test_full_exchange_between_kits(
    hub: HubUnderTest, homes: list[Path], tmp_path: Path
) -> None:
    broker, leader, cesam, axa = [
        await keygen(i, homes) for i in ("COU010234", "CIE000311", "GIE000001", "CIE000638")
    ]
    await register_cli(hub, broker)
    await register_cli(hub, leader, "--role", "compagnie")
    token = await admin_token(hub)
    await register_api(hub, cesam, token)
    await register_api(hub, axa, token)

    repartition = SAMPLES / "RCOU010234_00311_000001.edi"
    [sent] = await send(hub, broker, repartition)
    assert sent == {"file": repartition.name, "status": "delivered", "detail": "CIE000311"}
    got = await receive(hub, leader, tmp_path / "leader")
    assert [g["file"] for g in got] == [repartition.name]
    assert (tmp_path / "leader" / repartition.name).read_bytes() == repartition.read_bytes()

    validated = SAMPLES / "RCIE000311_00311_000001.edi"
    [sent] = await send(hub, leader, validated)
    assert sent["status"] == "delivered"
    await receive(hub, cesam, tmp_path / "cesam")
    assert (tmp_path / "cesam" / validated.name).read_bytes() == validated.read_bytes()

    broken = SAMPLES / "broken/RCOU010234_00311_000094.edi"
    [refused] = await send(hub, broker, broken, ok=False)
    assert refused == {"file": broken.name, "status": "refused",
                       "detail": "ERREURRCOU010234_00311_000094_1.log"}  # fmt: skip
    await receive(hub, broker, tmp_path / "broker")
    log = (tmp_path / "broker" / "ERREURRCOU010234_00311_000094_1.log").read_text()
    assert " SIGNATURE " in log
    assert await receive(hub, broker, tmp_path / "broker") == []  # nothing left, nothing twice


async def test_set_key_refuses_the_old_key(
    hub: HubUnderTest, homes: list[Path], tmp_path: Path
) -> None:
    broker, leader = await keygen("COU010234", homes), await keygen("CIE000311", homes)
    await register_cli(hub, broker)
    await register_cli(hub, leader)
    old_home = tmp_path / "old"
    shutil.copytree(broker.home, old_home, ignore=shutil.ignore_patterns("S.*"))
    replacement = await keygen("COU010234", homes)
    await run_bdi("admin", "participant", "set-key", "COU010234", "--pgp-key",
              str(replacement.public_key), "--data", str(hub.settings.data))  # fmt: skip
    shutil.copy(broker.password_file(), replacement.password_file())
    sample = SAMPLES / "RCOU010234_00311_000001.edi"
    [refused] = await send(hub, broker, sample, ok=False)  # signed with the old key
    assert refused["status"] == "refused"
    await receive(hub, broker, tmp_path / "broker")
    log = (tmp_path / "broker" / "ERREURRCOU010234_00311_000001.log").read_text()
    assert " DECHIFFREMENT " in log
    [sent] = await send(hub, replacement, sample)
    assert sent["status"] == "delivered"


async def test_bad_registrations_change_nothing(
    hub: HubUnderTest, homes: list[Path], tmp_path: Path
) -> None:
    kit = await keygen("COU010234", homes)
    await register_cli(hub, kit)
    data = str(hub.settings.data)
    garbage = tmp_path / "garbage.asc"
    garbage.write_text("not a key\n")
    sign_only = tmp_path / "sign-only.asc"
    sign_only.write_bytes(make_key(tmp_path, "sign", expire="never"))
    expired = tmp_path / "expired.asc"
    expired.write_bytes(make_key(tmp_path, "expired", expire="2020-01-01"))
    cases = [
        (["XYZ010234", "--pgp-key", str(kit.public_key)], "malformed EDI identifier"),
        (["CIE000311", "--role", "pirate", "--pgp-key", str(kit.public_key)], "unknown role"),
        (["CIE000311", "--role", "courtier", "--pgp-key", str(kit.public_key)], "does not agree"),
        (["COU010234", "--pgp-key", str(kit.public_key)], "already exists"),
        (["CIE000311", "--pgp-key", str(kit.public_key)], "already that of COU010234"),
        (["CIE000311", "--pgp-key", str(garbage)], ""),
        (["CIE000311", "--pgp-key", str(sign_only)], "encrypt"),
        (["CIE000311", "--pgp-key", str(expired)], "expired"),
    ]
    before = json.loads(
        (await run_bdi("admin", "participant", "list", "--data", data, "--json")).stdout
    )
    for args, reason in cases:
        add = ("admin", "participant", "add", *args, "--name", "N", "--email", "e@x")
        result = await run_bdi(*add, "--data", data, ok=False)
        assert result.returncode == 1, args
        assert result.stderr.count("\n") == 1 and reason in result.stderr, (args, result.stderr)
    after = json.loads(
        (await run_bdi("admin", "participant", "list", "--data", data, "--json")).stdout
    )
    assert after == before
    other = await keygen("CIE000311", homes)
    await register_cli(hub, other)
    before = json.loads(
        (await run_bdi("admin", "participant", "list", "--data", data, "--json")).stdout
    )
    set_key = ("admin", "participant", "set-key", "CIE000311", "--pgp-key", str(kit.public_key))
    result = await run_bdi(*set_key, "--data", data, ok=False)
    assert result.returncode == 1 and "already that of COU010234" in result.stderr
    after = json.loads(
        (await run_bdi("admin", "participant", "list", "--data", data, "--json")).stdout
    )
    assert after == before


def make_key(tmp_path: Path, uid: str, expire: str) -> bytes:
    """A key gpg made itself: sign-only (no encryption subkey) or long expired."""
    home = short_home()
    gpg = ["gpg", "--homedir", str(home), "--batch", "--passphrase", ""]
    if expire != "never":
        gpg += ["--faked-system-time", "20190101T000000"]
    try:
        subprocess.run([*gpg, "--quick-gen-key", uid, "ed25519", "sign", expire],
                       check=True, capture_output=True)  # fmt: skip
        if expire != "never":
            listing = subprocess.run([*gpg, "--with-colons", "--list-keys"], check=True,
                                     capture_output=True, text=True).stdout  # fmt: skip
            fpr = next(
                line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
            )
            subprocess.run([*gpg, "--quick-add-key", fpr, "cv25519", "encr", expire],
                           check=True, capture_output=True)  # fmt: skip
        return subprocess.run([*gpg, "--armor", "--export"], check=True,
                              capture_output=True).stdout  # fmt: skip
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
        shutil.rmtree(home, ignore_errors=True)


async def test_receive_killed_midway_ends_exactly_once(
    hub: HubUnderTest, homes: list[Path], tmp_path: Path
) -> None:
    broker, leader = await keygen("COU010234", homes), await keygen("CIE000311", homes)
    await register_cli(hub, broker)
    await register_cli(hub, leader)
    sources = []
    base = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
    for n in range(12):
        path = tmp_path / f"RCOU010234_00311_{n:06d}.edi"
        path.write_bytes(base)
        sources.append(path)
    await run_bdi("kit", "send", *map(str, sources), *remote(hub, broker))
    await hub.settled()
    to = tmp_path / "received"
    proc = await asyncio.create_subprocess_exec(
        str(BDI), "kit", "receive", *remote(hub, leader), "--to", str(to),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(60):
        while not (to.exists() and any(to.iterdir())):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    await receive(hub, leader, to)
    names = sorted(p.name for p in to.iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in sources)
    assert all((to / n).read_bytes() == base for n in names)


async def test_admin_api_needs_its_token(hub: HubUnderTest, homes: list[Path]) -> None:
    kit = await keygen("COU010234", homes)
    token = await admin_token(hub)
    body = {"id": kit.edi_id, "name": "N", "email": "e@x", "pgp_key": kit.public_key.read_text()}
    for bad in (None, "wrong", token + "x"):
        async with api(hub, bad) as client:
            assert (await client.post("/participants", json=body)).status_code == 401
            assert (await client.get("/participants")).status_code == 401
    async with api(hub, token) as client:
        assert (await client.get("/participants")).json() == []
        document = (await client.get("/openapi.json")).json()
        assert (await client.get("/participants/COU999999")).status_code == 404
        rotated = (await client.post("/token/rotate")).json()["token"]
        assert (await client.get("/participants")).status_code == 401  # the old token is dead
    async with api(hub, rotated) as client:
        assert (await client.get("/participants")).status_code == 200
    validate(document)
    assert set(document["paths"]) >= {"/participants", "/participants/{edi_id}", "/token/rotate"}


# -- names and errors (issue 14 item 7) ------------------------------------------------------


async def test_any_file_name_is_sent_and_its_outcome_read(
    hub: HubUnderTest, homes: list[Path], tmp_path: Path
) -> None:
    """Names are the participant's to choose: every URL the kit builds percent-encodes them
    (`"` and `>` crashed `--wait` with InvalidURL). A name the hub refuses (NOM) is
    reported refused with its .log; an added .pgp is no part of the upload name."""
    broker, leader = await keygen("COU010234", homes), await keygen("CIE000311", homes)
    await register_cli(hub, broker)
    await register_cli(hub, leader)
    sample = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
    hostile = ['R"COU.edi', "a>b<c.edi", "100% sûr #1?.edi", "sp ace&x=1.edi", "é'`$(x).edi"]
    files = []
    for name in [*hostile, "RCOU010234_00311_000007.edi.pgp"]:
        (tmp_path / name).write_bytes(sample)
        files.append(tmp_path / name)
    result = await run_bdi(
        "kit", "send", *map(str, files), *remote(hub, broker), "--wait",
        "--web-port", str(hub.server.web_port), "--json", ok=False,
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr == ""  # refused ones: exit 1, no error
    outcomes = {o["file"]: o for o in json.loads(result.stdout)}
    assert outcomes["RCOU010234_00311_000007.edi.pgp"]["status"] == "delivered"
    for name in hostile:
        assert outcomes[name]["status"] == "refused", outcomes[name]
        assert outcomes[name]["detail"].startswith("ERREUR"), outcomes[name]


def unreachable_port() -> socket.socket:
    """A TCP port bound and not listening: connecting to it is refused, and no other
    program can take it while the socket is kept."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_every_kit_error_is_one_line(homes: list[Path], tmp_path: Path) -> None:
    kit = await keygen("COU010234", homes)
    kit.password_file().write_text("not the password\n")
    sample = tmp_path / "RCOU010234_00311_000001.edi"
    sample.write_bytes((SAMPLES / sample.name).read_bytes())
    hostile = tmp_path / 'a"b>c.edi'
    hostile.write_bytes(sample.read_bytes())
    with unreachable_port() as closed:
        port = str(closed.getsockname()[1])
        user = ["--user", kit.edi_id, "--password-file", str(kit.password_file())]
        hub = ["--host", "127.0.0.1", "--port", port, *user]
        kit_at = ["--home", str(kit.home), *hub]
        wait = ["--wait", "--web-port", port]
        cases = {
            "hub unreachable (send)": ["send", str(sample), *kit_at],
            "hub unreachable (receive)": ["receive", *kit_at, "--to", str(tmp_path / "in")],
            "web port unreachable": ["send", str(sample), *kit_at, *wait],
            "hostile name, hub unreachable": ["send", str(hostile), *kit_at, *wait],
            "no password file": ["send", str(sample), *kit_at[:-1], str(tmp_path / "none")],
            "not a kit home": ["send", str(sample), "--home", str(tmp_path), *hub],
            "no such file": ["send", str(tmp_path / "absent.edi"), *kit_at],
            "a home that is a file": ["keygen", "COU010234", "--home", str(sample)],
        }
        for case, args in cases.items():
            result = await run_bdi("kit", *args, ok=False)
            assert result.returncode == 1, (case, result)
            assert result.stdout == "", (case, result)
            [line] = result.stderr.splitlines()
            assert line.startswith("bdi kit: ") and "Traceback" not in line, (case, line)
            if case.startswith("hub unreachable"):
                assert line.startswith(f"bdi kit: cannot talk to 127.0.0.1:{port}: "), line
