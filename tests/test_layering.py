"""The rooms import down the pipeline only (docs/architecture.md): a wrong arrow fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# room -> the rooms it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "routing": set(),
    "crypto": set(),
    "store": set(),
    "mailbox": {"store"},
    "pipeline": {"hub", "config", "crypto", "routing", "mailbox", "store"},
    "kit": {"crypto", "config"},
    "admin": {"hub", "config", "crypto", "routing", "mailbox", "store", "datadir", "alerts"},
    "suivi": {"hub", "config", "admin", "routing", "store"},
    "console": {"hub", "config", "admin", "crypto", "store", "suivi"},
}


def _imports(path: Path) -> set[str]:
    rooms: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        rooms.update(n.split(".")[1] for n in names if n.startswith("bdi.") and "." in n)
    return rooms


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_room_imports_point_down(room: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)} imports bdi.{other}"
        for path in (ROOT / room).rglob("*.py")
        for other in _imports(path) - ALLOWED[room] - {room}
    }
    assert not wrong, sorted(wrong)


def test_every_room_is_checked() -> None:
    rooms = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"bdi", "tests", "bench"}
    assert rooms <= set(ALLOWED)
