# Type stubs for the part of python-gnupg (no stubs upstream) that bdi.crypto uses.
# Kept to what the library really returns, so mypy checks our use of it.
from collections.abc import Iterable, Sequence
from typing import IO, Any

class _Result:
    data: bytes
    stderr: str
    status: str | None
    status_detail: str | None
    returncode: int | None

class GenKey(_Result):
    fingerprint: str | None

class ImportResult(_Result):
    fingerprints: list[str]
    count: int

class ListKeys(_Result, list[dict[str, Any]]): ...
class ScanKeys(ListKeys): ...

class Crypt(_Result):
    ok: bool

class GPG:
    gnupghome: str
    def __init__(
        self,
        gpgbinary: str = ...,
        gnupghome: str | None = ...,
        verbose: bool = ...,
        use_agent: bool = ...,
        keyring: str | None = ...,
        options: Sequence[str] | None = ...,
        secret_keyring: str | None = ...,
        env: dict[str, str] | None = ...,
    ) -> None: ...
    def gen_key(self, input: str) -> GenKey: ...
    def export_keys(
        self,
        keyids: str | Iterable[str],
        secret: bool = ...,
        armor: bool = ...,
        minimal: bool = ...,
        passphrase: str | None = ...,
        expect_passphrase: bool = ...,
        output: str | None = ...,
    ) -> str | bytes: ...
    def scan_keys_mem(self, key_data: bytes | str) -> ScanKeys: ...
    def import_keys(
        self,
        key_data: bytes | str,
        extra_args: Sequence[str] | None = ...,
        passphrase: str | None = ...,
    ) -> ImportResult: ...
    def list_keys(
        self, secret: bool = ..., keys: str | Iterable[str] | None = ..., sigs: bool = ...
    ) -> ListKeys: ...
    def encrypt_file(
        self,
        fileobj_or_path: IO[bytes] | str,
        recipients: str | Iterable[str] | None,
        sign: str | None = ...,
        always_trust: bool = ...,
        passphrase: str | None = ...,
        armor: bool = ...,
        output: str | None = ...,
        symmetric: bool | str = ...,
        extra_args: Sequence[str] | None = ...,
    ) -> Crypt: ...
