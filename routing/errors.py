"""Check codes and the problems the checks report.

The codes are the names of `[bdi.errors]` in layout.toml; their French messages,
scopes and line rules are read from there (see `Layout.errors`), never written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
