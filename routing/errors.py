"""Check codes and the problems the checks report.

The codes are the names of `[bdi.errors]` in layout.toml; their French messages,
scopes and line rules are read from there (see `Layout.errors`), never written here. The
details of a DECHIFFREMENT line, one per reason the OpenPGP layer may give, are here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Code(StrEnum):
    DECHIFFREMENT = "DECHIFFREMENT"
    NOM = "NOM"
    TYPE_FICHIER = "TYPE_FICHIER"
    VIDE = "VIDE"
    HORS_SECTION = "HORS_SECTION"
    LONGUEUR = "LONGUEUR"
    FIN_MANQUANTE = "FIN_MANQUANTE"
    ENTETE = "ENTETE"
    TYPE_ENREG = "TYPE_ENREG"
    REGLE5 = "REGLE5"
    SIGNATURE = "SIGNATURE"
    DESTINATAIRE = "DESTINATAIRE"
    EMETTEUR = "EMETTEUR"
    ORDRE = "ORDRE"
    FORMAT = "FORMAT"
    FIN = "FIN"
    NOMBRE = "NOMBRE"
    NOMBRE_REJETS = "NOMBRE_REJETS"
    TOTAL = "TOTAL"
    # not a check (absent from check_order): a job quarantined after the hub's own failures
    INTERNE = "INTERNE"


@dataclass(frozen=True, slots=True)
class Problem:
    """One line of a `.log` file: a code at a line (0 = none) with an optional detail."""

    code: Code
    line: int = 0
    detail: str | None = None


# The detail of a DECHIFFREMENT line, by the reason the OpenPGP layer refused the upload (the
# values of bdi.crypto's Refusal: English, for the hub's log only): short French for the sender,
# nothing internal; "{}" is the bound the upload crossed, where it is the sender's to know.
DECHIFFREMENT_DETAILS: Mapping[str, str] = MappingProxyType({
    "not OpenPGP": "pas un message OpenPGP",
    "not encrypted": "non chiffré",
    "not decryptable": "indéchiffrable par le hub",
    "not signed": "non signé",
    "several signatures": "plusieurs signatures",
    "bad signature": "signature invalide",
    "unknown key": "clé de signature inconnue",
    "revoked key": "clé de signature révoquée",
    "expired key": "clé de signature expirée",
    "expired signature": "signature expirée",
    "signed by another key than the sender's": "clé de signature d'un autre participant",
    "malformed message": "message mal formé",
    "more than one encrypted packet": "plusieurs paquets chiffrés",
    "compressed data after the message": "données compressées hors chiffrement",
    "gpg failed": "message illisible",
    "too large": "trop volumineux une fois déchiffré",
    "too many recipients": "trop de destinataires (plus de {})",
    "too many OpenPGP packets": "trop de paquets OpenPGP (plus de {})",
    "too many status lines": "message trop complexe",
    "too much work": "déchiffrement trop coûteux",
})  # fmt: skip


def decryption_detail(refusal: str, bound: int | float | None = None) -> str | None:
    """The French detail of a DECHIFFREMENT line for a refusal of the OpenPGP layer and the
    bound it crossed (shown where the detail has a place for it; without one, the part in
    parentheses is left out); None for a refusal it does not know."""
    detail = DECHIFFREMENT_DETAILS.get(refusal)
    if detail is None or "{}" not in detail:
        return detail
    return detail.format(bound) if bound is not None else detail.partition(" (")[0]
