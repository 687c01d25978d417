"""The schema's revisions (Alembic): a new database, a database made before Alembic, and a
data folder made by the previous release, on the engine of the run (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pgcluster
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hubkit import run_bdi
from sqlmodel import SQLModel
from support import SAMPLES

from bdi.config import Settings, load_settings
from bdi.server import run_server
from bdi.store import schema
from bdi.store.journal import sync_engine
from bdi.store.models import Movement
from bdi.suivi import queries as q
from bdi.suivi.queries import Search

PREVIOUS_RELEASE = Path(__file__).parent / "data" / "previous-release.tar.gz"
MIGRATIONS = Path(schema.__file__).parent / "migrations" / "versions"


def settings_in(tmp_path: Path) -> Settings:
    return load_settings(None, data=tmp_path / "data", sftp_port=0, web_port=0)


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A database of the run's engine, empty."""
    (tmp_path / "data").mkdir()
    yield settings_in(tmp_path).db_url


def baseline() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline", MIGRATIONS / "0001_baseline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tables_and_columns(url: str) -> dict[str, set[str]]:
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            names = inspector.get_table_names()
            return {t: {c["name"] for c in inspector.get_columns(t)} for t in names}
    finally:
        engine.dispose()


def test_the_revisions_form_one_line() -> None:
    revisions = schema.history()
    ids = ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008"]
    assert [r.id for r in revisions] == ids
    assert [r.down for r in revisions] == [None, *ids[:-1]]
    assert schema.head() == "0008"


def test_a_new_database_at_head_is_what_the_models_say(url: str) -> None:
    """A model changed without its revision fails here."""
    schema.upgrade(url)
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    finally:
        engine.dispose()
    ours = [d for d in diffs if not _text_index(d)]
    assert ours == []


def _text_index(diff: object) -> bool:
    """The Suivi's text indexes live outside the models (FTS5 tables, pg_trgm indexes)."""
    kind, item = (diff[0], diff[1]) if isinstance(diff, tuple) else (None, None)
    name = getattr(item, "name", "") or ""
    return kind in {"remove_table", "remove_index"} and (
        name.startswith("suivi_fts") or name.endswith("_trgm")
    )


def test_a_database_made_before_alembic_is_adopted(url: str) -> None:
    """An earlier release's tables, without a table and a column added since: both are
    added, the rows kept, and the database then follows the revisions."""
    old = baseline().META
    old.remove(old.tables["ban"])
    schema.ensure_database(url)
    engine = sync_engine(url)
    try:
        with engine.begin() as conn:
            old.create_all(conn)
            conn.execute(sa.text("ALTER TABLE job DROP COLUMN error"))
            conn.execute(sa.text(
                "INSERT INTO participant (id, name, email, role, pgp_fingerprint, active, "
                "credentials_version, created_at) VALUES ('COU010234', 'Courtier', '', "
                "'broker', 'F1', true, 0, :t)"), {"t": datetime.now(UTC)})  # fmt: skip
    finally:
        engine.dispose()
    assert schema.current(url) is None
    schema.upgrade(url)
    found = tables_and_columns(url)
    assert "ban" in found and "error" in found["job"]
    assert schema.current(url) == schema.head()
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT id FROM participant")).scalars().all() == [
                "COU010234"
            ]
    finally:
        engine.dispose()


async def test_bdi_db_shows_and_upgrades_and_init_upgrades(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await run_bdi("init", "--data", str(data))
    head = schema.head()
    assert (
        await run_bdi("db", "current", "--data", str(data))
    ).stdout.strip() == f"{head} (newest)"
    url = settings_in(tmp_path).db_url
    await asyncio.to_thread(schema_downgrade, url, "0001")
    behind = (await run_bdi("db", "current", "--data", str(data))).stdout
    assert behind.startswith(f"0001 (newest is {head}: run `bdi db upgrade`)")
    await run_bdi("init", "--data", str(data))  # an initialised folder: brought to head
    assert schema.current(url) == head
    await asyncio.to_thread(schema_downgrade, url, "0001")
    upgraded = await run_bdi("db", "upgrade", "--data", str(data))
    assert upgraded.stdout.strip() == f"database at revision {head}"
    history = (await run_bdi("db", "history")).stdout.splitlines()
    assert [line.split()[0] for line in history] == [r.id for r in schema.history()]


def schema_downgrade(url: str, revision: str) -> None:
    from alembic import command

    engine = sync_engine(url)
    try:
        with engine.begin() as conn:
            command.downgrade(schema._config(conn), revision)
    finally:
        engine.dispose()


@pytest.mark.skipif(not pgcluster.wanted(), reason="PostgreSQL only")
async def test_nodes_starting_together_upgrade_one_after_the_other(url: str) -> None:
    """Several nodes upgrading one new database at once: the advisory lock makes one do
    the work, the others find it done."""
    await asyncio.gather(*(asyncio.to_thread(schema.upgrade, url) for _ in range(4)))
    assert schema.current(url) == schema.head()


@pytest.mark.sqlite_only  # the previous release's data folder is a SQLite one
async def test_a_data_folder_of_the_previous_release_is_served(tmp_path: Path) -> None:
    """Made by the previous release's `bdi demo` (its samples sent with its kit): `bdi
    serve` upgrades it; its movements stay searchable and a new upload is delivered."""
    with tarfile.open(PREVIOUS_RELEASE) as tar:
        tar.extractall(tmp_path, filter="data")
    settings = load_settings(None, data=tmp_path / "bdi-data", sftp_port=0, web_port=0)
    assert schema.current(settings.db_url) is None
    _older_insured_name(settings.db_url)
    async with run_server(settings) as server:
        assert schema.current(settings.db_url) == schema.head()
        store = server.hub.store
        assert await _movements(store) == 22
        assert _insured_name(settings.db_url) == "SOCIETE MARITIME"  # folded again
        search = Search.of(server.hub.layout, "allocations", {"insured_name": "ârmement"})
        assert [hit async for hit in q.search_rows(store, search, "GIE000001")] != []
        older = _grids(settings.db_url, "IS NULL")  # their grids' JSON, their office codes
        assert older and all(codes == _codes(grid) for grid, codes in older)
        await _send(tmp_path, server.sftp_port, server.web_port)
        assert await _movements(store) == 23
        newer = _grids(settings.db_url, "IS NOT NULL")  # a grid read from the content
        assert newer and all(grid == "[]" and codes.strip() for grid, codes in newer)


def _grids(url: str, content_start: str) -> list[tuple[str, str]]:
    """(grid_json, office_codes) of the répartitions' rows whose `content_start` is as said."""
    query = (
        "SELECT grid_json, office_codes FROM flowoccurrence "
        f"WHERE layout = 'allocation' AND content_start {content_start}"
    )
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            return [(str(grid), str(codes)) for grid, codes in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def _codes(grid_json: str) -> str:
    codes = [line["office_code"].strip() for line in json.loads(grid_json)]
    return f" {' '.join(codes)} " if codes else ""


def _older_insured_name(url: str) -> None:
    """The previous release upper-cased insured names only: one with its accents."""
    engine = sync_engine(url)
    try:
        with engine.begin() as conn:
            older = "UPDATE flowoccurrence SET insured_folded = 'SOCIÉTÉ MARITIME' WHERE id = 1"
            conn.execute(sa.text(older))
    finally:
        engine.dispose()


def _insured_name(url: str) -> str:
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            query = "SELECT insured_folded FROM flowoccurrence WHERE id = 1"
            return str(conn.execute(sa.text(query)).scalar_one())
    finally:
        engine.dispose()


async def _movements(store: object) -> int:
    from bdi.store.repo import Store

    assert isinstance(store, Store)
    async with store.engine.connect() as conn:
        found = await conn.execute(sa.select(sa.func.count()).select_from(Movement))
        return int(found.scalar_one())


async def _send(tmp: Path, port: int, web_port: int) -> None:
    kit = tmp / "demo" / "COU010234"
    known = kit / "known_hosts"  # the hub's key as the kit first saw it, on this port now
    known.write_text(known.read_text().replace("[127.0.0.1]:24022", f"[127.0.0.1]:{port}"))
    await run_bdi(
        "kit", "send", str(SAMPLES / "RCOU010234_00311_000001.edi"), "--home", str(kit),
        "--user", "COU010234", "--password-file", str(kit / "password"), "--host",
        "127.0.0.1", "--port", str(port), "--wait", "--web-port", str(web_port),
    )  # fmt: skip
