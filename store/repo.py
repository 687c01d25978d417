"""The store's operations, each one transaction; a job's effects are written in one batch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bdi.store.inbox import DATA, ENTRIES, INBOX, StoredEntry
from bdi.store.jobs import request_retry
from bdi.store.models import (
    AuditEvent,
    FlowOccurrence,
    Job,
    Movement,
    Output,
    Participant,
    ReferentialLabel,
    ReferentialParticipant,
    SshKey,
)


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    def session(self) -> AsyncSession:
        return self._sessions()

    # participants -------------------------------------------------------------------
    async def add_participant(self, participant: Participant, ssh_keys: Sequence[str] = ()) -> None:
        async with self.session() as s:
            s.add(participant)
            await s.flush()
            s.add_all(SshKey(participant_id=participant.id, public_key=k) for k in ssh_keys)
            await s.commit()

    async def participant(self, participant_id: str) -> Participant | None:
        async with self.session() as s:
            return await s.get(Participant, participant_id)

    async def credentials(self, participant_ids: Sequence[str]) -> dict[str, int]:
        """The credentials version of each participant given that exists and is active (one
        query for all: the server checks those with open sessions every second)."""
        query = select(Participant.id, Participant.credentials_version).where(
            col(Participant.id).in_(participant_ids), col(Participant.active).is_(True)
        )
        async with self.session() as s:
            return dict((await s.exec(query)).all())

    async def participants(self) -> list[Participant]:
        async with self.session() as s:
            return list((await s.exec(select(Participant).order_by(col(Participant.id)))).all())

    async def ssh_keys(self, participant_id: str) -> list[str]:
        async with self.session() as s:
            rows = await s.exec(
                select(SshKey.public_key).where(SshKey.participant_id == participant_id)
            )
            return list(rows.all())

    async def update_participant(self, participant_id: str, **values: object) -> Participant:
        async with self.session() as s:
            row = await s.get(Participant, participant_id)
            if row is None:
                raise KeyError(participant_id)
            for name, value in values.items():
                setattr(row, name, value)
            await s.commit()
            return row

    async def audit(
        self,
        at: datetime,
        actor: str,
        action: str,
        target: str,
        detail: str,
        address: str | None = None,
    ) -> None:
        """Who did what, when, and from where (`address`: a web client's; None: the CLI)."""
        event = AuditEvent(
            at=at, actor=actor, action=action, target=target, detail=detail, address=address
        )
        async with self.session() as s:
            s.add(event)
            await s.commit()

    # jobs ---------------------------------------------------------------------------
    async def job(self, job_id: int) -> Job | None:
        async with self.session() as s:
            return await s.get(Job, job_id)

    async def jobs(self, which: str, limit: int = 200) -> list[Job]:
        """Jobs for the admin, newest first: `quarantined`, `waiting` (unfinished, not set
        aside: queued, running or waiting out a fault) or `all`."""
        query = select(Job).order_by(col(Job.id).desc()).limit(limit)
        if which == "quarantined":
            query = query.where(col(Job.quarantined_at).is_not(None))
        elif which == "waiting":
            query = query.where(Job.state != "done", col(Job.quarantined_at).is_(None))
        async with self.session() as s:
            return list((await s.exec(query)).all())

    async def request_retry(self, job_id: int, at: datetime) -> bool:
        """Ask the running hub to run a quarantined job again (False: no such job)."""
        async with self.engine.begin() as conn:
            return await conn.run_sync(lambda c: request_retry(c, job_id, at))

    async def spool_names(self) -> set[str]:
        """The uploads still needed: those of unfinished jobs."""
        async with self.session() as s:
            rows = await s.exec(select(Job.spool_name).where(Job.state != "done"))
            return set(rows.all())

    async def reserved_names(self) -> dict[str, set[str]]:
        """Per participant, the names promised to outputs not yet written."""
        async with self.session() as s:
            rows = await s.exec(
                select(Output.participant_id, Output.name).where(col(Output.delivered_at).is_(None))
            )
            reserved: dict[str, set[str]] = {}
            for participant, name in rows.all():
                reserved.setdefault(participant, set()).add(name)
            return reserved

    # inbox files kept in the store ------------------------------------------------------
    async def inbox_files(self, participant_id: str, name: str | None = None) -> list[StoredEntry]:
        """A participant's files kept in the store, by name (`name`: that one only)."""
        query = ENTRIES.where(INBOX.c.participant_id == participant_id).order_by(INBOX.c.name)
        if name is not None:
            query = query.where(INBOX.c.name == name)
        async with self.engine.connect() as conn:
            return [StoredEntry(*row) for row in await conn.execute(query)]

    async def inbox_data(self, participant_id: str, name: str) -> bytes | None:
        query = DATA.where(INBOX.c.participant_id == participant_id, INBOX.c.name == name)
        async with self.engine.connect() as conn:
            data = (await conn.execute(query)).scalar_one_or_none()
        return None if data is None else bytes(data)

    async def movements(self, recipient_id: str | None = None) -> list[Movement]:
        async with self.session() as s:
            query = select(Movement).order_by(col(Movement.id))
            if recipient_id is not None:
                query = query.where(Movement.recipient_id == recipient_id)
            return list((await s.exec(query)).all())

    async def occurrences(self, movement_id: int) -> list[FlowOccurrence]:
        async with self.session() as s:
            rows = await s.exec(
                select(FlowOccurrence)
                .where(FlowOccurrence.movement_id == movement_id)
                .order_by(col(FlowOccurrence.seq))
            )
            return list(rows.all())

    # referential ----------------------------------------------------------------------
    async def replace_referential(
        self, participants: Sequence[ReferentialParticipant], labels: Sequence[ReferentialLabel]
    ) -> None:
        """Replace the whole referential in one transaction: readers see old or new, never a mix."""
        async with self.session() as s:
            for model in (ReferentialParticipant, ReferentialLabel):
                for row in (await s.exec(select(model))).all():
                    await s.delete(row)
            await s.flush()
            s.add_all(participants)
            s.add_all(labels)
            await s.commit()

    async def referential(self) -> list[ReferentialParticipant]:
        async with self.session() as s:
            rows = await s.exec(
                select(ReferentialParticipant).order_by(col(ReferentialParticipant.code))
            )
            return list(rows.all())

    async def replace_ssh_keys(self, participant_id: str, keys: Sequence[str]) -> None:
        async with self.session() as s:
            rows = await s.exec(select(SshKey).where(SshKey.participant_id == participant_id))
            for row in rows.all():
                await s.delete(row)
            s.add_all(SshKey(participant_id=participant_id, public_key=k) for k in keys)
            await s.commit()

    async def jobs_named(
        self, participant_id: str, upload_name: str
    ) -> list[tuple[Job, list[Output]]]:
        """A participant's uploads of one name, oldest first, with their outputs."""
        async with self.session() as s:
            jobs = (
                await s.exec(
                    select(Job)
                    .where(Job.participant_id == participant_id, Job.upload_name == upload_name)
                    .order_by(col(Job.id))
                )
            ).all()
            out = []
            for job in jobs:
                rows = await s.exec(
                    select(Output).where(Output.job_id == job.id).order_by(col(Output.seq))
                )
                out.append((job, list(rows.all())))
            return out
