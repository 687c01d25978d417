"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pgcluster
import pytest
from hubkit import FAST, HubUnderTest, Party, hub_running, make_parties, sample_ids
from support import SAMPLES


@pytest.fixture(scope="session", autouse=True)
def database_engine() -> Iterator[str]:
    """The engine of this run: SQLite (default), or a throwaway PostgreSQL cluster when
    BDI_TEST_DATABASE=postgresql, each data folder with its own database in it (the
    hub's `{data}` URL template), for the hubs in this process and the `bdi` commands
    the tests run."""
    if not pgcluster.wanted():
        yield "sqlite"
        return
    with pgcluster.cluster() as url, pytest.MonkeyPatch.context() as patch:
        patch.setenv("BDI_DATABASE_URL", url)
        yield "postgresql"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if pgcluster.wanted():
        skip = pytest.mark.skip(reason="SQLite only: about SQLite itself, or a SQLite data folder")
        for item in items:
            if "sqlite_only" in item.keywords:
                item.add_marker(skip)


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


@pytest.fixture
async def hub(tmp_path: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    """A hub of the module's parties whose failed jobs are tried again within tenths of a
    second (a module that needs other settings defines its own `hub`)."""
    async with hub_running(tmp_path / "data", parties) as running:
        running.server.pipeline.retries.policy = FAST
        yield running
