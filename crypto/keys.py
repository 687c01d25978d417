"""Keys as the hub sees them: described from gpg's `--with-colons` listings, and validated.

Owns KeyInfo and KeyProblem, the reading of a listing (gpg's doc/DETAILS), the rules for a
usable key file and key, and what counts as a fingerprint. It runs no gpg: the caller hands
in the listing text.

Imports nothing of the project (the standard library only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = [
    "KeyInfo",
    "KeyProblem",
    "describe_key_file",
    "find_key",
    "full_fingerprint",
    "is_fingerprint",
    "raise_if_unusable",
    "revoked_only",
]

_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
_UNUSABLE = frozenset({"r", "e", "i", "d", "n"})  # revoked, expired, invalid, disabled, not valid


class KeyProblem(ValueError):
    """A key file the hub cannot use; the message says why in one line."""


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


def describe_key_file(listing: str) -> KeyInfo:
    """The one usable public key of a key file, from its `--dry-run --import` listing;
    KeyProblem otherwise (a file holding more could revoke or replace other keys)."""
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
    raise_if_unusable(info)
    return info


def find_key(listing: str, fingerprint: str) -> KeyInfo | None:
    """The key with this primary fingerprint in a keyring listing, as of now, or None."""
    keys = [k for k in _parse_listing(listing) if k.fingerprint == fingerprint]
    return keys[0].info(_now()) if keys else None


def revoked_only(listing: str, fingerprint: str) -> KeyInfo:
    """The key `fingerprint` of a scratch home that held only it before a revocation file
    was imported; KeyProblem unless the file revoked it and brought no other key."""
    keys = _parse_listing(listing)
    others = sorted({k.fingerprint for k in keys} - {fingerprint})
    if others:
        raise KeyProblem(f"the file holds another key ({others[0]}), not a revocation")
    info = find_key(listing, fingerprint)
    if info is None or not info.revoked:
        raise KeyProblem(f"the file does not revoke key {fingerprint}")
    return info


def raise_if_unusable(info: KeyInfo) -> None:
    """KeyProblem unless the key can both sign uploads and receive deliveries now."""
    if info.revoked:
        raise KeyProblem(f"key {info.fingerprint} is revoked")
    if info.expired:
        when = f" on {info.expires:%Y-%m-%d}" if info.expires else ""
        raise KeyProblem(f"key {info.fingerprint} expired{when}")
    if not info.can_sign:
        raise KeyProblem(f"key {info.fingerprint} cannot sign")
    if not info.encryption_subkey:
        raise KeyProblem(f"key {info.fingerprint} has no usable encryption subkey")


def full_fingerprint(value: str) -> str:
    """Only full fingerprints: a user id or short key id could name another key."""
    fingerprint = value.replace(" ", "").upper()
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(f"not an OpenPGP fingerprint: {value!r}")
    return fingerprint


def is_fingerprint(value: str) -> bool:
    """A full fingerprint exactly as gpg prints it (upper-case hex, v4 or v5)."""
    return _FINGERPRINT.fullmatch(value) is not None


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
    """The keys of a listing; a key's own fingerprint is the `fpr` before its subkeys'."""
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


# -- small helpers ----------------------------------------------------------------------


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
