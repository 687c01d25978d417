"""Tables of the hub's store (OPTIFLUX.md §8.2; HUB.md).

Portable SQL only: the same models run on SQLite (embedded default) and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel


class Participant(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=9)  # EDI identifier = SFTP user = Suivi login
    name: str
    email: str = ""
    role: str
    pgp_fingerprint: str = Field(index=True)
    password_hash: str | None = None
    active: bool = True
    credentials_version: int = 0  # bumped to close open sessions
    created_at: datetime
    last_login: datetime | None = None


class SshKey(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    participant_id: str = Field(foreign_key="participant.id", index=True)
    public_key: str


class Job(SQLModel, table=True):
    """One upload taken in: durable from the moment the client's close is acknowledged."""

    id: int | None = Field(default=None, primary_key=True)
    participant_id: str = Field(index=True)
    upload_name: str
    spool_name: str = Field(unique=True)
    size: int
    received_at: datetime
    state: str = Field(default="received", index=True)  # received | planned | done
    outcome: str | None = None  # delivered | partial | refused
    finished_at: datetime | None = None
    # a small upload, kept here from its take-in to the job's end instead of a spool file
    data: bytes | None = None
    # the hub's own failures (HUB.md, "When the hub itself fails"): a quarantined job is not
    # run again until an admin asks (retry_requested_at), whatever its state
    attempts: int | None = None
    error: str | None = None
    quarantined_at: datetime | None = None
    retry_requested_at: datetime | None = None
    # the node running it (several `bdi serve` on one PostgreSQL): another takes the job
    # over once this node stops beating (`Node.seen_at`); None: any node may
    node: str | None = Field(default=None, index=True, max_length=64)


class Output(SQLModel, table=True):
    """A file a job puts into a mailbox, its final name reserved before it is written."""

    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    seq: int
    kind: str  # delivery | log
    participant_id: str = Field(index=True)
    name: str
    ranges: str = ""  # byte ranges of a delivery's sections in the plain text: "0-4487,9000-12000"
    text: str = ""  # the content of a .log
    delivered_at: datetime | None = None


class Movement(SQLModel, table=True):
    """One delivered file (OPTIFLUX.md §8.2)."""

    __table_args__ = (Index("ix_movement_party_time", "sender_id", "recipient_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    output_id: int = Field(foreign_key="output.id", unique=True)
    created_at: datetime = Field(index=True)
    sender_id: str = Field(index=True)
    recipient_id: str = Field(index=True)
    file_name: str = Field(index=True)
    file_type: str
    size: int
    sha256: str
    content_path: str  # file in the contents folder; "" when the content is a StoredContent row
    delivered: bool = False


class StoredContent(SQLModel, table=True):
    """The plain content of a small movement, kept in the store rather than as a file (one
    file, two fsyncs and a directory entry less per upload). Its own table: the Suivi's
    lists of movements never load it."""

    movement_id: int = Field(foreign_key="movement.id", primary_key=True)
    data: bytes


class InboxFile(SQLModel, table=True):
    """A small file of an inbox (a delivery, a `.log`), kept in the store rather than as a
    file: recorded in the transaction that plans its job, it is in place once that commits
    (no file to create, fsync and rename, and no second transaction to say it was placed).
    Removed when its recipient deletes it."""

    __table_args__ = (UniqueConstraint("participant_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    participant_id: str
    name: str
    size: int
    created_at: datetime
    output_id: int = Field(foreign_key="output.id")
    data: bytes


class Flow(SQLModel, table=True):
    """A flow followed across movements by its flow key (`layouts.*.flow_key`)."""

    __table_args__ = (UniqueConstraint("layout", "flow_key"),)

    id: int | None = Field(default=None, primary_key=True)
    layout: str
    flow_key: str
    optiflux_key: str  # searched as a substring only: by the trigram indexes (revision 0008)


class FlowOccurrence(SQLModel, table=True):
    """One flow inside one movement, with its Suivi fields (JSON), control and comment."""

    id: int | None = Field(default=None, primary_key=True)
    movement_id: int = Field(foreign_key="movement.id", index=True)
    flow_id: int = Field(foreign_key="flow.id", index=True)
    seq: int
    layout: str = Field(index=True)
    flow_code: str
    optiflux_key: str = Field(index=True)
    control: str  # S | V | R
    comment: str = ""
    fields_json: str = "{}"
    lines_json: str = "[]"
    grid_json: str = "[]"  # the répartition grid of a row recorded before revision 0007
    # where the flow's records are in its movement's content (the grid is read from there);
    # None for a row recorded before revision 0007
    content_start: int | None = None
    content_end: int | None = None
    office_codes: str = Field(default="", sa_column_kwargs={"server_default": ""})
    # Suivi search columns (OPTIFLUX.md §8.4), copied from the head record so that the
    # commonest criteria run on indexes: the code apporteur, and the insured name folded
    # (trimmed, upper case) for case-insensitive substring matching on any database (by
    # the trigram indexes of revision 0002: a B-tree serves no substring search).
    producer_code: str | None = Field(default=None, index=True)
    insured_folded: str | None = None


class AuditEvent(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    actor: str
    action: str
    target: str = ""
    detail: str = ""
    address: str | None = None  # where the act came from (the web client); None: the CLI


class ReferentialParticipant(SQLModel, table=True):
    """The participant referential (apport.txt): codes, type letter, name, mailbox."""

    code: str = Field(primary_key=True, max_length=5)
    type: str = Field(max_length=1)
    name: str
    edi_id: str = Field(default="", index=True)  # "" for codes outside the hub (88889)


class ReferentialLabel(SQLModel, table=True):
    """Labels of the other code tables of the referential (companies, natures, ...)."""

    table: str = Field(primary_key=True)
    code: str = Field(primary_key=True)
    label: str


class Dismissal(SQLModel, table=True):
    """A flow removed by a user from one of its rejected lists (OPTIFLUX.md §8.8)."""

    id: int | None = Field(default=None, primary_key=True)
    participant_id: str = Field(index=True)
    list_name: str
    flow_id: int = Field(foreign_key="flow.id", index=True)
    at: datetime


class Ban(SQLModel, table=True):
    """A source address banned after failed logins (HUB.md, "Limits that protect the market").

    Rows stay as history: a repeat offender's next ban lasts longer. `lifted_at` is set when
    an admin lifts the ban; every listener of the running hub refuses the address until then
    (or until `until`)."""

    id: int | None = Field(default=None, primary_key=True)
    address: str = Field(index=True, max_length=64)
    banned_at: datetime
    until: datetime = Field(index=True)
    score: int
    reason: str = ""  # the event that crossed the threshold
    lifted_at: datetime | None = None
    lifted_by: str | None = None


class WebSession(SQLModel, table=True):
    """A logged-in Suivi session. The cookie holds a random token and this table only its
    SHA-256 (a copy of the table opens no session); deleting the row (logout, participant
    disabled, password reset) closes the session at its very next request."""

    id: str = Field(primary_key=True, max_length=64)
    participant_id: str = Field(index=True)
    credentials_version: int
    csrf: str
    created_at: datetime
    expires_at: datetime = Field(index=True)


class Redelivery(SQLModel, table=True):
    """An admin's request to send a delivery again (`bdi admin redeliver`). The running hub
    performs it (it alone gives inbox names: those it has promised live in its memory), as
    a job: `requested` -> `planned` (its output named and recorded) -> `done`; or `failed`,
    or `cancelled` when no hub took it in time. Not a foreign key: history is purged."""

    id: int | None = Field(default=None, primary_key=True)
    movement_id: int = Field(index=True)  # the movement sent again
    recipient_id: str
    requested_at: datetime
    requested_by: str = ""
    state: str = Field(default="requested", index=True)
    name: str | None = None  # its inbox name, once planned
    output_id: int | None = None
    new_movement_id: int | None = None
    error: str | None = None
    finished_at: datetime | None = None


class Operator(SQLModel, table=True):
    """An operator of the console (`/exploitation/`), distinct from the participants: its
    own login name, an issued password (argon2), an optional TOTP second factor."""

    name: str = Field(primary_key=True, max_length=32)
    email: str
    password_hash: str
    active: bool = True
    credentials_version: int = 0  # bumped to close open console sessions
    totp_secret: str | None = None  # base32, once its enrolment is confirmed
    totp_pending: str | None = None  # offered at enrolment, until a first right code
    totp_last_step: int | None = None  # the last time step accepted: each code works once
    created_at: datetime
    last_login: datetime | None = None


class OperatorSession(SQLModel, table=True):
    """A logged-in console session: as `WebSession`, only the SHA-256 of its cookie's token;
    a table of its own, so that no participant's session can ever name an operator."""

    id: str = Field(primary_key=True, max_length=64)
    operator_name: str = Field(index=True)
    credentials_version: int
    csrf: str
    created_at: datetime
    expires_at: datetime = Field(index=True)


class Node(SQLModel, table=True):
    """A running `bdi serve`. Its heartbeat (`seen_at`) tells the other nodes it is alive;
    when it stops beating, they take over its unfinished jobs."""

    id: str = Field(primary_key=True, max_length=64)
    host: str
    pid: int
    started_at: datetime
    seen_at: datetime = Field(index=True)


class InboxName(SQLModel, table=True):
    """A name taken in an inbox, from the plan of its output until its recipient removes
    the file (HUB.md, "Names in the inbox"). The primary key is what keeps two nodes, each
    naming its own jobs' outputs, from giving one name twice."""

    participant_id: str = Field(primary_key=True, max_length=9)
    name: str = Field(primary_key=True)


class SharedCount(SQLModel, table=True):
    """A node's count toward a limit that holds across the nodes of one database (issue 17):
    an address's defender score, a participant's open sessions... (`kind`). Each node writes
    only its own rows; a node decides with its own count plus the other live nodes' rows."""

    node: str = Field(primary_key=True, max_length=64)
    kind: str = Field(primary_key=True, max_length=16)
    key: str = Field(primary_key=True, max_length=200)
    count: int
