"""The `bdi` command line (HUB.md, "Command line"). Each command fails with one line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bdi.check import check_path, paris_now, render_json, render_text
from bdi.routing.layout import default_layout
from bdi.routing.referential import ReferentialError, parse_referential

app = typer.Typer(
    name="bdi",
    help="BDI, the Optiflux exchange hub.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


@app.callback()
def root() -> None:
    """BDI, the Optiflux exchange hub."""


def fail(reason: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print a one-line reason on stderr and return the exit to raise."""
    typer.echo(f"bdi: {reason}", err=True)
    return typer.Exit(code)


@app.command()
def check(
    files: Annotated[list[Path], typer.Argument(help="plain Optiflux files")],
    uploader: Annotated[
        str | None, typer.Option(help="EDI id of the uploading participant (SIGNATURE)")
    ] = None,
    participants: Annotated[
        Path | None, typer.Option(help="referential TOML: its mailboxes are the active recipients")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Validate plain Optiflux files as the hub would: sections, flows, problems, .log lines.

    Exit 0 when everything would be delivered, 1 when something would be refused,
    2 on usage or I/O errors.
    """
    layout = default_layout()
    active = None
    if participants is not None:
        try:
            referential = parse_referential(participants.read_text(encoding="utf-8"), layout)
        except (OSError, UnicodeDecodeError, ReferentialError) as exc:
            raise fail(f"{participants}: {exc}") from exc
        active = referential.mailboxes.__contains__
    now = paris_now()
    results = []
    for path in files:
        try:
            results.append(check_path(path, layout, uploader, active, now))
        except OSError as exc:
            raise fail(f"{path}: {exc.strerror or exc}") from exc
    if as_json:
        typer.echo(render_json(results, layout))
    else:
        for checked in results:
            typer.echo(render_text(checked, layout))
    refused = any(not c.report.fully_accepted for c in results)
    raise typer.Exit(EXIT_REFUSED if refused else EXIT_OK)


def main() -> None:
    app()
