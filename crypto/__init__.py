"""crypto: OpenPGP for the hub (GnuPG through python-gnupg)."""

from bdi.crypto.openpgp import (
    Bounds,
    GpgUnavailable,
    KeyInfo,
    KeyProblem,
    OpenPGP,
    OpenPGPError,
    Reason,
    Refusal,
    Verified,
)

__all__ = [
    "Bounds",
    "GpgUnavailable",
    "KeyInfo",
    "KeyProblem",
    "OpenPGP",
    "OpenPGPError",
    "Reason",
    "Refusal",
    "Verified",
]
