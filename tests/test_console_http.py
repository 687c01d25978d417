"""The operators' console over HTTP, against the real web port of a running hub: every screen
and every act (participants, the referential, jobs, inboxes and redelivery, bans, the audit log
and its CSV, the hub, the TOTP second factor), each act audited with who and from where."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncssh
import httpx
import pytest
import pytest_asyncio
from hubkit import HubUnderTest, Party, hub_running
from sqlalchemy import update
from sqlmodel import col, select
from support import SAMPLES
from test_console_support import (
    INLINE,
    console,
    csrf,
    csrf_of,
    log_in,
    logged_in,
    new_operator,
    participant_key,
    totp_code,
)
from test_suivi_support import BROKER, CIRCUIT, COGEAS, load_referential, send

from bdi.admin.wiring import service_for
from bdi.store import bans
from bdi.store.models import AuditEvent, Ban, Job, Operator

pytestmark = pytest.mark.asyncio(loop_scope="module")
OPERATOR = "marie.durand"
NEW_ID = "COU010777"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(
    tmp_path_factory: pytest.TempPathFactory, parties: dict[str, Party]
) -> AsyncIterator[HubUnderTest]:
    tmp = tmp_path_factory.mktemp("console-http")
    async with hub_running(tmp / "data", parties) as running:
        await send(running, CIRCUIT[0], tmp)
        await load_referential(running)
        running.parties["operator"] = Party(OPERATOR, running.parties[BROKER].pgp, "", "",
                                            await new_operator(running, OPERATOR))  # fmt: skip
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def c(hub: HubUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    async with console(hub) as client:
        yield await logged_in(client, OPERATOR, hub.parties["operator"].password)


async def audit_rows(hub: HubUnderTest, action: str) -> list[AuditEvent]:
    async with hub.server.hub.store.session() as s:
        rows = await s.exec(select(AuditEvent).where(col(AuditEvent.action) == action))
        return list(rows.all())


def text_of(page: httpx.Response) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.text))


# --- login ----------------------------------------------------------------------------------


async def test_login_then_logout(hub: HubUnderTest) -> None:
    async with console(hub) as c:
        first = await c.get("/exploitation/")
        assert (first.status_code, first.headers["location"]) == (303, "/exploitation/connexion")
        response = await log_in(c, OPERATOR, hub.parties["operator"].password)
        assert (response.status_code, response.headers["location"]) == (303, "/exploitation/")
        cookie = response.headers["set-cookie"]
        assert "bdi_exploitation=" in cookie and "HttpOnly" in cookie
        assert "Path=/exploitation" in cookie and "SameSite=strict" in cookie
        home = await c.get("/exploitation/")
        assert home.status_code == 200 and "Console d'exploitation" in home.text
        assert home.headers["cache-control"] == "no-store"
        out = await c.post("/exploitation/deconnexion", data={"csrf": csrf_of(home.text)})
        assert (out.status_code, out.headers["location"]) == (303, "/exploitation/connexion")
        assert (await c.get("/exploitation/")).status_code == 303
    logins = await audit_rows(hub, "operator.login")
    assert logins and logins[-1].actor == f"exploitation:{OPERATOR}"
    assert logins[-1].address == "127.0.0.1"
    assert await audit_rows(hub, "operator.logout")


async def test_wrong_credentials_clear_every_field(hub: HubUnderTest) -> None:
    async with console(hub) as c:
        for name, password in ((OPERATOR, "wrong"), ("nobody", "x"), ("", "")):
            response = await log_in(c, name, password)
            assert response.status_code == 401
            assert 'name="identifiant" value=""' in response.text
            assert (await c.get("/exploitation/")).status_code == 303
    refused = await audit_rows(hub, "operator.login-refused")
    assert {r.target for r in refused} >= {OPERATOR, "nobody"}


async def test_every_post_needs_the_sessions_csrf_token(
    hub: HubUnderTest, c: httpx.AsyncClient
) -> None:
    async with console(hub) as anonymous:
        await anonymous.get("/exploitation/connexion")
        data = {"identifiant": OPERATOR, "mot_de_passe": hub.parties["operator"].password}
        assert (await anonymous.post("/exploitation/connexion", data=data)).status_code == 403
    url = f"/exploitation/participants/{COGEAS}/desactiver"
    assert (await c.post(url, data={"csrf": "forged"})).status_code == 403
    assert (await c.post(url)).status_code == 403
    assert (await hub.server.hub.store.participant(COGEAS)).active  # type: ignore[union-attr]


# --- participants -----------------------------------------------------------------------------


async def test_participants_list_search_and_state(c: httpx.AsyncClient) -> None:
    page = await c.get("/exploitation/participants")
    assert page.status_code == 200
    assert BROKER in page.text and COGEAS in page.text
    found = await c.get("/exploitation/participants", params={"q": BROKER.lower()})
    assert BROKER in found.text and COGEAS not in found.text
    assert "1</strong> participant sur" in found.text
    none = await c.get("/exploitation/participants", params={"etat": "disabled"})
    assert "Aucun participant ne correspond" in none.text


async def test_register_a_participant_key_shown_before_it_is_saved(
    hub: HubUnderTest, c: httpx.AsyncClient
) -> None:
    key = participant_key(f"Courtier Test <{NEW_ID.lower()}@example.test>")
    form = {"csrf": await csrf(c, "/exploitation/participants/nouveau"), "identifiant": NEW_ID,
            "nom": "Courtier Test", "email": "contact@courtier.test", "role": "",
            "cle_ssh": "", "etape": "apercu"}  # fmt: skip
    files = {"cle_fichier": ("courtier.asc", key.encode(), "application/pgp-keys")}
    preview = await c.post("/exploitation/participants/nouveau", data=form, files=files)
    assert preview.status_code == 200, preview.text
    shown = text_of(preview)
    assert "Empreinte" in shown and f"{NEW_ID.lower()}@example.test" in shown
    assert "EdDSA ed25519" in shown and "ECDH cv25519" in shown and "jamais" in shown
    assert "Aucun problème" in shown
    assert await hub.server.hub.store.participant(NEW_ID) is None  # nothing saved yet
    last = {**form, "csrf": csrf_of(preview.text), "cle_texte": key, "etape": "enregistrer"}
    saved = await c.post("/exploitation/participants/nouveau", data=last)
    assert saved.status_code == 200, saved.text
    password = re.search(r'id="mot-de-passe">([^<]+)<', saved.text)
    assert password and "une seule fois" in saved.text
    assert saved.headers["cache-control"] == "no-store"
    row = await hub.server.hub.store.participant(NEW_ID)
    assert row is not None and row.name == "Courtier Test" and row.role == "courtier"
    added = await audit_rows(hub, "participant.add")
    assert [(a.actor, a.address) for a in added if a.target == NEW_ID] == [
        (f"exploitation:{OPERATOR}", "127.0.0.1")]  # fmt: skip
    again = await c.get(f"/exploitation/participants/{NEW_ID}")
    assert password.group(1) not in again.text  # shown once


async def test_a_key_with_problems_is_shown_and_cannot_be_saved(c: httpx.AsyncClient) -> None:
    form = {"csrf": await csrf(c, "/exploitation/participants/nouveau"), "identifiant": "COU010778",
            "nom": "X", "email": "x@x.test", "cle_texte": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n"
            "bm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----", "etape": "apercu",
            "cle_ssh": "ssh-ed25519 AAAAnotakey"}  # fmt: skip
    preview = await c.post("/exploitation/participants/nouveau", data=form)
    assert preview.status_code == 200
    assert "no OpenPGP public key found" in preview.text and "not an SSH public key" in preview.text
    assert 'value="enregistrer"' not in preview.text
    token = csrf_of(preview.text)
    missing = await c.post(
        "/exploitation/participants/nouveau", data={**form, "cle_texte": "", "csrf": token}
    )
    assert missing.status_code == 400 and "donnez la clé publique OpenPGP" in missing.text
    refused = await c.post("/exploitation/participants/nouveau", data={
        **form, "cle_ssh": "", "etape": "enregistrer", "csrf": csrf_of(preview.text)})  # fmt: skip
    assert refused.status_code == 400 and "Refusé" in refused.text


async def test_show_disable_enable_and_reset_password(
    hub: HubUnderTest, c: httpx.AsyncClient
) -> None:
    page = await c.get(f"/exploitation/participants/{COGEAS}")
    assert page.status_code == 200 and "Valide" in page.text
    assert hub.parties[COGEAS].fingerprint in page.text
    token = csrf_of(page.text)
    off = await c.post(f"/exploitation/participants/{COGEAS}/desactiver", data={"csrf": token})
    assert off.status_code == 303 and off.headers["location"].endswith("?fait=desactive")
    shown = await c.get(off.headers["location"])
    assert "est désactivé" in shown.text and 'id="etat">Désactivé' in shown.text
    assert "participant.disable" in shown.text  # its last acts, on its page
    on = await c.post(f"/exploitation/participants/{COGEAS}/activer", data={"csrf": token})
    assert on.status_code == 303
    reset = await c.post(f"/exploitation/participants/{COGEAS}/mot-de-passe",
                         data={"csrf": token})  # fmt: skip
    found = re.search(r'id="mot-de-passe">([^<]+)<', reset.text)
    assert reset.status_code == 200 and found
    hub.parties[COGEAS].password = found.group(1)
    row = await hub.server.hub.store.participant(COGEAS)
    assert row is not None and row.active
    assert (await c.get("/exploitation/participants/COU999999")).status_code == 404


async def test_change_the_openpgp_and_ssh_keys_with_a_preview(
    hub: HubUnderTest, c: httpx.AsyncClient
) -> None:
    key = participant_key("Nouvelle clé <cle@example.test>")
    url = f"/exploitation/participants/{BROKER}"
    token = await csrf(c, url)
    files = {"cle_fichier": ("nouvelle.asc", key.encode(), "text/plain")}
    preview = await c.post(f"{url}/cle-openpgp", data={"csrf": token, "etape": "apercu"},
                           files=files)  # fmt: skip
    assert preview.status_code == 200 and "Nouvelle clé OpenPGP" in preview.text
    assert "cle@example.test" in preview.text and "Aucun problème" in preview.text
    before = await hub.server.hub.store.participant(BROKER)
    assert before is not None and before.pgp_fingerprint == hub.parties[BROKER].fingerprint
    saved = await c.post(f"{url}/cle-openpgp", data={"csrf": token, "etape": "enregistrer",
                                                     "cle_texte": key})  # fmt: skip
    assert saved.status_code == 303 and saved.headers["location"].endswith("?fait=cle-openpgp")
    after = await hub.server.hub.store.participant(BROKER)
    assert after is not None and after.pgp_fingerprint != before.pgp_fingerprint

    ssh = asyncssh.generate_private_key("ssh-ed25519", comment="poste-courtier")
    public = ssh.export_public_key().decode()
    look = await c.post(f"{url}/cle-ssh", data={"csrf": token, "cle_ssh": public,
                                                "etape": "apercu"})  # fmt: skip
    assert look.status_code == 200 and "ssh-ed25519" in look.text and "poste-courtier" in look.text
    assert ssh.get_fingerprint("sha256") in look.text
    done = await c.post(f"{url}/cle-ssh", data={"csrf": token, "cle_ssh": public,
                                                "etape": "enregistrer"})  # fmt: skip
    assert done.status_code == 303
    assert await hub.server.hub.store.ssh_keys(BROKER) == [public.strip()]
    bad = await c.post(f"{url}/cle-ssh", data={"csrf": token, "cle_ssh": "x",
                                               "etape": "enregistrer"})  # fmt: skip
    assert bad.status_code == 400 and "not an SSH public key" in bad.text


async def test_load_the_referential_file(hub: HubUnderTest, c: httpx.AsyncClient) -> None:
    token = await csrf(c, "/exploitation/referentiel")
    data = (SAMPLES / "referentiel.toml").read_bytes()
    files = {"fichier": ("referentiel.toml", data, "application/toml")}
    loaded = await c.post("/exploitation/referentiel", data={"csrf": token}, files=files)
    assert loaded.status_code == 200 and "Référentiel chargé" in loaded.text
    bad = {"fichier": ("faux.toml", b"[participants\n", "application/toml")}
    refused = await c.post("/exploitation/referentiel", data={"csrf": token}, files=bad)
    assert refused.status_code == 400 and "Refusé" in refused.text
    assert await audit_rows(hub, "referential.load")


# --- the hub's work -----------------------------------------------------------------------------


async def test_jobs_lists_and_the_retry_of_a_quarantined_job(
    hub: HubUnderTest, c: httpx.AsyncClient
) -> None:
    store = hub.server.hub.store
    async with store.session() as s:
        job_id = (await s.exec(select(Job.id).order_by(col(Job.id)))).first()
        await s.exec(
            update(Job)
            .where(col(Job.id) == job_id)
            .values(quarantined_at=datetime.now(UTC), error="BugError: a test's bug", attempts=3)
        )
        await s.commit()
    assert job_id is not None
    for which in ("waiting", "quarantined", "all"):
        assert (
            await c.get("/exploitation/traitements", params={"liste": which})
        ).status_code == 200
    quarantined = await c.get("/exploitation/traitements", params={"liste": "quarantined"})
    assert "BugError: a test's bug" in html.unescape(quarantined.text)
    assert (await c.get("/exploitation/traitements", params={"liste": "x"})).status_code == 404
    page = await c.get(f"/exploitation/traitements/{job_id}")
    assert page.status_code == 200 and "Relancer le traitement" in page.text
    retried = await c.post(f"/exploitation/traitements/{job_id}/relancer",
                           data={"csrf": csrf_of(page.text)})  # fmt: skip
    assert retried.status_code == 303 and retried.headers["location"].endswith("?fait=relance")
    again = await c.post(f"/exploitation/traitements/{job_id}/relancer",
                         data={"csrf": csrf_of(page.text)})  # fmt: skip
    assert again.status_code == 400 and "not quarantined" in again.text
    assert [e.target for e in await audit_rows(hub, "job.retry")] == [str(job_id)]
    for missing in ("99999999", "abc", "9" * 30):
        assert (await c.get(f"/exploitation/traitements/{missing}")).status_code == 404


async def test_inboxes_backlog_and_a_redelivery(hub: HubUnderTest, c: httpx.AsyncClient) -> None:
    page = await c.get("/exploitation/boites")
    assert page.status_code == 200
    movements = await hub.server.hub.store.movements()
    recipient = movements[0].recipient_id
    row = re.search(rf">{recipient}</a></td><td class=\"num\">(\d+)</td>", page.text)
    assert row and int(row.group(1)) >= 1
    form = {"csrf": csrf_of(page.text), "mouvement": str(movements[0].id)}
    sent = await c.post("/exploitation/boites/renvoi", data=form)
    assert sent.status_code == 200, text_of(sent)
    assert f"Mouvement {movements[0].id} renvoyé à {recipient}" in sent.text
    refused = await c.post("/exploitation/boites/renvoi",
                           data={"csrf": csrf_of(page.text), "mouvement": "abc"})  # fmt: skip
    assert refused.status_code == 400
    assert await audit_rows(hub, "movement.redeliver")


async def test_bans_listed_and_lifted(hub: HubUnderTest, c: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    ban = Ban(address="203.0.113.9", banned_at=now, until=now + timedelta(hours=1), score=15,
              reason="suivi_login")  # fmt: skip
    await bans.add_ban(hub.server.hub.store, ban)
    page = await c.get("/exploitation/adresses-bloquees")
    assert "203.0.113.9" in page.text and "suivi_login" in page.text
    lifted = await c.post("/exploitation/adresses-bloquees/lever",
                          data={"csrf": csrf_of(page.text), "adresse": "203.0.113.9"})  # fmt: skip
    assert lifted.status_code == 303
    after = await c.get(lifted.headers["location"])
    assert "203.0.113.9" not in after.text and "Aucune adresse bloquée" in after.text
    again = await c.post("/exploitation/adresses-bloquees/lever",
                         data={"csrf": csrf_of(page.text), "adresse": "203.0.113.9"})  # fmt: skip
    assert again.status_code == 400 and "no ban on 203.0.113.9" in again.text


async def test_audit_log_search_and_csv(hub: HubUnderTest, c: httpx.AsyncClient) -> None:
    page = await c.get("/exploitation/audit", params={"q": f"{COGEAS} disable"})
    assert page.status_code == 200
    assert "participant.disable" in page.text and "participant.enable" not in page.text
    today = datetime.now(UTC).date()
    window = {"du": today.isoformat(), "au": (today + timedelta(days=1)).isoformat()}
    assert "participant.disable" in (await c.get("/exploitation/audit", params=window)).text
    old = await c.get("/exploitation/audit", params={"au": "2001-01-01"})
    assert "<strong>0</strong> acte" in old.text
    for bad in ({"du": "2024-13-01"}, {"au": "9999-12-31"}, {"page": "0"}):
        assert (await c.get("/exploitation/audit", params=bad)).status_code == 400
    export = await c.get("/exploitation/audit/csv", params={"q": COGEAS})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert 'filename="journal-audit.csv"' in export.headers["content-disposition"]
    data = export.content.decode("utf-8")
    assert data.startswith("\ufeffDate et heure;Qui;Adresse;Acte;Cible;Détail\r\n")
    assert f";exploitation:{OPERATOR};127.0.0.1;participant.disable;{COGEAS};\r\n" in data


async def test_the_same_reads_through_the_json_api(hub: HubUnderTest) -> None:
    """Inboxes and the audit log are AdminService's: the API answers what the console shows."""
    token = (await service_for(hub.server.hub, "test").rotate_token())["token"]
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.server.web_port}") as api:
        inboxes = (await api.get("/api/admin/inboxes", headers=auth)).json()
        assert {b["participant"] for b in inboxes} == set(hub.parties) - {"operator"} | {NEW_ID}
        query = {"q": f"{COGEAS} disable", "from": "2000-01-01", "size": "5"}
        found = await api.get("/api/admin/audit", headers=auth, params=query)
        events = found.json()["events"]
        assert events and events[0]["actor"] == f"exploitation:{OPERATOR}"
        assert events[0]["address"] == "127.0.0.1"
        for bad in ({"from": "2024-13-01"}, {"page": "0"}, {"size": "x"}):
            assert (await api.get("/api/admin/audit", headers=auth, params=bad)).status_code == 400
        paths = (await api.get("/api/admin/openapi.json", headers=auth)).json()["paths"]
        assert {"/inboxes", "/audit"} <= set(paths)


async def test_the_hub_page(hub: HubUnderTest, c: httpx.AsyncClient) -> None:
    page = await c.get("/exploitation/hub")
    assert page.status_code == 200
    assert hub.hub_fingerprint in page.text and "BEGIN PGP PUBLIC KEY BLOCK" in page.text
    assert 'id="version">0.' in page.text and "min</dd>" in page.text
    assert "Base de données" in page.text and "Espace libre" in page.text
    assert page.text.count(">OK<") == 4


async def test_every_page_has_the_headers_and_no_inline_script(c: httpx.AsyncClient) -> None:
    for path in ("", "participants", f"participants/{BROKER}", "participants/nouveau",
                 "referentiel", "traitements", "boites", "adresses-bloquees", "audit", "hub",
                 "compte", "connexion"):  # fmt: skip
        page = await c.get(f"/exploitation/{path}", follow_redirects=True)
        assert page.status_code == 200, path
        assert "script-src 'self'" in page.headers["content-security-policy"], path
        assert page.headers["x-frame-options"] == "DENY"
        assert not INLINE.search(page.text), (path, INLINE.search(page.text))
    css = await c.get("/exploitation/static/console.css")
    assert css.status_code == 200 and (await c.get("/exploitation/static/suivi.css")).is_success


# --- the second factor --------------------------------------------------------------------------


async def test_totp_enrolment_login_and_replay(hub: HubUnderTest) -> None:
    name = "totp.user"
    password = await new_operator(hub, name)
    async with console(hub) as c:
        await logged_in(c, name, password)
        page = await c.post("/exploitation/compte/totp",
                            data={"csrf": await csrf(c, "/exploitation/compte")})  # fmt: skip
        assert page.status_code == 200 and 'src="data:image/svg+xml' in page.text
        secret = re.search(r'id="secret-totp">([A-Z2-7]+)<', page.text)
        assert secret
        wrong = await c.post("/exploitation/compte/totp/confirmer",
                             data={"csrf": csrf_of(page.text), "code": "000000"})  # fmt: skip
        assert wrong.status_code == 400 and f'id="secret-totp">{secret.group(1)}<' in wrong.text
        on = await c.post("/exploitation/compte/totp/confirmer",
                          data={"csrf": csrf_of(page.text),
                                "code": totp_code(secret.group(1), -1)})  # fmt: skip
        assert on.status_code == 303
        assert 'id="totp">activée' in (await c.get(on.headers["location"])).text
    async with console(hub) as c:
        assert (await log_in(c, name, password)).status_code == 401  # the code is needed
        code = totp_code(secret.group(1))
        assert (await log_in(c, name, password, code)).status_code == 303
    async with console(hub) as c:
        replay = await log_in(c, name, password, code)
        assert replay.status_code == 401  # each code once
    async with console(hub) as c:
        assert (await log_in(c, name, password, totp_code(secret.group(1), 1))).status_code == 303
        token = await csrf(c, "/exploitation/compte")
        refused = await c.post("/exploitation/compte/totp/desactiver",
                               data={"csrf": token, "code": "123456"})  # fmt: skip
        assert refused.status_code == 400 and "stays on" in refused.text
        await forget_last_code(hub, name)  # as if a minute had passed
        off = await c.post("/exploitation/compte/totp/desactiver",
                           data={"csrf": token, "code": totp_code(secret.group(1))})  # fmt: skip
        assert off.status_code == 303
    async with console(hub) as c:
        assert (await log_in(c, name, password)).status_code == 303  # no code asked now
    assert await audit_rows(hub, "operator.totp-on") and await audit_rows(hub, "operator.totp-off")


async def forget_last_code(hub: HubUnderTest, name: str) -> None:
    async with hub.server.hub.store.session() as s:
        row = await s.get(Operator, name)
        assert row is not None and row.totp_secret is not None
        row.totp_last_step = None
        await s.commit()
