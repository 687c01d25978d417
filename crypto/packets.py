"""A survey of an upload's OpenPGP packet headers, made before gpg sees the message.

gpg does the work a message asks for: one agent call per recipient packet (PKESK), one
verification per signature, a decompression per compressed packet. 20 000 bogus recipient
packets (1.9 MB) cost it 10 s of CPU and its agent 2 more. Reading the packet framing (RFC
4880 / RFC 9580 §4.2: old and new headers, partial lengths), de-armoured first as gpg would,
costs a few microseconds per packet and never touches a key: a message past the Bounds is
refused before gpg starts. What only decryption shows (packets inside the encrypted data)
is bounded while gpg runs (openpgp watches its status lines and its CPU time).

The reading streams: packet bodies are skipped (seeked over in a binary file), armour is
decoded a block at a time, and the survey stops at the first bound crossed.

Imports refusals of the project, and nothing else of it.
"""

from __future__ import annotations

import binascii
import contextlib
import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Protocol

from bdi.crypto.refusals import Reason, Refusal

__all__ = ["Bounds", "Header", "PacketError", "Survey", "headers", "survey"]

MiB = 1 << 20
_BLOCK = 1 << 16  # bytes read at a time
_LINE_MAX = 4096  # an armour line longer than this is cut (gpg's own limit is lower)
_ARMOUR_HEADERS_MAX = 256  # lines between BEGIN and the body
_SMALL_CHUNK = 512  # RFC 4880 §4.2.2.4: the first partial chunk is at least this long
_SMALL_CHUNKS_MAX = 4096  # partial chunks shorter than that, in the whole message
# packet tags (RFC 9580 §5)
PKESK, SKESK, COMPRESSED = 1, 3, 8
ENCRYPTED = frozenset({9, 18, 20})  # SED, SEIPD, AEAD (OCB, RFC 4880bis)
_INDETERMINATE_OK = frozenset({8, 9, 11, 16, 18, 20, 60, 61, 62, 63})
_KNOWN = frozenset({1, 2, 3, 4, 5, 6, 7, 10, 12, 13, 14, 17, 19}) | _INDETERMINATE_OK
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64)))
_DATA_END = re.compile(rb"=|\n-")  # padding or checksum, or a line of dashes (END)


class PacketError(ValueError):
    """The input cannot be read as OpenPGP packets, binary or armoured."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """How much work one upload may ask of the hub; past any, it is refused (DECHIFFREMENT).

    The defaults are far above any real message (one or two recipients, one encrypted
    packet, a few seconds of CPU per hundred MiB even for bzip2) and far below an attack.
    """

    packets: int = 64  # top-level packets of the message (a real one has 2 to 4)
    recipients: int = 16  # PKESK + SKESK packets; each costs gpg-agent a decryption
    cpu_seconds: float = 5.0  # CPU time of one gpg decryption, plus ...
    cpu_seconds_per_mib: float = 0.25  # ... this per MiB of the message and of its plaintext

    def cpu_budget(self, message_bytes: int) -> tuple[float, float]:
        """(seconds allowed before any output, seconds more per output byte): gpg's CPU
        must keep pace with the plaintext it produces (bzip2, the slowest, takes ~0.06 s
        per MiB)."""
        per_byte = self.cpu_seconds_per_mib / MiB
        return self.cpu_seconds + per_byte * message_bytes, per_byte


@dataclass(frozen=True, slots=True)
class Header:
    """One packet header: its tag and how its body is framed."""

    tag: int
    length: int | None  # the body's length; None: to the end of the input (old format)
    partial: bool = False  # length is the first chunk of a partial-length body


@dataclass(frozen=True, slots=True)
class Survey:
    """What the packet headers of a message show; `problem` is the refusal, None if none."""

    packets: int = 0
    recipients: int = 0
    encrypted: int = 0  # encrypted data packets
    armoured: bool = False
    readable: bool = True  # False: the framing broke (gpg then says what is wrong)
    problem: Reason | None = None


def survey(source: Path | bytes, bounds: Bounds) -> Survey:
    """Read the headers of a message (a file or the message itself) against the bounds.

    Never raises on the content: a message that cannot be read as packets is left to
    gpg (its verdict names the problem; the runtime bounds still hold) unless the part
    already read crossed a bound. OSError (a missing file) is raised."""
    with _open(source) as stream:
        armoured = _looks_armoured(stream)
        seen = Survey(armoured=armoured)
        try:
            for header in headers(stream, armoured):
                seen = _tally(seen, header)
                problem = _excess(seen, header, bounds)
                if problem:
                    return replace(seen, problem=problem)
        except PacketError:
            return replace(seen, readable=False)
    return seen


def headers(stream: IO[bytes], armoured: bool | None = None) -> Iterator[Header]:
    """The top-level packet headers of a message, its bodies skipped; PacketError where
    the framing breaks. `armoured`: None to decide as gpg does, from the first byte."""
    if armoured is None:
        armoured = _looks_armoured(stream)
    reader: _Reader = _Chunks(_dearmour(stream)) if armoured else _Binary(stream)
    small = 0
    while (header := _header(reader)) is not None:
        yield header
        small += _skip_body(reader, header)
        if small > _SMALL_CHUNKS_MAX:
            raise PacketError(f"more than {_SMALL_CHUNKS_MAX} short partial-length chunks")


# -- the bounds ---------------------------------------------------------------------------


def _tally(seen: Survey, header: Header) -> Survey:
    return replace(
        seen,
        packets=seen.packets + 1,
        recipients=seen.recipients + (header.tag in (PKESK, SKESK)),
        encrypted=seen.encrypted + (header.tag in ENCRYPTED),
    )


def _excess(seen: Survey, header: Header, bounds: Bounds) -> Reason | None:
    """The first bound this header crosses, as the refusal; None if none.

    A compressed packet outside the encryption could hold any number of packets that only
    gpg would see: no real upload has one (a signed-only message is compressed, and not
    encrypted: refused either way)."""
    if seen.recipients > bounds.recipients:
        return Reason(Refusal.TOO_MANY_RECIPIENTS, bounds.recipients)
    if seen.packets > bounds.packets:
        return Reason(Refusal.TOO_MANY_PACKETS, bounds.packets)
    if header.tag == COMPRESSED:
        return Reason(Refusal.COMPRESSED_AFTER if seen.encrypted else Refusal.NOT_ENCRYPTED)
    return None


# -- packet framing -------------------------------------------------------------------------


class _Reader(Protocol):
    def read(self, n: int) -> bytes: ...  # at most n bytes; fewer only at the end

    def skip(self, n: int) -> int: ...  # bytes skipped; fewer than n only at the end


def _header(reader: _Reader) -> Header | None:
    """The next packet header, or None at the clean end of the input."""
    first = reader.read(1)
    if not first:
        return None
    ctb = first[0]
    if not ctb & 0x80:
        raise PacketError(f"no packet header at byte {ctb:#04x}")
    if ctb & 0x40:  # new format: tag in 6 bits, then a new-format length
        length, partial = _new_length(reader)
        return Header(ctb & 0x3F, length, partial)
    tag, kind = (ctb >> 2) & 0x0F, ctb & 0x03
    if kind == 3:
        return Header(tag, None)
    return Header(tag, int.from_bytes(_exactly(reader, 1 << kind), "big"))


def _new_length(reader: _Reader) -> tuple[int, bool]:
    """A new-format body length (RFC 9580 §4.2.1): (length, is a partial chunk)."""
    octet = _exactly(reader, 1)[0]
    if octet < 192:
        return octet, False
    if octet < 224:
        return ((octet - 192) << 8) + _exactly(reader, 1)[0] + 192, False
    if octet == 255:
        return int.from_bytes(_exactly(reader, 4), "big"), False
    return 1 << (octet & 0x1F), True


def _skip_body(reader: _Reader, header: Header) -> int:
    """Skip a packet's body; the number of short partial chunks it had."""
    if header.length is None:
        while reader.skip(_BLOCK) == _BLOCK:
            pass
        return 0
    length, partial, small = header.length, header.partial, 0
    while True:
        if reader.skip(length) < length:
            raise PacketError("the input ends inside a packet")
        if not partial:
            return small
        small += length < _SMALL_CHUNK
        if small > _SMALL_CHUNKS_MAX:
            return small
        length, partial = _new_length(reader)


def _exactly(reader: _Reader, n: int) -> bytes:
    data = reader.read(n)
    if len(data) < n:
        raise PacketError("the input ends inside a packet header")
    return data


class _Binary:
    """A binary message: bodies are seeked over when the stream allows it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._size: int | None = None
        with contextlib.suppress(OSError, ValueError):
            if stream.seekable():
                here = stream.tell()
                self._size = stream.seek(0, os.SEEK_END)
                stream.seek(here)

    def read(self, n: int) -> bytes:
        return self._stream.read(n)

    def skip(self, n: int) -> int:
        if self._size is None:
            return _skip_by_reading(self._stream.read, n)
        here = self._stream.tell()
        moved = min(n, max(0, self._size - here))
        self._stream.seek(here + moved)
        return moved


class _Chunks:
    """Bytes coming as an iterator of chunks (a de-armoured message)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def skip(self, n: int) -> int:
        return _skip_by_reading(self.read, n)


def _skip_by_reading(read: Callable[[int], bytes], n: int) -> int:
    done = 0
    while done < n:
        got = len(read(min(_BLOCK, n - done)))
        if not got:
            break
        done += got
    return done


# -- armour ------------------------------------------------------------------------------


def _looks_armoured(stream: IO[bytes]) -> bool:
    """gpg's own test (armor.c, is_armored): binary if the first byte is a packet header
    of a known tag whose length is allowed for it, armoured otherwise."""
    first = _peek(stream, 2)
    if not first:
        return False
    ctb = first[0]
    if not ctb & 0x80:
        return True
    new = bool(ctb & 0x40)
    tag = ctb & 0x3F if new else (ctb >> 2) & 0x0F
    if tag not in _KNOWN:
        return True
    if tag in _INDETERMINATE_OK:
        return False
    if new:
        return len(first) > 1 and 224 <= first[1] < 255
    return ctb & 0x03 == 3


def _peek(stream: IO[bytes], n: int) -> bytes:
    here = stream.tell()
    data = stream.read(n)
    stream.seek(here)
    return data


def _dearmour(stream: IO[bytes]) -> Iterator[bytes]:
    """The decoded bytes of each armoured block in turn, as gpg reads them: text before
    a BEGIN line and between blocks is skipped, characters outside base64 are ignored,
    the data ends at padding, at the checksum line or at the END line."""
    text = _Text(stream)
    while (begin := text.line_starting(b"-----BEGIN PGP ")) is not None:
        if begin.startswith(b"-----BEGIN PGP SIGNED MESSAGE-----"):
            raise PacketError("a cleartext signature")  # never encrypted
        yield from _armour_body(text, _skip_armour_headers(text))


def _skip_armour_headers(text: _Text) -> bytes:
    """Skip `Key: value` lines up to the blank line; the first body line if it came
    without one (gpg is lenient there too)."""
    for _ in range(_ARMOUR_HEADERS_MAX):
        line = text.readline()
        if not line or not line.strip():
            return b""
        if b":" not in line:
            return line
    raise PacketError("too many armour header lines")


def _armour_body(text: _Text, first: bytes) -> Iterator[bytes]:
    """Decode one block's data; what follows it is left in `text`."""
    carry, line_start = b"", True
    block = first or text.read_block()
    while block:
        stop = _data_end(block, line_start)
        data = carry + block[: len(block) if stop < 0 else stop].translate(None, _NOT_B64)
        whole = len(data) - len(data) % 4
        if whole:
            yield _b64(data[:whole])
        carry = data[whole:]
        if stop >= 0:
            text.unread(block[stop:], line_start and stop == 0)
            break
        line_start, block = block.endswith(b"\n"), text.read_block()
    if len(carry) > 1:  # a last group of 2 or 3 characters carries 1 or 2 bytes
        yield _b64(carry + b"=" * (-len(carry) % 4))


def _data_end(block: bytes, line_start: bool) -> int:
    if line_start and block.startswith(b"-"):
        return 0
    found = _DATA_END.search(block)
    return -1 if found is None else found.start()


def _b64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error as exc:  # pragma: no cover - only whole groups of the alphabet
        raise PacketError(f"bad base64: {exc}") from exc


class _Text:
    """A text stream read a block at a time, with the look-ahead armour needs."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._buffer = b""
        self.at_line_start = True  # what comes next starts a line

    def read_block(self) -> bytes:
        data = self._buffer or self._stream.read(_BLOCK)
        self._buffer = b""
        if data:
            self.at_line_start = data.endswith(b"\n")
        return data

    def unread(self, data: bytes, at_line_start: bool) -> None:
        self._buffer = data + self._buffer
        self.at_line_start = at_line_start

    def readline(self) -> bytes:
        """The next line, cut at _LINE_MAX bytes."""
        while b"\n" not in self._buffer and len(self._buffer) < _LINE_MAX:
            block = self._stream.read(_BLOCK)
            if not block:
                break
            self._buffer += block
        end = self._buffer.find(b"\n", 0, _LINE_MAX)
        end = min(len(self._buffer), _LINE_MAX) if end < 0 else end + 1
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        self.at_line_start = line.endswith(b"\n")
        return line

    def line_starting(self, prefix: bytes) -> bytes | None:
        """Skip to the next line that starts with `prefix`; that line, or None at the end."""
        while True:
            if self.at_line_start and self._buffer.startswith(prefix):
                return self.readline()
            found = self._buffer.find(b"\n" + prefix)
            if found >= 0:
                self._buffer = self._buffer[found + 1 :]
                self.at_line_start = True
                return self.readline()
            block = self._stream.read(_BLOCK)
            if not block:
                return None
            keep = self._buffer[-len(prefix) :]  # a line start split between two blocks
            self.at_line_start = self.at_line_start and keep == self._buffer
            self._buffer = keep + block


# -- sources -------------------------------------------------------------------------------


@contextlib.contextmanager
def _open(source: Path | bytes) -> Iterator[IO[bytes]]:
    if isinstance(source, Path):
        with source.open("rb") as stream:
            yield stream
    else:
        yield io.BytesIO(source)
