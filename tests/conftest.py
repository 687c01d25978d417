"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hubkit import Party, make_parties, sample_ids
from support import SAMPLES


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    """A key pair and a GnuPG home for every participant the samples name, per test module
    (a module that needs other participants defines its own `parties`)."""
    with make_parties(sample_ids()) as made:
        yield made


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def referential_path() -> Path:
    return SAMPLES / "referentiel.toml"
