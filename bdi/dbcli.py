"""`bdi db`: the schema's revisions (Alembic), for an operator upgrading by hand.

`bdi init` and `bdi serve` upgrade to the newest revision themselves; these commands show
where a database stands and upgrade it ahead of the nodes (several nodes on one PostgreSQL:
upgrade once, then restart them one by one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The database schema's revisions.", no_args_is_help=True)

DataOpt = Annotated[
    Path | None, typer.Option("--data", envvar="BDI_DATA", help="data folder (default ./bdi-data)")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", envvar="BDI_CONFIG", help="TOML configuration file")
]


def _url(data: Path | None, config: Path | None) -> str:
    from bdi.cli import settings_from

    return settings_from(config, data=data).db_url


def _fail(exc: Exception) -> typer.Exit:
    from bdi.cli import fail

    return fail(f"db: {str(exc).splitlines()[0]}")


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    data: DataOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Bring the database to a revision (default: the newest)."""
    from sqlalchemy.exc import SQLAlchemyError

    from bdi.logsetup import configure_logging
    from bdi.store import schema

    configure_logging()  # schema.upgraded, on stderr
    url = _url(data, config)
    try:
        schema.upgrade(url, revision)
        typer.echo(f"database at revision {schema.current(url)}")
    except (SQLAlchemyError, OSError) as exc:
        raise _fail(exc) from exc


@app.command()
def current(data: DataOpt = None, config: ConfigOpt = None) -> None:
    """The database's revision, and whether it is the newest."""
    from sqlalchemy.exc import SQLAlchemyError

    from bdi.store import schema

    try:
        at = schema.current(_url(data, config))
    except (SQLAlchemyError, OSError) as exc:
        raise _fail(exc) from exc
    head = schema.head()
    state = "newest" if at == head else f"newest is {head}: run `bdi db upgrade`"
    typer.echo(f"{at or 'none (not initialised)'} ({state})")


@app.command()
def history() -> None:
    """Every revision, oldest first."""
    from bdi.store import schema

    for revision in schema.history():
        typer.echo(f"{revision.id}  {revision.doc}")
