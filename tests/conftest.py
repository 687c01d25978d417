"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import SAMPLES


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def referential_path() -> Path:
    return SAMPLES / "referentiel.toml"
