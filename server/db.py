# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Database engine and the per-request session."""

from __future__ import annotations

import os

from flask import current_app, g
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

from .models import Base

DEFAULT_DATABASE = "trustpoint.db"


def database_url(data_dir, url=None):
    """The configured URL, or SQLite in the data directory."""
    return url or "sqlite:///" + os.path.join(os.path.abspath(data_dir), DEFAULT_DATABASE)


def make_engine(url):
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            # Let SQLAlchemy's "begin" below decide how transactions start.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=15000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            # Write transactions take the lock up front: a deferred transaction that reads, then
            # writes after another worker committed, fails at once ("database is locked") instead
            # of waiting. Reads stay deferred and never block anyone.
            write = connection.get_execution_options().get(WRITE_OPTION)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


WRITE_OPTION = "trustpoint_write"


def begin_write(db_session):
    """End the session's read transaction and start a write transaction.

    Call it after the expensive work of a request (key generation, MAC checks, signing), right
    before the writes, so that SQLite's write lock is held for milliseconds. There must be no
    pending changes yet.
    """
    if db_session.in_transaction():
        if db_session.new or db_session.dirty or db_session.deleted:
            raise RuntimeError("begin_write() after changes: they would commit in the read transaction")
        db_session.commit()
    db_session.connection(execution_options={WRITE_OPTION: True})


def create_schema(engine):
    Base.metadata.create_all(engine)


def session():
    """The request's session, opened on first use and closed when the request ends."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["trustpoint"].sessions()
    return g.db_session


def close_session(_exc=None):
    db_session = g.pop("db_session", None)
    if db_session is not None:
        db_session.rollback()
        db_session.close()


def session_factory(engine):
    return sessionmaker(engine, expire_on_commit=False)
