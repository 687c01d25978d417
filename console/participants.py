"""The participants' screens: list and search, registration with the key shown parsed before
it is saved, one participant's page and its acts, the referential file. Every act is one
call of `AdminService`, as in `bdi admin participant …` and the JSON API."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bdi.admin.keypreview import preview_pgp_key, preview_ssh_key
from bdi.admin.registry import ROLES
from bdi.admin.service import AdminError, AdminService, NotFoundError
from bdi.console.auth import Ctx
from bdi.console.core import FORM_LIMITS, Console
from bdi.console.forms import FormError, file_or_text, text

FIELDS = ("identifiant", "nom", "email", "role", "cle_ssh")


def _matches(p: dict[str, Any], words: str, state: str) -> bool:
    haystack = f"{p['id']} {p['name']} {p['email']}".lower()
    return all(w in haystack for w in words.lower().split()) and state in ("", p["state"])


async def listing(c: Console, request: Request, ctx: Ctx) -> Response:
    found = await c.service(request, ctx).list()
    words, state = request.query_params.get("q", "")[:100], request.query_params.get("etat", "")
    shown = [p for p in found if _matches(p, words, state)]
    return c.render(request, "participants.html", ctx, rows=shown, total=len(found), q=words,
                    etat=state)  # fmt: skip


async def new_form(c: Console, request: Request, ctx: Ctx) -> Response:
    return c.render(request, "participant_new.html", ctx, values={}, roles=ROLES)


async def add(c: Console, request: Request, ctx: Ctx) -> Response:
    """First the key shown parsed (`etape=apercu`), then saved (`etape=enregistrer`)."""
    form = await request.form(**FORM_LIMITS)
    values = {name: text(form, name, 4000) for name in FIELDS}
    page: dict[str, Any] = {"values": values, "roles": ROLES}
    try:
        key = await _key(form)
    except FormError as exc:
        return c.render(request, "participant_new.html", ctx, 400, erreur=str(exc), **page)
    service = c.service(request, ctx)
    if text(form, "etape") != "enregistrer":
        previews = await _previews(service, key, values["cle_ssh"])
        return c.render(request, "participant_new.html", ctx, key=key, **previews, **page)
    try:
        done = await service.add(
            values["identifiant"].upper(), name=values["nom"], email=values["email"],
            pgp_key=key, role=values["role"] or None, ssh_key=values["cle_ssh"] or None,
        )  # fmt: skip
    except AdminError as exc:
        return c.render(request, "participant_new.html", ctx, 400, erreur=str(exc), **page)
    return c.render(request, "password.html", ctx, participant=done["id"],
                    password=done["password"], created=True)  # fmt: skip


async def _key(form: FormData) -> str:
    key = await file_or_text(form, "cle_fichier", "cle_texte")
    if not key:
        raise FormError("donnez la clé publique OpenPGP : un fichier, ou collée dans le champ")
    return key


async def _previews(service: AdminService, key: str, ssh: str) -> dict[str, Any]:
    return {
        "preview": await preview_pgp_key(service.pgp, key),
        "ssh_preview": preview_ssh_key(ssh) if ssh else None,
    }


def _pid(request: Request) -> str:
    return str(request.path_params["pid"])


async def _page(c: Console, request: Request, ctx: Ctx, code: int = 200, **values: Any) -> Response:
    service = c.service(request, ctx)
    try:
        shown = await service.show(_pid(request))
    except NotFoundError:
        raise HTTPException(404) from None
    ssh = [preview_ssh_key(k) for k in await service.store.ssh_keys(shown["id"])]
    events = (await service.audit_log(shown["id"], size=10))["events"]
    return c.render(request, "participant.html", ctx, code, p=shown, ssh=ssh, events=events,
                    **values)  # fmt: skip


async def show(c: Console, request: Request, ctx: Ctx) -> Response:
    return await _page(c, request, ctx)


async def _act(c: Console, request: Request, ctx: Ctx, done: str, act: Awaitable[Any]) -> Response:
    try:
        await act
    except NotFoundError:
        raise HTTPException(404) from None
    except AdminError as exc:
        return await _page(c, request, ctx, 400, erreur=str(exc))
    return c.back(request, "participant", done, pid=_pid(request))


async def disable(c: Console, request: Request, ctx: Ctx) -> Response:
    act = c.service(request, ctx).set_active(_pid(request), False)
    return await _act(c, request, ctx, "desactive", act)


async def enable(c: Console, request: Request, ctx: Ctx) -> Response:
    act = c.service(request, ctx).set_active(_pid(request), True)
    return await _act(c, request, ctx, "active", act)


async def reset_password(c: Console, request: Request, ctx: Ctx) -> Response:
    try:
        done = await c.service(request, ctx).reset_password(_pid(request))
    except NotFoundError:
        raise HTTPException(404) from None
    return c.render(request, "password.html", ctx, participant=done["id"],
                    password=done["password"], created=False)  # fmt: skip


async def pgp_key(c: Console, request: Request, ctx: Ctx) -> Response:
    form = await request.form(**FORM_LIMITS)
    try:
        key = await _key(form)
    except FormError as exc:
        return await _page(c, request, ctx, 400, erreur=str(exc))
    service = c.service(request, ctx)
    if text(form, "etape") != "enregistrer":
        preview = await preview_pgp_key(service.pgp, key)
        return await _page(c, request, ctx, pgp_preview=preview, key=key)
    return await _act(c, request, ctx, "cle-openpgp", service.set_pgp_key(_pid(request), key))


async def ssh_key(c: Console, request: Request, ctx: Ctx) -> Response:
    form = await request.form(**FORM_LIMITS)
    key = text(form, "cle_ssh", 16_000)
    if text(form, "etape") != "enregistrer":
        return await _page(c, request, ctx, ssh_preview=preview_ssh_key(key), ssh_text=key)
    act = c.service(request, ctx).set_ssh_key(_pid(request), key)
    return await _act(c, request, ctx, "cle-ssh", act)


async def referential_form(c: Console, request: Request, ctx: Ctx) -> Response:
    return c.render(request, "referential.html", ctx)


async def referential(c: Console, request: Request, ctx: Ctx) -> Response:
    form = await request.form(**FORM_LIMITS)
    try:
        toml = await file_or_text(form, "fichier", "texte")
        if not toml:
            raise FormError("donnez le fichier du référentiel")
        loaded = await c.service(request, ctx).load_referential(toml)
    except (FormError, AdminError) as exc:
        return c.render(request, "referential.html", ctx, 400, erreur=str(exc))
    return c.render(request, "referential.html", ctx, loaded=loaded)
