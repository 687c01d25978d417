"""The SFTP mailbox contract (HUB.md, "The mailbox, as seen over SFTP"), probed with a real
asyncssh client against the real server.

A participant sees `/` (read-only), `/hub-public-key.asc`, `/outbox/` (upload only) and `/inbox/`
(read and delete); nothing else can be named, listed, opened, linked to or reached, whatever the
encoding of the path. Uploads are taken in at close (or at the rename of a temporary name); an
upload over the configured maximum is refused by the SFTP layer itself. Disabled participants
cannot log in, and their open sessions are closed, as are sessions of changed credentials.

One hub serves the whole module (its event loop is module-scoped); each test uses its own
participants or checks its effects as differences, so the tests do not depend on their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import cast

import asyncssh
import pytest
import pytest_asyncio
from hubkit import HubUnderTest, Party, hub_running, make_parties
from sqlmodel import select
from support import SAMPLES

from bdi.datadir import hub_key_file
from bdi.store.models import Job

pytestmark = pytest.mark.asyncio(loop_scope="module")

ATTACKER = "COU010234"  # the sender of the sample, who knows the delivered file's name
VICTIM = "CIE000311"  # the sample's recipient: its inbox holds a delivery
DISABLED = "CIE000452"  # disabled (then enabled again) by the login tests
ROTATED = "CIE000638"  # credentials_version bumped by the login tests
SAMPLE = "RCOU010234_00311_000001.edi"
VICTIM_PART = "RCIE000311_00311_000009.edi.part"  # an upload in progress in the victim's outbox
GARBAGE = b"not an OpenPGP message"
MAX_UPLOAD = 4096
ROOT_NAMES = {"hub-public-key.asc", "outbox", "inbox"}
WAIT = 10.0  # seconds: bound of every wait on a condition (the session watcher runs each second)


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parties() -> Iterator[dict[str, Party]]:
    with make_parties([ATTACKER, VICTIM, DISABLED, ROTATED]) as made:
        yield made


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sftp-access")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(work: Path, parties: dict[str, Party]) -> AsyncIterator[HubUnderTest]:
    # this module's many wrong logins from loopback would get it banned (tests/test_defender.py)
    safe = {"defender_safe_addresses": ("127.0.0.1",)}
    async with hub_running(work / "data", parties, max_upload_bytes=MAX_UPLOAD, **safe) as running:
        sealed = running.seal(ATTACKER, (SAMPLES / SAMPLE).read_bytes(), work)
        assert len(sealed) < MAX_UPLOAD  # the sample itself is not too large
        await running.upload(ATTACKER, SAMPLE, sealed)
        await running.upload(ATTACKER, "RCOU010234_00311_000900.edi", GARBAGE)  # a .log for it
        await running.settled()
        async with running.sftp(VICTIM) as sftp, sftp.open(f"/outbox/{VICTIM_PART}", "wb") as f:
            await f.write(b"the victim's upload in progress")
        assert list(await running.inbox(VICTIM)) == [SAMPLE]
        assert list(await running.inbox(ATTACKER)) == ["ERREURRCOU010234_00311_000900.log"]
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mallory(hub: HubUnderTest) -> AsyncIterator[asyncssh.SFTPClient]:
    """The attacker's SFTP session, shared by the probing tests."""
    async with hub.sftp(ATTACKER) as sftp:
        yield sftp


async def job_count(hub: HubUnderTest) -> int:
    async with hub.server.hub.store.session() as s:
        return len((await s.exec(select(Job))).all())


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


async def outside_state(hub: HubUnderTest) -> dict[str, object]:
    """Everything outside the attacker's own tree that an escape could touch or create."""
    mailboxes = hub.settings.mailboxes
    return {
        "mailboxes": {
            name: value
            for name, value in files_under(mailboxes).items()
            if not name.startswith(f"{ATTACKER}/")
        },
        "folders": sorted(
            str(p.relative_to(mailboxes))
            for p in mailboxes.rglob("*")
            if p.relative_to(mailboxes).parts[0] != ATTACKER
        ),
        "data": sorted(
            p.name for p in hub.settings.data.iterdir() if not p.name.startswith("bdi.sqlite3")
        ),
        "hub_key": hub_key_file(hub.settings).read_bytes(),
        "spool": sorted(p.name for p in hub.settings.spool.iterdir()),
        "jobs": await job_count(hub),
        "victim_sees": await hub.inbox(VICTIM),
    }


@pytest_asyncio.fixture(loop_scope="module")
async def untouched(hub: HubUnderTest) -> AsyncIterator[None]:
    """The test leaves the other participants' mailboxes, the spool and the jobs as they were."""
    before = await outside_state(hub)
    assert SAMPLE in before["victim_sees"]  # type: ignore[operator]
    yield
    await hub.settled()
    assert await outside_state(hub) == before


@contextlib.asynccontextmanager
async def session(
    hub: HubUnderTest, edi_id: str
) -> AsyncIterator[tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]]:
    """Like `HubUnderTest.sftp`, with the connection too."""
    async with (
        asyncssh.connect(
            "127.0.0.1",
            hub.port,
            username=edi_id,
            password=hub.parties[edi_id].password,
            known_hosts=None,
            client_keys=None,
            agent_path=None,
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):
        yield conn, sftp


async def login_refused(hub: HubUnderTest, username: str, password: str) -> None:
    with pytest.raises(asyncssh.PermissionDenied):
        async with asyncssh.connect(
            "127.0.0.1",
            hub.port,
            username=username,
            password=password,
            known_hosts=None,
            client_keys=None,
            agent_path=None,
        ):
            pass


async def no_upload_in_progress(hub: HubUnderTest, edi_id: str) -> None:
    """Wait (bounded) until the server has finished with every upload handle of `edi_id`: its
    hidden `.up-*` file is gone. No event tells it, so the condition is polled."""
    outbox = hub.settings.mailboxes / edi_id / "outbox"
    async with asyncio.timeout(WAIT):
        while any(p.name.startswith(".up-") for p in outbox.iterdir()):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def put(sftp: asyncssh.SFTPClient, path: str | bytes, data: bytes) -> None:
    async with sftp.open(path, "wb") as f:
        await f.write(data)


async def get(sftp: asyncssh.SFTPClient, path: str | bytes) -> bytes:
    async with sftp.open(path, "rb") as f:
        return cast(bytes, await f.read())  # "rb": bytes (typed AnyStr)


async def names(sftp: asyncssh.SFTPClient, path: str) -> set[str]:
    return {n for n in await sftp.listdir(path) if n not in (".", "..")}


# -- 1. isolation ---------------------------------------------------------------------------
# Every operation a client can send on a path, and the refusal expected when the path names
# nothing of the client's own tree. `own` is an upload of the attacker's own, in its outbox.
OWN = "/outbox/own.part"
Op = Callable[[asyncssh.SFTPClient, bytes], Awaitable[object]]


async def _rename_to(sftp: asyncssh.SFTPClient, path: bytes) -> None:
    await put(sftp, OWN, b"own")
    await sftp.rename(OWN, path)


async def _posix_rename_to(sftp: asyncssh.SFTPClient, path: bytes) -> None:
    await put(sftp, OWN, b"own")
    await sftp.posix_rename(OWN, path)


OPS: dict[str, tuple[Op, type[asyncssh.SFTPError]]] = {
    "listdir": (lambda s, p: s.listdir(p), asyncssh.SFTPNoSuchFile),
    "stat": (lambda s, p: s.stat(p), asyncssh.SFTPNoSuchFile),
    "lstat": (lambda s, p: s.lstat(p), asyncssh.SFTPNoSuchFile),
    "read": (get, asyncssh.SFTPNoSuchFile),
    "write": (lambda s, p: put(s, p, b"planted"), asyncssh.SFTPNoSuchFile),
    "remove": (lambda s, p: s.remove(p), asyncssh.SFTPNoSuchFile),
    "rename_from": (lambda s, p: s.rename(p, "/outbox/stolen.part"), asyncssh.SFTPNoSuchFile),
    "posix_rename_from": (
        lambda s, p: s.posix_rename(p, "/outbox/stolen.part"),
        asyncssh.SFTPNoSuchFile,
    ),
    "rename_to": (_rename_to, asyncssh.SFTPNoSuchFile),
    "posix_rename_to": (_posix_rename_to, asyncssh.SFTPNoSuchFile),
    "chmod": (lambda s, p: s.chmod(p, 0o777), asyncssh.SFTPNoSuchFile),
    "utime": (lambda s, p: s.utime(p, (0, 0)), asyncssh.SFTPNoSuchFile),
    "readlink": (lambda s, p: s.readlink(p), asyncssh.SFTPNoSuchFile),
    "realpath": (lambda s, p: s.realpath(p), asyncssh.SFTPNoSuchFile),
    # statvfs would probe the hub's real file system: not offered at all
    "statvfs": (lambda s, p: s.statvfs(p), asyncssh.SFTPOpUnsupported),
    "mkdir": (lambda s, p: s.mkdir(p), asyncssh.SFTPPermissionDenied),
    "rmdir": (lambda s, p: s.rmdir(p), asyncssh.SFTPPermissionDenied),
    "symlink_to": (lambda s, p: s.symlink(p, "/outbox/link.part"), asyncssh.SFTPPermissionDenied),
    "symlink_at": (lambda s, p: s.symlink(OWN, p), asyncssh.SFTPPermissionDenied),
    "link_to": (lambda s, p: s.link(p, "/outbox/link.part"), asyncssh.SFTPPermissionDenied),
    "link_at": (lambda s, p: s.link(OWN, p), asyncssh.SFTPPermissionDenied),
}

# Paths that try to leave the tree; `{real}` is the real path of the data folder's mailboxes,
# `{abs}` the absolute path the hub was configured with (under a symlinked temporary folder).
ESCAPES: list[str | bytes] = [
    f"/inbox/../../{VICTIM}/inbox",
    f"/inbox/../../{VICTIM}/inbox/{SAMPLE}",
    f"../../../{VICTIM}/inbox/{SAMPLE}",
    f"/outbox/../../{VICTIM}/outbox/{VICTIM_PART}",
    f"/{VICTIM}/inbox/x",
    f"/{VICTIM}/inbox/{SAMPLE}",
    f"/{VICTIM}",
    f"{VICTIM}/inbox/{SAMPLE}",
    f"/{ATTACKER}/inbox",  # its own id is no path either
    f"~{VICTIM}/inbox/{SAMPLE}",
    "{real}/" + f"{VICTIM}/inbox/{SAMPLE}",
    "{real}/" + f"{VICTIM}/inbox",
    "{real}/" + f"{VICTIM}/outbox/{VICTIM_PART}",
    "{real}",
    "{abs}/" + f"{VICTIM}/inbox/{SAMPLE}",
    "{real}/" + f"{ATTACKER}/outbox/own.part",  # even its own folder, by its real path
    "/etc/passwd",
    "/inbox/.staging",
    f"/inbox/../.staging/{SAMPLE}",
    f"/inbox/%2e%2e/%2e%2e/{VICTIM}/inbox/{SAMPLE}",
    f"%2e%2e/%2e%2e/{VICTIM}/inbox/{SAMPLE}",
    f"/inbox/..%2f..%2f{VICTIM}%2finbox%2f{SAMPLE}",
    f"/outbox/..%2f..%2f{VICTIM}%2foutbox%2f{VICTIM_PART}",
    f"/inbox/..\\..\\{VICTIM}\\inbox\\{SAMPLE}",
    f"\\{VICTIM}\\inbox\\{SAMPLE}",
    f"/inbox\\..\\..\\{VICTIM}\\inbox",
    f"/inbox/\uff0e\uff0e/\uff0e\uff0e/{VICTIM}/inbox/{SAMPLE}",  # fullwidth dots
    f"/inbox/\u2025/{VICTIM}/inbox/{SAMPLE}",  # two-dot leader
    b"/inbox/\x00/../../" + VICTIM.encode() + b"/inbox/" + SAMPLE.encode(),
    b"/inbox/" + SAMPLE.encode() + b"\x00/../../" + VICTIM.encode() + b"/inbox",
    b"/outbox/x.part\x00/../../../" + VICTIM.encode() + b"/inbox/planted.edi",
    b"/inbox/\xc0\xae\xc0\xae/\xc0\xae\xc0\xae/" + VICTIM.encode() + b"/inbox",  # overlong '.'
    b"/inbox/\xff\xfe/../../" + VICTIM.encode() + b"/inbox/" + SAMPLE.encode(),
    b"/\xe9" + VICTIM.encode() + b"/inbox",
]


def _raw(path: str | bytes, hub: HubUnderTest) -> bytes:
    if isinstance(path, bytes):
        return path
    mailboxes = hub.settings.mailboxes
    return (
        path.replace("{real}", str(mailboxes.resolve()))
        .replace("{abs}", str(mailboxes.absolute()))
        .encode()
    )


@pytest.mark.parametrize("path", ESCAPES, ids=repr)
async def test_no_operation_reaches_outside_the_tree(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient, untouched: None, path: str | bytes
) -> None:
    raw = _raw(path, hub)
    outcomes = {}
    for name, (op, _) in OPS.items():
        try:
            result = await op(mallory, raw)
        except asyncssh.SFTPError as exc:
            outcomes[name] = type(exc)
        else:
            outcomes[name] = f"succeeded: {result!r}"  # type: ignore[assignment]
    assert outcomes == {name: expected for name, (_, expected) in OPS.items()}
    # the attacker's own upload is still its own, nothing was planted or stolen
    assert await names(mallory, "/outbox") >= {"own.part"}
    assert not {"stolen.part", "link.part", "planted.edi"} & await names(mallory, "/outbox")


async def test_literal_odd_names_stay_in_the_own_outbox(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient, untouched: None
) -> None:
    """Encoded separators are plain characters of one file name in the client's own outbox."""
    odd = [
        f"%2e%2e%2f%2e%2e%2f{VICTIM}%2finbox%2fplanted.part",
        f"%2E%2E%5C{VICTIM}%5Cinbox.part",
        "%c0%ae%c0%ae%c0%af..%c0%afplanted.part",
        "\u2025\uff0fplanted.part",
    ]
    for name in odd:
        await put(mallory, f"/outbox/{name}", b"odd")
        assert (await mallory.stat(f"/outbox/{name}")).size == 3
    listed = await names(mallory, "/outbox")
    assert set(odd) <= listed
    own = hub.settings.mailboxes / ATTACKER / "outbox"
    assert {p.name for p in own.iterdir()} >= set(odd)
    for name in odd:
        await mallory.remove(f"/outbox/{name}")
    assert not set(odd) & await names(mallory, "/outbox")


async def test_what_the_tree_forbids(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient, untouched: None
) -> None:
    """Inside its own tree a participant still cannot create folders or links, read its
    uploads, write into its inbox or `/`, or change the hub's key."""
    denied, missing = asyncssh.SFTPPermissionDenied, asyncssh.SFTPNoSuchFile
    key = hub_key_file(hub.settings).read_bytes()
    await put(mallory, OWN, b"own upload in progress")
    mine = sorted(await names(mallory, "/inbox"))  # the attacker's own inbox: at least a .log
    assert mine
    checks: list[tuple[str, Callable[[], Awaitable[object]], type[asyncssh.SFTPError]]] = [
        ("mkdir /inbox/sub", lambda: mallory.mkdir("/inbox/sub"), denied),
        ("mkdir /outbox/sub", lambda: mallory.mkdir("/outbox/sub"), denied),
        ("mkdir /new", lambda: mallory.mkdir("/new"), denied),
        (f"mkdir /{VICTIM}", lambda: mallory.mkdir(f"/{VICTIM}"), denied),
        ("rmdir /inbox", lambda: mallory.rmdir("/inbox"), denied),
        ("rmdir /outbox", lambda: mallory.rmdir("/outbox"), denied),
        ("rmdir /", lambda: mallory.rmdir("/"), denied),
        ("symlink in outbox", lambda: mallory.symlink("/inbox", "/outbox/l.part"), denied),
        ("symlink in inbox", lambda: mallory.symlink(OWN, "/inbox/l.edi"), denied),
        ("symlink to key", lambda: mallory.symlink("/hub-public-key.asc", "/outbox/k"), denied),
        ("hard link", lambda: mallory.link(OWN, "/outbox/l2.part"), denied),
        ("read own outbox file", lambda: get(mallory, OWN), denied),
        ("read /outbox", lambda: get(mallory, "/outbox"), denied),
        ("read /inbox", lambda: get(mallory, "/inbox"), denied),
        ("read /", lambda: get(mallory, "/"), denied),
        ("write into /inbox", lambda: put(mallory, "/inbox/new.edi", b"x"), denied),
        ("write /inbox", lambda: put(mallory, "/inbox", b"x"), denied),
        ("write /outbox", lambda: put(mallory, "/outbox", b"x"), denied),
        ("write /", lambda: put(mallory, "/", b"x"), denied),
        ("write a file in /", lambda: put(mallory, "/new.edi", b"x"), missing),
        ("write the key", lambda: put(mallory, "/hub-public-key.asc", b"x"), denied),
        ("append to the key", lambda: _append(mallory, "/hub-public-key.asc"), denied),
        ("remove the key", lambda: mallory.remove("/hub-public-key.asc"), denied),
        ("remove /inbox", lambda: mallory.remove("/inbox"), denied),
        ("remove /outbox", lambda: mallory.remove("/outbox"), denied),
        ("remove /", lambda: mallory.remove("/"), denied),
        (
            "rename the key away",
            lambda: mallory.rename("/hub-public-key.asc", "/outbox/k.part"),
            denied,
        ),
        (
            "rename over the key",
            lambda: mallory.posix_rename(OWN, "/hub-public-key.asc"),
            denied,
        ),
        ("rename into /inbox", lambda: mallory.rename(OWN, "/inbox/x.edi"), denied),
        ("rename into /", lambda: mallory.rename(OWN, "/x.edi"), missing),
        ("rename /inbox", lambda: mallory.rename("/inbox", "/outbox/i.part"), denied),
        ("rename /outbox", lambda: mallory.rename("/outbox", "/outbox/o.part"), denied),
        ("read a hidden name", lambda: get(mallory, "/outbox/.up-x"), missing),
        ("rename an inbox file", lambda: mallory.rename(f"/inbox/{mine[0]}", OWN), denied),
        ("rename in the inbox", lambda: mallory.rename(f"/inbox/{mine[0]}", "/inbox/x"), denied),
        ("overwrite an inbox file", lambda: put(mallory, f"/inbox/{mine[0]}", b"x"), denied),
    ]
    outcomes = {}
    for label, call, _ in checks:
        try:
            await call()
        except asyncssh.SFTPError as exc:
            outcomes[label] = type(exc)
        else:
            outcomes[label] = "succeeded"  # type: ignore[assignment]
    assert outcomes == {label: expected for label, _, expected in checks}
    assert (await mallory.stat(OWN)).size == len(b"own upload in progress")
    assert sorted(await names(mallory, "/inbox")) == mine
    assert await names(mallory, "/") == ROOT_NAMES
    assert hub_key_file(hub.settings).read_bytes() == key
    assert await get(mallory, "/hub-public-key.asc") == key


async def _append(sftp: asyncssh.SFTPClient, path: str) -> None:
    async with sftp.open(path, "ab") as f:
        await f.write(b"x")


async def test_another_participants_delivery_is_readable_only_by_it(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient, work: Path, untouched: None
) -> None:
    assert SAMPLE not in await names(mallory, "/inbox")
    with pytest.raises(asyncssh.SFTPNoSuchFile):
        await get(mallory, f"/inbox/{SAMPLE}")
    async with hub.sftp(VICTIM) as sftp:
        assert SAMPLE in await names(sftp, "/inbox")
        delivered = await get(sftp, f"/inbox/{SAMPLE}")
    plain, signer = hub.open_delivery(VICTIM, delivered, work)
    assert plain == (SAMPLES / SAMPLE).read_bytes()
    assert signer == hub.hub_fingerprint


# -- 2. the tree ------------------------------------------------------------------------------
async def test_the_tree_is_the_key_the_outbox_and_the_inbox(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient, work: Path
) -> None:
    for root in ("/", ".", "", "..", "../../..", "/inbox/../../..", "//", "/./outbox/.."):
        assert await names(mallory, root) == ROOT_NAMES, root
    listed = {n.filename: n.attrs for n in await mallory.readdir("/")}
    assert set(listed) == ROOT_NAMES
    assert listed["inbox"].type == asyncssh.FILEXFER_TYPE_DIRECTORY
    assert listed["outbox"].type == asyncssh.FILEXFER_TYPE_DIRECTORY
    assert listed["hub-public-key.asc"].type == asyncssh.FILEXFER_TYPE_REGULAR
    assert await mallory.isdir("/inbox")
    assert await mallory.isdir("/outbox")
    assert await mallory.isfile("/hub-public-key.asc")

    key = hub.hub_public_key
    assert key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert (await get(mallory, "/hub-public-key.asc")).decode() == key
    assert (await get(mallory, "/inbox/../hub-public-key.asc")).decode() == key
    assert (await mallory.stat("/hub-public-key.asc")).size == len(key.encode())
    # the usual client download path (asyncssh get, which asks for sparse ranges) works too
    await mallory.get("/hub-public-key.asc", work / "hub-key.asc")
    assert (work / "hub-key.asc").read_text() == key


async def test_the_inbox_can_be_read_and_emptied(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient, work: Path
) -> None:
    name = "RCOU010234_00311_000901.edi"
    await put(mallory, f"/outbox/{name}", GARBAGE)
    await hub.settled()
    log = "ERREURRCOU010234_00311_000901.log"
    assert log in await names(mallory, "/inbox")
    text = (await get(mallory, f"/inbox/{log}")).decode()
    assert f" {name} section 0 line 0 DECHIFFREMENT " in text
    await mallory.get(f"/inbox/{log}", work / log)
    assert (work / log).read_text() == text
    await mallory.remove(f"/inbox/{log}")
    assert log not in await names(mallory, "/inbox")
    with pytest.raises(asyncssh.SFTPNoSuchFile):
        await mallory.remove(f"/inbox/{log}")


REALPATHS = {
    "/": "/",
    ".": "/",
    "..": "/",
    "../../..": "/",
    "/..//../.": "/",
    "inbox": "/inbox",
    "/inbox/": "/inbox",
    "//inbox//": "/inbox",
    "/outbox/../inbox/.": "/inbox",
    "../outbox": "/outbox",
    "/inbox/../hub-public-key.asc": "/hub-public-key.asc",
    f"/outbox/{SAMPLE}": f"/outbox/{SAMPLE}",
    "/outbox/%2e%2e": "/outbox/%2e%2e",
    "/inbox/x%2f..%2f..": "/inbox/x%2f..%2f..",
}


async def test_realpath_stays_under_the_root(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient
) -> None:
    for path, expected in REALPATHS.items():
        assert await mallory.realpath(path) == expected, path
    real = str(hub.settings.data.resolve())
    for escape in ESCAPES:
        try:
            resolved = await mallory.realpath(_raw(escape, hub))
        except asyncssh.SFTPNoSuchFile:
            continue
        text = os.fsdecode(resolved)
        assert text.startswith("/") and real not in text and ".." not in text.split("/")
        assert text in {"/", "/inbox", "/outbox", "/hub-public-key.asc"} or (
            text.count("/") == 2 and text.startswith(("/inbox/", "/outbox/"))
        ), (escape, text)


# -- 3. uploads -------------------------------------------------------------------------------
async def victim_inbox_grows(hub: HubUnderTest, before: set[str]) -> dict[str, bytes]:
    await hub.settled()
    after = await hub.inbox(VICTIM)
    return {n: c for n, c in after.items() if n not in before}


async def test_a_completed_upload_vanishes_and_is_routed(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient, work: Path
) -> None:
    name = "RCOU010234_00311_000101.edi"
    before = set(await hub.inbox(VICTIM))
    own_inbox = await names(mallory, "/inbox")
    sealed = hub.seal(ATTACKER, (SAMPLES / SAMPLE).read_bytes(), work)
    await put(mallory, f"/outbox/{name}.pgp", sealed)  # an added .pgp is not part of the name
    listed = await names(mallory, "/outbox")
    assert name not in listed and f"{name}.pgp" not in listed  # taken in at the close
    new = await victim_inbox_grows(hub, before)
    assert list(new) == [name]
    assert await names(mallory, "/inbox") == own_inbox  # no .log
    plain, _ = hub.open_delivery(VICTIM, new[name], work)
    assert plain == (SAMPLES / SAMPLE).read_bytes()


@pytest.mark.parametrize(
    ("suffix", "number", "posix"),
    [
        (".part", "102", False),
        (".tmp", "103", True),
        (".filepart", "104", False),
        (".a1b2c3d4.partial", "105", True),  # rclone 1.63 and later
    ],
)
async def test_a_temporary_upload_is_taken_in_at_the_rename(
    hub: HubUnderTest,
    mallory: asyncssh.SFTPClient,
    work: Path,
    suffix: str,
    number: str,
    posix: bool,
) -> None:
    name = f"RCOU010234_00311_000{number}.edi"
    before = set(await hub.inbox(VICTIM))
    jobs = await job_count(hub)
    sealed = hub.seal(ATTACKER, (SAMPLES / SAMPLE).read_bytes(), work)
    await put(mallory, f"/outbox/{name}{suffix}", sealed[:100])
    async with mallory.open(f"/outbox/{name}{suffix}", "wb") as f:  # a client may restart
        await f.write(sealed)
    assert f"{name}{suffix}" in await names(mallory, "/outbox")
    assert (await mallory.stat(f"/outbox/{name}{suffix}")).size == len(sealed)
    await hub.settled()
    assert await job_count(hub) == jobs  # not taken in yet
    assert set(await hub.inbox(VICTIM)) == before

    rename = mallory.posix_rename if posix else mallory.rename
    await rename(f"/outbox/{name}{suffix}", f"/outbox/{name}")
    listed = await names(mallory, "/outbox")
    assert f"{name}{suffix}" not in listed and name not in listed
    assert await job_count(hub) == jobs + 1
    new = await victim_inbox_grows(hub, before)
    assert list(new) == [name]
    plain, _ = hub.open_delivery(VICTIM, new[name], work)
    assert plain == (SAMPLES / SAMPLE).read_bytes()


async def test_an_upload_over_the_maximum_is_refused_by_the_sftp_layer(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient, untouched: None
) -> None:
    jobs = await job_count(hub)
    own_inbox = await names(mallory, "/inbox")
    outbox_dir = hub.settings.mailboxes / ATTACKER / "outbox"
    on_disk = {p.name for p in outbox_dir.iterdir()}

    # one write past the maximum (the handle is dead: its close fails alike)
    name = "RCOU010234_00311_000201.edi"
    with pytest.raises(asyncssh.SFTPFailure, match="maximum"):
        async with mallory.open(f"/outbox/{name}", "wb") as f:
            with pytest.raises(asyncssh.SFTPFailure, match="maximum"):
                await f.write(os.urandom(MAX_UPLOAD + 1))

    # writes up to the maximum are fine; the one that crosses it fails
    name2 = "RCOU010234_00311_000202.edi"
    with pytest.raises(asyncssh.SFTPFailure, match="maximum"):
        async with mallory.open(f"/outbox/{name2}", "wb") as f:
            await f.write(b"x" * (MAX_UPLOAD - 10), 0)
            with pytest.raises(asyncssh.SFTPFailure, match="maximum"):
                await f.write(b"y" * 11, MAX_UPLOAD - 10)

    # a sparse write far beyond the maximum, and a temporary name, are refused just the same
    with pytest.raises(asyncssh.SFTPFailure, match="maximum"):
        async with mallory.open(f"/outbox/{name}.part", "wb") as f:
            with pytest.raises(asyncssh.SFTPFailure, match="maximum"):
                await f.write(b"z", 1 << 40)

    await hub.settled()
    assert await job_count(hub) == jobs
    listed = await names(mallory, "/outbox")
    assert not {name, name2, f"{name}.part"} & listed
    assert {p.name for p in outbox_dir.iterdir()} == on_disk  # no leftover of the upload
    assert await names(mallory, "/inbox") == own_inbox  # no .log

    # exactly the maximum is accepted (a temporary name: kept, not processed)
    await put(mallory, f"/outbox/{name}.part", b"m" * MAX_UPLOAD)
    assert (await mallory.stat(f"/outbox/{name}.part")).size == MAX_UPLOAD
    await mallory.remove(f"/outbox/{name}.part")
    assert await job_count(hub) == jobs


async def test_an_upload_cut_off_by_the_connection_is_not_taken_in(
    hub: HubUnderTest, work: Path, untouched: None
) -> None:
    """Only the client's close acknowledges an upload: when the connection ends first, even
    with every byte written, nothing is taken in (the client will send it again). A
    temporary upload stays as far as it was written, for the client to resume it."""
    sealed = hub.seal(ATTACKER, (SAMPLES / SAMPLE).read_bytes(), work)
    part_name = "RCOU010234_00311_000302.edi.part"
    async with session(hub, ATTACKER) as (conn, sftp):
        own_inbox = await names(sftp, "/inbox")
        f = await sftp.open("/outbox/RCOU010234_00311_000301.edi", "wb")
        await f.write(sealed)
        part = await sftp.open(f"/outbox/{part_name}", "wb")
        await part.write(sealed)
        conn.abort()
    await no_upload_in_progress(hub, ATTACKER)
    await hub.settled()
    async with session(hub, ATTACKER) as (_, sftp):
        listed = await names(sftp, "/outbox")
        assert "RCOU010234_00311_000301.edi" not in listed and part_name in listed
        assert (await sftp.stat(f"/outbox/{part_name}")).size == len(sealed)
        assert await names(sftp, "/inbox") == own_inbox  # no .log
        await sftp.remove(f"/outbox/{part_name}")


# -- 4. login and sessions --------------------------------------------------------------------
async def test_wrong_password_and_unknown_user_are_refused(hub: HubUnderTest) -> None:
    password = hub.parties[ATTACKER].password
    await login_refused(hub, ATTACKER, password + "x")
    await login_refused(hub, ATTACKER, password[:-1])
    await login_refused(hub, ATTACKER, "")
    await login_refused(hub, ATTACKER, hub.parties[VICTIM].password)  # another's password
    await login_refused(hub, "COU099999", password)  # unknown
    await login_refused(hub, ATTACKER.lower(), password)
    await login_refused(hub, f"../{ATTACKER}", password)
    await login_refused(hub, "", "")


async def test_only_sftp_is_offered(hub: HubUnderTest) -> None:
    async with session(hub, ATTACKER) as (conn, sftp):
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.run("ls", check=True)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.run(check=True)  # a shell
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.run("scp -f /hub-public-key.asc", check=True)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.run(subsystem="shell", check=True)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("127.0.0.1", hub.port)  # direct-tcpip
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_unix_connection("/tmp/.X11-unix/X0")
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", hub.port)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_path("/tmp/bdi-forward.sock", "/tmp/x.sock")
        # the session itself is still fine
        assert await names(sftp, "/") == ROOT_NAMES


async def wait_closed(conn: asyncssh.SSHClientConnection) -> None:
    """Wait (bounded) for the server to close the connection."""
    async with asyncio.timeout(WAIT):
        await conn.wait_closed()


async def test_disabling_refuses_logins_and_closes_open_sessions(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient
) -> None:
    store = hub.server.hub.store
    password = hub.parties[DISABLED].password
    jobs = await job_count(hub)
    async with session(hub, DISABLED) as (conn, sftp):
        assert await names(sftp, "/") == ROOT_NAMES
        upload = await sftp.open("/outbox/RCIE000452_00311_000001.edi", "wb")
        await upload.write(b"an upload in progress when the participant is disabled")
        await store.update_participant(DISABLED, active=False)
        try:
            await wait_closed(conn)
            with pytest.raises((asyncssh.SFTPError, asyncssh.Error, ConnectionError)):
                await sftp.listdir("/")
            await login_refused(hub, DISABLED, password)
            # the upload it never closed is not taken in
            await no_upload_in_progress(hub, DISABLED)
            await hub.settled()
            assert await job_count(hub) == jobs
        finally:
            await store.update_participant(DISABLED, active=True)
    # enabled again: the same password opens a session; other sessions were never affected
    async with session(hub, DISABLED) as (_, sftp):
        assert await names(sftp, "/") == ROOT_NAMES
    assert await names(mallory, "/") == ROOT_NAMES


async def test_changed_credentials_close_open_sessions(
    hub: HubUnderTest, mallory: asyncssh.SFTPClient
) -> None:
    store = hub.server.hub.store
    row = await store.participant(ROTATED)
    assert row is not None
    async with session(hub, ROTATED) as (conn, sftp):
        assert await names(sftp, "/") == ROOT_NAMES
        await store.update_participant(ROTATED, credentials_version=row.credentials_version + 1)
        await wait_closed(conn)
        with pytest.raises((asyncssh.SFTPError, asyncssh.Error, ConnectionError)):
            await sftp.listdir("/")
    # a session opened with the new credentials survives an enforcement pass
    async with session(hub, ROTATED) as (conn, sftp):
        await hub.server.sessions.enforce(hub.server.hub)
        assert await names(sftp, "/") == ROOT_NAMES
        assert not conn.is_closed()
    assert await names(mallory, "/") == ROOT_NAMES


async def test_an_upload_left_open_by_a_crash_is_removed_at_the_next_start(
    tmp_path: Path, parties: dict[str, Party]
) -> None:
    data = tmp_path / "data"
    async with hub_running(data, parties) as hub:
        outbox = hub.settings.mailboxes / "COU010234" / "outbox"
    (outbox / ".up-0123456789abcdef").write_bytes(b"the first half of an upload")
    async with hub_running(data, parties):
        assert list(outbox.iterdir()) == []
