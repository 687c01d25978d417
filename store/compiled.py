"""Core statements compiled once per connection and run on its DBAPI cursor.

The pipeline's statements are few, fixed and run for every upload; SQLAlchemy's execution
path around each (cache lookup, execution context, result wrapping) cost about 0.1 ms of
CPU, several times the work of SQLite itself, and it held the interpreter lock that the SSH
sessions and the jobs need. Here SQLAlchemy still writes the SQL for the connection's
dialect and converts the parameters with the dialect's own bind processors, so the rows
stored are those of `Connection.execute`; only its per-call machinery is skipped.
Statements with expanding parameters (IN lists) are not supported: run them through
SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert
from sqlalchemy.engine.interfaces import DBAPICursor, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

Processor = Callable[[Any], Any]
_PLANS = "bdi.compiled"  # key of the plan cache in Connection.info (per DBAPI connection)


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    names: tuple[str, ...]  # every parameter, in order for a positional paramstyle
    positional: bool
    processors: dict[str, Processor]
    fixed: dict[str, Any]  # values given in the statement itself (`.values(state="done")`)

    def params(self, values: Mapping[str, Any]) -> Any:
        """The DBAPI parameters: a tuple (positional paramstyle) or a dict."""
        if self.positional:
            return tuple(self._value(name, values) for name in self.names)
        return {name: self._value(name, values) for name in self.names}

    def _value(self, name: str, values: Mapping[str, Any]) -> Any:
        value = values[name] if name in values else self.fixed[name]
        proc = self.processors.get(name)
        return proc(value) if proc is not None else value


def _compile(statement: ClauseElement, dialect: Dialect) -> _Plan:
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    processors: dict[str, Processor] = {}
    fixed: dict[str, Any] = {}
    for name, bind in compiled.binds.items():
        if bind.expanding:
            raise ValueError("expanding parameters are not supported here")
        proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if proc is not None:
            processors[name] = proc
        if not bind.required:
            fixed[name] = bind.effective_value
    positional = bool(compiled.positional)
    names = tuple(compiled.positiontup or ()) if positional else tuple(compiled.binds)
    return _Plan(str(compiled), names, positional, processors, fixed)


def _plan(conn: Connection, key: object, build: Callable[[], ClauseElement]) -> _Plan:
    plans: dict[object, _Plan] = conn.info.setdefault(_PLANS, {})
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _compile(build(), conn.dialect)
    return plan


def _run(conn: Connection, plan: _Plan, params: Any, many: bool = False) -> DBAPICursor:
    """Errors are raised as SQLAlchemy raises them (IntegrityError...), whoever runs the SQL."""
    cursor = conn.connection.cursor()
    dbapi = conn.dialect.loaded_dbapi
    try:
        if many:
            cursor.executemany(plan.sql, params)
        else:
            cursor.execute(plan.sql, params)
    except dbapi.Error as exc:
        raise DBAPIError.instance(plan.sql, params, exc, dbapi.Error) from exc
    return cursor


def execute(
    conn: Connection, statement: ClauseElement, values: Mapping[str, Any] | None = None
) -> DBAPICursor:
    """Run `statement` (built once, at import) with `values` for its bound parameters."""
    plan = _plan(conn, statement, lambda: statement)
    return _run(conn, plan, plan.params(values or {}))


def insert_row(conn: Connection, table: Table, row: Mapping[str, Any]) -> int:
    """Insert one row; return its new `id`."""
    keys = tuple(row)
    plan = _plan(conn, (table.name, keys, "id"), lambda: _insert(table, keys).returning(table.c.id))
    (found,) = _run(conn, plan, plan.params(row)).fetchall()  # all: the statement completes
    return int(found[0])


def insert_rows(conn: Connection, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert rows that all have the same keys."""
    rows = list(rows)
    if not rows:
        return
    keys = tuple(rows[0])
    plan = _plan(conn, (table.name, keys), lambda: _insert(table, keys))
    _run(conn, plan, [plan.params(row) for row in rows], many=True)


def _insert(table: Table, keys: tuple[str, ...]) -> Any:
    return insert(table).values({key: bindparam(key, type_=table.c[key].type) for key in keys})
