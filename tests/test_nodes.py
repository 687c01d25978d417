"""Two `bdi serve` nodes on one PostgreSQL and one data folder (issue 17): both take
uploads, each upload is delivered exactly once, and a node killed with SIGKILL has its jobs
finished by the other within 30 s."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pgcluster
import pytest
from hubkit import Party, db_rows, make_parties, prepare_data, sftp_client, until
from support import SAMPLES

from bdi.config import Settings, load_settings

pytestmark = pytest.mark.skipif(not pgcluster.wanted(), reason="several nodes need PostgreSQL")
BDI = Path(sys.executable).with_name("bdi")
SENDER, RECIPIENT = "COU010234", "CIE000311"
GOOD = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()
BURST = 12  # uploads to the node that is killed: more than its one worker has done by then


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([SENDER, RECIPIENT]) as made:
        yield made


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, data: Path, name: str, **env: str) -> None:
        self.name, self.port, self.web_port = name, free_port(), free_port()
        argv = [str(BDI), "serve", "--data", str(data), "--sftp-port", str(self.port),
                "--web-port", str(self.web_port)]  # fmt: skip
        environ = {**os.environ, "BDI_NODE_ID": name, **env}
        self.process = subprocess.Popen(argv, env=environ, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)  # fmt: skip

    def exit_message(self) -> str:
        """Why the node stopped: its exit code and what it wrote on stderr."""
        assert self.process.stderr is not None
        told = self.process.stderr.read().decode(errors="replace")
        return f"{self.name} exited {self.process.returncode}: {told[-4000:]}"

    async def listening(self) -> None:
        async def accepts() -> bool:
            assert self.process.poll() is None, self.exit_message()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return False
            writer.close()
            return True

        await until(accepts, 60)

    def stop(self) -> bytes:
        if self.process.poll() is None:
            self.process.terminate()
        _, err = self.process.communicate(timeout=60)
        return err


async def upload(node: Node, party: Party, names: list[str], sealed: bytes) -> None:
    async with sftp_client(node.port, party) as sftp:
        for name in names:
            async with sftp.open(f"/outbox/{name}", "wb") as f:
                await f.write(sealed)
        await sftp.realpath("/outbox")  # every close above was answered


def delivered(settings: Settings) -> list[str]:
    """Every delivery to the recipient, as movements (a twin would show twice)."""
    query = "SELECT file_name FROM movement WHERE recipient_id = :r AND delivered"
    return sorted(r[0] for r in db_rows(settings, query, r=RECIPIENT))


async def prepared(tmp_path: Path, data: Path, parties: dict[str, Party]) -> tuple[Settings, bytes]:
    """A data folder for the nodes, and GOOD sealed by the sender for its hub."""
    settings = load_settings(None, data=data)
    await prepare_data(settings, parties)
    hub_fpr = (data / "hub-fingerprint").read_text().strip()
    sender = parties[SENDER]
    (tmp_path / "plain").write_bytes(GOOD)
    sender.pgp.sign_encrypt(tmp_path / "plain", tmp_path / "sealed", hub_fpr, sender.fingerprint)
    return settings, (tmp_path / "sealed").read_bytes()


def name(n: int) -> str:
    return f"RCOU010234_00311_{n:06d}.edi"


async def test_two_nodes_share_the_work_and_one_finishes_the_jobs_of_the_other_killed(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    data = tmp_path / "data"
    settings, sealed = await prepared(tmp_path, data, parties)
    sender = parties[SENDER]
    first = Node(data, "node-a", BDI_WORKERS="1")
    second = Node(data, "node-b")
    try:
        await asyncio.gather(first.listening(), second.listening())
        await upload(second, sender, [name(n) for n in range(100, 104)], sealed)
        await upload(first, sender, [name(n) for n in range(BURST)], sealed)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        owned = "SELECT count(*) FROM job WHERE node = 'node-a' AND state <> 'done'"
        left = db_rows(settings, owned)[0][0]
        assert left > 0  # the killed node had jobs unfinished
        await upload(second, sender, [name(n) for n in range(104, 108)], sealed)
        expected = sorted([name(n) for n in range(BURST)] + [name(n) for n in range(100, 108)])

        async def all_delivered() -> bool:
            return delivered(settings) == expected

        await until(all_delivered, 30)  # the default heartbeat and lease: 30 s at most
        took = db_rows(settings, "SELECT count(*) FROM job WHERE node = 'node-b'")[0][0]
        assert took >= 8 + left  # its own, and those it took over
        assert db_rows(settings, "SELECT count(*) FROM job WHERE state <> 'done'") == [(0,)]
        nodes = db_rows(settings, "SELECT id FROM node")
        assert nodes == [("node-b",)]  # the dead node forgotten
    finally:
        first.stop()
        err = second.stop()
    assert b'"event": "node.took_over"' in err
    assert b'"node": "node-b"' in err  # every line says which node wrote it


async def test_a_node_id_already_beating_is_refused(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    data = tmp_path / "data"
    await prepare_data(load_settings(None, data=data), parties)
    first = Node(data, "node-a")
    try:
        await first.listening()
        twin = Node(data, "node-a")
        _, err = twin.process.communicate(timeout=60)
        assert twin.process.returncode != 0
        assert b"node node-a runs already" in err and err.count(b"\n") <= 2, err
    finally:
        first.stop()


async def test_a_name_freed_through_one_node_is_given_again_by_the_other(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    """A delivery kept in the store, placed by one node, removed by its recipient through
    the other: the first node names the next delivery of that name with that name, not
    `_2` (no node keeps names in memory: the store's are the truth)."""
    data = tmp_path / "data"
    settings, sealed = await prepared(tmp_path, data, parties)
    sender = parties[SENDER]
    kept = "SELECT name FROM inboxfile WHERE participant_id = :r ORDER BY name"
    first, second = Node(data, "node-a"), Node(data, "node-b")
    try:
        await asyncio.gather(first.listening(), second.listening())
        for round_ in range(2):
            await upload(first, sender, [name(1)], sealed)

            async def kept_once() -> bool:
                return db_rows(settings, kept, r=RECIPIENT) == [(name(1),)]

            await until(kept_once, 30)
            async with sftp_client(second.port, parties[RECIPIENT]) as sftp:
                listed = [n for n in await sftp.listdir("/inbox") if not n.startswith(".")]
                assert listed == [name(1)], round_
                await sftp.remove(f"/inbox/{name(1)}")
            assert db_rows(settings, kept, r=RECIPIENT) == [], round_
    finally:
        first.stop()
        second.stop()
    assert delivered(settings) == [name(1), name(1)]


def readme_nodes_example() -> str:
    """The shell block of the README's "Several nodes (PostgreSQL)"."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("### Several nodes (PostgreSQL)", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def run_shell(script: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A shell of its own session: the nodes it starts in the background stop with it."""
    return subprocess.Popen(["bash", "-euc", script], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


async def test_the_readmes_two_nodes_example_runs(tmp_path: Path) -> None:
    """The README's example, as written, on this run's cluster, a data folder of its own and
    free ports: `bdi init`, then two nodes that both join and listen."""
    ports = {"2222": free_port(), "2223": free_port(), "8080": free_port(), "8081": free_port()}
    script = readme_nodes_example()
    url = script.split("BDI_DATABASE_URL='", 1)[1].split("'", 1)[0]
    script = script.replace(url, os.environ["BDI_DATABASE_URL"])
    script = script.replace("/srv/bdi", str(tmp_path / "bdi"))
    for readme_port, port in ports.items():
        script = script.replace(f"-port {readme_port}", f"-port {port}")
    bin_dir = str(BDI.parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    shell = run_shell(script + "wait\n", env)
    settings = load_settings(None, data=tmp_path / "bdi")
    try:

        async def both_listen() -> bool:
            assert shell.poll() is None, shell.stderr
            for port in (ports["2222"], ports["2223"]):
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    return False
                writer.close()
            return True

        await until(both_listen, 60)
        assert sorted(db_rows(settings, "SELECT id FROM node")) == [("a",), ("b",)]
    finally:
        os.killpg(shell.pid, signal.SIGTERM)
        shell.communicate(timeout=60)
