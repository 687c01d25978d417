"""The hub itself: its public key and fingerprint, version, uptime, free space, and the
checks of `/readyz`, read from the running hub at each visit."""

from __future__ import annotations

import asyncio
import os
import time
from importlib import metadata

from starlette.requests import Request
from starlette.responses import Response

from bdi.console.auth import Ctx
from bdi.console.core import Console
from bdi.console.formats import duration
from bdi.store import operators

CHECKS = {"database": "Base de données", "spool": "Dossier de réception (spool)",
          "free_space": "Espace libre", "jobs": "Traitements en retard"}  # fmt: skip


def version() -> str:
    try:
        return metadata.version("bdi")
    except metadata.PackageNotFoundError:
        return "inconnue"


def free_bytes(c: Console) -> int:
    try:
        found = os.statvfs(c.hub.settings.data)
    except OSError:
        return 0
    return found.f_bavail * found.f_frsize


async def hub(c: Console, request: Request, ctx: Ctx) -> Response:
    service = c.service(request, ctx)
    checks = await c.facts.readiness()
    return c.render(
        request, "hub.html", ctx,
        fingerprint=c.hub.hub_fingerprint,
        armoured=(await service.hub_key())["armoured"],
        version=version(),
        uptime=duration(time.time() - c.facts.started),
        free=await asyncio.to_thread(free_bytes, c),
        floor=c.hub.settings.free_space_floor_bytes,
        checks=[(CHECKS.get(k.name, k.name), k.ok, k.detail) for k in checks],
        participants=len(await service.store.participants()),
        operators=len(await operators.operators(service.store)),
    )  # fmt: skip
