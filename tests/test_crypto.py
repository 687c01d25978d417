"""OpenPGP wrapper: real gpg in short temporary homes, no mocks.

Keys are generated once per module (hub, alice, bob, carol); odd messages (signed only,
encrypted only, bombs, ...) are built with plain gpg so the hub code is not testing itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hubkit import Party, hub_running, make_parties
from support import SAMPLES

from bdi.config import load_settings
from bdi.crypto import Bounds, GpgUnavailable, KeyProblem, OpenPGP, OpenPGPError, Verified
from bdi.crypto.refusals import Reason, Refusal

MAX = 1024 * 1024
# 4 KiB of Optiflux-like text: one 640-character record per line.
PLAIN = b"".join(b"%010d" % i + b" " * 629 + b"\n" for i in range(7))[:4096]


def gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    """Plain gpg in `home`, failing the test with gpg's own words."""
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--yes", "--trust-model", "always",
         "--pinentry-mode", "loopback", "--passphrase", "", *args],
        input=stdin,
        capture_output=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def primary_fingerprint(home: Path, pattern: str) -> str:
    listing = gpg(home, "--with-colons", "--list-keys", pattern).decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def revocation_certificate(home: Path, fingerprint: str) -> bytes:
    """The certificate gpg stored at key creation, with its anti-accident ':' removed."""
    text = (home / "openpgp-revocs.d" / f"{fingerprint}.rev").read_text()
    return text.replace(
        ":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----"
    ).encode()


@dataclass
class World:
    hub: OpenPGP
    alice: OpenPGP
    bob: OpenPGP
    carol: OpenPGP  # knows the hub, but the hub does not know her
    hub_fpr: str
    alice_fpr: str
    bob_fpr: str
    carol_fpr: str


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    homes: list[OpenPGP] = []

    def home() -> OpenPGP:
        homes.append(OpenPGP(Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))))
        return homes[-1]

    try:
        hub, alice, bob, carol = home(), home(), home(), home()
        w = World(
            hub, alice, bob, carol,
            hub.generate_key("BDI hub <hub@bdi.example>"),
            alice.generate_key("Alice <alice@example.com>"),
            bob.generate_key("Bob <bob@example.com>"),
            carol.generate_key("Carol <carol@example.com>"),
        )  # fmt: skip
        # Alice signs with a subkey: the verdict must still name her primary key.
        gpg(alice.home, "--quick-add-key", w.alice_fpr, "ed25519", "sign", "never")
        hub.import_public(alice.export_public(w.alice_fpr))
        hub.import_public(bob.export_public(w.bob_fpr))
        for participant in (alice, bob, carol):
            participant.import_public(hub.export_public(w.hub_fpr))
        yield w
    finally:
        for h in homes:
            h.stop_agent()
            shutil.rmtree(h.home, ignore_errors=True)


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "CCOU010234_00311_000006.edi"
    path.write_bytes(PLAIN)
    return path


def refused(world: World, message: Path, reason: str | None = None) -> Verified:
    out = message.with_suffix(".out")
    verdict = world.hub.decrypt_verify(message, out, MAX)
    assert not verdict.ok and verdict.signer is None
    assert not out.exists()
    if reason is not None:
        assert str(verdict.reason) == reason
    return verdict


# -- decrypt_verify ------------------------------------------------------------------------


def test_round_trip_names_the_primary_key_of_a_subkey_signer(world: World, plain: Path) -> None:
    enc, out = plain.with_suffix(".pgp"), plain.with_suffix(".out")
    world.alice.sign_encrypt(plain, enc, world.hub_fpr, world.alice_fpr)
    assert not enc.read_bytes().startswith(b"-----BEGIN")  # binary
    assert world.hub.decrypt_verify(enc, out, MAX) == Verified(
        True, world.alice_fpr, None, len(PLAIN)
    )
    assert out.read_bytes() == PLAIN
    assert out.stat().st_mode & 0o077 == 0
    # the signature really was made by a subkey
    status = gpg(world.hub.home, "--status-fd", "1", "--output", os.devnull, "--decrypt", str(enc))
    validsig = next(line for line in status.decode().splitlines() if " VALIDSIG " in line).split()
    assert validsig[2] != world.alice_fpr and validsig[-1] == world.alice_fpr


def test_signer_is_reported_so_the_caller_can_refuse_an_impostor(world: World, plain: Path) -> None:
    enc = plain.with_suffix(".pgp")  # bob uploads "as alice"
    world.bob.sign_encrypt(plain, enc, world.hub_fpr, world.bob_fpr)
    verdict = world.hub.decrypt_verify(enc, plain.with_suffix(".out"), MAX)
    assert verdict.ok and verdict.signer == world.bob_fpr != world.alice_fpr


def test_unknown_signer(world: World, plain: Path) -> None:
    enc = plain.with_suffix(".pgp")
    world.carol.sign_encrypt(plain, enc, world.hub_fpr, world.carol_fpr)
    refused(world, enc, "unknown key")


@pytest.mark.parametrize("how", [["--sign"], ["--sign", "--armor"], ["--clearsign"]])
def test_signed_only_is_not_encrypted(world: World, plain: Path, how: list[str]) -> None:
    msg = plain.with_suffix(".pgp")
    gpg(world.alice.home, *how, "--local-user", world.alice_fpr, "--output", str(msg), str(plain))
    refused(world, msg, "not encrypted")


def test_encrypted_only_is_not_signed(world: World, plain: Path) -> None:
    msg = plain.with_suffix(".pgp")
    gpg(world.alice.home, "--encrypt", "-r", world.hub_fpr, "--output", str(msg), str(plain))
    refused(world, msg, "not signed")


def test_not_encrypted_to_the_hub(world: World, plain: Path) -> None:
    enc = plain.with_suffix(".pgp")
    world.alice.sign_encrypt(plain, enc, world.alice_fpr, world.alice_fpr)
    refused(world, enc, "not decryptable")


def test_symmetric_encryption_is_not_decryptable(world: World, plain: Path) -> None:
    msg = plain.with_suffix(".pgp")
    gpg(
        world.alice.home,
        "--symmetric",
        "--s2k-count",
        "65536",
        "--passphrase",
        "secret",
        "--output",
        str(msg),
        str(plain),
    )
    refused(world, msg, "not decryptable")


def test_two_signatures_are_refused(world: World, plain: Path) -> None:
    second = world.alice.generate_key("Alice bis <alice.bis@example.com>")
    msg = plain.with_suffix(".pgp")
    gpg(world.alice.home, "--sign", "--encrypt", "-u", world.alice_fpr, "-u", second,
        "-r", world.hub_fpr, "--output", str(msg), str(plain))  # fmt: skip
    refused(world, msg, "several signatures")


def test_two_messages_in_one_file_are_refused(world: World, plain: Path) -> None:
    enc = plain.with_suffix(".pgp")
    world.alice.sign_encrypt(plain, enc, world.hub_fpr, world.alice_fpr)
    twice = plain.with_suffix(".twice")
    twice.write_bytes(enc.read_bytes() * 2)
    refused(world, twice)


def test_corrupt_and_truncated_messages(world: World, plain: Path) -> None:
    enc = plain.with_suffix(".pgp")
    world.alice.sign_encrypt(plain, enc, world.hub_fpr, world.alice_fpr)
    data = enc.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    for name, content in [("flipped", bytes(flipped)), ("cut", data[: len(data) // 2])]:
        bad = plain.with_suffix(f".{name}")
        bad.write_bytes(content)
        refused(world, bad)


def test_tampered_integrity_tag_after_a_good_signature(world: World, plain: Path) -> None:
    """Uncompressed, the signature verifies before gpg reaches the (broken) MDC."""
    msg = plain.with_suffix(".pgp")
    gpg(world.alice.home, "--sign", "--encrypt", "-z", "0", "-u", world.alice_fpr,
        "-r", world.hub_fpr, "--output", str(msg), str(plain))  # fmt: skip
    data = bytearray(msg.read_bytes())
    data[-1] ^= 1
    msg.write_bytes(bytes(data))
    refused(world, msg, "not decryptable")


@pytest.mark.parametrize(
    "content", [b"", b"\x00garbage\xff" * 100, b"-----BEGIN PGP MESSAGE-----\n"]
)
def test_garbage_is_not_openpgp(world: World, tmp_path: Path, content: bytes) -> None:
    msg = tmp_path / "x.pgp"
    msg.write_bytes(content)
    refused(world, msg, "not OpenPGP")


def test_armoured_input(world: World, plain: Path) -> None:
    msg = plain.with_suffix(".asc")
    gpg(world.alice.home, "--sign", "--encrypt", "--armor", "-u", world.alice_fpr,
        "-r", world.hub_fpr, "--output", str(msg), str(plain))  # fmt: skip
    assert msg.read_bytes().startswith(b"-----BEGIN PGP MESSAGE-----")
    out = plain.with_suffix(".out")
    assert world.hub.decrypt_verify(msg, out, MAX) == Verified(
        True, world.alice_fpr, None, len(PLAIN)
    )
    assert out.read_bytes() == PLAIN


def test_messages_given_as_bytes_both_ways(world: World, tmp_path: Path) -> None:
    """The hub's small uploads and contents never are files: gpg reads them on its stdin,
    here more than a pipe holds at once, while it writes its output."""
    big = PLAIN * 100  # ~450 KB: gpg writes output before it has read all its input
    enc, back = tmp_path / "big.pgp", io.BytesIO()
    world.alice.sign_encrypt(big, enc, world.hub_fpr, world.alice_fpr)
    verdict = world.hub.decrypt_verify_into(enc.read_bytes(), back, MAX)
    assert verdict == Verified(True, world.alice_fpr, None, len(big))
    assert back.getvalue() == big
    tampered = bytearray(enc.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    assert not world.hub.decrypt_verify_into(bytes(tampered), io.BytesIO(), MAX).ok


def test_size_limit_is_exact(world: World, plain: Path) -> None:
    enc, out = plain.with_suffix(".pgp"), plain.with_suffix(".out")
    world.alice.sign_encrypt(plain, enc, world.hub_fpr, world.alice_fpr)
    assert world.hub.decrypt_verify(enc, out, len(PLAIN)).ok
    verdict = world.hub.decrypt_verify(enc, out, len(PLAIN) - 1)
    assert verdict == Verified(False, None, Reason(Refusal.TOO_LARGE), len(PLAIN))
    assert not out.exists()


def test_compression_bomb_stops_early(world: World, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.pgp"
    args = ["gpg", "--homedir", str(world.alice.home), "--batch", "--trust-model", "always",
            "--sign", "--encrypt", "-z", "9", "-u", world.alice_fpr, "-r", world.hub_fpr,
            "--output", str(bomb)]  # fmt: skip
    with subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdin is not None
        zeros = bytes(1024 * 1024)
        for _ in range(200):  # 200 MB of zeros
            proc.stdin.write(zeros)
        proc.stdin.close()
    assert proc.returncode == 0 and bomb.stat().st_size < 1024 * 1024
    out = tmp_path / "bomb.out"
    cpu_before, started = children_cpu(), time.perf_counter()
    verdict = world.hub.decrypt_verify(bomb, out, MAX)
    cpu, elapsed = children_cpu() - cpu_before, time.perf_counter() - started
    assert str(verdict.reason) == "too large" and not verdict.ok and not out.exists()
    assert verdict.size <= MAX + 64 * 1024  # gpg's own --max-output cap
    # killed: inflating the other 199 MB would cost gpg ~0.4 s of CPU on this machine
    assert cpu < 0.2, cpu
    assert elapsed < 2, elapsed
    # the same bomb given as bytes (fed on gpg's stdin)
    verdict = world.hub.decrypt_verify_into(bomb.read_bytes(), io.BytesIO(), MAX)
    assert str(verdict.reason) == "too large" and verdict.size <= MAX + 64 * 1024


def children_cpu() -> float:
    """CPU seconds used by finished child processes (here: gpg), steadier than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_status_lines_cannot_be_forged_through_a_user_id(world: World, plain: Path) -> None:
    """U+0085 ends a line for Python's codecs readers (python-gnupg's status parser)."""
    fake = f"VALIDSIG {world.alice_fpr} 2026-01-01 0 0 4 0 22 10 00 {world.alice_fpr}"
    forged = f"Mallory \u00c5[GNUPG:] {fake}"
    mallory = world.bob.generate_key(forged)
    world.hub.import_public(world.bob.export_public(mallory))
    enc = plain.with_suffix(".pgp")
    world.bob.sign_encrypt(plain, enc, world.hub_fpr, mallory)
    verdict = world.hub.decrypt_verify(enc, plain.with_suffix(".out"), MAX)
    assert verdict.ok and verdict.signer == mallory


def test_concurrent_calls(world: World, plain: Path) -> None:
    enc = plain.with_suffix(".pgp")
    world.alice.sign_encrypt(plain, enc, world.hub_fpr, world.alice_fpr)
    outs = [plain.with_suffix(f".out{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(lambda out: world.hub.decrypt_verify(enc, out, MAX), outs))
    assert all(v.ok and v.signer == world.alice_fpr for v in verdicts)
    assert all(out.read_bytes() == PLAIN for out in outs)


def test_missing_source(world: World, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        world.hub.decrypt_verify(tmp_path / "absent.pgp", tmp_path / "out", MAX)
    assert not (tmp_path / "out").exists()


# -- bounded work (HUB.md, "Limits that protect the market") -------------------------------


def sealed(world: World, plain: Path) -> bytes:
    """A good upload from alice: one recipient packet (the hub's), then the encrypted data."""
    enc = plain.with_suffix(".good.pgp")
    world.alice.sign_encrypt(plain, enc, world.hub_fpr, world.alice_fpr)
    return enc.read_bytes()


def recipient_packets(message: bytes) -> tuple[bytes, bytes]:
    """(the message's one recipient packet, the rest): gpg writes it in old format."""
    assert message[0] == 0x84  # old format, tag 1, one-octet length
    end = 2 + message[1]
    return message[:end], message[end:]


def bogus_recipients(message: bytes, count: int) -> bytes:
    """`count` recipient packets for the hub's key whose session key does not decrypt (each
    one an agent call for gpg), then the real message."""
    pkesk, _ = recipient_packets(message)
    flood = b"".join(pkesk[:-20] + os.urandom(20) for _ in range(count))
    return flood + message


def armoured(data: bytes) -> bytes:
    """ASCII armour as gpg writes it (with its checksum line)."""
    with tempfile.TemporaryDirectory(prefix="g", dir="/tmp") as home:
        text = gpg(Path(home), "--enarmor", stdin=data)
    return text.replace(b"PGP ARMORED FILE", b"PGP MESSAGE")


def cpu_now() -> float:
    """CPU seconds of this process and its finished children (gpg)."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def test_twenty_thousand_recipients_are_refused_before_gpg(
    world: World, plain: Path, tmp_path: Path
) -> None:
    """The attack of issue 14: 1.9 MB of bogus recipient packets cost gpg 10 s of CPU and
    its agent 2 s more, then ended as 'gpg was killed' (its status lines overflowed), a
    fault of the hub's, retried. Now: refused, and gpg never starts."""
    flood = bogus_recipients(sealed(world, plain), 20_000)
    assert len(flood) > 1_900_000
    message = tmp_path / "flood.pgp"
    message.write_bytes(flood)
    for source in (message, flood, armoured(flood)):
        started = cpu_now()
        verdict = world.hub.decrypt_verify_into(source, io.BytesIO(), MAX)
        assert verdict == Verified(False, None, Reason(Refusal.TOO_MANY_RECIPIENTS, 16), 0)
        assert cpu_now() - started < 1.0


def test_real_messages_pass_the_bounds(world: World, plain: Path) -> None:
    """Binary, armoured, and to several recipients (the hub's key among them)."""
    for other, fpr in ((world.bob, world.bob_fpr), (world.carol, world.carol_fpr)):
        world.alice.import_public(other.export_public(fpr))
    several = gpg(world.alice.home, "--sign", "--encrypt", "-u", world.alice_fpr,
                  *(arg for fpr in (world.bob_fpr, world.hub_fpr, world.carol_fpr, world.alice_fpr)
                    for arg in ("-r", fpr)), stdin=PLAIN)  # fmt: skip
    message = sealed(world, plain)
    for source in (message, armoured(message), several, armoured(several)):
        out = io.BytesIO()
        assert world.hub.decrypt_verify_into(source, out, MAX) == Verified(
            True, world.alice_fpr, None, len(PLAIN)
        )
        assert out.getvalue() == PLAIN


def reencrypted(world: World, message: bytes, inner: bytes) -> bytes:
    """The message with its encrypted data replaced by `inner` under the same session key:
    what only gpg sees once it has decrypted (RFC 4880 §5.13: SEIPD v1, AES-256 CFB)."""
    status = gpg(world.hub.home, "--status-fd", "1", "--show-session-key", "--output",
                 os.devnull, "--decrypt", stdin=message).decode()  # fmt: skip
    key = next(line.split()[2] for line in status.splitlines() if " SESSION_KEY " in line)
    algorithm, hex_key = key.split(":")
    assert algorithm == "9"  # AES-256
    prefix = os.urandom(16)
    prefix += prefix[-2:]
    hashed = prefix + inner + b"\xd3\x14"
    encryptor = Cipher(algorithms.AES(bytes.fromhex(hex_key)), CFB(bytes(16))).encryptor()
    body = b"\x01" + encryptor.update(hashed + hashlib.sha1(hashed).digest())
    body += encryptor.finalize()
    pkesk, _ = recipient_packets(message)
    return pkesk + b"\xd2\xff" + len(body).to_bytes(4, "big") + body


def test_recipients_inside_the_encrypted_data_stop_gpg(world: World, plain: Path) -> None:
    """Packets inside the encryption escape the survey: gpg's status lines show them, and
    it is stopped at the first recipient past the bound (here compressed: 2 000 recipient
    packets in 40 KB, 2 s of gpg CPU if left to run)."""
    message = sealed(world, plain)
    signed = gpg(world.alice.home, "--sign", "-z", "0", "-u", world.alice_fpr, stdin=PLAIN)
    flood = bogus_recipients(message, 2000)[: -len(message)]
    compressed = zlib_packet(flood + signed)
    hostile = reencrypted(world, message, compressed)
    assert world.hub.decrypt_verify_into(reencrypted(world, message, signed), io.BytesIO(), MAX).ok
    started = cpu_now()
    verdict = world.hub.decrypt_verify_into(hostile, io.BytesIO(), MAX)
    assert verdict == Verified(False, None, Reason(Refusal.TOO_MANY_RECIPIENTS, 16), 0)
    assert cpu_now() - started < 1.0


def zlib_packet(data: bytes) -> bytes:
    """A compressed data packet (tag 8, ZLIB)."""
    import zlib

    body = b"\x02" + zlib.compress(data, 9)
    return b"\xc8\xff" + len(body).to_bytes(4, "big") + body


def test_gpg_past_its_cpu_time_is_a_refusal(world: World, plain: Path) -> None:
    """With the survey and the watch out of the way (bounds raised), 2 000 bogus recipients
    keep gpg busy for ~2 s of CPU: it is killed past its budget, and the sender is told."""
    lax = Bounds(packets=10**6, recipients=10**6, cpu_seconds=0.5, cpu_seconds_per_mib=0.0)
    hub = OpenPGP(world.hub.home, bounds=lax)
    started = cpu_now()
    verdict = hub.decrypt_verify_into(
        bogus_recipients(sealed(world, plain), 2000), io.BytesIO(), MAX
    )
    assert str(verdict.reason) == "too much work (over 0.5 s of CPU)" and verdict.size == 0
    assert cpu_now() - started < 1.5


class KillsGpg(io.BytesIO):
    """A plaintext destination that kills the gpg writing to it (as the OOM killer or an
    admin would): the hub's fault, never a verdict on the message."""

    def write(self, data: object) -> int:
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if child.name() == "gpg" and "--decrypt" in child.cmdline():
                    child.send_signal(signal.SIGKILL)  # not waited for: Popen reaps it
        return 0


def test_gpg_killed_by_someone_else_is_the_hubs_fault(world: World, tmp_path: Path) -> None:
    big = tmp_path / "big.edi"
    big.write_bytes(PLAIN * 1000)  # gpg is still writing when the first chunk arrives
    enc = tmp_path / "big.pgp"
    world.alice.sign_encrypt(big, enc, world.hub_fpr, world.alice_fpr)
    with pytest.raises(GpgUnavailable, match="signal 9"):
        world.hub.decrypt_verify_into(enc, KillsGpg(), 8 << 20)


SENDER, RECIPIENT = "COU010234", "CIE000311"
SAMPLE = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()


@pytest.fixture(scope="module")
def hub_parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT, "GIE000001"]) as made:
        yield made


async def test_recipient_floods_through_a_real_hub(
    tmp_path: Path, hub_parties: dict[str, Party]
) -> None:
    """Issue 14's attack end to end: 8 uploads of 20 000 bogus recipients each, then a good
    one. Each flood earns its sender a DECHIFFREMENT .log naming the bound; gpg never
    starts for them (its CPU, all the hub's gpg together, stays far below one flood's 10 s);
    the good upload is delivered."""
    async with hub_running(tmp_path / "data", hub_parties) as hub:
        good = hub.seal(SENDER, SAMPLE, tmp_path)
        gpg_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        for n in range(8):
            await hub.upload(
                SENDER, f"RCOU010234_00311_00001{n}.edi", bogus_recipients(good, 20_000)
            )
        await hub.upload(SENDER, "RCOU010234_00311_000001.edi", good)
        await hub.settled()
        gpg_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert list(await hub.inbox(RECIPIENT)) == ["RCOU010234_00311_000001.edi"]
        logs = await hub.inbox(SENDER)
    assert sorted(logs) == [f"ERREURRCOU010234_00311_00001{n}.log" for n in range(8)]
    for log in logs.values():
        [line] = log.decode().splitlines()
        assert line.endswith(
            " DECHIFFREMENT fichier illisible, non signé ou signé par une autre clé que celle de"
            " l'émetteur (trop de destinataires (plus de 16))"
        ), line
    used = gpg_after.ru_utime + gpg_after.ru_stime - gpg_before.ru_utime - gpg_before.ru_stime
    assert used < 1.0, used


# -- revoked and expired keys ------------------------------------------------------------


def test_revoked_key(world: World, plain: Path) -> None:
    rex = world.bob.generate_key("Rex <rex@example.com>")
    exported = world.bob.export_public(rex)
    world.hub.import_public(exported)
    enc = plain.with_suffix(".pgp")
    world.bob.sign_encrypt(plain, enc, world.hub_fpr, rex)  # signed before the revocation
    assert world.hub.can_encrypt_to(rex)

    gpg(world.hub.home, "--import", stdin=revocation_certificate(world.bob.home, rex))

    refused(world, enc, "revoked key")
    assert not world.hub.can_encrypt_to(rex)
    info = world.hub.key_info(rex)
    assert info is not None and info.revoked
    world.hub.inspect(exported)  # the old file alone looks fine ...
    with pytest.raises(KeyProblem, match="revoked"):  # ... but the home knows better
        world.hub.import_public(exported)
    with pytest.raises(KeyProblem, match=f"key {rex} is revoked"):
        world.hub.inspect(world.hub.export_public(rex))
    with pytest.raises(OpenPGPError):
        world.hub.sign_encrypt(plain, plain.with_suffix(".dlv"), rex, world.hub_fpr)
    assert not plain.with_suffix(".dlv").exists()


def guarded_certificate(home: Path, fingerprint: str) -> bytes:
    """The revocation certificate exactly as gpg stored it at key creation (':' guard)."""
    return (home / "openpgp-revocs.d" / f"{fingerprint}.rev").read_bytes()


def registered(world: World, name: str) -> str:
    """A fresh key of bob's home, registered at the hub (as `set-key` or `add` would)."""
    fingerprint = world.bob.generate_key(f"{name} <{name.lower()}@example.com>")
    world.hub.import_public(world.bob.export_public(fingerprint))
    return fingerprint


def test_load_revocation_certificate_as_gpg_stored_it(world: World, plain: Path) -> None:
    rex = registered(world, "Rex")
    enc = plain.with_suffix(".pgp")
    world.bob.sign_encrypt(plain, enc, world.hub_fpr, rex)  # signed before the revocation
    assert world.hub.decrypt_verify(enc, plain.with_suffix(".out"), MAX).ok
    assert guarded_certificate(world.bob.home, rex).count(b"\n:-----BEGIN PGP") == 1

    info = world.hub.load_revocation(rex, guarded_certificate(world.bob.home, rex))
    assert info.fingerprint == rex and info.revoked
    refused(world, enc, "revoked key")
    assert not world.hub.can_encrypt_to(rex)


def test_load_revocation_as_the_revoked_key(world: World) -> None:
    rex = registered(world, "Rex2")
    gpg(world.bob.home, "--import", stdin=revocation_certificate(world.bob.home, rex))
    revoked_key = gpg(world.bob.home, "--export", "--armor", rex)
    assert world.hub.load_revocation(rex, revoked_key).revoked
    info = world.hub.key_info(rex)
    assert info is not None and info.revoked


@pytest.mark.parametrize("case", ["another key's certificate", "another key", "garbage"])
def test_load_revocation_refuses_what_does_not_revoke_that_key(world: World, case: str) -> None:
    rex = registered(world, f"Rex {case}")
    other = world.bob.generate_key(f"Other {case} <other@example.com>")
    data = {
        "another key's certificate": guarded_certificate(world.bob.home, other),
        "another key": world.bob.export_public(other).encode()
        + revocation_certificate(world.bob.home, rex),
        "garbage": b"\x00not a certificate",
    }[case]
    with pytest.raises(KeyProblem, match=r"does not revoke|holds another key"):
        world.hub.load_revocation(rex, data)
    info = world.hub.key_info(rex)
    assert info is not None and not info.revoked  # nothing changed ...
    assert world.hub.key_info(other) is None  # ... and nothing slipped in


def test_load_revocation_of_a_key_the_home_does_not_hold(world: World) -> None:
    with pytest.raises(KeyProblem, match="no key"):
        world.hub.load_revocation(
            world.carol_fpr, guarded_certificate(world.carol.home, world.carol_fpr)
        )
    assert world.hub.key_info(world.carol_fpr) is None


def test_expired_key(world: World, plain: Path) -> None:
    past = ["--faked-system-time", "20200101T000000"]
    gpg(
        world.bob.home,
        *past,
        "--quick-gen-key",
        "Old <old@example.com>",
        "ed25519",
        "sign,cert",
        "1y",
    )
    old = primary_fingerprint(world.bob.home, "old@example.com")
    gpg(world.bob.home, *past, "--quick-add-key", old, "cv25519", "encr", "1y")
    exported = world.bob.export_public(old)

    with pytest.raises(KeyProblem, match=f"key {old} expired on 2020-12-31"):
        world.hub.inspect(exported)
    with pytest.raises(KeyProblem, match="expired"):
        world.hub.import_public(exported)

    # registered while it was valid (plain gpg, as the hub cannot turn its clock back)
    gpg(world.hub.home, "--import", stdin=exported.encode())
    assert not world.hub.can_encrypt_to(old)
    info = world.hub.key_info(old)
    assert info is not None and info.expired and not info.encryption_subkey
    with pytest.raises(OpenPGPError):
        world.hub.sign_encrypt(plain, plain.with_suffix(".dlv"), old, world.hub_fpr)
    assert not plain.with_suffix(".dlv").exists()

    # signed in 2020 while the key was valid, to a hub key of 2020: refused now
    gpg(
        world.hub.home,
        *past,
        "--quick-gen-key",
        "Hub 2020 <hub@bdi.example>",
        "ed25519",
        "sign,cert",
        "never",
    )
    hub2020 = primary_fingerprint(world.hub.home, "Hub 2020")
    gpg(world.hub.home, *past, "--quick-add-key", hub2020, "cv25519", "encr", "never")
    gpg(world.bob.home, "--import", stdin=world.hub.export_public(hub2020).encode())
    msg = plain.with_suffix(".pgp")
    gpg(world.bob.home, "--faked-system-time", "20200601T000000", "--sign", "-u", old,
        "--encrypt", "-r", hub2020, "--output", str(msg), str(plain))  # fmt: skip
    refused(world, msg, "expired key")


# -- keys ----------------------------------------------------------------------------------


def test_generated_key_shape(world: World) -> None:
    info = world.hub.key_info(world.hub_fpr)
    assert info is not None
    assert info.uids == ("BDI hub <hub@bdi.example>",)
    assert info.can_sign and info.encryption_subkey and info.expires is None
    assert not (info.revoked or info.expired)
    listing = gpg(world.hub.home, "--with-colons", "--list-secret-keys", world.hub_fpr).decode()
    records = [line.split(":") for line in listing.splitlines()]
    assert [(r[0], r[3], r[11], r[16]) for r in records if r[0] in ("sec", "ssb")] == [
        ("sec", "22", "scESC", "ed25519"),
        ("ssb", "18", "e", "cv25519"),
    ]
    with pytest.raises(ValueError):
        world.hub.generate_key("two\nlines")


def test_inspect_a_good_key_without_importing_it(world: World) -> None:
    info = world.hub.inspect(world.carol.export_public(world.carol_fpr))
    assert info.fingerprint == world.carol_fpr
    assert info.uids == ("Carol <carol@example.com>",)
    assert info.can_sign and info.encryption_subkey
    assert info.expires is None and not info.revoked and not info.expired
    assert world.hub.key_info(world.carol_fpr) is None
    assert world.hub.inspect(world.carol.export_public(world.carol_fpr).encode()) == info


def test_inspect_accepts_a_signing_subkey(world: World) -> None:
    info = world.hub.inspect(world.alice.export_public(world.alice_fpr))
    assert info.fingerprint == world.alice_fpr and info.can_sign


def _no_encryption_subkey(w: World) -> bytes:
    gpg(
        w.bob.home,
        "--quick-gen-key",
        "Signer <signer@example.com>",
        "ed25519",
        "sign,cert",
        "never",
    )
    return gpg(w.bob.home, "--export", "--armor", "signer@example.com")


CASES: dict[str, tuple[Callable[[World], bytes], str]] = {
    "garbage": (lambda w: b"\x00\x01 not a key", "no OpenPGP public key found"),
    "empty": (lambda w: b"", "no OpenPGP public key found"),
    "message": (
        lambda w: b"-----BEGIN PGP MESSAGE-----\n\n-----END PGP MESSAGE-----\n",
        "no OpenPGP",
    ),
    "two keys": (
        lambda w: (w.alice.export_public(w.alice_fpr) + w.bob.export_public(w.bob_fpr)).encode(),
        "holds 2 keys, exactly one is expected",
    ),
    "secret key": (
        lambda w: gpg(w.carol.home, "--export-secret-keys", "--armor", w.carol_fpr),
        "secret key",
    ),
    "revocation only": (
        lambda w: revocation_certificate(w.carol.home, w.carol_fpr),
        "no OpenPGP public key found",
    ),
    "revocation and key": (  # after a key, gpg would take it for a bad signature of that key
        lambda w: (
            revocation_certificate(w.carol.home, w.carol_fpr)
            + w.alice.export_public(w.alice_fpr).encode()
        ),
        "revocation certificate",
    ),
    "no encryption subkey": (_no_encryption_subkey, "has no usable encryption subkey"),
}


@pytest.mark.parametrize("case", CASES)
def test_inspect_and_import_refuse(world: World, case: str) -> None:
    build, message = CASES[case]
    data = build(world)
    with pytest.raises(KeyProblem, match=message):
        world.hub.inspect(data)
    with pytest.raises(KeyProblem, match=message):
        world.hub.import_public(data)
    assert world.hub.key_info(world.carol_fpr) is None  # nothing slipped in


def test_import_returns_the_primary_fingerprint(world: World) -> None:
    armoured = world.alice.export_public(world.alice_fpr)
    assert world.hub.import_public(armoured) == world.alice_fpr  # again: unchanged, fine
    assert world.hub.import_public(armoured.encode()) == world.alice_fpr


def test_can_encrypt_to(world: World) -> None:
    assert world.hub.can_encrypt_to(world.alice_fpr)
    assert world.hub.can_encrypt_to(world.alice_fpr.lower())
    assert not world.hub.can_encrypt_to("0" * 40)
    assert not world.hub.can_encrypt_to(world.carol_fpr)
    with pytest.raises(ValueError):
        world.hub.can_encrypt_to("alice@example.com")


def test_export_and_sign_errors(world: World, plain: Path) -> None:
    with pytest.raises(OpenPGPError):
        world.hub.export_public("0" * 40)
    dlv = plain.with_suffix(".dlv")
    with pytest.raises(OpenPGPError):  # the hub holds no secret key of alice's
        world.hub.sign_encrypt(plain, dlv, world.alice_fpr, world.alice_fpr)
    assert not dlv.exists()


def test_sign_encrypt_says_why_and_leaves_nothing(world: World, plain: Path) -> None:
    dlv = plain.with_suffix(".dlv")
    with pytest.raises(OpenPGPError, match="INV_RECP"):  # no such recipient key here
        world.alice.sign_encrypt(plain, dlv, "0" * 40, world.alice_fpr)
    assert not dlv.exists()
    with pytest.raises(FileNotFoundError):
        world.alice.sign_encrypt(plain.with_suffix(".missing"), dlv, world.hub_fpr, world.alice_fpr)


def test_sign_encrypt_replaces_a_stale_output(world: World, plain: Path) -> None:
    dlv, out = plain.with_suffix(".dlv"), plain.with_suffix(".out")
    dlv.write_bytes(b"left over by a crash")
    world.alice.sign_encrypt(plain, dlv, world.hub_fpr, world.alice_fpr)
    assert world.hub.decrypt_verify(dlv, out, MAX).ok
    assert out.read_bytes() == PLAIN


def test_home_path_too_long_for_the_agent_socket() -> None:
    home = Path("/tmp") / ("g" * 100)
    with pytest.raises(ValueError, match="too long"):
        OpenPGP(home)
    assert not home.exists()


class GpgCount:
    """Samples, in a thread, how many gpg processes this process has running at once."""

    def __init__(self) -> None:
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.002):
            with contextlib.suppress(psutil.Error):
                running = [p for p in me.children() if p.name() == "gpg"]
                self.most = max(self.most, len(running))

    def __enter__(self) -> GpgCount:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("limit", [1, 2])
def test_gpg_processes_at_once_stay_within_the_limit(
    world: World, tmp_path: Path, limit: int
) -> None:
    alice = OpenPGP(world.alice.home, max_processes=limit)
    big = tmp_path / "big.edi"
    big.write_bytes(os.urandom(4 << 20))  # incompressible: each gpg runs for a while
    outs = [tmp_path / f"{n}.pgp" for n in range(4)]
    with GpgCount() as count, ThreadPoolExecutor(4) as pool:
        done = pool.map(lambda out: alice.sign_encrypt(big, out, world.hub_fpr, world.alice_fpr),
                        outs)  # fmt: skip
        list(done)
    assert 1 <= count.most <= limit
    assert all(out.stat().st_size > 4 << 20 for out in outs)


def test_the_default_gpg_limit_is_two_more_than_the_cores(tmp_path: Path) -> None:
    assert load_settings(None, data=tmp_path).gpg_limit == (os.cpu_count() or 1) + 2
    assert load_settings(None, data=tmp_path, gpg_processes=1).gpg_limit == 1


def test_no_gpg_call_keeps_a_random_seed_file(plain: Path) -> None:
    """libgcrypt locks that file with sleeps of 0.25 s and more when another gpg holds it:
    concurrent sign+encrypt calls of the pipeline stalled on it for up to 1.5 s."""
    pgp = OpenPGP(Path(tempfile.mkdtemp(prefix="g", dir="/tmp")))
    try:
        me = pgp.generate_key("seed test")
        enc = plain.with_suffix(".pgp")
        pgp.sign_encrypt(plain, enc, me, me)
        assert pgp.decrypt_verify(enc, plain.with_suffix(".out"), MAX).ok
        assert not (pgp.home / "random_seed").exists()
    finally:
        pgp.stop_agent()
        shutil.rmtree(pgp.home, ignore_errors=True)
