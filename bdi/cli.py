"""The `bdi` command line (HUB.md, "Command line"). Each command fails with one line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bdi.admin.cli import app as admin_app
from bdi.check import check_path, paris_now, render_json, render_text
from bdi.kit.cli import app as kit_app
from bdi.routing.layout import default_layout
from bdi.routing.referential import ReferentialError, parse_referential

if TYPE_CHECKING:
    from bdi.config import Settings

app = typer.Typer(
    name="bdi",
    help="BDI, the Optiflux exchange hub.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

app.add_typer(admin_app, name="admin")
app.add_typer(kit_app, name="kit")


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


DataOpt = Annotated[
    Path | None, typer.Option("--data", envvar="BDI_DATA", help="data folder (default ./bdi-data)")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", envvar="BDI_CONFIG", help="TOML configuration file")
]


def settings_from(config: Path | None, **overrides: object) -> Settings:
    from bdi.config import load_settings

    try:
        return load_settings(config, **overrides)
    except (OSError, ValueError) as exc:
        raise fail(f"configuration: {exc}".splitlines()[0]) from exc


@app.command()
def init(data: DataOpt = None, config: ConfigOpt = None) -> None:
    """Create the data folder: database, hub OpenPGP key, SSH host key, admin API token."""
    import asyncio

    from bdi.datadir import initialise

    settings = settings_from(config, data=data)
    try:
        result = asyncio.run(initialise(settings))
    except OSError as exc:
        raise fail(f"init: {exc}") from exc
    if not result.created:
        typer.echo(
            f"{settings.data} is already initialised "
            f"(hub key {result.hub_fingerprint}); nothing changed"
        )
        return
    typer.echo(f"initialised {settings.data}")
    typer.echo(f"hub OpenPGP key: {result.hub_fingerprint}")
    typer.echo(f"admin API token (shown once): {result.admin_token}")


@app.command()
def serve(
    data: DataOpt = None,
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="address to bind")] = None,
    sftp_port: Annotated[int | None, typer.Option(help="SFTP port")] = None,
    web_port: Annotated[int | None, typer.Option(help="web port")] = None,
) -> None:
    """Run the hub until SIGTERM or SIGINT."""
    import asyncio

    from bdi.logsetup import configure_logging
    from bdi.server import serve_forever

    settings = settings_from(config, data=data, host=host, sftp_port=sftp_port, web_port=web_port)
    configure_logging()
    try:
        asyncio.run(serve_forever(settings))
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"serve: {exc}") from exc


@app.command()
def demo(
    data: DataOpt = None,
    config: ConfigOpt = None,
    folder: Annotated[Path, typer.Option("--demo", help="kit homes and passwords")] = Path("demo"),
    sftp_port: Annotated[int | None, typer.Option(help="SFTP port")] = None,
    web_port: Annotated[int | None, typer.Option(help="web port")] = None,
) -> None:
    """Run the hub with a ready demo market (the sample participants, their kits in demo/)."""
    import asyncio

    from bdi.demo import prepare_demo
    from bdi.logsetup import configure_logging
    from bdi.server import serve_forever

    settings = settings_from(config, data=data, sftp_port=sftp_port, web_port=web_port)
    try:
        steps = asyncio.run(prepare_demo(settings, folder))
    except (OSError, ValueError) as exc:
        raise fail(f"demo: {exc}") from exc
    typer.echo(
        f"BDI demo: SFTP on {settings.host}:{settings.sftp_port}, "
        f"Suivi on http://{settings.host}:{settings.web_port}/ — try:"
    )
    for step in steps:
        typer.echo(step)
    configure_logging()
    asyncio.run(serve_forever(settings))


def main() -> None:
    app()
