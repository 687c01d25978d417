"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import asyncio
import threading
import tomllib
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from bdi.store.journal import Journal

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO.parent / "shared" / "spec"
SAMPLES = SPEC / "samples"


def manifest() -> list[dict[str, Any]]:
    with (SAMPLES / "manifest.toml").open("rb") as f:
        return list(tomllib.load(f)["sample"])


class Held:
    """Keeps the writer busy so that the next items queue up behind it."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.busy, self.release = threading.Event(), threading.Event()

    def _hold(self, _: Connection) -> None:
        self.busy.set()
        self.release.wait(10)

    async def __aenter__(self) -> None:
        self.task = asyncio.create_task(self.journal.run(self._hold))
        assert await asyncio.to_thread(self.busy.wait, 10)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0)  # let every run started inside queue its item
        self.release.set()
        await self.task
