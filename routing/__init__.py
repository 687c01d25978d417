"""Optiflux records: parse, split, check and route plain files (pure functions, no I/O)."""
