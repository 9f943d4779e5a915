# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The TLS client CA bundle's generation on SQLite (issue 16): every change of the bundle moves it, whoever
writes; a handshake reads the bundle only when it moved; a read that fails is retried by the next handshake.
(tests/integration/test_postgresql.py: the same changes on PostgreSQL; test_tls.py: ServerContexts under a
real server.)"""

from __future__ import annotations

import sqlite3

import pytest
from hot_paths import sqlite_app
from sqlalchemy import create_engine, inspect
from sqlalchemy.orm import Session
from tls_bundle_changes import add_truststore, ca_pem, names, run_bundle_changes, server_contexts
from trustpoint_server.runtime import tls
from trustpoint_server.storage import triggers
from trustpoint_server.storage.models import Base, Truststore


@pytest.fixture
def app(tmp_path):
    with sqlite_app(tmp_path) as app:
        yield app


@pytest.fixture
def bundle_reads(monkeypatch):
    """One entry per read of the whole bundle from the database."""
    reads = []
    read = tls.client_ca_bundle
    monkeypatch.setattr(tls, "client_ca_bundle", lambda connection: reads.append(1) or read(connection))
    return reads


def sqlite_triggers(connection):
    return sorted(row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"))


def test_every_change_of_the_bundle_moves_the_generation(app):
    def other_connection_sql(statement, parameters=()):
        # Another process: its own connection, foreign keys on as the server has them (the domain's CAs cascade).
        connection = sqlite3.connect(app.database)
        try:
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute(statement, parameters)
            connection.commit()
        finally:
            connection.close()

    seen = run_bundle_changes(app, other_connection_sql)
    assert len(seen) == 14, seen


def test_a_handshake_reads_the_bundle_only_when_the_generation_moved(app, bundle_reads):
    reads = bundle_reads
    contexts = server_contexts(app)
    first = contexts.current()
    assert len(reads) == 1
    for _round in range(50):
        assert contexts.current() is first
    assert len(reads) == 1, "the bundle was read again without a change"
    add_truststore(app, "anchors", ca_pem("Anchor"))
    second = contexts.current()
    assert len(reads) == 2 and second is not first and "Anchor" in names(second)


def test_a_change_outside_the_bundle_keeps_the_context_and_is_read_once(app, bundle_reads):
    """A devownerid truststore moves the generation but is not in the bundle: one read finds the bundle equal, the
    context stays, and the handshakes after it read nothing (the generation is remembered)."""
    reads = bundle_reads
    contexts = server_contexts(app)
    first = contexts.current()
    add_truststore(app, "owners", ca_pem("Owner"), usage="devownerid")
    for _round in range(20):
        assert contexts.current() is first
    assert len(reads) == 2, "the equal bundle was read %d times, not once" % (len(reads) - 1)


def test_a_failed_bundle_read_is_retried_by_the_next_handshake(app, monkeypatch):
    """The generation moved, the bundle could not be read: the last context stays, and the new generation is
    not taken for the old bundle (that would keep the old bundle until the next change)."""
    contexts = server_contexts(app)
    first = contexts.current()
    add_truststore(app, "anchors", ca_pem("Anchor"))
    read = tls.client_ca_bundle

    def failing(_connection):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(tls, "client_ca_bundle", failing)
    assert contexts.current() is first
    monkeypatch.setattr(tls, "client_ca_bundle", read)
    assert "Anchor" in names(contexts.current())


def test_a_failed_generation_read_keeps_the_last_context(app, monkeypatch):
    contexts = server_contexts(app)
    first = contexts.current()
    read = tls.bundle_generation

    def failing(_engine):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(tls, "bundle_generation", failing)
    add_truststore(app, "anchors", ca_pem("Anchor"))
    assert contexts.current() is first
    monkeypatch.setattr(tls, "bundle_generation", read)
    assert "Anchor" in names(contexts.current())


def test_without_the_generation_row_every_handshake_compares_the_bundle(app):
    """Someone deleted the row: the triggers have nothing to move, so the bundle itself tells, as before."""
    contexts = server_contexts(app)
    first = contexts.current()
    connection = sqlite3.connect(app.database)
    connection.execute("DELETE FROM tls_bundle_generation")
    connection.commit()
    connection.close()
    assert tls.bundle_generation(app.extensions["trustpoint"].engine) is None
    assert contexts.current() is first
    add_truststore(app, "anchors", ca_pem("Anchor"))
    second = contexts.current()
    assert "Anchor" in names(second) and contexts.current() is second


def test_a_database_made_by_create_all_has_the_generation_and_its_triggers(tmp_path):
    engine = create_engine("sqlite:///%s" % (tmp_path / "t.db"))
    Base.metadata.create_all(engine)
    Base.metadata.create_all(engine)  # a second run creates nothing and inserts no second row
    with engine.connect() as connection:
        assert sqlite_triggers(connection.connection.driver_connection) == triggers.trigger_names("sqlite")
        assert "tls_bundle_generation" in inspect(connection).get_table_names()
    assert tls.bundle_generation(engine) == 0
    with Session(engine) as db:
        db.add(Truststore(name="t", usage="tls", certificates_pem=ca_pem("T")))
        db.commit()
    assert tls.bundle_generation(engine) == 1
    engine.dispose()


def test_a_sqlite_database_is_read_on_the_loop_and_a_network_one_from_a_helper_thread(app):
    """What the worker's _ContextFeed asks (test_worker.py): where current() may run."""
    contexts = server_contexts(app)
    assert contexts.reads_locally
    contexts.use_database(create_engine("postgresql+psycopg://trustpoint@db.example/trustpoint"))
    assert not contexts.reads_locally
