"""`bdi demo`: a hub on the embedded default with a ready demo market.

The participants of the sample referential are registered, each with a kit home and its
issued password under `demo/`; the sample files are copied there too. Running it again
reuses everything (keys are never regenerated, passwords never reissued).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import socket
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from bdi.admin.service import AdminService
from bdi.admin.wiring import admin_service
from bdi.config import Settings
from bdi.datadir import initialise
from bdi.kit.home import KitHome
from bdi.routing.layout import default_layout
from bdi.routing.referential import parse_referential
from bdi.server import run_server


def demo_files() -> dict[str, bytes]:
    folder = resources.files("bdi").joinpath("demo_data")
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


async def prepare_demo(settings: Settings, demo: Path) -> None:
    """Initialise the hub, register every sample participant once."""
    await initialise(settings)
    files = demo_files()
    samples = demo / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (samples / name).write_bytes(data)
    referential = parse_referential(files["referentiel.toml"].decode(), default_layout())
    async with admin_service(settings, actor="demo") as service:
        for participant in referential.participants.values():
            if participant.edi_id:
                await _enrol(service, demo / participant.edi_id, participant.edi_id,
                             participant.name)  # fmt: skip
        await service.load_referential(files["referentiel.toml"].decode())


async def _enrol(service: AdminService, home: Path, edi_id: str, name: str) -> None:
    password = home / "password"
    if await asyncio.to_thread(password.exists):
        return
    public = await asyncio.to_thread(_kit_key, home, edi_id)
    email = f"{edi_id.lower()}@demo.invalid"
    result = await service.add(edi_id, name=name, email=email, pgp_key=public)
    await asyncio.to_thread(_write_secret, password, result["password"])


def _kit_key(home: Path, edi_id: str) -> str:
    """The kit's public key, made on the first run only."""
    kit = KitHome(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    pgp = kit.pgp()
    if not kit.config.exists():
        fingerprint = pgp.generate_key(f"{edi_id} <{edi_id.lower()}@demo.invalid>")
        (home / f"{edi_id}.asc").write_text(pgp.export_public(fingerprint))
        kit.write_identity({"edi_id": edi_id, "fingerprint": fingerprint})
    pgp.stop_agent()
    return (home / f"{edi_id}.asc").read_text()


def _write_secret(path: Path, secret: str) -> None:
    path.write_text(secret + "\n")
    path.chmod(0o600)


WEB_START_S = 30.0


class PortTaken(OSError):
    """A port of the demo is already in use (or cannot be bound)."""


def check_ports(settings: Settings) -> None:
    """Fail, naming the port and its option, before anything is prepared or printed.

    Bound the way the hub binds them (SO_REUSEADDR); the hub's own bind still decides."""
    web = ("the web (Suivi)", "--web-port", settings.web_port)
    ports = (("SFTP", "--sftp-port", settings.sftp_port), web)
    for what, option, port in ports:
        if port == 0:
            continue
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                settings.host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise PortTaken(
                f"cannot listen on {settings.host}:{port} for {what} ({reason}); "
                f"choose another port with {option}"
            ) from exc


async def serve_demo(settings: Settings, demo: Path, say: Callable[[str], None]) -> None:
    """Prepare the demo market and serve it until SIGTERM or SIGINT; the walk-through is
    said once both ports listen, with the ports actually bound."""
    check_ports(settings)
    await prepare_demo(settings, demo)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_server(settings) as server:
        sftp, web = server.sftp_port, server.web_port
        await _answering(settings.host, web)
        say(
            f"BDI demo: SFTP on {settings.host}:{sftp}, "
            f"Suivi on http://{settings.host}:{web}/ — try:"
        )
        for step in walkthrough(settings.host, sftp, web, demo):
            say(step)
        await stop.wait()


async def _answering(host: str, port: int) -> None:
    """Wait until the web port accepts connections: it is bound when the server starts, but
    uvicorn listens on it from its own task a moment later."""
    try:
        async with asyncio.timeout(WEB_START_S):
            while True:
                try:
                    _, writer = await asyncio.open_connection(host, port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                await writer.wait_closed()
                return
    except TimeoutError as exc:
        raise TimeoutError(
            f"the web port {host}:{port} did not answer in {WEB_START_S:g} s"
        ) from exc


def bdi_command() -> str:
    """`bdi` as it can be typed where the demo was started.

    `make run` runs .venv/bin/bdi, which is not on the user's PATH: the walk-through names
    the script that runs by the path it was run with (relative to the current folder when
    inside it), else the one beside the running interpreter."""
    script = Path(sys.argv[0])
    if script.name != "bdi" or not script.is_file():
        script = Path(sys.executable).with_name("bdi")
        if not script.is_file():
            return "bdi"
    if script.is_absolute():
        with contextlib.suppress(ValueError):
            script = script.relative_to(Path.cwd())
    text = str(script)
    return shlex.quote(text if "/" in text else f"./{text}")


def walkthrough(
    host: str, sftp_port: int, web_port: int, demo: Path, bdi: str | None = None
) -> list[str]:
    """Commands that work as printed, from the folder the demo was started in."""
    bdi = bdi or bdi_command()
    hub = f"--host {shlex.quote(host)} --port {sftp_port}"
    web = f"http://{host}:{web_port}/"

    def path(p: Path) -> str:
        return shlex.quote(str(p))

    def who(edi_id: str) -> str:
        home = demo / edi_id
        return f"--home {path(home)} --user {edi_id} --password-file {path(home / 'password')}"

    sample = path(demo / "samples" / "RCOU010234_00311_000001.edi")
    received = path(demo / "CIE000311" / "received")
    return [
        f"1. {bdi} kit send {sample} {who('COU010234')} {hub} --wait --web-port {web_port}",
        f"2. {bdi} kit receive --to {received} {who('CIE000311')} {hub}",
        f"3. open {web} and log in as CIE000311 with the password in "
        f"{path(demo / 'CIE000311' / 'password')}",
    ]
