"""A job the hub fails for good is quarantined (HUB.md, "When the hub itself fails"): its
sender gets the INTERNE `.log`, the admin sees it and runs it again once the cause is fixed,
and the sender then gets the real outcome, exactly once."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hubkit import FAST, HubUnderTest, Party, hub_running, make_parties, run_bdi, until
from support import SAMPLES

from bdi.pipeline import workers
from bdi.pipeline.prepare import prepare as real_prepare

SAMPLE = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
SENDER, RECIPIENT = "COU010234", "CIE000311"
NAME = "RCOU010234_00311_000001.edi"
BDI = Path(sys.executable).with_name("bdi")


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT, "GIE000001"]) as made:
        yield made


def broken(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("a bug in the hub")


async def quarantine_one(hub: HubUnderTest, monkeypatch: pytest.MonkeyPatch, tmp: Path) -> int:
    monkeypatch.setattr(workers, "prepare", broken)
    await hub.upload(SENDER, NAME, hub.seal(SENDER, SAMPLE, tmp))
    await hub.settled()
    listed = json.loads(
        (await run_bdi("admin", "jobs", "list", "--data", str(hub.settings.data), "--json")).stdout
    )
    assert [j["file"] for j in listed] == [NAME]
    assert listed[0]["state"] == "quarantined"
    assert listed[0]["error"] == "ValueError: a bug in the hub"
    assert listed[0]["attempts"] == FAST.bug_attempts
    return int(listed[0]["id"])


async def test_a_bug_quarantines_then_a_retry_delivers_once(
    hub: HubUnderTest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    job_id = await quarantine_one(hub, monkeypatch, tmp_path)
    sender_inbox = await hub.inbox(SENDER)
    assert list(sender_inbox) == ["ERREURRCOU010234_00311_000001.log"]
    line = sender_inbox["ERREURRCOU010234_00311_000001.log"].decode()
    assert f" {NAME} section 0 line 0 INTERNE erreur interne de la BDI" in line
    assert await hub.inbox(RECIPIENT) == {}

    monkeypatch.setattr(workers, "prepare", real_prepare)  # the cause is fixed
    shown = await run_bdi("admin", "jobs", "retry", str(job_id), "--data", str(hub.settings.data))
    assert f"job {job_id} will run again" in shown.stdout

    async def delivered() -> bool:
        return len(await hub.inbox(RECIPIENT)) == 1

    await until(delivered)
    await hub.settled()
    assert list(await hub.inbox(RECIPIENT)) == [NAME]
    assert list(await hub.inbox(SENDER)) == ["ERREURRCOU010234_00311_000001.log"]  # no other
    job = json.loads(
        (
            await run_bdi(
                "admin", "jobs", "show", str(job_id), "--data", str(hub.settings.data), "--json"
            )
        ).stdout
    )
    assert (job["state"], job["outcome"], job["quarantined"]) == ("done", "delivered", None)
    retry = ("admin", "jobs", "retry", str(job_id), "--data", str(hub.settings.data))
    again = await run_bdi(*retry, ok=False)
    assert again.returncode == 1
    assert "is not quarantined" in again.stderr


async def test_start_up_leaves_a_quarantined_job_aside(
    tmp_path: Path, parties: dict[str, Party], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    async with hub_running(data, parties) as first:
        first.server.pipeline.retries.policy = FAST
        job_id = await quarantine_one(first, monkeypatch, tmp_path)
    monkeypatch.setattr(workers, "prepare", real_prepare)
    async with hub_running(data, parties) as second:
        await second.settled()
        assert await second.inbox(RECIPIENT) == {}  # not run again by the start-up
        listed = (await run_bdi("admin", "jobs", "list", "--data", str(data), "--json")).stdout
        assert [j["id"] for j in json.loads(listed)] == [job_id]
        await run_bdi("admin", "jobs", "retry", str(job_id), "--data", str(data))

        async def delivered() -> bool:
            return list(await second.inbox(RECIPIENT)) == [NAME]

        await until(delivered)


async def test_the_admin_api_lists_shows_and_retries_jobs(
    hub: HubUnderTest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    job_id = await quarantine_one(hub, monkeypatch, tmp_path)
    token = json.loads(
        (
            await run_bdi("admin", "token", "rotate", "--data", str(hub.settings.data), "--json")
        ).stdout
    )["token"]
    base = f"http://127.0.0.1:{hub.server.web_port}/api/admin"
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as api:
        assert [j["id"] for j in (await api.get("/jobs")).json()] == [job_id]
        assert (await api.get("/jobs", params={"which": "waiting"})).json() == []
        assert (await api.get("/jobs", params={"which": "nonsense"})).status_code == 400
        assert (await api.get(f"/jobs/{job_id}")).json()["state"] == "quarantined"
        assert (await api.get("/jobs/999999")).status_code == 404
        assert (await api.get("/jobs/x")).status_code == 404
        paths = (await api.get("/openapi.json")).json()["paths"]
        assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/retry"} <= set(paths)
        monkeypatch.setattr(workers, "prepare", real_prepare)
        retried = await api.post(f"/jobs/{job_id}/retry")
        assert retried.status_code == 200, retried.text
        assert (await api.post(f"/jobs/{job_id}/retry")).status_code in (200, 400)

    async def delivered() -> bool:
        return list(await hub.inbox(RECIPIENT)) == [NAME]

    await until(delivered)
