"""BDI: the Optiflux exchange hub."""
