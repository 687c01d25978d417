"""The survey of OpenPGP packet headers (crypto/packets.py): framing, armour, bounds, and
a fuzz run (hypothesis) showing it never fails on arbitrary bytes but with PacketError.

Messages are built byte by byte here (RFC 9580 §4.2); those gpg makes are in test_crypto.
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bdi.crypto.packets import Bounds, Header, PacketError, Survey, headers, survey

PKESK = b"\x84\x5e" + bytes(94)  # old format, 1-byte length, as gpg writes a recipient
SEIPD = b"\xd2\x10" + bytes(16)  # new format, encrypted data (tag 18)


def new(tag: int, body: bytes) -> bytes:
    """A new-format packet with a 5-byte length."""
    return bytes([0xC0 | tag, 0xFF]) + len(body).to_bytes(4, "big") + body


def partial(tag: int, chunks: list[bytes]) -> bytes:
    """A new-format packet in partial chunks (each a power of two), the last one whole."""
    out = bytearray([0xC0 | tag])
    for chunk in chunks[:-1]:
        assert len(chunk).bit_count() == 1
        out += bytes([224 + len(chunk).bit_length() - 1]) + chunk
    return bytes(out + bytes([len(chunks[-1])]) + chunks[-1])


def armour(data: bytes, eol: bytes = b"\n", headers: bytes = b"Version: test\n") -> bytes:
    body = base64.b64encode(data)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    text = b"-----BEGIN PGP MESSAGE-----\n" + headers + b"\n" + b"\n".join(lines)
    text += b"\n=AAAA\n-----END PGP MESSAGE-----\n"
    return text.replace(b"\n", eol)


def tags(data: bytes) -> list[int]:
    return [h.tag for h in headers(io.BytesIO(data))]


# -- framing -------------------------------------------------------------------------------


def test_old_and_new_format_lengths() -> None:
    old_two = b"\x85\x01\x00" + bytes(256)  # old format, 2-byte length
    old_four = b"\x86\x00\x00\x00\x03abc"  # old format, 4-byte length
    two_octet = bytes([0xCB, 192 + 1, 8]) + bytes(192 + 256 + 8)  # new, 2-octet length
    message = PKESK + old_two + old_four + two_octet + new(18, b"x" * 300)
    assert list(headers(io.BytesIO(message))) == [
        Header(1, 94), Header(1, 256), Header(1, 3), Header(11, 456), Header(18, 300),
    ]  # fmt: skip


def test_partial_lengths_are_followed_to_their_last_chunk() -> None:
    body = partial(18, [bytes(512), bytes(1024), b"x" * 7])
    assert tags(PKESK + body + PKESK) == [1, 18, 1]


def test_old_format_indeterminate_length_runs_to_the_end() -> None:
    assert list(headers(io.BytesIO(PKESK + b"\xa3\x02" + bytes(5000)))) == [
        Header(1, 94), Header(8, None),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "broken",
    [
        PKESK[:50],  # cut in a body
        b"\x84",  # cut in a header
        PKESK + b"\x00",  # not a packet header
        partial(18, [bytes(512), b"xy"])[:-1],  # cut in the last chunk
    ],
)
def test_broken_framing_raises_packet_error(broken: bytes) -> None:
    with pytest.raises(PacketError):
        list(headers(io.BytesIO(broken), armoured=False))


def test_many_short_partial_chunks_are_an_error() -> None:
    """Each costs the survey a loop turn: a real writer uses chunks of 8 KiB and more."""
    body = bytes([0xD2, 224 + 9]) + bytes(512) + bytes([224, 0]) * 5000 + b"\x00"
    with pytest.raises(PacketError, match="short partial-length chunks"):
        list(headers(io.BytesIO(body)))


def test_a_big_binary_message_is_not_read_whole(tmp_path: Path) -> None:
    """Bodies are seeked over: 4 GiB of encrypted data (a sparse file) in no time."""
    big, length = tmp_path / "big.pgp", (1 << 32) - 1  # the longest a 4-octet length says
    with big.open("wb") as f:
        f.write(PKESK + b"\xd2\xff" + length.to_bytes(4, "big"))
        f.truncate(f.tell() + length)
    started = time.process_time()
    assert survey(big, Bounds()) == Survey(packets=2, recipients=1, encrypted=1)
    assert time.process_time() - started < 0.1


# -- armour ----------------------------------------------------------------------------------


MESSAGE = PKESK + new(18, bytes(1000))


@pytest.mark.parametrize(
    "text",
    [
        armour(MESSAGE),
        armour(MESSAGE, eol=b"\r\n"),
        armour(MESSAGE, headers=b""),
        armour(MESSAGE, headers=b"Version: x\nComment: a: b\n"),
        armour(MESSAGE).replace(b"\n=AAAA", b""),  # no checksum (RFC 9580)
        b"some text first\n\n" + armour(MESSAGE),
        armour(MESSAGE).replace(b"\n\n", b"\n", 1).replace(b"Version: test\n", b""),  # no blank
        armour(MESSAGE).replace(b"A", b"A*", 3),  # gpg skips characters outside base64
        armour(MESSAGE).replace(b"-----END PGP MESSAGE-----\n", b""),  # no END line
    ],
)
def test_armour_variants_gpg_reads(text: bytes) -> None:
    assert tags(text) == [1, 18]
    assert survey(text, Bounds()) == Survey(packets=2, recipients=1, encrypted=1, armoured=True)


def test_armour_blocks_are_read_one_after_the_other() -> None:
    """gpg reads every armoured block of its input: so does the survey."""
    assert tags(armour(MESSAGE) + b"between\n" + armour(PKESK * 3)) == [1, 18, 1, 1, 1]


def test_armour_split_across_reads() -> None:
    """A BEGIN line and a data end that straddle two 64 KiB reads."""
    filler = b"x" * ((1 << 16) - 7) + b"\n"
    assert tags(filler + armour(MESSAGE)) == [1, 18]
    big = PKESK + new(18, bytes(150_000))
    assert tags(armour(big)) == [1, 18]


def test_cleartext_signature_is_not_a_message() -> None:
    text = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nhello\n"
    assert survey(text, Bounds()).readable is False


@pytest.mark.parametrize("text", [b"", b"-----BEGIN PGP MESSAGE-----\n", b"hello\n" * 10])
def test_armour_without_packets(text: bytes) -> None:
    assert survey(text, Bounds()).packets == 0


# -- bounds ----------------------------------------------------------------------------------


def test_recipient_flood_is_refused_at_the_first_one_too_many() -> None:
    flood = PKESK * 20_000 + SEIPD
    for message in (flood, armour(flood)):
        started = time.process_time()
        found = survey(message, Bounds())
        assert str(found.problem) == "too many recipients (over 16)" and found.recipients == 17
        assert time.process_time() - started < 0.05
    assert survey(PKESK * 16 + SEIPD, Bounds()).problem is None
    assert str(survey(PKESK * 3 + SEIPD, Bounds(recipients=2)).problem) == (
        "too many recipients (over 2)"
    )


def test_symmetric_recipients_count_too() -> None:
    skesk = b"\x8c\x0d" + bytes(13)
    assert str(survey(skesk * 17 + SEIPD, Bounds()).problem) == "too many recipients (over 16)"


def test_packet_flood_is_refused() -> None:
    marker = b"\xa8\x03PGP"
    assert str(survey(marker * 65 + PKESK + SEIPD, Bounds()).problem) == (
        "too many OpenPGP packets (over 64)"
    )
    assert survey(marker * 61 + PKESK + SEIPD, Bounds()).problem is None


def test_compressed_data_outside_the_encryption_is_refused() -> None:
    """What it holds only gpg would see (a flood of recipients compresses to nothing)."""
    compressed = new(8, b"\x01" + bytes(10))
    assert str(survey(compressed, Bounds()).problem) == "not encrypted"
    assert str(survey(MESSAGE + compressed, Bounds()).problem) == (
        "compressed data after the message"
    )


def test_a_bound_crossed_before_the_framing_breaks_still_refuses() -> None:
    assert str(survey(PKESK * 17 + b"\x00junk", Bounds()).problem).startswith("too many recip")
    broken = survey(PKESK + b"\x00junk", Bounds())
    assert broken.problem is None and not broken.readable and broken.recipients == 1


def test_cpu_budget_grows_with_the_message() -> None:
    base, per_byte = Bounds(cpu_seconds=2, cpu_seconds_per_mib=0.5).cpu_budget(4 << 20)
    assert base == 4.0 and per_byte * (1 << 20) == 0.5


# -- fuzz ------------------------------------------------------------------------------------


PIECES = st.sampled_from(
    [PKESK, SEIPD, b"\xa3\x01", b"\xd2\xe9", b"\xff", b"\x00", b"=", b"\n", b"Version: 1\n",
     b"hQEM", b"-----BEGIN PGP MESSAGE-----\n", b"-----END PGP MESSAGE-----\n",
     b"-----BEGIN PGP SIGNED"]
)  # fmt: skip
MESSAGES = st.one_of(
    st.binary(max_size=2048),
    st.lists(st.one_of(PIECES, st.binary(max_size=40)), max_size=40).map(b"".join),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES)
def test_survey_never_fails_on_any_bytes(data: bytes) -> None:
    found = survey(data, Bounds())
    assert found.packets >= found.recipients >= 0
    try:
        listed = list(headers(io.BytesIO(data)))
    except PacketError:
        return
    assert len(listed) >= min(found.packets, Bounds().packets)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_armoured_noise_never_fails(data: bytes) -> None:
    found = survey(b"-----BEGIN PGP MESSAGE-----\n\n" + data, Bounds())
    assert found.armoured
