"""crypto: OpenPGP for the hub (GnuPG through python-gnupg)."""

from bdi.crypto.openpgp import (
    GpgUnavailable,
    KeyInfo,
    KeyProblem,
    OpenPGP,
    OpenPGPError,
    Verified,
)

__all__ = ["GpgUnavailable", "KeyInfo", "KeyProblem", "OpenPGP", "OpenPGPError", "Verified"]
