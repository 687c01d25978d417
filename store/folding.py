"""The form insured names are stored and searched in (`FlowOccurrence.insured_folded`).

Folded in Python on both sides, before the database sees either: the match is then the
same on SQLite and PostgreSQL, whatever their collations and `lower()` know of accents.
"""

from __future__ import annotations

import unicodedata


def fold(text: str | None) -> str | None:
    """Trimmed, accents removed, upper case (§8.4): « Société » and "SOCIETE" are equal."""
    if not text or not text.strip():
        return None
    if text.isascii():  # its own NFKD form, without combining marks
        return text.strip().upper()
    decomposed = unicodedata.normalize("NFKD", text.strip())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
