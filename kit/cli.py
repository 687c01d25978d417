"""`bdi kit …`: a participant's side — keys, send, receive, watch. One line per file;
non-zero exit with a one-line reason on failure, whatever failed (never a traceback);
`--json` for machines."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

if TYPE_CHECKING:  # imported lazily: `bdi check` must not pay for the SSH and GnuPG stacks
    from bdi.kit.home import KitHome
    from bdi.kit.transfer import Outcome, Remote

T = TypeVar("T")
P = ParamSpec("P")
app = typer.Typer(help="The participant kit: keygen, send, receive, watch.")
_REASON_MAX = 500  # characters of a reason: one line a person or a script can read

HomeOpt = Annotated[Path, typer.Option("--home", help="the kit home (keys, pinned hub key)")]
HostOpt = Annotated[str, typer.Option(help="hub host")]
PortOpt = Annotated[int, typer.Option(help="hub SFTP port")]
UserOpt = Annotated[str, typer.Option(help="your EDI identifier")]
PasswordOpt = Annotated[Path | None, typer.Option(help="file holding your issued password")]
IdentityOpt = Annotated[Path | None, typer.Option(help="your SSH private key")]
KnownOpt = Annotated[
    Path | None,
    typer.Option(
        help="known_hosts file for the hub's key (default: <home>/known_hosts, pinned on first use)"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _fail(reason: str) -> typer.Exit:
    typer.echo(f"bdi kit: {reason}", err=True)
    return typer.Exit(1)


def _one_line(command: Callable[P, None]) -> Callable[P, None]:
    """Whatever a command fails on (the hub unreachable, a file, gpg, a bug) ends as one
    line on stderr and exit code 1: scripts read the reason, people never see a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            raise _fail(_reason(exc)) from exc

    return run


def _reason(exc: Exception) -> str:
    """The exception's message on one line (its class if it has none)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:_REASON_MAX]


def _run(work: Awaitable[T]) -> T:
    from bdi.kit.home import KitError

    try:
        return asyncio.run(_guarded(work))
    except KitError as exc:
        raise _fail(str(exc)) from exc


async def _guarded(work: Awaitable[T]) -> T:
    from bdi.kit.home import KitError

    try:
        return await work
    except OSError as exc:
        raise KitError(str(exc)) from exc


def _remote(
    home: Path,
    host: str,
    port: int,
    user: str,
    password_file: Path | None,
    identity: Path | None,
    known_hosts: Path | None,
    web_port: int | None = None,
) -> Remote:
    from bdi.kit.transfer import Remote

    if password_file is None and identity is None:
        raise _fail("give --password-file or --identity")
    password = password_file.read_text().strip() if password_file else None
    pinned = known_hosts or home / "known_hosts"
    return Remote(host, port, user, password, identity, pinned, web_port)


def _report(outcomes: list[Outcome], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([o.__dict__ for o in outcomes], ensure_ascii=False))
    else:
        for outcome in outcomes:
            typer.echo(outcome.line())


@app.command()
@_one_line
def keygen(edi_id: str, home: HomeOpt, as_json: JsonOpt = False) -> None:
    """Make your OpenPGP key pair; writes the public key file the admin registers."""
    from bdi.kit.home import KitError, KitHome

    kit = KitHome(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if kit.config.exists():
        raise _fail(f"{home} already holds a key ({kit.identity().get('fingerprint')})")
    try:
        pgp = kit.pgp()
        fingerprint = pgp.generate_key(f"{edi_id} <{edi_id.lower()}@bdi.invalid>")
        public = home / f"{edi_id}.asc"
        public.write_text(pgp.export_public(fingerprint))
    except (KitError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    kit.write_identity({"edi_id": edi_id, "fingerprint": fingerprint})
    result = {"edi_id": edi_id, "fingerprint": fingerprint, "public_key": str(public)}
    typer.echo(json.dumps(result) if as_json else f"{fingerprint}\npublic key: {public}")


@app.command("send")
@_one_line
def send_cmd(
    files: list[Path],
    home: HomeOpt,
    host: HostOpt,
    port: PortOpt,
    user: UserOpt,
    password_file: PasswordOpt = None,
    identity: IdentityOpt = None,
    known_hosts: KnownOpt = None,
    wait: Annotated[bool, typer.Option(help="wait for the hub's outcome of each file")] = False,
    web_port: Annotated[int | None, typer.Option(help="hub web port (for --wait)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds --wait may take")] = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Sign, encrypt for the hub, upload under .part then rename; one line per file."""
    from bdi.kit.home import KitError, KitHome
    from bdi.kit.transfer import job_counts, send, wait_for

    for path in files:
        if not path.is_file():
            raise _fail(f"{path}: no such file")
    remote = _remote(home, host, port, user, password_file, identity, known_hosts, web_port)
    kit = KitHome(home)

    async def go() -> list[Outcome]:
        before = await job_counts(remote, files) if wait else {}
        sent = await send(kit, remote, files)
        if not wait:
            return sent
        try:
            async with asyncio.timeout(timeout):
                return await wait_for(remote, sent, before)
        except TimeoutError as exc:
            raise KitError(f"no outcome from the hub within {timeout:g} s") from exc

    outcomes = _run(go())
    _report(outcomes, as_json)
    if any(o.status == "refused" for o in outcomes):
        raise typer.Exit(1)


@app.command("receive")
@_one_line
def receive_cmd(
    home: HomeOpt,
    to: Annotated[Path, typer.Option(help="folder for received files")],
    host: HostOpt,
    port: PortOpt,
    user: UserOpt,
    password_file: PasswordOpt = None,
    identity: IdentityOpt = None,
    known_hosts: KnownOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download, verify and decrypt every inbox file into --to, then delete it remotely."""
    from bdi.kit.home import KitHome
    from bdi.kit.transfer import receive

    remote = _remote(home, host, port, user, password_file, identity, known_hosts)
    to.mkdir(parents=True, exist_ok=True)
    _report(_run(receive(KitHome(home), remote, to)), as_json)


@app.command()
@_one_line
def watch(
    home: HomeOpt,
    outgoing: Annotated[Path, typer.Option(help="folder of files to send")],
    to: Annotated[Path, typer.Option(help="folder for received files")],
    host: HostOpt,
    port: PortOpt,
    user: UserOpt,
    password_file: PasswordOpt = None,
    identity: IdentityOpt = None,
    known_hosts: KnownOpt = None,
    interval: Annotated[float, typer.Option(help="seconds between rounds")] = 5.0,
    as_json: JsonOpt = False,
) -> None:
    """For automated systems: send what appears in --outgoing (moved to sent/), receive
    into --to, in a loop; stops cleanly on SIGTERM or SIGINT."""
    from bdi.kit.home import KitHome

    remote = _remote(home, host, port, user, password_file, identity, known_hosts)
    kit = KitHome(home)
    for folder in (outgoing, outgoing / "sent", to):
        folder.mkdir(parents=True, exist_ok=True)
    _run(_watch(kit, remote, outgoing, to, interval, lambda o: _report(o, as_json)))


def _ready(outgoing: Path) -> list[Path]:
    """Complete files only: writers use a dot name or a .part/.tmp suffix until done."""
    return sorted(
        p for p in outgoing.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith((".part", ".tmp"))
    )  # fmt: skip


async def _watch(
    kit: KitHome,
    remote: Remote,
    outgoing: Path,
    to: Path,
    interval: float,
    report: Callable[[list[Outcome]], Any],
) -> None:
    from bdi.kit.transfer import receive, send

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        ready = await asyncio.to_thread(_ready, outgoing)
        if ready:
            report(await send(kit, remote, ready))
            for path in ready:
                path.replace(outgoing / "sent" / path.name)
        report(await receive(kit, remote, to))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
