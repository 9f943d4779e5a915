# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Schema migrations (Alembic): bring a database to the schema this version of the service needs.

`init` and `migrate` call upgrade(); `run` calls check() and refuses a database that is behind or ahead.
A database created before migrations existed (release 0.1.0: tables, no alembic_version) is stamped with
the baseline revision, whose schema it has, and then upgraded like any other.
"""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from .db import POSTGRESQL_WRITE_LOCK_KEY, WRITE_OPTION

BASELINE = "0001"
MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


class SchemaError(Exception):
    """The database's schema is not the one this version needs; the message says what to do."""


def _config(connection=None):
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = connection
    return config


def head():
    """The newest revision this version knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def _known(revision):
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except Exception:  # alembic raises CommandError/ResolutionError for an unknown id
        return False


def current(connection):
    """The database's revision; BASELINE for a database from before migrations; None when it is empty."""
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision is None and inspect(connection).has_table("device"):
        return BASELINE
    return revision


def upgrade(engine):
    """Migrate the database to head(); returns (revision before, revision after).

    Writers take turns with the service's own: SQLite's write lock (BEGIN IMMEDIATE), or PostgreSQL's
    advisory write lock, which also keeps two instances that start together from migrating twice.
    """
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # Batch migrations copy tables; foreign keys are checked once at the end instead. The pragma is a
            # no-op inside a transaction: it goes to the driver's connection, before SQLAlchemy begins one.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        connection = connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            if not sqlite:
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%d)" % POSTGRESQL_WRITE_LOCK_KEY)
            before = current(connection)
            if before is not None and not _known(before):
                raise SchemaError(
                    "the database is at schema revision %s, which this version of trustpoint-server does not know "
                    "(it was migrated by a newer version); run that version" % before
                )
            config = _config(connection)
            if before == BASELINE and MigrationContext.configure(connection).get_current_revision() is None:
                command.stamp(config, BASELINE)
            command.upgrade(config, "head")
            if sqlite:
                problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise SchemaError("the migration left rows whose foreign keys fail: %r" % problems[:5])
            after = current(connection)
        if sqlite:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
    return before, after


def check(engine):
    """Raise SchemaError unless the database is at head()."""
    with engine.connect() as connection:
        revision = current(connection)
    wanted = head()
    if revision == wanted:
        return
    if revision is None:
        raise SchemaError("the database has no schema: run `trustpoint-server init` first")
    if not _known(revision):
        raise SchemaError(
            "the database is at schema revision %s, which this version does not know (a newer version "
            "migrated it); run that version" % revision
        )
    raise SchemaError(
        "the database is at schema revision %s, this version needs %s: run `trustpoint-server migrate` "
        "(back up the data directory and the database first)" % (revision, wanted)
    )
