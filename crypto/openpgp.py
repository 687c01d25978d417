"""OpenPGP for the hub: keys, decrypt+verify of uploads, sign+encrypt of deliveries.

Owns the OpenPGP class (one GnuPG home), OpenPGPError, Verified and the verdict on an
upload. GnuPG does the cryptography, one gpg process per call, so every method blocks and is
meant to run in a worker thread. python-gnupg runs gpg for key handling; its untyped results
are turned into small typed values here. decrypt_verify, the access decision, and
sign_encrypt run gpg through gpgrun: python-gnupg cannot kill gpg when a compression bomb
goes past the size limit, its ``ok`` is set by DECRYPTION_OKAY (which gpg also emits after
aborting the plaintext), and its status reader mixes gpg's log with status lines and splits
at U+0085.

Before gpg sees an upload, packets surveys its packet headers against the Bounds (a
flood of recipient packets is refused in microseconds); while gpg runs, its CPU time and
status lines are watched, for what only decryption shows. Past a bound the verdict is a
refusal naming it, never GpgUnavailable (that one is the hub's fault, and retried).

Imports gpgrun (running gpg), keys (describing and validating keys), packets (the survey
of a message's packets) and refusals (why a message is refused) of the project, and nothing
else of it: never the store or the mailbox.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import gnupg

from bdi.crypto.gpgrun import OPTIONS, FileSink, GpgRunner, Guard, Sink, Status, pipe
from bdi.crypto.keys import (
    KeyInfo,
    KeyProblem,
    describe_key_file,
    find_key,
    full_fingerprint,
    is_fingerprint,
    raise_if_unusable,
    revoked_only,
)
from bdi.crypto.packets import Bounds, survey
from bdi.crypto.refusals import Reason, Refusal

__all__ = [
    "Bounds", "GpgUnavailable", "KeyInfo", "KeyProblem", "OpenPGP", "OpenPGPError", "Plaintext",
    "Reason", "Refusal", "Verified", "pipe",
]  # fmt: skip

# gpg reports NO_SECKEY or pkdecrypt_failed both for a message not encrypted to us and when
# its agent dies mid-call (seen: 23 of 300 decryptions with the agent killed every 50 ms):
# a refusal stands once it is given again with the same agent alive before and after.
_OPINIONS = 3
_SUN_PATH_MAX = 107  # a Unix socket path is 108 bytes including its final NUL
_USABLE_TTL = 10.0  # seconds a can_encrypt_to answer is trusted while the keyring is unchanged
_AGENT_SENSITIVE = Reason(Refusal.NOT_DECRYPTABLE)
_FAILURES = frozenset({"INV_RECP", "INV_SGNR", "FAILURE", "ERROR", "KEYEXPIRED", "KEYREVOKED"})
_SIGNATURE_PROBLEMS = (
    ("NO_PUBKEY", Refusal.UNKNOWN_KEY),
    ("REVKEYSIG", Refusal.REVOKED_KEY),
    ("EXPKEYSIG", Refusal.EXPIRED_KEY),
    ("EXPSIG", Refusal.EXPIRED_SIGNATURE),
    ("BADSIG", Refusal.BAD_SIGNATURE),
    ("ERRSIG", Refusal.BAD_SIGNATURE),
)
# status lines whose count, once past the most a real message has, dooms the verdict: gpg
# is stopped there (packets inside the encrypted data are seen only by gpg)
# gpg writes the revocation certificate it makes with a key behind this guard (a ':' that
# keeps an import by mistake from revoking the key): loading it on purpose removes it
_GUARDED = re.compile(rb"^:(-----BEGIN PGP PUBLIC KEY BLOCK-----)", re.MULTILINE)
_WATCHED = re.compile(rb"^\[GNUPG:\] (ENC_TO|BEGIN_DECRYPTION|NEWSIG|PLAINTEXT)\b", re.MULTILINE)


class Plaintext(Protocol):
    """Where a decryption writes: a file, or a stream of the caller's. Rewound and emptied
    (seek(0), truncate()) only before a second decryption, when the first one was refused
    as not decryptable (no plaintext)."""

    def write(self, chunk: bytes, /) -> object: ...
    def seek(self, offset: int, /) -> int: ...
    def truncate(self) -> int: ...


class OpenPGPError(RuntimeError):
    """gpg could not do what was asked (key generation, export, sign+encrypt)."""


class GpgUnavailable(OpenPGPError):
    """gpg could not give a verdict on a message (its agent died, it was killed): the hub's
    fault, never the sender's; the caller tries again later."""


@dataclass(frozen=True, slots=True)
class Verified:
    """The verdict on one upload; ``signer`` is set only when ``ok``."""

    ok: bool
    signer: str | None  # PRIMARY key fingerprint of the signer
    reason: Reason | None  # why not, when not ok (str(): in English, for the hub's log)
    size: int  # plaintext bytes gpg produced (all of them are in dst when ok)


class OpenPGP:
    """One GnuPG home (e.g. the hub's, inside its data folder)."""

    def __init__(
        self, home: Path, max_processes: int | None = None, bounds: Bounds | None = None
    ) -> None:
        """Create the home (0700) and start its agent, so concurrent calls find it running.

        `max_processes`: how many of decrypt_verify and sign_encrypt may run their gpg at
        once, whatever the number of threads calling (None: no limit). `bounds`: the work
        one message may ask for (packets, recipients, CPU time)."""
        self.home = home
        self.bounds = bounds or Bounds()
        self._runner = GpgRunner(home, max_processes)
        self._check_socket_path()
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)  # gpg warns about, and may refuse, a home others can read
        self._gpg = gnupg.GPG(self._runner.binary, gnupghome=str(home), options=list(OPTIONS))
        self._usable: dict[str, tuple[tuple[int, int], bool]] = {}
        self._gpgconf("--launch", "gpg-agent")

    # -- keys ---------------------------------------------------------------------------

    def generate_key(self, uid: str) -> str:
        """An ed25519 signing key with a cv25519 encryption subkey, no passphrase, no expiry.

        No passphrase because the hub signs unattended; the home's 0700 folder protects it.
        """
        if not uid.strip() or any(ord(c) < 32 or c == "\x7f" for c in uid):
            raise ValueError(f"unusable user id {uid!r}")
        params = (
            "Key-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\n"
            "Subkey-Type: ECDH\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n"
            f"Name-Real: {uid}\nExpire-Date: 0\n%no-protection\n%commit\n"
        )
        result = self._gpg.gen_key(params)
        fingerprint = str(result.fingerprint or "")
        if not is_fingerprint(fingerprint):
            raise OpenPGPError(f"key generation failed: {_last_line(result.stderr)}")
        return fingerprint

    def export_public(self, fingerprint: str) -> str:
        """The public key, ASCII armoured, without third-party signatures."""
        fingerprint = full_fingerprint(fingerprint)
        armoured = self._gpg.export_keys(fingerprint, armor=True, minimal=True)
        if not isinstance(armoured, str) or "BEGIN PGP PUBLIC KEY BLOCK" not in armoured:
            raise OpenPGPError(f"no public key {fingerprint} in {self.home}")
        return armoured

    def inspect(self, armoured: bytes | str) -> KeyInfo:
        """Describe a public key file without importing it; raise KeyProblem if unusable."""
        listing = self._gpg.scan_keys_mem(_as_bytes(armoured)).data  # --dry-run --import
        return describe_key_file(_text(listing))

    def import_public(self, armoured: bytes | str) -> str:
        """Import one usable public key and return its primary fingerprint.

        The key is checked twice: as a file (inspect) and as merged into this home, because
        the home may already hold a revocation for it.
        """
        data = _as_bytes(armoured)
        wanted = self.inspect(data).fingerprint
        result = self._gpg.import_keys(data, extra_args=["--import-options", "import-minimal"])
        if wanted not in {str(f) for f in result.fingerprints}:
            raise KeyProblem(f"gpg did not import key {wanted}: {_last_line(result.stderr)}")
        merged = self.key_info(wanted)
        if merged is None:  # pragma: no cover - gpg said it imported it
            raise KeyProblem(f"key {wanted} is missing after import")
        raise_if_unusable(merged)
        return wanted

    def load_revocation(self, fingerprint: str, data: bytes | str) -> KeyInfo:
        """Revoke a key of this home with its owner's revocation certificate (as gpg
        stored it, guard included) or the revoked key itself; KeyProblem, nothing changed,
        unless the file revokes exactly that key.

        The file is imported first into a scratch home holding only that key, so that
        nothing else it may hold (other keys, revocations of other keys) can reach this
        home; this home then imports that key as the scratch home knows it, revoked."""
        fingerprint = full_fingerprint(fingerprint)
        if self.key_info(fingerprint) is None:
            raise KeyProblem(f"no key {fingerprint} in {self.home}")
        revoked = self._revoked_copy(fingerprint, _GUARDED.sub(rb"\1", _as_bytes(data)))
        result = self._gpg.import_keys(revoked, extra_args=["--import-options", "import-minimal"])
        merged = self.key_info(fingerprint)
        if merged is None or not merged.revoked:  # pragma: no cover - the scratch home said so
            raise KeyProblem(f"key {fingerprint} is not revoked: {_last_line(result.stderr)}")
        return merged

    def _revoked_copy(self, fingerprint: str, data: bytes) -> bytes:
        """The key as revoked by `data` in a scratch home; KeyProblem if it is not."""
        scratch = Path(tempfile.mkdtemp(prefix="bdi-revoke-"))
        try:
            gpg = gnupg.GPG(self._runner.binary, gnupghome=str(scratch), options=list(OPTIONS))
            gpg.import_keys(self._gpg.export_keys(fingerprint, armor=False, minimal=True))
            gpg.import_keys(data)
            revoked_only(_text(gpg.list_keys().data), fingerprint)
            exported = gpg.export_keys(fingerprint, armor=False)
            assert isinstance(exported, bytes)
            return exported
        finally:
            subprocess.run(["gpgconf", "--homedir", str(scratch), "--kill", "all"],
                           capture_output=True, check=False, timeout=30)  # fmt: skip
            shutil.rmtree(scratch, ignore_errors=True)

    def key_info(self, fingerprint: str) -> KeyInfo | None:
        """The key as this home knows it now, or None if absent."""
        fingerprint = full_fingerprint(fingerprint)
        listing = self._gpg.list_keys(keys=[fingerprint])
        return find_key(_text(listing.data), fingerprint)

    def can_encrypt_to(self, fingerprint: str) -> bool:
        """Checked at delivery time: a registered key may have expired or been revoked since.

        The answer is kept for a few seconds, and forgotten as soon as the keyring changes
        (an import of a new key or of a revocation), to spare one gpg process per upload."""
        stamp = (self._keyring_stamp(), int(time.monotonic() // _USABLE_TTL))
        cached = self._usable.get(fingerprint)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        info = self.key_info(fingerprint)
        usable = bool(info and info.encryption_subkey and not (info.revoked or info.expired))
        self._usable[fingerprint] = (stamp, usable)
        return usable

    def _keyring_stamp(self) -> int:
        try:
            return (self.home / "pubring.kbx").stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    # -- messages -----------------------------------------------------------------------

    def decrypt_verify(self, src: Path, dst: Path, max_bytes: int) -> Verified:
        """Decrypt an upload into the file dst (owner-only); dst is removed unless ok."""
        with src.open("rb"):  # fail before creating dst if src is missing
            pass
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # plaintext: owner only
        try:
            with os.fdopen(fd, "wb") as out:
                verdict = self.decrypt_verify_into(src, out, max_bytes)
        except BaseException:
            dst.unlink(missing_ok=True)
            raise
        if not verdict.ok:
            dst.unlink(missing_ok=True)
        return verdict

    def decrypt_verify_into(self, src: Path | bytes, out: Plaintext, max_bytes: int) -> Verified:
        """Decrypt an upload (a file, or the message itself) into `out`; ok only if
        encrypted to this home AND well signed.

        The plaintext streams to `out` and never exceeds max_bytes there: we stop writing
        at the limit and kill gpg (which is also told to stop, --max-output, just above
        it). When not ok, what was written must be thrown away. Errors writing `out` (disk
        full) are raised, not a verdict.
        """
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        surveyed = survey(src, self.bounds)
        if surveyed.problem is not None:  # gpg never sees it
            return Verified(False, None, surveyed.problem, 0)
        verdict = self._decrypt_once(src, out, max_bytes)
        if verdict.ok or verdict.reason != _AGENT_SENSITIVE:
            return verdict
        return self._second_opinion(src, out, max_bytes)

    def decrypt_verify_to_fd(self, src: Path | bytes, fd: int, max_bytes: int) -> Verified:
        """decrypt_verify_into, gpg writing the plaintext itself into the open file `fd`
        (empty; a reader may follow it as it grows): for a big upload, nothing of it
        passes through Python. Past max_bytes gpg is stopped and the verdict is TOO_LARGE
        (the file may then hold a little more than max_bytes)."""
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        surveyed = survey(src, self.bounds)
        if surveyed.problem is not None:
            return Verified(False, None, surveyed.problem, 0)
        verdict = self._decrypt_once(src, None, max_bytes, fd)
        if verdict.ok or verdict.reason != _AGENT_SENSITIVE:
            return verdict
        return self._second_opinion(src, None, max_bytes, fd)

    def _decrypt_once(
        self, src: Path | bytes, out: Plaintext | None, max_bytes: int, fd: int = -1
    ) -> Verified:
        sink: Sink | FileSink = FileSink(fd, max_bytes) if out is None else Sink(out, max_bytes)
        result = self._runner.decrypt(src, sink, self._guard(src))
        if sink.error is not None:
            raise sink.error
        if isinstance(sink, FileSink) and result.returncode > 0:
            _raise_if_full(fd)  # gpg's write failed: the hub's fault, not the file's
        if sink.too_large:
            return Verified(False, None, Reason(Refusal.TOO_LARGE), sink.size)
        if result.stopped is not None:  # we stopped gpg for what the message asked of it
            return Verified(False, None, result.stopped, sink.size)
        if result.returncode < 0:  # killed, and not by us
            raise GpgUnavailable(f"gpg was killed (signal {-result.returncode})")
        return _verdict(Status.parse(result.status), result.returncode, sink)

    def _guard(self, src: Path | bytes) -> Guard:
        """gpg's CPU time grows with the message and the plaintext it writes; the status
        lines of a real message hold one of each watched keyword (ENC_TO: one per
        recipient)."""
        size = src.stat().st_size if isinstance(src, Path) else len(src)
        base, per_byte = self.bounds.cpu_budget(size)
        recipients = self.bounds.recipients
        return Guard(base, per_byte, lambda status: _doomed(status, recipients))

    def _second_opinion(
        self, src: Path | bytes, out: Plaintext | None, max_bytes: int, fd: int = -1
    ) -> Verified:
        """Decrypt again (`out` rewound and emptied, or the file `fd`) until the agent
        stayed up throughout."""
        for _ in range(_OPINIONS):
            before = self.agent_pid()
            if out is not None:
                out.seek(0)
                out.truncate()
            else:
                os.ftruncate(fd, 0)  # gpg wrote nothing: it could not decrypt
            verdict = self._decrypt_once(src, out, max_bytes, fd)
            if verdict.ok or verdict.reason != _AGENT_SENSITIVE:
                return verdict
            if before is not None and self.agent_pid() == before:
                return verdict
        raise GpgUnavailable("gpg-agent did not stay up during a decryption")

    def agent_pid(self) -> int | None:
        """The running agent's process id (started if need be); None if it cannot answer."""
        try:
            done = subprocess.run(
                ["gpg-connect-agent", "--homedir", str(self.home), "getinfo pid", "/bye"],
                capture_output=True, check=False, timeout=10,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        for line in done.stdout.decode("ascii", "replace").splitlines():
            if line.startswith("D ") and line[2:].strip().isdigit():
                return int(line[2:].strip())
        return None

    def reserve_process(self) -> bool:
        """Take a place for one gpg process now if one is free (see GpgRunner.try_reserve);
        a sign_encrypt(..., reserved=True) then runs in it, or release_process gives it back."""
        return self._runner.try_reserve()

    def release_process(self) -> None:
        self._runner.release()

    def sign_encrypt(
        self, src: Path | bytes | int, dst: Path | IO[bytes], recipient: str, signer: str,
        reserved: bool = False,
    ) -> None:  # fmt: skip
        """Sign with `signer` (a secret key here) and encrypt to `recipient`, binary, into
        the file dst (or the stream: a small message sealed in memory); src is a file gpg
        reads itself, bytes fed on its stdin, or the read end of a `pipe` the caller writes
        the message into while gpg runs (closed here). `reserved`: in the place taken by
        reserve_process.

        No thread pumps data through Python (as python-gnupg's three per call would).
        --local-user, unlike python-gnupg's --default-key, fails instead of silently signing
        with another secret key.
        """
        recipient, signer = full_fingerprint(recipient), full_fingerprint(signer)
        args = [
            "--yes", "--sign", "--local-user", signer, "--encrypt", "--recipient", recipient,
            "--no-encrypt-to",
        ]  # fmt: skip
        if isinstance(dst, Path):
            result = self._runner.run([*args, "--output", str(dst)], src, reserved=reserved)
        else:
            sink = Sink(dst, sys.maxsize)
            result = self._runner.run(args, src, sink, reserved=reserved)
            if sink.error is not None:
                raise sink.error
        status = Status.parse(result.status)
        signed = status.count("SIG_CREATED") == 1 and status.count("END_ENCRYPTION") == 1
        if result.returncode == 0 and signed:
            return
        if isinstance(dst, Path):
            dst.unlink(missing_ok=True)
        why = " ".join(" ".join((k, *a)) for k, a in status.lines if k in _FAILURES)
        raise OpenPGPError(f"sign+encrypt to {recipient} failed: {why or 'gpg error'}")

    def stop_agent(self) -> None:
        """Stop this home's agent; needed before a temporary home is removed."""
        self._gpgconf("--kill", "gpg-agent")

    # -- internals ----------------------------------------------------------------------

    def _check_socket_path(self) -> None:
        """Refuse a home whose agent socket path is too long: gpg would fail obscurely later."""
        out = subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--list-dirs", "agent-browser-socket"],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        if len(out.strip()) > _SUN_PATH_MAX:
            raise ValueError(f"GnuPG home path too long for its agent socket: {self.home}")

    def _gpgconf(self, *args: str) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), *args],
            capture_output=True,
            check=False,
            timeout=30,
        )


# -- decrypt+verify verdict -------------------------------------------------------------


def _doomed(status: bytes, recipients: int) -> Reason | None:
    """The refusal the status lines so far already make certain, None if none yet: gpg met
    more recipient packets than allowed, or a second encrypted packet, signature or
    plaintext (the verdict accepts exactly one of each), inside the encrypted data."""
    seen = Counter(_WATCHED.findall(status))
    if seen[b"ENC_TO"] > recipients:
        return Reason(Refusal.TOO_MANY_RECIPIENTS, recipients)
    if seen[b"BEGIN_DECRYPTION"] > 1:
        return Reason(Refusal.SEVERAL_ENCRYPTED)
    if seen[b"NEWSIG"] > 1:
        return Reason(Refusal.SEVERAL_SIGNATURES)
    if seen[b"PLAINTEXT"] > 1:
        return Reason(Refusal.MALFORMED)
    return None


def _verdict(status: Status, returncode: int, sink: Sink | FileSink) -> Verified:
    """Decide on one decryption; each refusal names the first thing wrong."""
    reason = _refusal(status)
    if reason is None and status.count("PLAINTEXT") != 1:
        reason = Reason(Refusal.MALFORMED)
    if reason is None and returncode != 0:
        reason = Reason(Refusal.GPG_FAILED, returncode)
    signer = _signer(status)
    if reason is None and signer is None:
        reason = Reason(Refusal.BAD_SIGNATURE)
    if reason is not None:
        return Verified(False, None, reason, sink.size)
    return Verified(True, signer, None, sink.size)


def _refusal(status: Status) -> Reason | None:
    """Encrypted to this home, decrypted, then exactly one good signature by a known key."""
    if not status.count("BEGIN_DECRYPTION"):
        signed = status.count("PLAINTEXT") or status.count("NEWSIG")
        return Reason(Refusal.NOT_ENCRYPTED if signed else Refusal.NOT_OPENPGP)
    if status.count("DECRYPTION_FAILED") or not status.count("DECRYPTION_OKAY"):
        return Reason(Refusal.NOT_DECRYPTABLE)
    signatures = status.count("NEWSIG")
    if signatures != 1:
        return Reason(Refusal.NOT_SIGNED if signatures == 0 else Refusal.SEVERAL_SIGNATURES)
    for keyword, refusal in _SIGNATURE_PROBLEMS:
        if status.count(keyword):
            return Reason(refusal)
    if status.count("GOODSIG") != 1 or status.count("VALIDSIG") != 1:
        return Reason(Refusal.BAD_SIGNATURE)
    return None


def _signer(status: Status) -> str | None:
    """VALIDSIG's 10th field is the primary key's fingerprint, even for a subkey signature."""
    args = status.args("VALIDSIG")
    primary = args[9] if len(args) >= 10 else ""
    return primary if is_fingerprint(primary) else None


# -- small helpers ----------------------------------------------------------------------


_FULL = 1 << 20  # free bytes under which a failed write of gpg's is taken for a full disk


def _raise_if_full(fd: int) -> None:
    found = os.fstatvfs(fd)
    if found.f_bavail * found.f_frsize < _FULL:
        raise OSError(errno.ENOSPC, "no space left for the plaintext")


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _text(data: object) -> str:
    """python-gnupg hands back bytes (stdout) or latin-1 decoded str (stderr)."""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data if isinstance(data, str) else ""


def _last_line(stderr: object) -> str:
    lines = [line for line in _text(stderr).splitlines() if line.strip()]
    return lines[-1] if lines else "no detail from gpg"
