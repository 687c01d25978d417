"""Configuration: one typed settings object passed down from the entry point."""

from bdi.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
