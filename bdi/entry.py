"""The `bdi` console script. `bdi check` runs without loading the rest of the command line
(typer, the store, SSH, GnuPG): checking a file should cost the check, not the start-up."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["check"]:
        from bdi.check import main as check

        sys.exit(check(sys.argv[2:]))
    from bdi.cli import app

    app()
