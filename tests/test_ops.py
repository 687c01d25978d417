"""What operators get (issue 15): /healthz, /readyz failing and recovering with a real fault,
/metrics scraped and parsed with prometheus_client's own parser, and alerts received by a
real SMTP server (aiosmtpd) — a quarantined job, files left uncollected, `bdi admin alerts
test`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from aiosmtpd.controller import Controller
from hubkit import HubUnderTest, Party, gpg_held, hub_running, make_parties, short_home, until
from prometheus_client.parser import text_string_to_metric_families
from support import SAMPLES

from bdi import watch
from bdi.alerts import Alert, Alerts
from bdi.config import load_settings
from bdi.crypto import OpenPGP
from bdi.pipeline import workers
from bdi.pipeline.retries import RetryPolicy

SENDER, RECIPIENT = "COU010234", "CIE000311"
GOOD = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
BDI = Path(sys.executable).with_name("bdi")


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT, "GIE000001"]) as made:
        yield made


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """aiosmtpd's handler: keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@contextlib.asynccontextmanager
async def web(hub: HubUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.server.web_port}") as client:
        yield client


async def admin_token(hub: HubUnderTest) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(BDI), "admin", "token", "rotate", "--data", str(hub.settings.data),
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode().rsplit(" ", 1)[-1].strip()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_what_went_through(tmp_path: Path, parties: dict[str, Party]) -> None:
    async with hub_running(tmp_path / "data", parties) as hub, web(hub) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.get("/metrics", headers=wrong)).status_code == 401
        await hub.upload(SENDER, "RCOU010234_00311_000001.edi", hub.seal(SENDER, GOOD, tmp_path))
        await hub.upload(SENDER, "RCOU010234_00311_000002.edi", os.urandom(2000))
        await hub.settled()
        token = await admin_token(hub)
        scraped = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200
        found = samples(scraped.text)
    assert found[("bdi_jobs_total", (("outcome", "delivered"),))] == 1
    assert found[("bdi_jobs_total", (("outcome", "refused"),))] == 1
    assert found[("bdi_uploads_refused_total", (("code", "DECHIFFREMENT"),))] == 1
    assert found[("bdi_sections_delivered_total", ())] == 1
    assert found[("bdi_delivery_latency_seconds_count", ())] == 2
    assert (
        found[("bdi_logins_total", (("front", "ssh"), ("method", "password"), ("outcome", "ok")))]
        >= 2
    )
    assert found[("bdi_inbox_backlog_files", (("participant_class", "CIE"),))] == 1
    assert found[("bdi_inbox_backlog_files", (("participant_class", "COU"),))] == 1  # its .log
    assert found[("bdi_jobs_in_hub", (("state", "quarantined"),))] == 0
    assert found[("bdi_data_free_bytes", ())] > 0
    assert found[("bdi_database_bytes", ())] > 0


async def test_the_metrics_token_opens_metrics_only(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with (
        hub_running(tmp_path / "data", parties, metrics_token="scrape-me") as hub,
        web(hub) as client,
    ):
        bearer = {"Authorization": "Bearer scrape-me"}
        assert (await client.get("/metrics", headers=bearer)).status_code == 200
        assert (await client.get("/api/admin/participants", headers=bearer)).status_code == 401
        assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_fails_while_a_job_is_stuck_and_recovers(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with hub_running(tmp_path / "data", parties, stale_job_s=0.5) as hub, web(hub) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"database", "spool", "free_space", "jobs"}
        with gpg_held(hub):
            await hub.upload(
                SENDER, "RCOU010234_00311_000003.edi", hub.seal(SENDER, GOOD, tmp_path)
            )

            async def stuck() -> bool:
                return (await client.get("/readyz")).status_code == 503

            await until(stuck)
            failed = (await client.get("/readyz")).json()
            assert failed["ready"] is False and failed["checks"]["jobs"]["ok"] is False
            assert failed["checks"]["database"]["ok"] is True
        await hub.settled()
        assert (await client.get("/readyz")).status_code == 200


async def test_readyz_fails_below_the_free_space_floor(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    floor = {"free_space_floor_bytes": 1 << 62}
    async with hub_running(tmp_path / "data", parties, **floor) as hub, web(hub) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["free_space"] == {
        "ok": False, "detail": answer.json()["checks"]["free_space"]["detail"],
    }  # fmt: skip
    assert "floor" in answer.json()["checks"]["free_space"]["detail"]


def broken(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("a bug in the hub")


async def test_a_quarantine_and_uncollected_files_reach_the_operators(
    tmp_path: Path, parties: dict[str, Party], smtp: tuple[Mailbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    box, port = smtp
    mail = {"smtp_host": "127.0.0.1", "smtp_port": port, "alert_to": ("ops@bdi.test",),
            "alert_check_s": 0.2, "inbox_waiting_hours": 0.0002}  # fmt: skip
    async with hub_running(tmp_path / "data", parties, **mail) as hub:
        hub.server.pipeline.retries.policy = RetryPolicy(first_delay_s=0.05, sweep_s=0.1)
        await hub.upload(SENDER, "RCOU010234_00311_000004.edi", hub.seal(SENDER, GOOD, tmp_path))
        monkeypatch.setattr(workers, "prepare", broken)
        await hub.upload(SENDER, "RCOU010234_00311_000005.edi", hub.seal(SENDER, GOOD, tmp_path))
        await hub.settled()

        async def both() -> bool:
            subjects = box.subjects()
            return any("quarantaine" in s for s in subjects) and any(
                "non relevés" in s for s in subjects
            )

        await until(both)  # the watch ran every 0.2 s meanwhile: one message per problem
    quarantine = [m for m in box.messages if "quarantaine" in str(m["Subject"])]
    assert len(quarantine) == 1
    assert str(quarantine[0]["To"]) == "ops@bdi.test"
    body = quarantine[0].get_payload(decode=True)
    assert isinstance(body, bytes)
    assert (
        "bdi admin jobs retry" in body.decode() and "RCOU010234_00311_000005.edi" in body.decode()
    )
    waiting = [str(m["Subject"]) for m in box.messages if "non relevés" in str(m["Subject"])]
    assert waiting.count(f"[BDI] fichiers non relevés par {RECIPIENT}") == 1


def test_alerts_are_deduplicated_and_rate_limited(tmp_path: Path) -> None:
    now = [0.0]
    settings = load_settings(None, data=tmp_path, alert_repeat_s=100, alert_max_per_hour=3)
    alerts = Alerts(settings, clock=lambda: now[0])
    same = Alert("k", "s", "b")
    assert [alerts._due(same), alerts._due(same)] == [True, False]
    now[0] = 101
    assert alerts._due(same) is True
    assert [alerts._due(Alert(f"x{n}", "s", "b")) for n in range(3)] == [True, False, False]
    now[0] = 3800
    assert alerts._due(Alert("y", "s", "b")) is True


def test_bdi_admin_alerts_test_sends_a_message(tmp_path: Path, smtp: tuple[Mailbox, int]) -> None:
    box, port = smtp
    env = {**os.environ, "BDI_SMTP_HOST": "127.0.0.1", "BDI_SMTP_PORT": str(port),
           "BDI_ALERT_TO": '["ops@bdi.test", "cto@bdi.test"]'}  # fmt: skip
    subprocess.run([str(BDI), "init", "--data", str(tmp_path)], capture_output=True, check=True)
    done = subprocess.run(
        [str(BDI), "admin", "alerts", "test", "--data", str(tmp_path)],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "test alert sent to ops@bdi.test, cto@bdi.test" in done.stdout
    assert box.subjects() == ["[BDI] message de test"]
    no_server = subprocess.run(
        [str(BDI), "admin", "alerts", "test", "--data", str(tmp_path)],
        env={**env, "BDI_SMTP_PORT": str(free_port())}, capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert no_server.returncode == 1 and no_server.stderr.count("\n") == 1, no_server.stderr


async def test_a_ban_reaches_the_operators(
    tmp_path: Path, parties: dict[str, Party], smtp: tuple[Mailbox, int]
) -> None:
    box, port = smtp
    mail = {"smtp_host": "127.0.0.1", "smtp_port": port, "alert_to": ("ops@bdi.test",),
            "defender_threshold": 3}  # fmt: skip
    async with hub_running(tmp_path / "data", parties, **mail) as hub:
        for n in range(3):
            with contextlib.suppress(asyncssh.Error, OSError):
                await asyncssh.connect(
                    "127.0.0.1", hub.port, username=f"COU99999{n}", password="guess",
                    known_hosts=None, client_keys=None, agent_path=None,
                    local_addr=("127.0.0.2", 0),
                )  # fmt: skip

        async def alerted() -> bool:
            return "[BDI] adresse bloquée : 127.0.0.2" in box.subjects()

        await until(alerted)


async def test_the_admin_api_sends_a_test_alert(
    tmp_path: Path, parties: dict[str, Party], smtp: tuple[Mailbox, int]
) -> None:
    box, port = smtp
    mail = {"smtp_host": "127.0.0.1", "smtp_port": port, "alert_to": ("ops@bdi.test",)}
    async with hub_running(tmp_path / "data", parties, **mail) as hub, web(hub) as client:
        bearer = {"Authorization": f"Bearer {await admin_token(hub)}"}
        sent = await client.post("/api/admin/alerts/test", headers=bearer)
        assert sent.status_code == 200, sent.text
        assert sent.json() == {"sent_to": ["ops@bdi.test"]}
        assert "/alerts/test" in (await client.get("/api/admin/openapi.json")).json()["paths"]
    assert box.subjects() == ["[BDI] message de test"]


async def test_a_key_expiring_soon_raises_its_alert(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with hub_running(tmp_path / "data", parties, key_expiry_days=30) as hub:
        soon = OpenPGP(short_home())
        try:
            uid = "CIE000999 <k@bdi.test>"
            made = ["gpg", "--homedir", str(soon.home), "--batch", "--passphrase", "",
                    "--quick-gen-key", uid, "default", "default", "10d"]  # fmt: skip
            await asyncio.to_thread(subprocess.run, made, capture_output=True, check=True)
            [key] = soon._gpg.list_keys()
            hub.server.hub.pgp.import_public(soon.export_public(key["fingerprint"]))
            now = datetime.now(UTC)
            people = [
                ("CIE000999", "k@bdi.test", key["fingerprint"]),
                (SENDER, "", hub.parties[SENDER].fingerprint),
            ]
            found = await asyncio.to_thread(watch._keys, hub.server.hub, people, now)
        finally:
            soon.stop_agent()
    assert [(a.key.split(":")[2], a.to) for a in found] == [("expiring", ("k@bdi.test",))]
    assert "CIE000999" in found[0].subject and "expire le" in found[0].subject
