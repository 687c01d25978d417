"""crypto: OpenPGP for the hub (GnuPG through python-gnupg)."""

from bdi.crypto.openpgp import KeyInfo, KeyProblem, OpenPGP, OpenPGPError, Verified

__all__ = ["KeyInfo", "KeyProblem", "OpenPGP", "OpenPGPError", "Verified"]
