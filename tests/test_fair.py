"""Jobs are served fairly between participants: a burst from one does not hold up another's
single upload by more than a few of its jobs (HUB.md, "Limits that protect the market")."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hubkit import Party, gpg_held, hub_running, make_parties
from structlog.testing import capture_logs
from support import SAMPLES

from bdi.pipeline.fair import FairQueue
from bdi.routing.writer import parse_file, write_file

BURSTY, QUIET = "COU010234", "CIE000311"
GOOD = (SAMPLES / "RCOU010234_00311_000001.edi").read_bytes()


def heavy(size: int) -> bytes:
    """A good file whose job takes a while: its section's records repeated up to `size`."""
    [section] = parse_file(GOOD)
    return write_file([replace(section, records=section.records * (size // len(GOOD) + 1))])


BURST = heavy(64 << 10)


SINGLE_NAME = "CCIE000311_00311_000005.edi"
SINGLE = (SAMPLES / SINGLE_NAME).read_bytes()


def test_the_queue_takes_participants_in_turn() -> None:
    queue: FairQueue[str] = FairQueue()
    for n in range(5):
        queue.push("A", f"a{n}")
    queue.push("B", "b0")
    queue.push("C", "c0")
    queue.push("B", "b1")
    taken = [queue.pop() for _ in range(len(queue))]
    assert taken == ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]
    assert queue.pop() is None and len(queue) == 0


@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([BURSTY, QUIET, "GIE000001"]) as made:
        yield made


async def test_a_burst_does_not_hold_up_another_participant(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    async with hub_running(tmp_path / "data", parties) as hub:
        burst = hub.seal(BURSTY, BURST, tmp_path)
        single = hub.seal(QUIET, SINGLE, tmp_path)
        names = [f"RCOU010234_00311_{n:06d}.edi" for n in range(100, 140)]
        workers = hub.settings.workers
        with capture_logs() as logs:
            with gpg_held(hub):
                async with hub.sftp(BURSTY) as sftp:

                    async def put(name: str) -> None:
                        async with sftp.open(f"/outbox/{name}", "wb") as f:
                            await f.write(burst)

                    await asyncio.gather(*(put(name) for name in names))
                await hub.upload(QUIET, SINGLE_NAME, single)
            await hub.settled()
        order = [
            (e["event"], e["file"]) for e in logs if e["event"] in ("upload.accepted", "job.done")
        ]
        taken_in = order.index(("upload.accepted", SINGLE_NAME))
        finished = order.index(("job.done", SINGLE_NAME))
        burst_left = len(names) - sum(1 for ev, _ in order[:taken_in] if ev == "job.done")
        burst_between = sum(1 for ev, _ in order[taken_in:finished] if ev == "job.done")
        assert burst_left > 3 * workers  # a queue to jump: first in, first out would wait it out
        # ended before it: the jobs already handed to the threads (workers + 1), one turn of
        # the burst, and those the other threads end while it runs (workers - 1)
        assert burst_between <= 2 * workers + 1, (burst_between, burst_left)
