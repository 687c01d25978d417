"""`bdi demo`: a hub on the embedded default with a ready demo market.

The participants of the sample referential are registered, each with a kit home and its
issued password under `demo/`; the sample files are copied there too. Running it again
reuses everything (keys are never regenerated, passwords never reissued).
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

from bdi.admin.service import AdminService
from bdi.admin.wiring import admin_service
from bdi.config import Settings
from bdi.datadir import initialise
from bdi.kit.home import KitHome
from bdi.routing.layout import default_layout
from bdi.routing.referential import parse_referential


def demo_files() -> dict[str, bytes]:
    folder = resources.files("bdi").joinpath("demo_data")
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


async def prepare_demo(settings: Settings, demo: Path) -> list[str]:
    """Initialise the hub, register every sample participant once; return the walk-through."""
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
    return walkthrough(settings, demo)


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


def walkthrough(settings: Settings, demo: Path) -> list[str]:
    hub = f"--host {settings.host} --port {settings.sftp_port}"
    web = f"http://{settings.host}:{settings.web_port}/"

    def who(edi_id: str) -> str:
        return (
            f"--home {demo / edi_id} --user {edi_id} --password-file {demo / edi_id / 'password'}"
        )

    sample = demo / "samples" / "RCOU010234_00311_000001.edi"
    return [
        f"1. bdi kit send {sample} {who('COU010234')} {hub} --wait --web-port {settings.web_port}",
        f"2. bdi kit receive --to {demo / 'CIE000311' / 'received'} {who('CIE000311')} {hub}",
        f"3. open {web} and log in as CIE000311 with the password in "
        f"{demo / 'CIE000311' / 'password'}",
    ]
