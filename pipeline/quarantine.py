"""Setting a job aside after the hub failed it for good (HUB.md, "When the hub itself
fails"): its upload is kept, the sender gets the INTERNE `.log`, the admin sees the job with
its error (`bdi admin jobs`) and may run it again. Runs in a worker thread."""

from __future__ import annotations

from datetime import datetime
from functools import partial

import structlog

from bdi.hub import Hub, local_time
from bdi.mailbox.names import Names
from bdi.pipeline.faults import describe
from bdi.routing.errors import Code, Problem
from bdi.routing.logs import whole_upload_log
from bdi.store.jobs import JobRef, OutputRef, PlannedOutput, quarantine_job
from bdi.store.journal import Journal

log = structlog.get_logger("bdi.pipeline")


def set_aside(
    hub: Hub, journal: Journal, names: Names,
    job: JobRef, error: BaseException, attempts: int, now: datetime,
) -> None:  # fmt: skip
    """Quarantine the job and put the INTERNE notice in its sender's inbox, in one transaction."""
    assert job.id is not None
    notice = whole_upload_log(job.upload_name, Problem(Code.INTERNE), local_time(hub, now),
                              hub.layout)  # fmt: skip
    name = names.take(job.participant_id, notice.name)
    text = notice.text()
    output = OutputRef(job.id, 0, "log", job.participant_id, name, text=text)
    kept = PlannedOutput(output, stored=text.encode("utf-8"))
    try:
        journal.call(partial(quarantine_job, job_id=job.id, error=describe(error),
                             attempts=attempts, notice=kept, at=now))  # fmt: skip
    finally:
        names.release([output])
    log.error("job.quarantined", job=job.id, participant=job.participant_id,
              file=job.upload_name, attempts=attempts, error=describe(error),
              log=name, exc_info=error)  # fmt: skip
