"""A key file described before it is registered (the console's preview): fingerprint, user
ids, algorithms, expiry, and the problems that would refuse it.

The description comes from gpg's listing of the file in a scratch home, so that nothing is
imported; the problems are those of `OpenPGP.inspect`, the very check registration makes.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncssh

from bdi.crypto import KeyProblem, OpenPGP

ALGORITHMS = {"1": "RSA", "2": "RSA", "3": "RSA", "16": "ElGamal", "17": "DSA", "18": "ECDH",
              "19": "ECDSA", "22": "EdDSA"}  # fmt: skip
CAPABILITIES = {"s": "signature", "e": "chiffrement", "c": "certification", "a": "authentification"}
GPG_TIMEOUT_S = 30


@dataclass
class KeyPreview:
    """What an operator checks before saving a key; `problems` empty: the hub takes it."""

    kind: str  # openpgp | ssh
    fingerprint: str = ""
    uids: list[str] = field(default_factory=list)
    algorithms: list[str] = field(default_factory=list)
    created: datetime | None = None
    expires: datetime | None = None
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def iso(at: datetime | None) -> str | None:
            return at.isoformat() if at else None

        return {"kind": self.kind, "fingerprint": self.fingerprint, "uids": self.uids,
                "algorithms": self.algorithms, "created": iso(self.created),
                "expires": iso(self.expires), "problems": self.problems}  # fmt: skip


def _date(epoch: str) -> datetime | None:
    return datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else None


def _algorithm(fields: list[str]) -> str:
    name = ALGORITHMS.get(fields[3], f"algorithme {fields[3]}")
    size = fields[16] or (f"{fields[2]} bits" if fields[2] else "")
    uses = ", ".join(CAPABILITIES[c] for c in fields[11] if c in CAPABILITIES)
    return " ".join(p for p in (name, size, f"({uses})" if uses else "") if p)


def describe_listing(listing: str) -> KeyPreview:
    """The first key of a `--with-colons` listing (gpg's doc/DETAILS)."""
    preview, keys = KeyPreview("openpgp"), 0
    for line in listing.splitlines():
        f = line.split(":") + [""] * 20
        if f[0] == "pub":
            keys += 1
            if keys > 1:
                break
            preview.created, preview.expires = _date(f[5]), _date(f[6])
            preview.algorithms.append(_algorithm(f))
        elif keys and f[0] == "sub":
            preview.algorithms.append(_algorithm(f))
        elif keys and f[0] == "fpr" and not preview.fingerprint:
            preview.fingerprint = f[9]
        elif keys and f[0] == "uid":
            preview.uids.append(f[9])
    return preview


def _listing(data: bytes) -> str:
    """gpg's listing of a key file, imported nowhere (show-only, in a scratch home)."""
    home = tempfile.mkdtemp(prefix="bdi-show-", dir="/tmp")
    try:
        done = subprocess.run(
            ["gpg", "--homedir", home, "--batch", "--no-tty", "--with-colons",
             "--import-options", "show-only", "--import"],
            input=data, capture_output=True, timeout=GPG_TIMEOUT_S, check=False,
        )  # fmt: skip
        return done.stdout.decode("utf-8", "replace")
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"],
                       capture_output=True, timeout=GPG_TIMEOUT_S, check=False)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)


def preview_pgp(pgp: OpenPGP, text: str) -> KeyPreview:
    """Blocking (two gpg runs): call it in a thread."""
    data = text.encode("utf-8")
    preview = describe_listing(_listing(data))
    try:
        pgp.inspect(data)
    except KeyProblem as exc:
        preview.problems.append(str(exc))
    return preview


async def preview_pgp_key(pgp: OpenPGP, text: str) -> KeyPreview:
    return await asyncio.to_thread(preview_pgp, pgp, text)


def preview_ssh_key(text: str) -> KeyPreview:
    preview = KeyPreview("ssh")
    try:
        key = asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        preview.problems.append(f"not an SSH public key: {exc}")
        return preview
    preview.fingerprint = key.get_fingerprint("sha256")
    preview.algorithms.append(key.get_algorithm())
    comment = key.get_comment()
    preview.uids = [comment] if comment else []
    return preview
