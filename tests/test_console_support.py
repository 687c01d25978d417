"""Shared by the console tests: an operator account, a client of the console on the real web
port of a running hub, logging in, reading a form's CSRF token, a fresh participant key.

(Named test_console_* to live beside the console tests; it defines no test.)"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
from hubkit import HubUnderTest, short_home

from bdi.admin.operators import add_operator
from bdi.admin.wiring import service_for
from bdi.crypto import OpenPGP

# an inline <script> (one without src), an on…= handler, a style attribute
INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<[^>]+\son[a-z]+\s*=|<[^>]+\sstyle\s*=", re.I)


async def new_operator(hub: HubUnderTest, name: str) -> str:
    """An operator account made as `bdi admin operator add` makes it; its password."""
    done = await add_operator(service_for(hub.server.hub, "test"), name, f"{name}@cesam.test")
    return str(done["password"])


def console(hub: HubUnderTest) -> httpx.AsyncClient:
    """A browser of the console: the web port of the running hub, under /exploitation."""
    base = f"http://127.0.0.1:{hub.server.web_port}"
    return httpx.AsyncClient(base_url=base, timeout=60)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def log_in(c: httpx.AsyncClient, name: str, password: str, code: str = "") -> httpx.Response:
    form = await c.get("/exploitation/connexion")
    data = {"csrf": csrf_of(form.text), "identifiant": name, "mot_de_passe": password,
            "code": code}  # fmt: skip
    return await c.post("/exploitation/connexion", data=data)


async def logged_in(c: httpx.AsyncClient, name: str, password: str) -> httpx.AsyncClient:
    response = await log_in(c, name, password)
    assert (response.status_code, response.headers.get("location")) == (303, "/exploitation/")
    return c


async def csrf(c: httpx.AsyncClient, path: str = "/exploitation/") -> str:
    page = await c.get(path)
    assert page.status_code == 200, (path, page.status_code)
    return csrf_of(page.text)


def totp_code(secret: str, steps: int = 0) -> str:
    """The code of the time step `steps` away from now."""
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * steps))


def participant_key(uid: str) -> str:
    """A participant's new OpenPGP public key, armoured (generated in a scratch home)."""
    pgp = OpenPGP(short_home())
    try:
        return pgp.export_public(pgp.generate_key(uid))
    finally:
        pgp.stop_agent()
        shutil.rmtree(pgp.home, ignore_errors=True)
