"""`bdi serve`: the SSH server (SFTP subsystem only), the pipeline, and their lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import asyncssh
import structlog
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs
from asyncssh.public_key import get_public_key_algs

from bdi import probes
from bdi.cluster import Cluster
from bdi.config import Settings
from bdi.datadir import hub_key_file, open_hub, serve_lock, token_hash_file, web_secret
from bdi.defender import DefenderPolicy, Event, defender_running
from bdi.hub import Hub, utcnow
from bdi.mailbox.quota import Quota
from bdi.mailbox.stored import StoredInbox
from bdi.mailbox.view import (
    UPLOADS_IN_MEMORY,
    MailboxView,
    MemoryBudget,
    RecentUploads,
    sweep_temporaries,
)
from bdi.metrics import State
from bdi.ops_api import ops_routes
from bdi.pipeline.spool import Spool
from bdi.pipeline.workers import Pipeline
from bdi.sftp import HubSFTPServer
from bdi.shared import shared_limits
from bdi.ssh import Doors, HubSSHServer, Sessions, refuse_unoffered_signatures
from bdi.store.journal import Journal, sync_engine
from bdi.watch import watch_forever
from bdi.web import web_server

log = structlog.get_logger("bdi.server")


@dataclass
class RunningServer:
    hub: Hub
    pipeline: Pipeline
    acceptor: asyncssh.SSHAcceptor
    sessions: Sessions
    web_port: int
    doors: Doors
    recent: RecentUploads

    @property
    def sftp_port(self) -> int:
        return int(self.acceptor.get_port())

    async def sweep_temporary_uploads(self) -> int:
        """Delete the temporary uploads untouched for `temporary_upload_max_age_s`."""
        return await _sweep_temporaries(self.hub, self.recent)


def sftp_factory(
    hub: Hub, stored: StoredInbox, spool: Spool, recent: RecentUploads
) -> Callable[[asyncssh.SSHServerChannel[bytes]], HubSFTPServer]:
    """The injected policy: each SFTP session gets a view of its participant's mailbox; the
    sessions share the memory budget and the names recently taken in."""
    budget = MemoryBudget(UPLOADS_IN_MEMORY)
    quota = Quota(hub.settings.quota_bytes, hub.mailboxes, stored)

    def make(chan: asyncssh.SSHServerChannel[bytes]) -> HubSFTPServer:
        participant = chan.get_extra_info("username")
        view = MailboxView(
            participant,
            hub.mailboxes,
            stored,
            spool,
            hub_key_file(hub.settings),
            hub.settings.max_upload_bytes,
            budget,
            recent,
            quota,
            hub.settings.open_files_per_session,
        )
        return HubSFTPServer(chan, view)

    return make


async def _watch_sessions(hub: Hub, sessions: Sessions) -> None:
    while True:
        await asyncio.sleep(1.0)
        with contextlib.suppress(Exception):
            await sessions.enforce(hub)


async def _sweep_temporaries(hub: Hub, recent: RecentUploads) -> int:
    max_age, held = hub.settings.temporary_upload_max_age_s, recent.writing.held()
    removed = await asyncio.to_thread(sweep_temporaries, hub.mailboxes, max_age, time.time(), held)
    detached = recent.writing.swept(removed)  # opened meanwhile: on the event loop, as we are
    if removed:
        log.info("uploads.swept", removed=len(removed), max_age_s=max_age, detached=detached)
    return len(removed)


async def _sweep_temporaries_forever(hub: Hub, recent: RecentUploads) -> None:
    """Temporary uploads nobody renamed nor resumed do not stay forever (HUB.md)."""
    while True:
        await asyncio.sleep(hub.settings.temporary_upload_sweep_s)
        try:
            await _sweep_temporaries(hub, recent)
        except Exception as exc:  # tried again at the next turn; the server goes on
            log.error("uploads.sweep_failed", exc_info=exc)


def _banned(hub: Hub, doors: Doors, address: str, until: datetime) -> None:
    """A new ban: the address's connections waiting for their login go, the operators hear."""
    hub.metrics.bans.inc()
    doors.gate.evict(address)
    if hub.alerts is not None:
        hub.alerts.address_banned(address, until)


def defender_policy(settings: Settings) -> DefenderPolicy:
    return DefenderPolicy(
        threshold=settings.defender_threshold,
        window_s=settings.defender_window_s,
        ban_s=settings.defender_ban_s,
        safe_addresses=settings.defender_safe_addresses,
    )


def _background(hub: Hub, sessions: Sessions, recent: RecentUploads) -> list[asyncio.Task[None]]:
    """The server's periodic work: sessions whose credentials changed, old temporary uploads,
    and, when alerts are on, their sending and the watch that raises them."""
    tasks = [
        asyncio.create_task(_watch_sessions(hub, sessions)),
        asyncio.create_task(_sweep_temporaries_forever(hub, recent)),
    ]
    if hub.alerts is not None and hub.settings.smtp_host:
        tasks.append(asyncio.create_task(hub.alerts.run()))
        tasks.append(asyncio.create_task(watch_forever(hub, hub.alerts)))
    return tasks


@contextlib.asynccontextmanager
async def run_server(settings: Settings) -> AsyncIterator[RunningServer]:
    """Start the hub (resume unfinished jobs first, then listen); stop it on exit."""
    hub = await open_hub(settings)
    open_files = raise_open_files_limit()
    if open_files < OPEN_FILES_WANTED:
        log.warning("server.open_files_low", open_files=open_files, wanted=OPEN_FILES_WANTED,
                    hint="raise the hard limit (LimitNOFILE, ulimit -Hn)")  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(hub.store.engine.dispose)
        if settings.db_url.startswith("sqlite"):  # one node; several share a PostgreSQL
            stack.enter_context(serve_lock(settings))
        stack.callback(log.info, "server.stopped")  # runs last: after everything below
        journal = Journal.open(settings.db_url)
        stack.push_async_callback(journal.close)
        cluster = Cluster(settings, journal)
        await cluster.join()
        stack.push_async_callback(cluster.leave)  # after the pipeline's stop (a stack)
        hub.metrics.node.info({"node": cluster.node.id})
        readers = sync_engine(settings.db_url, readers=True)
        stack.callback(readers.dispose)
        stored = StoredInbox(hub.store, journal, readers)
        pipeline = Pipeline(hub, journal, stored)
        stack.push_async_callback(pipeline.stop)
        spool = Spool(settings.spool, hub.store, journal, pipeline.submit, utcnow, hub.layout)
        spool.prepare()
        removed = await spool.sweep()
        resumed = await pipeline.resume()
        stack.callback(asyncio.create_task(cluster.run(pipeline.submit)).cancel)
        for participant in await hub.store.participants():
            hub.mailboxes.ensure(participant.id)
            removed += hub.mailboxes.forget_unfinished_uploads(participant.id)
        sharing = await stack.enter_async_context(  # None on SQLite: one node
            shared_limits(hub.store, cluster.node.id, settings.node_lease_s)
        )
        sessions, recent = Sessions.among(sharing), RecentUploads()
        defender = await stack.enter_async_context(
            defender_running(hub.store, defender_policy(settings), sharing)
        )
        doors = Doors.build(hub, sessions, defender, sharing)
        defender.on_ban = partial(_banned, hub, doors)
        stack.callback(doors.passwords.close)
        stack.push_async_callback(_finish, asyncio.create_task(doors.last_logins.run()))
        acceptor = await _listen(doors, sftp_factory(hub, stored, spool, recent))
        stack.push_async_callback(_close, acceptor)
        for task in _background(hub, sessions, recent):
            stack.callback(task.cancel)

        async def read_state() -> State:
            return await probes.state(hub, pipeline, sessions, len(defender.banned()))

        routes = ops_routes(  # a wrong token on /metrics is a guess, as on /api/admin
            hub, read_state, token_hash_file(settings),
            on_failure=lambda address: defender.record(address, Event.ADMIN_BEARER),
        )  # fmt: skip
        web_port = await stack.enter_async_context(
            web_server(hub, web_secret(settings), defender, routes, sharing)
        )
        server = RunningServer(hub, pipeline, acceptor, sessions, web_port, doors, recent)
        log.info("server.started", host=settings.host, sftp_port=server.sftp_port,
                 web_port=web_port, resumed=resumed, swept=removed,
                 open_files=open_files)  # fmt: skip
        yield server


# OpenSSH 9.2p1's default server lists (myproposal.h; sshd_config(5) KexAlgorithms, MACs), as
# HUB.md promises ("Uploading"), led by the post-quantum mlkem768x25519-sha256 that OpenSSH
# offers first since 9.9: asyncssh's own defaults add SHA-1 group14, rsa2048-sha256,
# curve448, group15/17, secp256k1 and @ssh.com MACs. The ciphers are settings.ssh_ciphers.
OPENSSH_KEX = (
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
)
OPENSSH_MACS = (
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha1-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
)


# OpenSSH 9.2p1's PubkeyAcceptedAlgorithms less certificates (the hub registers plain keys):
# no SHA-1 'ssh-rsa' (OpenSSH >= 8.8), whose signatures the hub refuses (`ssh.py`)
OPENSSH_PUBKEYS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)


def _supported(names: tuple[str, ...], known: list[bytes]) -> list[str]:
    """`names`, in order, less those this asyncssh lacks (sntrup761 needs liboqs)."""
    return [name for name in names if name.encode() in known]


SSH_KEX_ALGS = _supported(OPENSSH_KEX, get_kex_algs())
SSH_MAC_ALGS = _supported(OPENSSH_MACS, get_mac_algs())
SSH_SIG_ALGS = _supported(OPENSSH_PUBKEYS, get_public_key_algs())


async def _listen(
    doors: Doors, sftp: Callable[[asyncssh.SSHServerChannel[bytes]], HubSFTPServer]
) -> asyncssh.SSHAcceptor:
    settings = doors.hub.settings
    refuse_unoffered_signatures()
    return await asyncssh.listen(
        settings.host,
        settings.sftp_port,
        server_host_keys=[str(settings.host_key)],
        server_factory=lambda: HubSSHServer(doors),
        sftp_factory=sftp,
        allow_scp=False,
        encryption_algs=list(settings.ssh_ciphers),  # AES-GCM first: +40 % small files
        kex_algs=SSH_KEX_ALGS,
        mac_algs=SSH_MAC_ALGS,  # the host key algorithms: those of its key (ssh-ed25519)
        signature_algs=SSH_SIG_ALGS,  # those a participant's key may sign with
        login_timeout=settings.login_grace_s,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_pty=False,
    )


# each session holds a descriptor, an upload one more, a job its gpg's pipes: 1 000 sessions
# held at once (bench/crowd.py) peaked at ~1 050 descriptors
OPEN_FILES_WANTED = 4096


def raise_open_files_limit() -> int:
    """Every connection, upload and gpg pipe is a file descriptor: the soft limit (often
    1 024) is raised to the hard one; the limits per session, participant and address keep
    the use well below it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _finish(task: asyncio.Task[None]) -> None:
    """Cancel a task and let it end (what it writes on its way out is written)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close(acceptor: asyncssh.SSHAcceptor) -> None:
    acceptor.close()
    await acceptor.wait_closed()


async def serve_forever(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully.

    Once started, the objects alive (modules, SQLAlchemy's and asyncssh's tables, the hub)
    live as long as the server: gc.freeze keeps every full collection from walking them
    again. Measured: the collector took ~9 % of the server's CPU under load, and the routed
    rate rose by ~9 points of the OpenPGP floor in paired runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_server(settings):
        gc.freeze()
        log.info("heap.frozen", objects=gc.get_freeze_count())
        await stop.wait()
