"""A participant's kit home: its GnuPG home, its identity, the hub key pinned on first use,
and the journal of what it has received (so a rerun after a crash never duplicates)."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bdi.crypto import OpenPGP


class KitError(RuntimeError):
    """A kit command failed; the message is the one-line reason."""


@dataclass
class KitHome:
    root: Path

    @property
    def gnupg(self) -> Path:
        return self.root / "gnupg"

    @property
    def config(self) -> Path:
        return self.root / "kit.toml"

    @property
    def pinned_key(self) -> Path:
        return self.root / "hub-public-key.asc"

    @property
    def journal(self) -> Path:
        return self.root / "received.jsonl"

    @property
    def work(self) -> Path:
        path = self.root / "work"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def pgp(self) -> OpenPGP:
        try:
            return OpenPGP(self.gnupg)
        except ValueError as exc:
            raise KitError(str(exc)) from exc

    def identity(self) -> dict[str, str]:
        try:
            with self.config.open("rb") as f:
                return {k: str(v) for k, v in tomllib.load(f).items()}
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise KitError(f"{self.root} is not a kit home (run `bdi kit keygen`): {exc}") from exc

    def write_identity(self, values: dict[str, str]) -> None:
        text = "".join(f'{k} = "{v}"\n' for k, v in values.items())
        _write_atomic(self.config, text.encode())

    def pin(self, pgp: OpenPGP, armoured: str) -> str:
        """The hub key's fingerprint; pinned on first use, refused if it ever changes."""
        fingerprint = pgp.inspect(armoured).fingerprint
        identity = self.identity()
        pinned = identity.get("hub_fingerprint")
        if pinned and pinned != fingerprint:
            raise KitError(f"the hub key changed: pinned {pinned}, offered {fingerprint}")
        if not pinned:
            pgp.import_public(armoured)
            _write_atomic(self.pinned_key, armoured.encode())
            self.write_identity({**identity, "hub_fingerprint": fingerprint})
        return fingerprint

    def received(self) -> dict[str, str]:
        """Digest of each delivery already written locally -> its local file name."""
        if not self.journal.exists():
            return {}
        out = {}
        for line in self.journal.read_text().splitlines():
            entry = json.loads(line)
            out[entry["sha256"]] = entry["local"]
        return out

    def record(self, sha256: str, local: str) -> None:
        with self.journal.open("a") as f:
            f.write(json.dumps({"sha256": sha256, "local": local}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
