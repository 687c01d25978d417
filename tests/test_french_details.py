"""What a sender is told is short and in French (HUB.md): the detail of a DECHIFFREMENT line
in its `.log` (the English reason stays in the hub's log, for the operators), and the answers
of `/api/uploads`, whatever the path asked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hubkit import HubUnderTest, Party, gpg, hub_running, make_parties
from structlog.testing import capture_logs
from support import SAMPLES

from bdi.crypto import Reason, Refusal
from bdi.pipeline import stream
from bdi.routing.errors import DECHIFFREMENT_DETAILS, decryption_detail

SAMPLE = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
SENDER, RECIPIENT = "COU010234", "CIE000311"
MESSAGE = (
    "DECHIFFREMENT fichier illisible, non signé ou signé par une autre clé que celle de l'émetteur"
)
ENGLISH = re.compile(
    r"\b(not|too|many|large|signed|encrypted|decryptable|several|key|bad|unknown|revoked|"
    r"expired|malformed|over|data|failed|gpg|status|lines|work|packets)\b",
    re.I,
)


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT]) as made:
        yield made


# -- the details, one per refusal ---------------------------------------------------------


def test_every_refusal_has_a_short_french_detail() -> None:
    assert set(DECHIFFREMENT_DETAILS) == {r.value for r in Refusal}
    for refusal in Refusal:
        detail = decryption_detail(refusal, 16)
        assert detail and len(detail) <= 40 and not ENGLISH.search(detail), (refusal, detail)
    assert decryption_detail(Refusal.TOO_MANY_RECIPIENTS, 16) == (
        "trop de destinataires (plus de 16)"
    )
    assert decryption_detail(Refusal.TOO_MANY_PACKETS, 64) == "trop de paquets OpenPGP (plus de 64)"
    # the CPU time allowed and gpg's exit code are the hub's business: its log only
    assert str(Reason(Refusal.TOO_MUCH_WORK, 5.25)) == "too much work (over 5.2 s of CPU)"
    assert decryption_detail(Refusal.TOO_MUCH_WORK, 5.25) == "déchiffrement trop coûteux"
    assert str(Reason(Refusal.GPG_FAILED, 2)) == "gpg failed (exit 2)"
    assert decryption_detail(Refusal.GPG_FAILED, 2) == "message illisible"
    assert decryption_detail("no such refusal") is None


# -- through the hub ------------------------------------------------------------------------


def uploads(hub: HubUnderTest, tmp: Path) -> dict[str, tuple[bytes, str, str]]:
    """name -> (upload, French detail of its .log, English reason of the hub's log)."""
    me, other = hub.parties[SENDER], hub.parties[RECIPIENT]
    me.pgp.import_public(other.public_key)
    to_hub = ("--trust-model", "always", "--encrypt", "-r", hub.hub_fingerprint)
    to_other = ("--trust-model", "always", "--sign", "--encrypt", "-r", other.fingerprint)
    return {
        "RCOU010234_00311_000021.edi": (
            gpg(me.pgp.home, "--sign", data=SAMPLE), "non chiffré", "not encrypted"
        ),
        "RCOU010234_00311_000022.edi": (SAMPLE, "pas un message OpenPGP", "not OpenPGP"),
        "RCOU010234_00311_000023.edi": (
            gpg(me.pgp.home, *to_hub, data=SAMPLE), "non signé", "not signed"
        ),
        "RCOU010234_00311_000024.edi": (
            hub.seal(RECIPIENT, SAMPLE, tmp),  # well signed, by another participant's key
            "clé de signature d'un autre participant",
            "signed by another key than the sender's",
        ),
        "RCOU010234_00311_000025.edi": (  # for another participant, not the hub
            gpg(me.pgp.home, *to_other, data=SAMPLE), "indéchiffrable par le hub",
            "not decryptable",
        ),
    }  # fmt: skip


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_refused_upload_is_told_why_in_french(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    monkeypatch.setattr(stream, "STREAM_ABOVE", -1 if streamed else 1 << 40)
    async with hub_running(tmp_path / "data", parties) as hub:
        sent = uploads(hub, tmp_path)
        with capture_logs() as logs:
            for name, (data, _, _) in sent.items():
                await hub.upload(SENDER, name, data)
            await hub.settled()
        inbox = await hub.inbox(SENDER)
        assert await hub.inbox(RECIPIENT) == {}
    told = {e["file"]: e["reason"] for e in logs if e["event"] == "upload.refused"}
    for name, (_, detail, reason) in sent.items():
        [line] = inbox[f"ERREUR{name.removesuffix('.edi')}.log"].decode().splitlines()
        assert line.endswith(f" {name} section 0 line 0 {MESSAGE} ({detail})"), line
        assert told[name] == reason, name


# -- /api/uploads -----------------------------------------------------------------------------


async def test_the_uploads_api_answers_every_path_in_french_json(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with (
        hub_running(tmp_path / "data", parties) as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.server.web_port}") as web,
    ):
        me = hub.parties[SENDER]
        auth = httpx.BasicAuth(me.edi_id, me.password)
        for path in ("/api/uploads/..%2F..", "/api/uploads/a%2Fb", "/api/uploads/"):
            for credentials in (None, auth):
                answer = await web.get(path, auth=credentials)
                assert answer.status_code == 404, path
                assert answer.headers["content-type"] == "application/json", path
                assert answer.json() == {"error": "adresse inconnue"}, path
        refused = await web.get("/api/uploads/x.edi")
        assert refused.status_code == 401
        assert refused.json() == {"error": "authentification requise"}
        posted = await web.post("/api/uploads/x.edi", auth=auth)
        assert posted.status_code == 405  # Starlette lists the methods in no set order
        assert set(posted.headers["allow"].split(", ")) == {"GET", "HEAD"}
        assert posted.json() == {"error": "méthode non permise"}
        found = await web.get("/api/uploads/x.edi", auth=auth)
        assert found.status_code == 200 and found.json() == {"name": "x.edi", "jobs": []}
