# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The enrollment paths' statements, run on the database driver's cursor (issue 16).

SQLAlchemy Core costs 15-50 us of CPU per statement around the driver's own 3-10 us (building the execution
context, processing parameters and result rows through its generic machinery); an enrollment sends about ten.
A Statement is a Core statement compiled once per database driver; running it (rows(), one(), first(), write())
puts the parameters through the column types' bind processors, executes the SQL on the DB-API cursor of the
session's connection (in the session's transaction) and puts the rows through the result processors. The SQL,
and so its query plan (tests/unit/test_query_plans.py), is the one SQLAlchemy would send; engine events see it
(before_cursor_execute), driver errors become SQLAlchemy's (IntegrityError and the like), as with Core.

Not supported, refused when first run: IN lists ("expanding" parameters, rendered anew per execution) and
parameters whose value is computed at execution time. Column defaults are not applied: an INSERT or UPDATE
(insert() here) must give a value for every column that has a Python-side default.
"""

from __future__ import annotations

import collections
import threading

from sqlalchemy import bindparam, exc

_REQUIRED = object()


class _Compiled:
    """A statement's SQL for one dialect, with what turns parameters and rows into the driver's and back."""

    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.positional = compiled.positional
        names = compiled.positiontup if compiled.positional else list(compiled.binds)
        # Columns whose Python-side default Core would compute per execution: the caller must give them.
        prefetched = {column.key for column in (*compiled.insert_prefetch, *compiled.update_prefetch)}
        self.binds = []  # (name in the SQL, parameter key, bind processor or None, default)
        for name in names:
            bind = compiled.binds[name]
            if bind.expanding or bind.callable is not None:
                raise ValueError("sql.Statement cannot run %s: parameter %s is expanded or computed" % (self.sql, name))
            default = _REQUIRED if bind.required or bind.key in prefetched else bind.value
            self.binds.append((name, bind.key, bind.type.dialect_impl(dialect).bind_processor(dialect), default))
        columns = list(statement.exported_columns)
        self.processors = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        if not any(self.processors):
            self.processors = None
        self.row = collections.namedtuple("Row", [column.key for column in columns], rename=True) if columns else None


class Statement:
    """A Core statement (select, insert, update, delete; RETURNING for rows from a write), compiled on first use
    per database driver. Build it once, at import."""

    def __init__(self, statement):
        self.statement = statement
        self._compiled = {}
        self._lock = threading.Lock()

    def compiled(self, dialect):
        # Per driver and parameter style as well: psycopg and pg8000 are both "postgresql" and format differently.
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.setdefault(key, _Compiled(self.statement, dialect))
        return compiled


def insert(table, names, returning=()):
    """A Statement that inserts a row of table with a parameter per column of names (each named as its column)."""
    values = {name: bindparam(name, type_=table.c[name].type) for name in names}
    statement = table.insert().values(values)
    return Statement(statement.returning(*returning) if returning else statement)


def _execute(db, statement, params):
    connection = db.connection()
    compiled = statement.compiled(connection.dialect)
    values = []
    for _name, key, processor, default in compiled.binds:
        value = params.get(key, default)
        if value is _REQUIRED:
            raise KeyError("sql.Statement %s: no value for parameter %r" % (compiled.sql, key))
        values.append(processor(value) if processor is not None else value)
    driver_params = values if compiled.positional else {bind[0]: value for bind, value in zip(compiled.binds, values)}
    cursor = connection.connection.driver_connection.cursor()
    connection.dispatch.before_cursor_execute(connection, cursor, compiled.sql, driver_params, None, False)
    try:
        cursor.execute(compiled.sql, driver_params)
    except connection.dialect.loaded_dbapi.Error as error:
        cursor.close()
        raise exc.DBAPIError.instance(
            compiled.sql, driver_params, error, connection.dialect.loaded_dbapi.Error, dialect=connection.dialect
        ) from error
    return compiled, cursor


def rows(db, statement, **params):
    """The rows (named tuples) statement returns with params, run in db's (a Session's) transaction."""
    compiled, cursor = _execute(db, statement, params)
    try:
        fetched = cursor.fetchall()
    finally:
        cursor.close()
    make, processors = compiled.row, compiled.processors
    if processors is None:
        return [make(*row) for row in fetched]
    return [make(*[value if f is None else f(value) for f, value in zip(processors, row)]) for row in fetched]


def one(db, statement, **params):
    """The one row statement returns; NoResultFound or MultipleResultsFound otherwise."""
    found = rows(db, statement, **params)
    if len(found) != 1:
        raise (exc.NoResultFound if not found else exc.MultipleResultsFound)("%d rows, one expected" % len(found))
    return found[0]


def first(db, statement, **params):
    """The first row statement returns, or None."""
    found = rows(db, statement, **params)
    return found[0] if found else None


def write(db, statement, **params):
    """Run statement (no RETURNING) with params; the number of rows it changed."""
    _compiled, cursor = _execute(db, statement, params)
    try:
        return cursor.rowcount
    finally:
        cursor.close()
