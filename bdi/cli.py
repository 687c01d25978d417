"""The `bdi` command line (HUB.md, "Command line"). Each command fails with one line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bdi.admin.cli import app as admin_app
from bdi.check import main as check_main
from bdi.dbcli import app as db_app
from bdi.kit.cli import app as kit_app

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
app.add_typer(db_app, name="db")


@app.callback()
def root() -> None:
    """BDI, the Optiflux exchange hub."""


def fail(reason: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print a one-line reason on stderr and return the exit to raise."""
    typer.echo(f"bdi: {reason}", err=True)
    return typer.Exit(code)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def check(ctx: typer.Context) -> None:
    """Validate plain Optiflux files as the hub would (`bdi check --help` for options).

    Its options are parsed by `bdi.check.main`: the `bdi` entry point runs it without
    loading the rest of the command line, so checking a file starts fast."""
    raise typer.Exit(check_main(ctx.args))


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
    configure_logging(node=settings.node)
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

    from bdi.demo import serve_demo
    from bdi.logsetup import configure_logging

    settings = settings_from(config, data=data, sftp_port=sftp_port, web_port=web_port)
    configure_logging()
    try:
        asyncio.run(serve_demo(settings, folder, typer.echo))
    except (OSError, ValueError) as exc:
        raise fail(f"demo: {exc}") from exc


JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _backup_summary(verb: str, r: dict[str, object]) -> str:
    counts = r["counts"]
    assert isinstance(counts, dict)
    return (f"{verb} {r['folder']}: {r['files']} files, {r['bytes']} bytes, "
            f"{counts['movements']} movements, as of {r['taken_at']}")  # fmt: skip


@app.command()
def backup(
    dest: Annotated[Path, typer.Argument(help="a new or empty folder")],
    data: DataOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy the data folder, consistently, while the hub serves (uploads go on)."""
    import json
    import sqlite3

    from bdi.backup import BackupError
    from bdi.backup import backup as take
    from bdi.logsetup import configure_logging

    settings = settings_from(config, data=data)
    configure_logging()
    try:
        result = take(settings, dest).as_json()
    except (BackupError, OSError, sqlite3.Error) as exc:
        raise fail(f"backup: {exc}", EXIT_REFUSED) from exc
    typer.echo(json.dumps(result, indent=2) if as_json else _backup_summary("backup in", result))


@app.command()
def restore(
    src: Annotated[Path, typer.Argument(help="a folder `bdi backup` made")],
    data: DataOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild a data folder (new or empty) from a backup; then `bdi serve` it."""
    import json
    import sqlite3

    from bdi.backup import BackupError
    from bdi.backup import restore as rebuild
    from bdi.config import load_settings
    from bdi.logsetup import configure_logging

    target = load_settings(None, data=data).data
    configure_logging()
    try:
        result = rebuild(src, target).as_json()
    except (BackupError, OSError, sqlite3.Error) as exc:
        raise fail(f"restore: {exc}", EXIT_REFUSED) from exc
    typer.echo(json.dumps(result, indent=2) if as_json else _backup_summary("restored", result))


def main() -> None:
    app()
