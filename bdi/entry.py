"""The `bdi` console script. `bdi check` runs without loading the rest of the command line
(typer, the store, SSH, GnuPG): checking a file should cost the check, not the start-up."""

from __future__ import annotations

import sys
import warnings


def main() -> None:
    if sys.argv[1:2] == ["check"]:
        from bdi.check import main as check

        sys.exit(check(sys.argv[2:]))
    quiet_dependencies()
    from bdi.cli import app

    app()


def quiet_dependencies() -> None:
    """cryptography 51 warns that DSA is deprecated when asyncssh's modules name its key
    types, at import: every command printed ten lines of it on stderr before its own (a
    refusal is one line). The hub offers no DSA (`server.OPENSSH_PUBKEYS`): nothing to act on."""
    warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")
