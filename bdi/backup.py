"""`bdi backup DEST` and `bdi restore SRC --data DIR`: a copy of a data folder taken while the
hub serves (uploads go on), and a data folder rebuilt from it.

The rule: **the database snapshot is the backup's moment T, and the copy holds exactly the
files that snapshot knows, each as it was at T.**

1. Every file of the spool and of the inbox folders is first *held*: hard-linked into
   `<data>/backup-hold/` (no data copied), so that a job ending (its upload deleted) or a
   recipient collecting a file cannot take it away while the backup runs.
2. A read transaction on the database fixes T. From it come the spool files of the jobs
   unfinished at T, the content files of its movements, and, for each file of an inbox
   folder, whether its output is delivered at T. Files created between 1 and T are held
   now; if a spool or content file T needs is already gone (its job ended, or a purge ran,
   just after T), the snapshot is taken again (a file still missing after SNAPSHOT_TRIES
   was missing from the data folder itself: it is named in the report).
3. The online backup API copies the database as of T, in that same transaction.
4. The held files T knows are copied: a file placed after T (its output not delivered at T)
   is left out, as the restored hub runs or finishes that job again and would otherwise
   deliver it twice. Then the hub's keys (the OpenPGP home, copied after T, has every key T
   refers to), the archive, and last a manifest: a folder without it is not a backup.

So the restore has nothing to reconcile: it copies the backup into a new folder, checks
every file of the manifest and the database, and the restored hub resumes the jobs
unfinished at T, as after a crash at T. Uploads acknowledged after T are not in the backup.
Only the embedded SQLite database is handled here (PostgreSQL has its own tools).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import make_url

from bdi.config import Settings
from bdi.datadir import fingerprint_file, hub_key_file, token_hash_file
from bdi.mailbox.storage import INBOX, OUTBOX, STAGING, fsync_dir

log = structlog.get_logger("bdi.backup")
MANIFEST, DATABASE, HOLD, FORMAT = "backup.json", "bdi.sqlite3", "backup-hold", 1
SNAPSHOT_TRIES = 20
PRIVATE = 0o600


class BackupError(Exception):
    """A backup or restore refused or failed; one line."""


@dataclass(slots=True)
class Report:
    folder: str
    taken_at: str
    hub_fingerprint: str
    files: dict[str, int] = field(default_factory=dict)  # path in the backup -> size
    counts: dict[str, int] = field(default_factory=dict)
    snapshots: int = 1  # taken before one held everything it needed
    missing: list[str] = field(default_factory=list)  # needed by T, absent from the folder

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = len(self.files)
        out["bytes"] = sum(self.files.values())
        return out


@dataclass(slots=True)
class _Known:
    """What the snapshot refers to on disk."""

    spool: set[str]
    contents: set[str]
    inbox: set[tuple[str, str]]  # (participant, name) delivered at T, in an inbox folder
    counts: dict[str, int]


# --- backup --------------------------------------------------------------------------


def backup(settings: Settings, dest: Path) -> Report:
    """Copy the data folder into `dest` (new or empty) while the hub may be serving."""
    database = sqlite_path(settings)
    _refuse_non_empty(dest)
    if settings.data.resolve() in dest.resolve().parents:
        raise BackupError(f"{dest} is inside the data folder")
    with _lock(settings.data / "backup.lock"), _Hold(settings) as hold:
        hold.everything()
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout=30000")
            known, tries, missing = _snapshot(db, hold)
            taken_at = datetime.now(UTC).isoformat()
            _copy_database(db, dest / DATABASE)
            db.execute("ROLLBACK")
        report = Report(str(dest), taken_at, fingerprint_file(settings).read_text().strip(),
                        counts=known.counts, snapshots=tries, missing=missing)  # fmt: skip
        report.files[DATABASE] = (dest / DATABASE).stat().st_size
        hold.copy_known(known, dest, report.files)
    _copy_keys(settings, dest, report.files)
    _write_manifest(dest, report)
    log.info("backup.done", folder=str(dest), files=len(report.files),
             bytes=sum(report.files.values()), snapshots=tries, **known.counts)  # fmt: skip
    return report


def sqlite_path(settings: Settings) -> Path:
    url = make_url(settings.db_url)
    if not url.drivername.startswith("sqlite") or not url.database:
        raise BackupError("only the embedded SQLite database is backed up here; "
                          "back up PostgreSQL with its own tools")  # fmt: skip
    return Path(url.database)


def _refuse_non_empty(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BackupError(f"{folder} is not an empty folder")


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One backup of a data folder at a time (they share the hold)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError("another backup of this data folder is running") from None
        yield
    finally:
        os.close(fd)


def _snapshot(db: sqlite3.Connection, hold: _Hold) -> tuple[_Known, int, list[str]]:
    """Open the read transaction that is T, once every file it needs is held."""
    attempt = 1
    while True:
        db.execute("BEGIN")
        known = _read_known(db, hold.inbox_names())
        missing = hold.complete(known)
        if not missing or attempt == SNAPSHOT_TRIES:
            if missing:
                log.warning("backup.missing", files=missing)
            return known, attempt, missing
        db.execute("ROLLBACK")  # a job ended just after T: take T again
        attempt += 1


def _read_known(db: sqlite3.Connection, present: dict[str, set[str]]) -> _Known:
    """Read from the snapshot (the first read fixes it)."""
    spool = {r[0] for r in db.execute(
        "SELECT spool_name FROM job WHERE state != 'done' AND data IS NULL")}  # fmt: skip
    contents = {r[0] for r in db.execute(
        "SELECT DISTINCT content_path FROM movement WHERE content_path != ''")}  # fmt: skip
    inbox = {(p, n) for p, names in present.items() for n in _delivered(db, p, names)}
    counts = {
        "movements": _count(db, "movement"),
        "stored_inbox_files": _count(db, "inboxfile"),
        "inbox_files": len(inbox),
        "unfinished_jobs": int(db.execute(
            "SELECT count(*) FROM job WHERE state != 'done'").fetchone()[0]),
    }  # fmt: skip
    return _Known(spool, contents, inbox, counts)


def _count(db: sqlite3.Connection, table: str) -> int:
    return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _delivered(db: sqlite3.Connection, participant: str, names: set[str]) -> set[str]:
    """Those of `names` whose latest output for the participant is delivered at T (a name is
    given again only once its file is gone: the file under a name is its latest output's)."""
    found: set[str] = set()
    listed = sorted(names)
    for start in range(0, len(listed), 500):
        chunk = listed[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT name, delivered_at FROM output WHERE participant_id = ? "
            f"AND name IN ({marks}) ORDER BY id", [participant, *chunk],
        )  # fmt: skip
        latest = {name: delivered for name, delivered in rows}
        found.update(name for name, delivered in latest.items() if delivered is not None)
    return found


def _copy_database(db: sqlite3.Connection, target: Path) -> None:
    """The snapshot, through SQLite's online backup API, as one self-contained file."""
    with contextlib.closing(sqlite3.connect(target)) as out:
        db.backup(out)
        out.execute("PRAGMA journal_mode=DELETE")
    target.chmod(PRIVATE)
    _fsync(target)


class _Hold:
    """Hard links to the files a backup may need (`<data>/backup-hold/`), gone at its end."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.root = settings, settings.data / HOLD
        self.spool, self.contents = self.root / "spool", self.root / "contents"
        self.inbox = self.root / "mailboxes"

    def __enter__(self) -> _Hold:
        shutil.rmtree(self.root, ignore_errors=True)  # left by a backup that crashed
        for folder in (self.spool, self.contents, self.inbox):
            folder.mkdir(parents=True, mode=0o700)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def everything(self) -> None:
        """Step 1: hold the whole spool and every inbox folder's file."""
        for path in _files(self.settings.spool):
            _hold(path, self.spool / path.name)
        for participant, name in _inbox_files(self.settings.mailboxes):
            self._hold_inbox(participant, name)

    def _hold_inbox(self, participant: str, name: str) -> bool:
        folder = self.inbox / participant
        folder.mkdir(exist_ok=True, mode=0o700)
        source = self.settings.mailboxes / participant / INBOX / name
        return _hold(source, folder / name)

    def inbox_names(self) -> dict[str, set[str]]:
        """Inbox files held, and those placed since: candidates the snapshot decides on."""
        names: dict[str, set[str]] = {}
        for participant, name in _inbox_files(self.inbox, inner=False):
            names.setdefault(participant, set()).add(name)
        for participant, name in _inbox_files(self.settings.mailboxes):
            names.setdefault(participant, set()).add(name)
        return names

    def complete(self, known: _Known) -> list[str]:
        """Hold what T needs and is not held yet; the needed files already gone."""
        missing = []
        for folder, source, names in (
            ("spool", self.settings.spool, known.spool),
            ("contents", self.settings.data / "contents", known.contents),
        ):
            held = self.root / folder
            for name in sorted(names):
                if not (held / name).exists() and not _hold(source / name, held / name):
                    missing.append(f"{folder}/{name}")
        for participant, name in known.inbox:
            if not (self.inbox / participant / name).exists():
                self._hold_inbox(participant, name)  # collected meanwhile: after T
        return missing

    def copy_known(self, known: _Known, dest: Path, files: dict[str, int]) -> None:
        """Step 4: the held files the snapshot knows, into the backup."""
        for folder, names in (("spool", known.spool), ("contents", known.contents)):
            for name in names:
                if (self.root / folder / name).exists():
                    _copy(self.root / folder / name, dest, f"{folder}/{name}", files)
        for participant, name in known.inbox:
            held = self.inbox / participant / name
            if held.exists():
                _copy(held, dest, f"mailboxes/{participant}/{INBOX}/{name}", files)


def _files(folder: Path) -> list[Path]:
    """Regular files of a folder, hidden ones (uploads being written) left out."""
    with contextlib.suppress(FileNotFoundError):
        return [p for p in folder.iterdir() if not p.name.startswith(".") and _regular(p)]
    return []


def _regular(path: Path) -> bool:
    try:
        return path.is_file() and not path.is_symlink()
    except OSError:
        return False


def _inbox_files(root: Path, inner: bool = True) -> list[tuple[str, str]]:
    """(participant, name) of the files under root/<participant>/inbox/ (or root/<participant>/)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for folder in root.iterdir():
            if folder.is_dir() and not folder.is_symlink():
                inbox = folder / INBOX if inner else folder
                found += [(folder.name, p.name) for p in _files(inbox)]
    return found


def _hold(source: Path, link: Path) -> bool:
    """Hard-link `source` (copy it where links are not possible); False if it is gone."""
    try:
        os.link(source, link)
    except FileExistsError:
        return True
    except FileNotFoundError:
        return False
    except OSError:  # another file system, or no hard links there
        try:
            shutil.copy2(source, link)
        except FileNotFoundError:
            return False
    return True


def _copy(source: Path, dest: Path, relative: str, files: dict[str, int]) -> None:
    target = dest / relative
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(source, target)
    _fsync(target)
    files[relative] = target.stat().st_size


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _copy_keys(settings: Settings, dest: Path, files: dict[str, int]) -> None:
    """After T: the key files, the OpenPGP home (its sockets and locks left out), the archive."""
    for path in key_files(settings):
        if path.is_file():
            _copy(path, dest, path.name, files)
    for folder in ("gnupg", "archive"):
        root = settings.data / folder
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if _regular(path) and not _is_transient(path.name):
                _copy(path, dest, str(path.relative_to(settings.data)), files)


def key_files(settings: Settings) -> list[Path]:
    """The data folder's files besides the database and the folders (`bdi/datadir.py`)."""
    return [fingerprint_file(settings), hub_key_file(settings), token_hash_file(settings),
            settings.data / "web-secret", settings.host_key]  # fmt: skip


def _is_transient(name: str) -> bool:
    return name.startswith(("S.", ".#lk")) or name.endswith((".lock", ".tmp"))


def _write_manifest(dest: Path, report: Report) -> None:
    manifest = {"format": FORMAT, **asdict(report)}
    tmp = dest / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    _fsync(tmp)
    tmp.replace(dest / MANIFEST)
    fsync_dir(dest)


# --- restore -------------------------------------------------------------------------


def restore(source: Path, data: Path) -> Report:
    """Rebuild the data folder `data` (new or empty) from the backup `source`."""
    report = read_manifest(source)
    _refuse_non_empty(data)
    work = data.with_name(f".{data.name}.restoring")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o700)
    try:
        for relative, size in report.files.items():
            _restore_file(source, work, relative, size)
        _check_database(work / DATABASE)
        _make_folders(work)
        if data.exists():
            data.rmdir()
        work.replace(data)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    fsync_dir(data.parent)
    log.info("restore.done", source=str(source), folder=str(data), files=len(report.files))
    report.folder = str(data)
    return report


def read_manifest(source: Path) -> Report:
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} is not a complete backup (no readable {MANIFEST})") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source}: unknown backup format {manifest.get('format')!r}")
    return Report(manifest["folder"], manifest["taken_at"], manifest["hub_fingerprint"],
                  manifest["files"], manifest["counts"], manifest["snapshots"],
                  manifest.get("missing", []))  # fmt: skip


def _restore_file(source: Path, work: Path, relative: str, size: int) -> None:
    path = (source / relative).resolve()
    if source.resolve() not in path.parents:
        raise BackupError(f"{relative}: outside the backup")
    if not path.is_file() or path.stat().st_size != size:
        raise BackupError(f"{relative}: missing or of the wrong size in {source}")
    target = work / relative
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(path, target)
    target.chmod(PRIVATE)
    _fsync(target)


def _check_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
    if verdict != "ok":
        raise BackupError(f"the database of the backup is damaged: {verdict}")


def _make_folders(work: Path) -> None:
    """The folders a data folder has (its participants' mailboxes included), owner-only."""
    for name in ("spool", "contents", "mailboxes", "gnupg"):
        (work / name).mkdir(exist_ok=True, mode=0o700)
    (work / "gnupg").chmod(0o700)
    with contextlib.closing(sqlite3.connect(work / DATABASE)) as db:
        participants = [r[0] for r in db.execute("SELECT id FROM participant")]
    for participant in participants:
        for sub in (INBOX, OUTBOX, STAGING):
            (work / "mailboxes" / participant / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
