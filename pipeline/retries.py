"""When a failed job runs again (HUB.md, "When the hub itself fails"); on the event loop.

A passing fault (`faults.classify`) keeps the job waiting, with a growing delay, for as long
as the fault lasts (up to `fault_patience_s`), and sends it again at once when the cause
looks gone: another job ended well, or the data folder has room again. A bug gets
`bug_attempts` runs; then the job is quarantined. The job's steps are idempotent, so running
it again gives the outcome it would have had without the fault.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from bdi.pipeline.faults import Fault, classify, describe
from bdi.store.jobs import JobRef
from bdi.store.nodes import JobTaken

log = structlog.get_logger("bdi.pipeline")
MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    bug_attempts: int = 3  # runs of a job that fails with a bug before its quarantine
    fault_patience_s: float = 3600.0  # how long a job waits out a fault before its quarantine
    sweep_s: float = 1.0  # how often the cause of a fault, and the admin's retries, are looked at


@dataclass(slots=True)
class _Failing:
    job: JobRef
    since: float
    attempts: int = 0
    bugs: int = 0
    fault: Fault | None = None
    free_then: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class Retries:
    def __init__(
        self,
        policy: RetryPolicy,
        free_space: Callable[[], int],
        run: Callable[[JobRef], None],
        quarantine: Callable[[JobRef, BaseException, int], None],
    ) -> None:
        self.policy, self.free_space = policy, free_space
        self.run, self.quarantine = run, quarantine
        self._failing: dict[int, _Failing] = {}

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._failing.values() if f.timer is not None)

    def failed(self, job: JobRef, error: BaseException) -> int:
        """The job's attempts so far if it waits to run again; 0 once it is quarantined."""
        assert job.id is not None
        if isinstance(error, JobTaken):  # another node runs it now: nothing left to do here
            log.warning("job.taken_over", job=job.id, participant=job.participant_id)
            self._failing.pop(job.id, None)
            return 0
        failing = self._failing.setdefault(job.id, _Failing(job, time.monotonic()))
        failing.attempts += 1
        failing.fault = classify(error)
        failing.bugs += failing.fault is None
        log.warning("job.failed", job=job.id, participant=job.participant_id,
                    file=job.upload_name, attempt=failing.attempts,
                    fault=failing.fault or "bug", error=describe(error),
                    exc_info=error if failing.fault is None else None)  # fmt: skip
        if self._exhausted(failing):
            del self._failing[job.id]
            self.quarantine(job, error, failing.attempts)
            return 0
        if failing.fault is Fault.DISK:
            failing.free_then = self.free_space()
        self._wait(failing)
        return failing.attempts

    def _exhausted(self, failing: _Failing) -> bool:
        if failing.fault is None:
            return failing.bugs >= self.policy.bug_attempts
        return time.monotonic() - failing.since > self.policy.fault_patience_s

    def _wait(self, failing: _Failing) -> None:
        delay = min(
            self.policy.first_delay_s * 2 ** (failing.attempts - 1), self.policy.max_delay_s
        )
        loop = asyncio.get_running_loop()
        failing.timer = loop.call_later(delay, self._again, failing)

    def _again(self, failing: _Failing) -> None:
        if failing.timer is not None:
            failing.timer.cancel()
            failing.timer = None
            self.run(failing.job)

    def succeeded(self, job: JobRef) -> None:
        """A job ended well: the hub works again; every job waiting out a fault goes now."""
        if job.id is not None:
            self._failing.pop(job.id, None)
        for failing in list(self._failing.values()):
            if failing.fault is not None:
                self._again(failing)

    def forget(self, job_id: int) -> None:
        failing = self._failing.pop(job_id, None)
        if failing is not None and failing.timer is not None:
            failing.timer.cancel()

    def tick(self) -> None:
        """Send at once the jobs that wait for room, once the data folder has some again."""
        waiting = [f for f in self._failing.values() if f.fault is Fault.DISK and f.timer]
        if not waiting:
            return
        free = self.free_space()
        for failing in waiting:
            if free >= failing.free_then + MiB:
                self._again(failing)

    def cancel(self) -> None:
        for failing in self._failing.values():
            if failing.timer is not None:
                failing.timer.cancel()
                failing.timer = None
