"""How the console shows times, sizes and states: in French, times in Europe/Paris."""

from __future__ import annotations

from datetime import datetime

from bdi.suivi.values import paris_stamp

STATES = {
    "active": "Actif",
    "disabled": "Désactivé",
    "received": "Reçu, en file",
    "planned": "En cours de dépôt",
    "done": "Terminé",
    "quarantined": "En quarantaine",
    "valid": "Valide",
    "expired": "Expirée",
    "revoked": "Révoquée",
    "unusable": "Inutilisable",
    "missing": "Absente",
    "delivered": "Distribué",
    "partial": "Partiellement distribué",
    "refused": "Refusé",
}
UNITS = ("octets", "Kio", "Mio", "Gio", "Tio")


def when(value: str | datetime | None) -> str:
    """JJ/MM/AAAA HH:MM:SS in Paris, from a datetime or the service's ISO text."""
    if not value:
        return "—"
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return paris_stamp(at)


def number(value: int | float) -> str:
    """Thousands apart by a narrow no-break space, decimal comma."""
    text = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
    return text.replace(",", "\u202f").replace(".", ",")


def size(value: int) -> str:
    amount, unit = float(value), 0
    while amount >= 1024 and unit < len(UNITS) - 1:
        amount, unit = amount / 1024, unit + 1
    return f"{number(value)} octets" if unit == 0 else f"{number(round(amount, 1))} {UNITS[unit]}"


def state(value: str | None) -> str:
    return STATES.get(value or "", value or "—")


def duration(seconds: float) -> str:
    """« 3 j 4 h 12 min »: how long the hub has been up."""
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = [f"{days} j" if days else "", f"{hours} h" if days or hours else "", f"{mins} min"]
    return " ".join(p for p in parts if p)
