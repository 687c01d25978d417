"""OpenPGP for the hub: keys, decrypt+verify of uploads, sign+encrypt of deliveries.

GnuPG does the cryptography, one gpg process per call, so every method blocks and is meant
to run in a worker thread. python-gnupg runs gpg for key handling and sign+encrypt; its
untyped results are turned into small typed values here. decrypt_verify, the access
decision, runs gpg itself: python-gnupg cannot kill gpg when a compression bomb goes past the
size limit, its ``ok`` is set by DECRYPTION_OKAY (which gpg also emits after aborting the
plaintext), and its status reader mixes gpg's log with status lines and splits at U+0085.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import gnupg

__all__ = ["KeyInfo", "KeyProblem", "OpenPGP", "OpenPGPError", "Verified"]

_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
_SUN_PATH_MAX = 107  # a Unix socket path is 108 bytes including its final NUL
# gpg writes plaintext in chunks of at most 32 KiB; --max-output stops it one chunk early,
# so a limit one slack above ours makes our own byte count the one that decides.
_SLACK = 64 * 1024
_USABLE_TTL = 10.0  # seconds a can_encrypt_to answer is trusted while the keyring is unchanged
_STATUS_MAX = 1024 * 1024  # status lines of a sane message are a few KiB
_STATUS_DRAIN_S = 0.2  # how often the status pipe is emptied while gpg runs
_UNUSABLE = frozenset({"r", "e", "i", "d", "n"})  # revoked, expired, invalid, disabled, not valid
_OPTIONS = [
    "--trust-model", "always",  # we trust exactly the keys in the home; no trustdb churn or locks
    "--no-auto-key-retrieve",  # a server must never fetch keys while verifying
    "--pinentry-mode", "error",  # never wait for a passphrase prompt
    # libgcrypt locks the seed file with F_SETLK and sleeps 0.25 s, then 1.25 s, ... when
    # another gpg holds it: concurrent sign+encrypt calls stalled for up to 1.5 s. Without
    # the file, each gpg seeds its generator from the kernel (getrandom).
    "--no-random-seed-file",
]  # fmt: skip
# decrypt+verify and sign+encrypt only read the keyring: no lock file. gpg otherwise creates,
# links and deletes one in the home on every call (the lock is released before the keybox is
# read, so it never kept a reader from an import), and on an ext4 without a journal every new
# inode costs a scan past the recently deleted ones. Imports still lock among themselves.
_READ_ONLY = ["--lock-never"]
_FAILURES = frozenset({"INV_RECP", "INV_SGNR", "FAILURE", "ERROR", "KEYEXPIRED", "KEYREVOKED"})
_SIGNATURE_PROBLEMS = (
    ("NO_PUBKEY", "unknown key"),
    ("REVKEYSIG", "revoked key"),
    ("EXPKEYSIG", "expired key"),
    ("EXPSIG", "expired signature"),
    ("BADSIG", "bad signature"),
    ("ERRSIG", "bad signature"),
)


class KeyProblem(ValueError):
    """A key file the hub cannot use; the message says why in one line."""


class OpenPGPError(RuntimeError):
    """gpg could not do what was asked (key generation, export, sign+encrypt)."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the hub needs to know about one public key."""

    fingerprint: str  # primary key fingerprint, upper-case hex
    uids: tuple[str, ...]
    can_sign: bool  # the key can make signatures now (primary or a signing subkey)
    encryption_subkey: bool  # has a usable (not expired/revoked) encryption subkey
    expires: datetime | None
    revoked: bool
    expired: bool


@dataclass(frozen=True, slots=True)
class Verified:
    """The verdict on one upload; ``signer`` is set only when ``ok``."""

    ok: bool
    signer: str | None  # PRIMARY key fingerprint of the signer
    reason: str  # short English reason when not ok, "" when ok
    size: int  # plaintext bytes gpg produced (all of them are in dst when ok)


class OpenPGP:
    """One GnuPG home (e.g. the hub's, inside its data folder)."""

    def __init__(self, home: Path, max_processes: int | None = None) -> None:
        """Create the home (0700) and start its agent, so concurrent calls find it running.

        `max_processes`: how many of decrypt_verify and sign_encrypt may run their gpg at
        once, whatever the number of threads calling (None: no limit)."""
        self.home = home
        # found once: otherwise every call's child tries each folder of PATH in turn
        self._gpg_bin = shutil.which("gpg") or "gpg"
        self._slots = threading.BoundedSemaphore(max_processes) if max_processes else None
        self._check_socket_path()
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)  # gpg warns about, and may refuse, a home others can read
        self._gpg = gnupg.GPG(self._gpg_bin, gnupghome=str(home), options=list(_OPTIONS))
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
        if not _FINGERPRINT.fullmatch(fingerprint):
            raise OpenPGPError(f"key generation failed: {_last_line(result.stderr)}")
        return fingerprint

    def export_public(self, fingerprint: str) -> str:
        """The public key, ASCII armoured, without third-party signatures."""
        fingerprint = _fingerprint(fingerprint)
        armoured = self._gpg.export_keys(fingerprint, armor=True, minimal=True)
        if not isinstance(armoured, str) or "BEGIN PGP PUBLIC KEY BLOCK" not in armoured:
            raise OpenPGPError(f"no public key {fingerprint} in {self.home}")
        return armoured

    def inspect(self, armoured: bytes | str) -> KeyInfo:
        """Describe a public key file without importing it; raise KeyProblem if unusable."""
        listing = _text(self._gpg.scan_keys_mem(_as_bytes(armoured)).data)  # --dry-run --import
        keys = _parse_listing(listing)
        if not keys:
            raise KeyProblem("no OpenPGP public key found")
        if re.search(r"^rvs:", listing, re.MULTILINE):  # importing it would revoke another key
            raise KeyProblem("the file also holds a revocation certificate")
        if any(key.secret for key in keys):
            raise KeyProblem("the file holds a secret key: hand in the public key only")
        if len(keys) > 1:
            raise KeyProblem(f"the file holds {len(keys)} keys, exactly one is expected")
        info = keys[0].info(_now())
        _raise_if_unusable(info)
        return info

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
        _raise_if_unusable(merged)
        return wanted

    def key_info(self, fingerprint: str) -> KeyInfo | None:
        """The key as this home knows it now, or None if absent."""
        fingerprint = _fingerprint(fingerprint)
        listing = self._gpg.list_keys(keys=[fingerprint])
        keys = [k for k in _parse_listing(_text(listing.data)) if k.fingerprint == fingerprint]
        return keys[0].info(_now()) if keys else None

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

    def decrypt_verify_into(self, src: Path | bytes, out: IO[bytes], max_bytes: int) -> Verified:
        """Decrypt an upload (a file, or the message itself) into `out`; ok only if
        encrypted to this home AND well signed.

        The plaintext streams to `out` and never exceeds max_bytes there: we stop writing
        at the limit and kill gpg (which is also told to stop, --max-output, just above
        it). When not ok, what was written must be thrown away. Errors writing `out` (disk
        full) are raised, not a verdict.
        """
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        sink = _Sink(out, max_bytes)
        result = self._decrypt(src, sink)
        if sink.error is not None:
            raise sink.error
        return _verdict(_Status.parse(result.status), result.returncode, sink)

    def sign_encrypt(
        self, src: Path | bytes, dst: Path | IO[bytes], recipient: str, signer: str
    ) -> None:
        """Sign with `signer` (a secret key here) and encrypt to `recipient`, binary, into
        the file dst (or the stream: a small message sealed in memory); src is a file gpg
        reads itself, or bytes fed on its stdin.

        No thread pumps data through Python (as python-gnupg's three per call would).
        --local-user, unlike python-gnupg's --default-key, fails instead of silently signing
        with another secret key.
        """
        recipient, signer = _fingerprint(recipient), _fingerprint(signer)
        args = [
            "--yes", "--sign", "--local-user", signer, "--encrypt", "--recipient", recipient,
            "--no-encrypt-to",
        ]  # fmt: skip
        if isinstance(dst, Path):
            result = self._run([*args, "--output", str(dst)], src)
        else:
            sink = _Sink(dst, sys.maxsize)
            result = self._run(args, src, sink)
            if sink.error is not None:
                raise sink.error
        status = _Status.parse(result.status)
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

    def _decrypt(self, src: Path | bytes, sink: _Sink) -> _GpgResult:
        """Run gpg --decrypt on src (a file, or bytes fed on its stdin), streaming its stdout
        into sink; kill it past the limit.

        Not python-gnupg: it cannot kill gpg, and gpg, once past --max-output, still inflates
        the rest of a compressed packet (~0.5 s per 200 MB of zeros, far more for bzip2).
        """
        return self._run(["--max-output", str(sink.limit + _SLACK), "--decrypt"], src, sink)

    def _run(self, args: list[str], src: Path | bytes, sink: _Sink | None = None) -> _GpgResult:
        """Run gpg with `args` on src (a file it reads itself, or bytes fed on its stdin), its
        stdout into `sink` if given; collect its status. gpg is killed if anything goes wrong."""
        feed = None
        if isinstance(src, Path):
            with src.open("rb"):  # fail with the usual error if src is missing
                pass
            args = [*args, "--", str(src)]
        else:
            feed = src
        stdout = subprocess.DEVNULL if sink is None else subprocess.PIPE
        with self._gpg_process(args, stdout, feed is not None) as (proc, status_fd):
            try:
                status = _pump(proc, status_fd, sink, feed)
            finally:
                if proc.poll() is None:
                    proc.kill()
        return _GpgResult(status, proc.returncode)

    @contextlib.contextmanager
    def _gpg_process(
        self, args: list[str], stdout: int, stdin: bool = False
    ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
        """gpg with its status lines on a pipe of their own, so nothing it logs can pass for
        one; yields the process and that pipe's read end, and reaps the process on exit.
        `stdin`: give it a pipe to read its input from."""
        with (
            self._slots or contextlib.nullcontext(),
            self._spawn(args, stdout, stdin) as spawned,
        ):
            yield spawned

    @contextlib.contextmanager
    def _spawn(
        self, args: list[str], stdout: int, stdin: bool
    ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
        status_read, status_write = os.pipe()
        argv = [self._gpg_bin, "--homedir", str(self.home), "--batch", "--no-tty", *_OPTIONS,
                *_READ_ONLY, "--status-fd", str(status_write), *args]  # fmt: skip
        try:
            with subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.DEVNULL,
                pass_fds=(status_write,),
            ) as proc:
                os.close(status_write)
                status_write = -1
                yield proc, status_read
        finally:
            os.close(status_read)
            if status_write >= 0:
                os.close(status_write)

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


@dataclass(frozen=True, slots=True)
class _GpgResult:
    status: str  # gpg's status lines
    returncode: int  # negative when killed


class _Sink:
    """Receives gpg's plaintext and writes at most `limit` bytes of it to `out`."""

    def __init__(self, out: IO[bytes], limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.error: OSError | None = None
        self._file = out

    def write(self, chunk: bytes) -> None:
        """Count every chunk; write it only while the total stays within the limit."""
        self.size += len(chunk)
        if self.error is None and self.size <= self.limit:
            try:
                self._file.write(chunk)
            except OSError as exc:
                self.error = exc

    @property
    def too_large(self) -> bool:
        return self.size > self.limit


class _Feed:
    """Writes a message to gpg's stdin as the pipe takes it (gpg may write its output
    before it has read all of its input: both pipes are served by one loop)."""

    def __init__(self, proc: subprocess.Popen[bytes], data: bytes) -> None:
        assert proc.stdin is not None
        self.pipe, self.data, self.offset = proc.stdin, memoryview(data), 0
        os.set_blocking(self.pipe.fileno(), False)

    def write(self) -> bool:
        """Write what the pipe takes now; True once all is written (or gpg stopped reading)."""
        try:
            self.offset += os.write(
                self.pipe.fileno(), self.data[self.offset : self.offset + 65536]
            )
        except BlockingIOError:
            return False
        except BrokenPipeError:
            self.offset = len(self.data)
        return self.offset >= len(self.data)


class _StatusPipe:
    """gpg's status lines, read without waking for each: gpg writes every line on its own,
    and a wakeup of the calling thread (and its wait for the interpreter lock) per line cost
    more than the reading. The pipe holds a sane message's status whole (~2 KB of 64 KB); it
    is emptied once gpg has exited, and every _STATUS_DRAIN_S meanwhile, so that a message
    making gpg write more cannot block it."""

    def __init__(self, fd: int) -> None:
        self.fd, self.data = fd, bytearray()
        os.set_blocking(fd, False)

    def drain(self) -> None:
        """Read what is there now; past _STATUS_MAX the rest is dropped (too_large says so)."""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            if len(self.data) <= _STATUS_MAX:
                self.data += chunk

    @property
    def too_large(self) -> bool:
        return len(self.data) > _STATUS_MAX


def _pump(
    proc: subprocess.Popen[bytes], status_fd: int, sink: _Sink | None, feed: bytes | None = None
) -> str:
    """Serve gpg until it exits: its output into `sink` (if any), `feed` to its stdin (if
    any), its status lines collected and returned; kill it on excess."""
    status = _StatusPipe(status_fd)
    exited = os.pidfd_open(proc.pid)  # readable once gpg has exited
    try:
        _serve_until_exit(proc, exited, status, sink, feed)
    finally:
        os.close(exited)
    proc.wait()
    status.drain()  # gpg is gone: all it wrote is in the pipe (whoever else may hold it)
    if status.too_large:
        return ""  # no status lines: refused as "not OpenPGP"
    return status.data.decode("utf-8", "replace")


def _serve_until_exit(
    proc: subprocess.Popen[bytes], exited: int, status: _StatusPipe, sink: _Sink | None,
    feed: bytes | None,
) -> None:  # fmt: skip
    """Move data between gpg's pipes and us until it has exited (`exited`: its pidfd) and
    closed its output."""
    with selectors.DefaultSelector() as selector:
        selector.register(exited, selectors.EVENT_READ, "exit")
        if sink is not None:
            assert proc.stdout is not None
            selector.register(proc.stdout.fileno(), selectors.EVENT_READ, sink)
        if feed is not None:
            writer = _Feed(proc, feed)
            selector.register(writer.pipe.fileno(), selectors.EVENT_WRITE, writer)
        while selector.get_map():
            events = selector.select(_STATUS_DRAIN_S)
            if not events:
                status.drain()
            for key, _ in events:
                _serve(selector, key)
            excess = status.too_large or (sink is not None and sink.too_large)
            if excess and proc.poll() is None:
                proc.kill()  # stop now: the pipes then drain and close


def _serve(selector: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
    """One ready pipe (or gpg's exit): move data; forget the pipe once it is done."""
    if isinstance(key.data, _Feed):
        if key.data.write():
            selector.unregister(key.fd)
            key.data.pipe.close()  # end of input
        return
    if key.data == "exit":
        selector.unregister(key.fd)
        return
    chunk = os.read(key.fd, 65536)
    if not chunk:
        selector.unregister(key.fd)
    else:
        key.data.write(chunk)


@dataclass(frozen=True, slots=True)
class _Status:
    """gpg's status lines, split on newline only (python-gnupg also splits on U+0085)."""

    lines: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def parse(cls, stderr: str) -> _Status:
        lines = []
        for line in stderr.split("\n"):
            if line.startswith("[GNUPG:] "):
                keyword, *args = line[9:].rstrip("\r").split(" ")
                lines.append((keyword, tuple(args)))
        return cls(tuple(lines))

    def count(self, keyword: str) -> int:
        return sum(1 for k, _ in self.lines if k == keyword)

    def args(self, keyword: str) -> tuple[str, ...]:
        return next((a for k, a in self.lines if k == keyword), ())


def _verdict(status: _Status, returncode: int, sink: _Sink) -> Verified:
    """Decide on one decryption; each refusal names the first thing wrong."""
    if sink.too_large:
        return Verified(False, None, "too large", sink.size)
    reason = _refusal(status)
    if reason is None and status.count("PLAINTEXT") != 1:
        reason = "malformed message"
    if reason is None and returncode != 0:
        reason = f"gpg failed (exit {returncode})"
    signer = _signer(status)
    if reason is None and signer is None:
        reason = "bad signature"
    if reason is not None:
        return Verified(False, None, reason, sink.size)
    return Verified(True, signer, "", sink.size)


def _refusal(status: _Status) -> str | None:
    """Encrypted to this home, decrypted, then exactly one good signature by a known key."""
    if not status.count("BEGIN_DECRYPTION"):
        signed = status.count("PLAINTEXT") or status.count("NEWSIG")
        return "not encrypted" if signed else "not OpenPGP"
    if status.count("DECRYPTION_FAILED") or not status.count("DECRYPTION_OKAY"):
        return "not decryptable"
    signatures = status.count("NEWSIG")
    if signatures != 1:
        return "not signed" if signatures == 0 else "several signatures"
    for keyword, reason in _SIGNATURE_PROBLEMS:
        if status.count(keyword):
            return reason
    if status.count("GOODSIG") != 1 or status.count("VALIDSIG") != 1:
        return "bad signature"
    return None


def _signer(status: _Status) -> str | None:
    """VALIDSIG's 10th field is the primary key's fingerprint, even for a subkey signature."""
    args = status.args("VALIDSIG")
    primary = args[9] if len(args) >= 10 else ""
    return primary if _FINGERPRINT.fullmatch(primary) else None


# -- key listings -------------------------------------------------------------------------


@dataclass(slots=True)
class _Subkey:
    validity: str
    caps: str
    expires: datetime | None

    def usable(self, now: datetime) -> bool:
        return self.validity not in _UNUSABLE and not _past(self.expires, now)


@dataclass(slots=True)
class _Key:
    """One key of a `--with-colons` listing (gpg's doc/DETAILS)."""

    secret: bool
    validity: str
    caps: str
    expires: datetime | None
    fingerprint: str = ""
    uids: list[str] = field(default_factory=list)
    subkeys: list[_Subkey] = field(default_factory=list)

    def info(self, now: datetime) -> KeyInfo:
        revoked = self.validity == "r"
        expired = self.validity == "e" or _past(self.expires, now)
        encrypts = any("e" in s.caps and s.usable(now) for s in self.subkeys)
        return KeyInfo(
            fingerprint=self.fingerprint,
            uids=tuple(self.uids),
            can_sign="S" in self.caps,  # upper case: usable by the key as a whole, now
            encryption_subkey=encrypts and not (revoked or expired),
            expires=self.expires,
            revoked=revoked,
            expired=expired,
        )


def _parse_listing(text: str) -> list[_Key]:
    keys: list[_Key] = []
    for line in text.split("\n"):
        f = line.rstrip("\r").split(":") + [""] * 12
        if f[0] in ("pub", "sec"):
            keys.append(_Key(f[0] == "sec", f[1], f[11], _date(f[6])))
        elif not keys:
            continue
        elif f[0] in ("sub", "ssb"):
            keys[-1].secret |= f[0] == "ssb"
            keys[-1].subkeys.append(_Subkey(f[1], f[11], _date(f[6])))
        elif f[0] == "fpr" and not keys[-1].fingerprint and not keys[-1].subkeys:
            keys[-1].fingerprint = f[9]
        elif f[0] == "uid":
            keys[-1].uids.append(_unescape(f[9]))
    return keys


def _raise_if_unusable(info: KeyInfo) -> None:
    if info.revoked:
        raise KeyProblem(f"key {info.fingerprint} is revoked")
    if info.expired:
        when = f" on {info.expires:%Y-%m-%d}" if info.expires else ""
        raise KeyProblem(f"key {info.fingerprint} expired{when}")
    if not info.can_sign:
        raise KeyProblem(f"key {info.fingerprint} cannot sign")
    if not info.encryption_subkey:
        raise KeyProblem(f"key {info.fingerprint} has no usable encryption subkey")


# -- small helpers ----------------------------------------------------------------------


def _fingerprint(value: str) -> str:
    """Only full fingerprints: a user id or short key id could name another key."""
    fingerprint = value.replace(" ", "").upper()
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(f"not an OpenPGP fingerprint: {value!r}")
    return fingerprint


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _text(data: object) -> str:
    """python-gnupg hands back bytes (stdout) or latin-1 decoded str (stderr)."""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data if isinstance(data, str) else ""


def _unescape(value: str) -> str:
    r"""Colon listings escape ':' and control characters as \xHH (UTF-8 bytes)."""
    raw = re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m[1], 16)]), value.encode())
    return raw.decode("utf-8", "replace")


def _date(epoch: str) -> datetime | None:
    return datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else None


def _past(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment <= now


def _now() -> datetime:
    return datetime.now(UTC)


def _last_line(stderr: object) -> str:
    lines = [line for line in _text(stderr).splitlines() if line.strip()]
    return lines[-1] if lines else "no detail from gpg"
