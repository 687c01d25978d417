"""suivi."""
