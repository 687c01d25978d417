"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO.parent / "shared" / "spec"
SAMPLES = SPEC / "samples"


def manifest() -> list[dict[str, Any]]:
    with (SAMPLES / "manifest.toml").open("rb") as f:
        return list(tomllib.load(f)["sample"])
