"""Why the OpenPGP layer refuses an upload (DECHIFFREMENT): a closed set.

A Refusal's value is its English reason, for the hub's log and its operators; the sender
reads a short French detail in its `.log` instead, given for each value by
`bdi.routing.errors.DECHIFFREMENT_DETAILS` (the pipeline turns one into the other). A Reason
is one refusal, with the bound it crossed or gpg's exit code where there is one.

Imports nothing of the project (the standard library only).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Reason", "Refusal"]


class Refusal(StrEnum):
    NOT_OPENPGP = "not OpenPGP"
    NOT_ENCRYPTED = "not encrypted"  # signed only
    NOT_DECRYPTABLE = "not decryptable"  # not encrypted to the hub's key, or damaged
    NOT_SIGNED = "not signed"
    SEVERAL_SIGNATURES = "several signatures"
    BAD_SIGNATURE = "bad signature"
    UNKNOWN_KEY = "unknown key"
    REVOKED_KEY = "revoked key"
    EXPIRED_KEY = "expired key"
    EXPIRED_SIGNATURE = "expired signature"
    # well signed, by a key that is not the uploader's (decided by the pipeline, not by gpg)
    OTHER_SIGNER = "signed by another key than the sender's"
    MALFORMED = "malformed message"
    SEVERAL_ENCRYPTED = "more than one encrypted packet"
    COMPRESSED_AFTER = "compressed data after the message"
    GPG_FAILED = "gpg failed"  # bound: gpg's exit code
    # past the Bounds (packets) or the maximum decrypted size
    TOO_LARGE = "too large"
    TOO_MANY_RECIPIENTS = "too many recipients"  # bound: the most allowed
    TOO_MANY_PACKETS = "too many OpenPGP packets"  # bound: the most allowed
    TOO_MANY_STATUS_LINES = "too many status lines"
    TOO_MUCH_WORK = "too much work"  # bound: the CPU seconds allowed


# how a bound reads in the hub's log, after the refusal (default: "over <bound>")
_BOUND_TEXT = {Refusal.TOO_MUCH_WORK: "over {:.1f} s of CPU", Refusal.GPG_FAILED: "exit {}"}


@dataclass(frozen=True, slots=True)
class Reason:
    """One refusal; str() is its English text, e.g. "too many recipients (over 16)"."""

    refusal: Refusal
    bound: int | float | None = None  # the bound crossed, or gpg's exit code

    def __str__(self) -> str:
        if self.bound is None:
            return self.refusal.value
        bound = _BOUND_TEXT.get(self.refusal, "over {}").format(self.bound)
        return f"{self.refusal.value} ({bound})"
