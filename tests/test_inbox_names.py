"""Inbox names held in the store (`InboxName`), unique by their key: a name another node
holds is never given again, and a file's name is free once its owner removes it (HUB.md,
"Names in the inbox"), on either engine."""

from __future__ import annotations

from pathlib import Path

from hubkit import HubUnderTest, Party, db_rows, hub_running, until
from support import SAMPLES
from test_crash import big_file

SENDER, RECIPIENT = "COU010234", "CIE000311"
NAME = "RCOU010234_00311_000001.edi"
TWIN = "RCOU010234_00311_000001_2.edi"
PLAIN = (SAMPLES / NAME).read_bytes()


def held(hub: HubUnderTest, participant: str) -> list[str]:
    query = "SELECT name FROM inboxname WHERE participant_id = :p ORDER BY name"
    return [row[0] for row in db_rows(hub.settings, query, p=participant)]


async def test_a_name_another_node_holds_is_not_given_again(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    """The name is held by a row this node never wrote (another node's plan): the upload
    is delivered under the next free name, and both names stay held."""
    insert = "INSERT INTO inboxname (participant_id, name) VALUES (:p, :n)"
    db_rows(hub.settings, insert, p=RECIPIENT, n=NAME)
    await hub.upload(SENDER, NAME, hub.seal(SENDER, PLAIN, tmp_path))

    async def delivered() -> bool:
        return TWIN in await hub.inbox(RECIPIENT)

    await until(delivered, 30)
    assert list(await hub.inbox(RECIPIENT)) == [TWIN]
    assert held(hub, RECIPIENT) == [NAME, TWIN]


async def test_a_name_is_free_again_once_its_owner_removes_the_file(
    hub: HubUnderTest, tmp_path: Path
) -> None:
    await hub.upload(SENDER, NAME, hub.seal(SENDER, PLAIN, tmp_path))
    await hub.settled()
    assert held(hub, RECIPIENT) == [NAME]
    async with hub.sftp(RECIPIENT) as sftp:
        await sftp.remove(f"/inbox/{NAME}")
    assert held(hub, RECIPIENT) == []
    await hub.upload(SENDER, NAME, hub.seal(SENDER, PLAIN, tmp_path))
    await hub.settled()
    assert list(await hub.inbox(RECIPIENT)) == [NAME]  # the same name, no `_2`


async def test_a_placed_file_its_owner_removed_is_not_placed_again_by_a_resumed_job(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """A job stopped after placing a delivery file and before recording its end (a crash,
    or a node taken over): its recipient collected and removed the file meanwhile. The job,
    resumed, finds the name freed: the file was placed; it is not placed twice."""
    data = tmp_path / "data"
    async with hub_running(data, parties) as hub:
        sealed = hub.seal(SENDER, big_file(), tmp_path)
        await hub.upload(SENDER, NAME, sealed)
        await hub.settled()
        assert list(await hub.inbox(RECIPIENT)) == [NAME]
        assert (hub.settings.mailboxes / RECIPIENT / "inbox" / NAME).exists()  # a file
        async with hub.sftp(RECIPIENT) as sftp:
            await sftp.remove(f"/inbox/{NAME}")
        settings = hub.settings
    for undo in (  # as the job was before its last transaction
        "UPDATE job SET state = 'planned', outcome = NULL, finished_at = NULL",
        "UPDATE output SET delivered_at = NULL",
        "UPDATE movement SET delivered = false",
    ):
        db_rows(settings, undo)
    [(spooled,)] = db_rows(settings, "SELECT spool_name FROM job")
    (settings.spool / spooled).write_bytes(sealed)  # kept until the job's end
    async with hub_running(data, parties) as hub:
        await hub.settled()
        assert await hub.inbox(RECIPIENT) == {}
        assert db_rows(settings, "SELECT state FROM job") == [("done",)]
        assert db_rows(settings, "SELECT delivered FROM movement") == [(True,)]
