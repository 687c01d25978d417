"""The SSH front-end: who may open a session, how many at once, and how long a connection may
wait before its login (HUB.md, "Participants and credentials", "Limits that protect the
market"). Every login, password or key, right or wrong, is an event with its address.

Policy lives here and in the injected `Gate`, `Sessions` and `PasswordCheck`; the SFTP
subsystem behind a session is `bdi.sftp`. With several nodes on one database (`bdi.shared`),
the sessions per participant and the connections waiting per address are counted on every
live node: this node's, plus the others' as last read (about two seconds old at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import asyncssh
import structlog
from asyncssh.packet import PacketDecodeError, SSHPacket
from sqlalchemy import bindparam, select, update
from sqlmodel import col

from bdi.admin.passwords import hash_password, verify_password
from bdi.config import Settings
from bdi.defender import Defender, Event
from bdi.hub import Hub, utcnow
from bdi.shared import Sharing, Tally
from bdi.store.models import Participant, SshKey
from bdi.store.repo import Store
from bdi.throttle import LoginThrottle

log = structlog.get_logger("bdi.ssh")
SESSIONS, WAITING = "sessions", "waiting"  # the kinds of the shared counts (bdi.shared)


@dataclass
class Sessions:
    """Open connections per participant, with the credentials they logged in with."""

    open: dict[str, dict[asyncssh.SSHServerConnection, int]] = field(default_factory=dict)
    shared: Tally | None = None  # the other nodes' sessions per participant (None: one node)

    @classmethod
    def among(cls, sharing: Sharing | None) -> Sessions:
        """Sessions counted with the other nodes' when there are (`sharing`)."""
        return cls(shared=sharing.tally(SESSIONS) if sharing is not None else None)

    def count(self, participant: str) -> int:
        """This node's."""
        return len(self.open.get(participant, ()))

    def total(self, participant: str) -> int:
        """On every live node (the others' as last read): what the limit is checked on."""
        here = self.count(participant)
        return here if self.shared is None else here + self.shared.other(participant)

    def add(self, participant: str, conn: asyncssh.SSHServerConnection, version: int) -> None:
        self.open.setdefault(participant, {})[conn] = version
        self._share(participant)

    def remove(self, participant: str, conn: asyncssh.SSHServerConnection) -> None:
        self.open.get(participant, {}).pop(conn, None)
        self._share(participant)

    def _share(self, participant: str) -> None:
        if self.shared is not None:
            self.shared.set(participant, self.count(participant))

    async def enforce(self, hub: Hub) -> None:
        """Close the sessions of disabled participants and of changed credentials."""
        logged_in = [participant for participant, conns in self.open.items() if conns]
        if not logged_in:
            return
        current = await hub.store.credentials(logged_in)
        for participant in logged_in:
            conns = self.open[participant]
            for conn, version in list(conns.items()):
                if current.get(participant) != version:
                    log.info(
                        "session.closed", participant=participant, reason="credentials changed"
                    )
                    conn.close()
                    conns.pop(conn, None)
            self._share(participant)


class Abortable(Protocol):
    def abort(self) -> None: ...


TOTAL, PER_ADDRESS = "too many connections not logged in", "too many from this address"


class Gate:
    """Connections not logged in yet, per source address and in all: a flood of connections
    that never log in (1 100 banner-only ones once held the hub's file descriptors) is
    refused at the door. When all the places are taken, the address holding the most gives
    up its oldest: a flood from a few addresses cannot keep everybody else out until its
    connections time out (seen: new logins refused for a minute under a banner flood)."""

    def __init__(self, per_address: int, total: int, shared: Tally | None = None) -> None:
        self.per_address, self.total = per_address, total
        self.waiting: dict[str, list[Abortable]] = {}
        self.shared = shared  # the other nodes' waiting per address (None: one node); the
        # total is this node's own: it protects this node's file descriptors

    def count(self) -> int:
        return sum(map(len, self.waiting.values()))

    def enter(self, address: str, conn: Abortable) -> str | None:
        """None if the connection may wait for its login (it is then counted), else why not."""
        held = len(self.waiting.get(address, ()))
        if self.shared is not None:
            held += self.shared.other(address)
        if held >= self.per_address:
            return PER_ADDRESS
        if self.count() >= self.total and not self._make_room(address):
            return TOTAL
        self.waiting.setdefault(address, []).append(conn)  # refused addresses leave no entry
        self._share(address)
        return None

    def _make_room(self, newcomer: str) -> bool:
        greediest = max(self.waiting, key=lambda a: len(self.waiting[a]))
        held = self.waiting[greediest]
        if greediest == newcomer or len(held) <= 1:
            return False
        held.pop(0).abort()
        self._share(greediest)
        return True

    def leave(self, address: str, conn: Abortable) -> None:
        held = self.waiting.get(address, [])
        if conn in held:
            held.remove(conn)
        if not held:
            self.waiting.pop(address, None)
        self._share(address)

    def evict(self, address: str, *_: object) -> None:
        """Close every connection of `address` still waiting for its login (it is banned)."""
        for conn in self.waiting.pop(address, []):
            conn.abort()
        self._share(address)

    def _share(self, address: str) -> None:
        if self.shared is not None:
            self.shared.set(address, len(self.waiting.get(address, ())))


PASSWORD_NICE = 10  # the password threads' nice value above the server's (Linux: per thread)


def _lower_priority() -> None:
    """A password thread runs below the event loop and the pipeline's threads: under a crowd
    of logins the argon2 checks take the CPU they leave (measured: at the same priority, a
    logged-in participant's upload waited seconds behind them), and all of it when idle."""
    if sys.platform.startswith("linux"):  # elsewhere the nice value is the whole process's
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):
            nice = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + PASSWORD_NICE))


class PasswordCheck:
    """argon2 checks in a pool of their own, so that a crowd logging in at once waits its
    turn there instead of taking the threads the rest of the hub works with; its threads run
    at a lower CPU priority (`_lower_priority`). An unknown user costs the same check, against
    a decoy hash: the time of the answer tells nothing."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.executor = ThreadPoolExecutor(
            threads, thread_name_prefix="bdi-password", initializer=_lower_priority
        )
        self.decoy = hash_password(secrets.token_urlsafe(18))
        self.waiting = 0  # checks asked and not answered yet

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        loop = asyncio.get_running_loop()
        self.waiting += 1
        try:
            ok = await loop.run_in_executor(
                self.executor, verify_password, stored_hash or self.decoy, password
            )
        finally:
            self.waiting -= 1
        return ok and stored_hash is not None

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


_ACCOUNT = select(
    col(Participant.active), col(Participant.credentials_version), col(Participant.password_hash)
).where(col(Participant.id) == bindparam("b_id"))
_KEYS = select(col(SshKey.public_key)).where(col(SshKey.participant_id) == bindparam("b_id"))


@dataclass(frozen=True, slots=True)
class Account:
    """What a login is checked against: an active participant's credentials."""

    version: int
    password_hash: str | None
    keys: asyncssh.SSHAuthorizedKeys | None


ACCOUNT_READS_AT_ONCE = 4  # of the store's 5 pooled connections (and 10 more made on demand)


async def account(store: Store, user: str) -> Account | None:
    """The account of `user` if it is an active participant's: two plain statements on one
    connection (the ORM's three sessions a login cost ~15 % of the event loop under a crowd)."""
    async with store.engine.connect() as conn:
        row = (await conn.execute(_ACCOUNT, {"b_id": user})).first()
        if row is None or not row.active:
            return None
        keys = list((await conn.execute(_KEYS, {"b_id": user})).scalars())
    authorized = asyncssh.import_authorized_keys("\n".join(keys)) if keys else None
    return Account(row.credentials_version, row.password_hash, authorized)


_LAST_LOGIN = (
    update(Participant)
    .where(col(Participant.id) == bindparam("b_id"))
    .values(last_login=bindparam("b_at"))
)


class LastLogins:
    """Each participant's last login, written every `every_s` in one transaction for all:
    a crowd of 1 000 logins made 1 000 write transactions, each an fsync that the pipeline's
    own commits queued behind."""

    def __init__(self, store: Store, every_s: float = 1.0) -> None:
        self.store, self.every_s = store, every_s
        self.pending: dict[str, datetime] = {}

    def record(self, participant: str, at: datetime) -> None:
        self.pending[participant] = at

    async def flush(self) -> None:
        batch, self.pending = self.pending, {}
        if not batch:
            return
        rows = [{"b_id": participant, "b_at": at} for participant, at in batch.items()]
        try:
            async with self.store.engine.begin() as conn:
                await conn.execute(_LAST_LOGIN, rows)
        except Exception as exc:  # a missed last-login time is not worth more than a line
            log.warning("login.not_recorded", participants=len(rows), error=str(exc))

    async def run(self) -> None:
        """Until cancelled; what is pending then is written on the way out."""
        try:
            while True:
                await asyncio.sleep(self.every_s)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())


@dataclass(frozen=True, slots=True)
class Doors:
    """What every connection shares: the policy objects, built once by the server."""

    hub: Hub
    sessions: Sessions
    throttle: LoginThrottle
    gate: Gate
    passwords: PasswordCheck
    defender: Defender
    last_logins: LastLogins
    account_reads: asyncio.Semaphore

    @classmethod
    def build(
        cls, hub: Hub, sessions: Sessions, defender: Defender, sharing: Sharing | None = None
    ) -> Doors:
        """`sharing`: the other nodes' counts, when there are (the limits hold across)."""
        settings: Settings = hub.settings
        waiting = sharing.tally(WAITING) if sharing is not None else None
        throttle = LoginThrottle(settings.login_failures, settings.login_failure_window_s,
                                 sharing=sharing)  # fmt: skip
        return cls(
            hub,
            sessions,
            throttle,
            Gate(settings.preauth_per_address, settings.preauth_total, waiting),
            PasswordCheck(settings.password_threads),
            defender,
            LastLogins(hub.store),
            asyncio.Semaphore(ACCOUNT_READS_AT_ONCE),
        )


_SIGNATURES_CHECKED = "_bdi_checks_signature_algorithms"


def refuse_unoffered_signatures() -> None:
    """Have asyncssh's server refuse a key login signed with an algorithm it does not offer
    (`signature_algs`, sent as server-sig-algs): asyncssh checks the signature whatever its
    algorithm, so a client could still sign with SHA-1 ('ssh-rsa'), which OpenSSH refuses
    since 8.8. Like the SFTP handlers, the method is its class's, for every server of the
    process: the hub's are its only ones."""
    cls = asyncssh.SSHServerConnection
    lenient = cls.validate_public_key
    if getattr(lenient, _SIGNATURES_CHECKED, False):
        return

    async def validate(
        conn: asyncssh.SSHServerConnection, username: str, key_data: bytes, msg: bytes,
        signature: bytes,
    ) -> bool:  # fmt: skip
        algorithm = signature_algorithm(signature) if msg else b""
        if msg and algorithm not in getattr(conn, "_sig_algs"):  # noqa: B009
            shown = algorithm.decode("ascii", "replace")
            log.info("ssh.signature_refused", participant=username, algorithm=shown)
            return False
        return await lenient(conn, username, key_data, msg, signature)

    setattr(validate, _SIGNATURES_CHECKED, True)
    cls.validate_public_key = validate  # type: ignore[method-assign,assignment]


def signature_algorithm(signature: bytes) -> bytes:
    """The algorithm an SSH signature names (its first string); b"" if it names none."""
    try:
        return SSHPacket(signature).get_string()
    except PacketDecodeError:
        return b""


class HubSSHServer(asyncssh.SSHServer):
    """Authentication of one connection: issued password or registered SSH key."""

    def __init__(self, doors: Doors) -> None:
        self.doors, self.hub = doors, doors.hub
        self.conn: asyncssh.SSHServerConnection | None = None
        self.user: str | None = None
        self.version = 0
        self.address = ""
        self.waiting = False  # counted by the gate until its login or its end
        self.known = False  # the user name offered is an active participant's
        self.method = "publickey"
        self.account: Account | None = None  # read when a user name is first offered
        self.account_of: str | None = None  # that user name

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")  # read now: gone once the connection is lost
        self.address = str(peer[0]) if peer else ""
        if self.doors.defender.is_banned(self.address):  # counted, not logged: a flood goes on
            self.hub.metrics.ssh_refused.labels("banned").inc()
            asyncio.get_running_loop().call_soon(conn.abort)
            return
        refused = self.doors.gate.enter(self.address, conn)
        if refused is not None:
            self.hub.metrics.ssh_refused.labels(refused).inc()
            log.warning("ssh.refused", address=self.address, reason=refused)
            if refused == PER_ADDRESS:  # holding all its places and asking for more
                self.doors.defender.record(self.address, Event.SSH_PREAUTH_DISCONNECT)
            asyncio.get_running_loop().call_soon(conn.abort)
            return
        self.waiting = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting and self._spoke_ssh():  # an SSH client gone before its login
            self.doors.defender.record(self.address, Event.SSH_PREAUTH_DISCONNECT)
        self._left_the_gate()
        if self.user and self.conn:
            self.doors.sessions.remove(self.user, self.conn)
        elif exc is not None:
            self._log_handshake_failed(exc)

    def _spoke_ssh(self) -> bool:
        """A bare TCP connect and close (a load balancer's health check, a port probe) is
        not an SSH client giving up: only one that sent its version string counts."""
        return self.conn is not None and bool(self.conn.get_extra_info("client_version"))

    def _left_the_gate(self) -> None:
        if self.waiting:
            self.waiting = False
            assert self.conn is not None
            self.doors.gate.leave(self.address, self.conn)

    def _log_handshake_failed(self, exc: Exception) -> None:
        """A connection lost before its login: at the key exchange (`stage="kex"`: no
        algorithm in common, most often) or during the authentication. The client's version
        string says which software to look at."""
        assert self.conn is not None
        stage = "auth" if self.conn.get_extra_info("recv_cipher") else "kex"
        log.warning("ssh.handshake_failed", address=self.address, stage=stage,
                    client_version=self.conn.get_extra_info("client_version"),
                    error=str(exc), error_type=type(exc).__name__)  # fmt: skip

    async def begin_auth(self, username: str) -> bool:
        """Read the account once for the login (a password or key changed since is caught by
        `Sessions.enforce`, which compares the version read here); no account: whatever is
        offered fails."""
        self.account, self.account_of = await self._read_account(username), username
        self.known = self.account is not None
        if self.account is not None:
            self.version = self.account.version
        return True

    async def _read_account(self, username: str) -> Account | None:
        """A few logins read the store at once: a crowd of them took every connection of the
        store's pool (and made and dropped one more for each login past its 5), and a logged-in
        participant's reads queued behind: a `stat` of the canary's delivery waited 0.56 s for
        its connection while the event loop answered within 0.08 s (0.21 s with this limit)."""
        async with self.doors.account_reads:
            return await account(self.hub.store, username)

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        keys = self.account.keys if self.account and self.account_of == username else None
        ok = keys is not None and keys.validate(key, "", self.address) is not None
        if not ok:
            log.info("login.key", participant=username, address=self.address, ok=False)
            self.hub.metrics.login("ssh", "publickey", False)
            self.doors.defender.record(self.address, Event.SSH_KEY, unknown_user=not self.known)
        return ok

    async def validate_password(self, username: str, password: str) -> bool:
        key = (username, self.address)
        if self.doors.throttle.blocked(key):
            log.warning("login.throttled", participant=username, address=self.address)
            return False
        if self.account_of != username:  # asyncssh begins each user name's auth: not seen
            self.account, self.account_of = await self._read_account(username), username
        usable = self.account is not None
        stored = self.account.password_hash if self.account is not None else None
        ok = await self.doors.passwords.verify(stored, password)
        self.doors.throttle.record(key, ok)
        log.info("login.password", participant=username, address=self.address, ok=ok,
                 known=usable)  # fmt: skip
        self.hub.metrics.login("ssh", "password", ok)
        if ok:
            self.method = "password"
        else:
            self.doors.defender.record(self.address, Event.SSH_PASSWORD, unknown_user=not usable)
        return ok

    def auth_completed(self) -> None:
        assert self.conn is not None
        self._left_the_gate()
        user = self.conn.get_extra_info("username")
        limit = self.hub.settings.sessions_per_participant
        if user and self.doors.sessions.total(user) >= limit:
            log.warning("session.refused", participant=user, address=self.address,
                        reason="too many sessions", limit=limit)  # fmt: skip
            self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS,
                                 f"trop de sessions ouvertes ({limit} au plus)")  # fmt: skip
            return
        self.user = user
        log.info("login.ok", participant=user, address=self.address, method=self.method)
        if self.method == "publickey":
            self.hub.metrics.login("ssh", "publickey", True)
        if self.user:
            self.doors.sessions.add(self.user, self.conn, self.version)
            self.doors.last_logins.record(self.user, utcnow())
