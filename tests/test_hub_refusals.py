"""Refusals of the OpenPGP layer: each one earns the uploader `ERREUR<name>.log` with
DECHIFFREMENT, and nothing is delivered."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hubkit import HubUnderTest, Party, gpg, hub_running, make_parties, short_home
from support import SAMPLES

from bdi.crypto import OpenPGP

SAMPLE = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
SENDER, RECIPIENT, OTHER = "COU010234", "CIE000311", "CIE000638"


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT, OTHER, "GIE000001"]) as made:
        yield made


@pytest.fixture(scope="module")
def stranger() -> Iterator[OpenPGP]:
    pgp = OpenPGP(short_home())
    pgp.generate_key("stranger <s@example.test>")
    yield pgp
    pgp.stop_agent()


@pytest.fixture
async def hub(tmp_path: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    async with hub_running(tmp_path / "data", parties, max_decrypted_bytes=1 << 20) as running:
        yield running


def cases(hub: HubUnderTest, stranger: OpenPGP) -> dict[str, bytes]:
    me = hub.parties[SENDER]
    other = hub.parties[OTHER]
    stranger.import_public(hub.hub_public_key)
    me.pgp.import_public(hub.parties[RECIPIENT].public_key)
    to_hub = ("-r", hub.hub_fingerprint)
    bomb = b"\x00" * (64 << 20)
    return {
        "unsigned": gpg(me.pgp.home, "--trust-model", "always", "--encrypt", *to_hub, data=SAMPLE),
        "other_participant": gpg(
            other.pgp.home, "--trust-model", "always", "--sign", "--encrypt", *to_hub, data=SAMPLE
        ),
        "unknown_key": gpg(
            stranger.home, "--trust-model", "always", "--sign", "--encrypt", *to_hub, data=SAMPLE
        ),
        "not_for_hub": gpg(
            me.pgp.home, "--trust-model", "always", "--sign", "--encrypt",
            "-r", hub.parties[RECIPIENT].fingerprint, data=SAMPLE,
        ),
        "signed_only": gpg(me.pgp.home, "--sign", data=SAMPLE),
        "corrupt": os.urandom(4096),
        "bomb": gpg(
            me.pgp.home, "--trust-model", "always", "--sign", "--encrypt", "-z", "9", *to_hub,
            data=SAMPLE + bomb,
        ),
    }  # fmt: skip


async def test_openpgp_refusals_get_a_dechiffrement_log(
    hub: HubUnderTest, stranger: OpenPGP
) -> None:
    uploads = cases(hub, stranger)
    assert len(uploads["bomb"]) < 1 << 20  # small on the wire, 64 MiB once expanded
    for n, sealed in enumerate(uploads.values(), start=10):
        await hub.upload(SENDER, f"RCOU010234_00311_0000{n}.edi", sealed)
    await hub.settled()

    inbox = await hub.inbox(SENDER)
    for n, case in enumerate(uploads, start=10):
        name = f"RCOU010234_00311_0000{n}.edi"
        log = inbox.get(f"ERREURRCOU010234_00311_0000{n}.log")
        assert log is not None, case
        [line] = log.decode("utf-8").splitlines()
        assert f" {name} section 0 line 0 DECHIFFREMENT fichier illisible" in line, case
    assert await hub.inbox(RECIPIENT) == {}
    assert await hub.server.hub.store.movements() == []
    spool = hub.settings.spool
    assert list(spool.iterdir()) == []  # neither uploads nor plain text left behind


async def test_a_good_upload_next_to_them_is_delivered(hub: HubUnderTest, tmp_path: Path) -> None:
    await hub.upload(SENDER, "RCOU010234_00311_000001.edi", hub.seal(SENDER, SAMPLE, tmp_path))
    await hub.settled()
    inbox = await hub.inbox(RECIPIENT)
    assert list(inbox) == ["RCOU010234_00311_000001.edi"]
    assert (await hub.inbox(SENDER)) == {}


async def test_recipient_with_a_revoked_key_is_inactive(hub: HubUnderTest, tmp_path: Path) -> None:
    """Nothing is ever delivered unencrypted, nor to a key revoked since registration."""
    recipient = hub.parties[RECIPIENT]
    text = (recipient.pgp.home / "openpgp-revocs.d" / f"{recipient.fingerprint}.rev").read_text()
    certificate = text.replace(":-----BEGIN PGP", "-----BEGIN PGP").encode()
    gpg(hub.settings.gnupg_home, "--import", data=certificate)
    await hub.upload(SENDER, "RCOU010234_00311_000001.edi", hub.seal(SENDER, SAMPLE, tmp_path))
    await hub.settled()
    assert await hub.inbox(RECIPIENT) == {}
    [log] = (await hub.inbox(SENDER)).values()
    assert " DESTINATAIRE destinataire inconnu ou inactif (CIE000311)" in log.decode()
