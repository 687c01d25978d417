"""A participant's key revoked by the admin (issue 14 item 6), end to end on a real hub:
delivered before, refused with DECHIFFREMENT after; `participant show` tells the key's state
and expiry; what does not revoke the registered key changes nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hubkit import HubUnderTest, Party, hub_running, make_parties, run_bdi, short_home
from support import SAMPLES

BDI = Path(sys.executable).with_name("bdi")
SENDER, RECIPIENT = "COU010234", "CIE000311"
SAMPLE = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()


@pytest.fixture
def parties() -> Iterator[dict[str, Party]]:
    """Fresh keys for each test: a revocation cannot be undone."""
    with make_parties([SENDER, RECIPIENT, "GIE000001"]) as made:
        yield made


@pytest.fixture
async def hub(tmp_path: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    async with hub_running(tmp_path / "data", parties) as running:
        yield running


def certificate(party: Party) -> Path:
    """The revocation certificate gpg made with the key, exactly as it stored it."""
    return party.pgp.home / "openpgp-revocs.d" / f"{party.fingerprint}.rev"


async def show(hub: HubUnderTest, edi_id: str) -> dict[str, str | None]:
    out = await run_bdi("admin", "participant", "show", edi_id, "--json",
                    "--data", str(hub.settings.data))  # fmt: skip
    return dict(json.loads(out.stdout))


async def test_files_signed_by_a_revoked_key_are_refused(hub: HubUnderTest, tmp_path: Path) -> None:
    sealed = hub.seal(SENDER, SAMPLE, tmp_path)  # signed before the revocation
    await hub.upload(SENDER, "RCOU010234_00311_000001.edi", sealed)
    await hub.settled()
    assert list(await hub.inbox(RECIPIENT)) == ["RCOU010234_00311_000001.edi"]
    assert (await show(hub, SENDER))["pgp_state"] == "valid"

    cert, data = str(certificate(hub.parties[SENDER])), str(hub.settings.data)
    done = await run_bdi("admin", "participant", "revoke", SENDER, "--file", cert, "--data", data)
    assert done.stdout.strip() == f"key {hub.parties[SENDER].fingerprint} of {SENDER} revoked"

    await hub.upload(SENDER, "RCOU010234_00311_000002.edi", sealed)
    await hub.settled()
    assert list(await hub.inbox(RECIPIENT)) == ["RCOU010234_00311_000001.edi"]  # no more
    [(name, log)] = (await hub.inbox(SENDER)).items()
    assert name == "ERREURRCOU010234_00311_000002.log"
    assert (
        log.decode()
        .rstrip()
        .endswith(
            " RCOU010234_00311_000002.edi section 0 line 0 DECHIFFREMENT fichier illisible, non"
            " signé ou signé par une autre clé que celle de l'émetteur (clé de signature révoquée)"
        )
    )
    shown = await show(hub, SENDER)
    assert (
        shown["pgp_state"] == "revoked"
        and shown["pgp_fingerprint"] == hub.parties[SENDER].fingerprint
    )


def revoked_key(party: Party, to: Path) -> Path:
    """The party revokes its key in its own home and exports it, revoked."""
    gpg = ["gpg", "--homedir", str(party.pgp.home), "--batch"]
    text = certificate(party).read_bytes().replace(b":-----BEGIN", b"-----BEGIN")
    subprocess.run([*gpg, "--import"], input=text, check=True, capture_output=True)
    exported = subprocess.run([*gpg, "--armor", "--export", party.fingerprint],
                              check=True, capture_output=True).stdout  # fmt: skip
    to.write_bytes(exported)
    return to


async def test_set_key_takes_the_revoked_key_as_its_revocation(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    """`set-key` refused a revoked key, so a revocation could not be loaded: now the
    registered key, revoked, revokes it."""
    sealed = hub.seal(SENDER, SAMPLE, tmp_path)  # signed while the key was good
    revoked = await asyncio.to_thread(revoked_key, hub.parties[SENDER], tmp_path / "r.asc")
    done = await run_bdi("admin", "participant", "set-key", SENDER, "--pgp-key", str(revoked),
                     "--data", str(hub.settings.data), "--json")  # fmt: skip
    assert json.loads(done.stdout)["pgp_state"] == "revoked"
    assert (await show(hub, SENDER))["pgp_state"] == "revoked"
    await hub.upload(SENDER, "RCOU010234_00311_000003.edi", sealed)
    await hub.settled()
    assert list(await hub.inbox(SENDER)) == ["ERREURRCOU010234_00311_000003.log"]
    assert await hub.inbox(RECIPIENT) == {}


async def test_what_does_not_revoke_the_registered_key_changes_nothing(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    data = str(hub.settings.data)
    other = certificate(hub.parties[RECIPIENT])  # another participant's certificate
    garbage = tmp_path / "garbage.asc"
    garbage.write_text("not a certificate\n")
    for path in (other, garbage):
        refused = await run_bdi("admin", "participant", "revoke", SENDER, "--file", str(path),
                            "--data", data, ok=False)  # fmt: skip
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and "does not revoke" in refused.stderr
    for edi_id in (SENDER, RECIPIENT):
        assert (await show(hub, edi_id))["pgp_state"] == "valid"
    unknown = await run_bdi("admin", "participant", "revoke", "COU999999", "--file", str(other),
                        "--data", data, ok=False)  # fmt: skip
    assert unknown.returncode == 1 and "no participant COU999999" in unknown.stderr
    await hub.upload(SENDER, "RCOU010234_00311_000004.edi", hub.seal(SENDER, SAMPLE, tmp_path))
    await hub.settled()
    assert list(await hub.inbox(RECIPIENT)) == ["RCOU010234_00311_000004.edi"]


def expiring_key(to: Path) -> datetime:
    """A key pair made by plain gpg that expires in two years; its public key into `to`."""
    home = short_home()
    gpg = ["gpg", "--homedir", str(home), "--batch", "--passphrase", ""]
    try:
        subprocess.run([*gpg, "--quick-gen-key", "AGT000001", "ed25519", "sign,cert", "2y"],
                       check=True, capture_output=True)  # fmt: skip
        listing = subprocess.run([*gpg, "--with-colons", "--list-keys"], check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
        records = [line.split(":") for line in listing.splitlines()]
        expires = next(int(r[6]) for r in records if r[0] == "pub")
        fpr = next(r[9] for r in records if r[0] == "fpr")
        subprocess.run([*gpg, "--quick-add-key", fpr, "cv25519", "encr", "2y"],
                       check=True, capture_output=True)  # fmt: skip
        to.write_bytes(subprocess.run([*gpg, "--armor", "--export"], check=True,
                                      capture_output=True).stdout)  # fmt: skip
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)
    return datetime.fromtimestamp(expires, UTC)


async def test_show_tells_when_the_key_expires(hub: HubUnderTest, tmp_path: Path) -> None:
    key = tmp_path / "agent.asc"
    expires = await asyncio.to_thread(expiring_key, key)
    data = str(hub.settings.data)
    await run_bdi("admin", "participant", "add", "AGT000001", "--name", "Agent", "--email",
              "a@example.test", "--pgp-key", str(key), "--data", data)  # fmt: skip
    shown = await show(hub, "AGT000001")
    assert shown["pgp_state"] == "valid"
    assert shown["pgp_expires"] == expires.isoformat()
    text = (await run_bdi("admin", "participant", "show", "AGT000001", "--data", data)).stdout
    assert f"pgp_expires: {expires.isoformat()}" in text.splitlines()
    assert (await show(hub, SENDER))["pgp_expires"] is None  # the kit's keys never expire
