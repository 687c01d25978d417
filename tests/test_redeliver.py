"""`bdi admin redeliver` (issue 15): a delivery sent again from its kept content, sealed for
the recipient's current key and signed by the hub, under a free name, recorded as a new
movement « Renvoyé par l'exploitation » that the Suivi lists; asked from another process
(the CLI) or through the admin API, and performed by the running hub."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from hubkit import (
    FAST,
    HubUnderTest,
    Party,
    file_flows,
    hub_running,
    make_parties,
    run_bdi,
    short_home,
)
from support import SAMPLES

from bdi.crypto import OpenPGP
from bdi.mailbox.storage import Mailboxes
from bdi.pipeline import prepare
from bdi.store.models import Movement
from bdi.suivi import queries as q

SAMPLE = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
SENDER, RECIPIENT = "COU010234", "CIE000311"
NAME = "RCOU010234_00311_000001.edi"
SECOND = NAME.replace(".edi", "_2.edi")
BDI = Path(sys.executable).with_name("bdi")
COMMENT = "Renvoyé par l'exploitation"


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT, "GIE000001"]) as made:
        yield made


async def deliver_one(hub: HubUnderTest, tmp: Path) -> Movement:
    await hub.upload(SENDER, NAME, hub.seal(SENDER, SAMPLE, tmp))
    await hub.settled()
    [movement] = await hub.server.hub.store.movements(RECIPIENT)
    return movement


async def redeliver_cli(hub: HubUnderTest, movement_id: int) -> dict[str, object]:
    data = str(hub.settings.data)
    done = await run_bdi("admin", "redeliver", str(movement_id), "--data", data, "--json")
    result: dict[str, object] = json.loads(done.stdout)
    return result


async def test_a_delivery_is_sent_again_under_a_free_name_as_a_new_movement(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    original = await deliver_one(hub, tmp_path)
    assert original.id is not None
    result = await redeliver_cli(hub, original.id)
    assert (result["state"], result["file"], result["recipient"]) == ("done", SECOND, RECIPIENT)

    inbox = await hub.inbox(RECIPIENT)
    assert sorted(inbox) == [NAME, SECOND]  # the original is still there: `_2`
    plain, signer = hub.open_delivery(RECIPIENT, inbox[SECOND], tmp_path)
    assert (plain, signer) == hub.open_delivery(RECIPIENT, inbox[NAME], tmp_path)
    assert signer == hub.hub_fingerprint

    store = hub.server.hub.store
    again = await q.movement(store, RECIPIENT, int(str(result["new_movement"])))
    assert again is not None and again.id != original.id
    assert (again.file_name, again.sender_id, again.sha256) == (SECOND, SENDER, original.sha256)
    listed = await q.file_page(
        store, RECIPIENT, q.FileCriteria(start=date(2000, 1, 1), end=date(2100, 1, 1)), 1, 50
    )
    assert {m.id for m in listed.items} == {original.id, again.id}  # the Suivi lists it
    flows = await file_flows(hub, RECIPIENT, again.id or 0)
    before = await file_flows(hub, RECIPIENT, original.id)
    assert flows and before and len(flows) == len(before)
    assert all(f.hit.comment.startswith(COMMENT) for f in flows)
    assert [f.hit.flow_id for f in flows] == [f.hit.flow_id for f in before]  # same flows
    assert not any(f.hit.comment.startswith(COMMENT) for f in before)
    assert await q.content(store, hub.settings.data / "contents", RECIPIENT, again.id or 0) == (
        await q.content(store, hub.settings.data / "contents", RECIPIENT, original.id)
    )


async def test_it_is_sealed_for_the_recipients_current_key(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    original = await deliver_one(hub, tmp_path)
    assert original.id is not None
    async with hub.sftp(RECIPIENT) as sftp:
        await sftp.remove(f"/inbox/{NAME}")  # collected: the name is free again
    home = short_home()
    new = OpenPGP(home)
    try:
        fingerprint = new.generate_key(f"{RECIPIENT} <new@example.test>")
        key = tmp_path / "new.asc"
        key.write_text(new.export_public(fingerprint))
        new.import_public(hub.hub_public_key)
        data = str(hub.settings.data)
        await run_bdi(
            "admin", "participant", "set-key", RECIPIENT, "--pgp-key", str(key), "--data", data
        )
        result = await redeliver_cli(hub, original.id)
        assert result["file"] == NAME
        sealed = (await hub.inbox(RECIPIENT))[NAME]
        src, dst = tmp_path / "again.pgp", tmp_path / "again.plain"
        src.write_bytes(sealed)
        opened = new.decrypt_verify(src, dst, 1 << 30)
        assert opened.ok and opened.signer == hub.hub_fingerprint
        old = hub.parties[RECIPIENT].pgp.decrypt_verify(src, tmp_path / "old.plain", 1 << 30)
        assert not old.ok  # the former key cannot open it
    finally:
        new.stop_agent()


async def test_a_big_one_through_the_admin_api_is_a_file_of_the_inbox(
    hub: HubUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare, "CONTENT_IN_ROW", 0)  # every content is a file of contents/
    original = await deliver_one(hub, tmp_path)
    assert original.content_path
    data = str(hub.settings.data)
    token = json.loads((await run_bdi("admin", "token", "rotate", "--data", data, "--json")).stdout)
    base = f"http://127.0.0.1:{hub.server.web_port}/api/admin"
    headers = {"Authorization": f"Bearer {token['token']}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as api:
        paths = (await api.get("/openapi.json")).json()["paths"]
        assert "/movements/{movement_id}/redeliver" in paths
        sent = await api.post(f"/movements/{original.id}/redeliver")
        assert sent.status_code == 200, sent.text
        assert sent.json()["file"] == SECOND
        assert (await api.post("/movements/999999/redeliver")).status_code == 404
        assert (await api.post("/movements/x/redeliver")).status_code == 404
    inbox = Mailboxes(hub.settings.mailboxes).inbox(RECIPIENT)
    assert sorted(p.name for p in inbox.iterdir()) == [NAME, SECOND]  # both files
    sealed = (await hub.inbox(RECIPIENT))[SECOND]
    assert hub.open_delivery(RECIPIENT, sealed, tmp_path)[0] == SAMPLE
    [again] = [m for m in await hub.server.hub.store.movements(RECIPIENT) if m.id != original.id]
    assert again.delivered and again.content_path == original.content_path


async def test_names_are_never_given_twice_while_uploads_of_that_name_arrive(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    original = await deliver_one(hub, tmp_path)
    assert original.id is not None
    sealed = hub.seal(SENDER, SAMPLE, tmp_path)
    uploads = [hub.upload(SENDER, NAME, sealed) for _ in range(3)]
    asked = asyncio.create_task(redeliver_cli(hub, original.id))
    await asyncio.gather(*uploads)
    result = await asked
    await hub.settled()
    inbox = await hub.inbox(RECIPIENT)
    movements = await hub.server.hub.store.movements(RECIPIENT)
    assert len(inbox) == len(movements) == 5
    assert sorted(inbox) == sorted(m.file_name for m in movements)
    assert result["file"] in inbox


async def test_refusals_and_a_request_no_hub_takes(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    data = tmp_path / "data"
    async with hub_running(data, parties) as hub:
        original = await deliver_one(hub, tmp_path)
        missing = await run_bdi("admin", "redeliver", "424242", "--data", str(data), ok=False)
        assert "no movement 424242" in missing.stderr
        await run_bdi("admin", "participant", "disable", RECIPIENT, "--data", str(data))
        disabled = await run_bdi(
            "admin", "redeliver", str(original.id), "--data", str(data), ok=False
        )
        assert f"its recipient {RECIPIENT} is disabled" in disabled.stderr
        await run_bdi("admin", "participant", "enable", RECIPIENT, "--data", str(data))
    # no hub serves this data folder now: the request is withdrawn, nothing is ever sent
    args = ("admin", "redeliver", str(original.id), "--wait", "0.5", "--data", str(data))
    untaken = await run_bdi(*args, ok=False)
    assert "no running hub took the redelivery" in untaken.stderr
    async with hub_running(data, parties) as hub:
        hub.server.pipeline.retries.policy = FAST
        assert list(await hub.inbox(RECIPIENT)) == [NAME]
        assert len(await hub.server.hub.store.movements(RECIPIENT)) == 1


async def test_a_redelivery_whose_placing_fails_is_finished_at_the_next_sweep(
    hub: HubUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare, "CONTENT_IN_ROW", 0)
    original = await deliver_one(hub, tmp_path)
    place = Mailboxes.place
    failures: list[str] = []

    def fails_once(self: Mailboxes, participant: str, staged: Path, name: str) -> None:
        if not failures:
            failures.append(name)
            raise OSError(28, "No space left on device")
        place(self, participant, staged, name)

    monkeypatch.setattr(Mailboxes, "place", fails_once)
    result = await redeliver_cli(hub, original.id or 0)
    assert failures == [SECOND] and result["file"] == SECOND
    assert sorted(await hub.inbox(RECIPIENT)) == [NAME, SECOND]
