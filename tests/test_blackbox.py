"""Black box: participants that have nothing but OpenSSH's `sftp -b` and the `gpg` command line.

The broker COU010234 fetches the hub's key from its mailbox, signs and encrypts a répartition for
the apériteur CIE000311 and a broken file, and uploads both (the first under a `.part` name, then
renamed). The apériteur lists, downloads, decrypts and verifies its delivery, then deletes it; the
broker reads the `.log` of the refused file. Only the admin side (registration) calls `bdi.*`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hubkit import HubUnderTest, hub_running
from support import SAMPLES

from bdi.admin.registry import register
from bdi.config import load_settings
from bdi.datadir import initialise, open_hub

BROKER, APERITEUR = "COU010234", "CIE000311"
GOOD = SAMPLES / "RCOU010234_00311_000001.edi"
BROKEN = SAMPLES / "broken" / "RCOU010234_00311_000094.edi"
TIMEOUT = 60


async def run(*argv: str, cwd: Path, env: dict[str, str]) -> str:
    """Run one command as the participant would type it; its stdout, or fail with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{err.decode()}"
    return out.decode()


def listings(output: str) -> list[list[str]]:
    """One name list per `ls` command of a batch, in order."""
    blocks: list[list[str]] = []
    for line in output.splitlines():
        if line.startswith("sftp> ls"):
            blocks.append([])
        elif not line.startswith("sftp>") and blocks:
            blocks[-1].append(line.rsplit("/", 1)[-1])
    return blocks


def status(output: str, keyword: str) -> list[list[str]]:
    """The `[GNUPG:] KEYWORD …` lines of `--status-fd` output, split into fields."""
    lines = (line.split() for line in output.splitlines())
    return [f[2:] for f in lines if len(f) > 1 and f[0] == "[GNUPG:]" and f[1] == keyword]


@dataclass
class Participant:
    """A participant's desk: a GnuPG home (as GNUPGHOME), a working folder, its SFTP password."""

    edi_id: str
    gnupg_home: Path
    work: Path
    port: int = 0
    known_hosts: Path = Path()
    fingerprint: str = ""
    password: str = ""

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSHPASS")}
        return {**env, "GNUPGHOME": str(self.gnupg_home), "SSHPASS": self.password}

    async def gpg(self, *args: str) -> str:
        return await run("gpg", "--batch", *args, cwd=self.work, env=self.env)

    async def sftp(self, batch_name: str, *commands: str) -> str:
        """Write a batch file and run it: `sshpass -e sftp -o BatchMode=no -b FILE … ID@127.0.0.1`.

        `-b` turns BatchMode on, which disables password and keyboard-interactive login, whatever
        feeds the password (sshpass or SSH_ASKPASS); `-o BatchMode=no` before `-b` wins over it.
        """
        (self.work / batch_name).write_text("".join(f"{c}\n" for c in commands))
        return await run(
            "sshpass", "-e",
            "sftp", "-o", "BatchMode=no", "-b", batch_name, "-P", str(self.port),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "PubkeyAuthentication=no",
            f"{self.edi_id}@127.0.0.1",
            cwd=self.work,
            env=self.env,
        )  # fmt: skip

    async def make_key(self) -> Path:
        """ed25519 signing primary, cv25519 encryption subkey, no passphrase; exported armoured."""
        uid = f"{self.edi_id} <{self.edi_id.lower()}@example.test>"
        await self.gpg("--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        colons = await self.gpg("--with-colons", "--list-secret-keys", uid)
        self.fingerprint = next(ln.split(":")[9] for ln in colons.splitlines() if ln[:4] == "fpr:")
        await self.gpg("--passphrase", "", "--quick-add-key", self.fingerprint, "cv25519", "encr")
        exported = f"{self.edi_id}.asc"
        await self.gpg("--armor", "--output", exported, "--export", self.fingerprint)
        return self.work / exported

    async def fetch_hub_key(self, expected_fingerprint: str) -> str:
        """Download /hub-public-key.asc, check it is the fingerprint the admin gave, certify it."""
        await self.sftp("hubkey.batch", "get /hub-public-key.asc")
        shown = await self.gpg("--with-colons", "--show-keys", "hub-public-key.asc")
        fpr = next(ln.split(":")[9] for ln in shown.splitlines() if ln[:4] == "fpr:")
        assert fpr == expected_fingerprint
        await self.gpg("--import", "hub-public-key.asc")
        await self.gpg("--quick-lsign-key", fpr)
        return fpr


@contextlib.contextmanager
def desks(root: Path, *ids: str) -> Iterator[dict[str, Participant]]:
    made: dict[str, Participant] = {}
    try:
        for edi_id in ids:
            home = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))  # short: agent socket path
            (root / edi_id).mkdir(parents=True)
            made[edi_id] = Participant(edi_id, home, root / edi_id)
        yield made
    finally:
        for desk in made.values():
            subprocess.run(
                ["gpgconf", "--homedir", str(desk.gnupg_home), "--kill", "gpg-agent"],
                capture_output=True,
                check=False,
            )
            shutil.rmtree(desk.gnupg_home, ignore_errors=True)


async def admin_registers(data: Path, keys: dict[str, Path]) -> dict[str, str]:
    """`bdi init` then `bdi admin participant add` for each handed-in key: the issued passwords."""
    settings = load_settings(None, data=data, sftp_port=0, host="127.0.0.1")
    await initialise(settings)
    hub = await open_hub(settings)
    passwords = {}
    try:
        for edi_id, key in keys.items():
            registered = await register(
                hub.store,
                hub.pgp,
                hub.mailboxes,
                hub.layout,
                edi_id=edi_id,
                name=edi_id,
                email=f"{edi_id.lower()}@example.test",
                pgp_key=key.read_text(),
                role=None,
                ssh_keys=[],
                now=datetime.now(UTC),
            )
            passwords[edi_id] = registered.password
    finally:
        await hub.store.engine.dispose()
    return passwords


def known_hosts_file(hub: HubUnderTest, path: Path) -> Path:
    """What the admin publishes: the host key's public line, bound to the host and port."""
    key = hub.settings.data / "ssh_host_ed25519_key"
    public = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key)], capture_output=True, check=True, text=True
    ).stdout
    algo, blob = public.split()[:2]
    path.write_text(f"[127.0.0.1]:{hub.port} {algo} {blob}\n")
    return path


@pytest.fixture
def participants(tmp_path: Path) -> Iterator[dict[str, Participant]]:
    with desks(tmp_path / "desks", BROKER, APERITEUR) as made:
        yield made


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """The hub's data folder; its GnuPG agent is stopped even when the test fails."""
    yield tmp_path / "data"
    home = load_settings(None, data=tmp_path / "data").gnupg_home
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


async def test_a_participant_with_sftp_and_gpg_only(
    tmp_path: Path, data: Path, participants: dict[str, Participant]
) -> None:
    broker, aperiteur = participants[BROKER], participants[APERITEUR]
    keys = {p.edi_id: await p.make_key() for p in participants.values()}
    passwords = await admin_registers(data, keys)

    async with hub_running(data, {}) as hub:
        known_hosts = known_hosts_file(hub, tmp_path / "known_hosts")
        for p in participants.values():
            p.port, p.known_hosts, p.password = hub.port, known_hosts, passwords[p.edi_id]

        # The broker: hub key, sign + encrypt, upload (.part then rename; the broken one directly).
        hub_fpr = await broker.fetch_hub_key(hub.hub_fingerprint)
        for sample in (GOOD, BROKEN):
            shutil.copyfile(sample, broker.work / sample.name)
            await broker.gpg("--sign", "--encrypt", "-r", hub_fpr, "-u", broker.fingerprint,
                             sample.name)  # fmt: skip
        good, broken = GOOD.name, BROKEN.name  # gpg wrote NAME.gpg; uploaded as NAME
        out = await broker.sftp(
            "upload.batch",
            f"put {good}.gpg /outbox/{good}.gpg.part",
            f"rename /outbox/{good}.gpg.part /outbox/{good}.gpg",
            f"put {broken}.gpg /outbox/{broken}.gpg",
            "ls -1 /outbox",
        )
        assert listings(out) == [[]], out  # taken in: nothing left in the outbox

        await hub.settled()

        # The apériteur: list, download, decrypt + verify the hub's signature, then delete.
        await aperiteur.fetch_hub_key(hub.hub_fingerprint)
        (aperiteur.work / "received").mkdir()
        out = await aperiteur.sftp(
            "receive.batch", "ls -1 /inbox", f"get /inbox/{GOOD.name} received/"
        )
        assert listings(out) == [[GOOD.name]], out
        st = await aperiteur.gpg(
            "--status-fd", "1", "--output", GOOD.name, "--decrypt", f"received/{GOOD.name}"
        )
        assert status(st, "DECRYPTION_OKAY") and status(st, "GOODSIG"), st
        [validsig] = status(st, "VALIDSIG")  # fpr date ts expire version 0 algo hash class PRIMARY
        assert validsig[9] == hub.hub_fingerprint
        assert (aperiteur.work / GOOD.name).read_bytes() == GOOD.read_bytes()
        out = await aperiteur.sftp("clean.batch", f"rm /inbox/{GOOD.name}", "ls -1 /inbox")
        assert listings(out) == [[]], out

        # The broker: the refused file's .log, plain text, with its SIGNATURE line.
        log = f"ERREUR{BROKEN.stem}_1.log"
        out = await broker.sftp("logs.batch", "ls -1 /inbox", f"get /inbox/{log}")
        assert listings(out) == [[log]], out
        lines = (broker.work / log).read_text(encoding="utf-8").splitlines()
        fields = [line.split(maxsplit=8) for line in lines]
        assert [f[7] for f in fields] == ["SIGNATURE"], lines
        assert fields[0][2:6] == [BROKEN.name, "section", "1", "line"]
