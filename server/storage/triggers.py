# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Database triggers: the generation of the TLS client CA bundle (issue 16).

Every new TLS connection needs the client CA bundle as the database has it now (runtime/tls.py), and
reading the whole bundle per handshake costs more the more domains there are. The database itself keeps
one number, tls_bundle_generation.generation, that changes with every change of the rows the bundle is
made of: a certificate_authority row inserted, deleted (cascades included) or given another certificate,
a truststore row inserted, deleted or given other certificates or another usage. Triggers do it rather
than the services, so that every writer counts: another server instance, an older or newer version, an
operator's SQL. A handshake reads the number (one row); the bundle only when the number moved.

A CRL or a vault key rotation writes other columns of certificate_authority and does not move it.

Careful with later migrations: SQLite's batch mode copies a table and drops the old one, and its triggers
with it. A migration that batch-alters certificate_authority or truststore must create the triggers again
(create(connection)); tests/unit/test_migrations.py fails when a migrated database lacks one.
"""

from __future__ import annotations

TABLE = "tls_bundle_generation"
# The tables the bundle is read from, and the columns of theirs it depends on.
WATCHED = {
    "certificate_authority": ("id", "certificate_der"),
    "truststore": ("id", "usage", "certificates_pem"),
}
_BUMP = "UPDATE tls_bundle_generation SET generation = generation + 1"
_FUNCTION = "tls_bundle_generation_bump"
_EVENTS = ("INSERT", "UPDATE", "DELETE")


def _triggers(dialect_name):
    """[(trigger name, table, events)] of the dialect: SQLite has row-level triggers only, one per event (a change
    of n rows moves the generation n times); PostgreSQL's are statement-level, once per statement whatever the
    number of rows (one that matches no row moves it too: one needless read of the bundle)."""
    triggers = []
    for table, columns in WATCHED.items():
        update = "UPDATE OF %s" % ", ".join(columns)
        if dialect_name == "postgresql":
            triggers.append(("tls_bundle_%s" % table, table, "INSERT OR %s OR DELETE OR TRUNCATE" % update))
        else:
            for event in _EVENTS:
                triggers.append(
                    ("tls_bundle_%s_%s" % (table, event.lower()), table, update if event == "UPDATE" else event)
                )
    return triggers


def trigger_names(dialect_name):
    """The names of the triggers create() makes on this dialect."""
    return sorted(name for name, _table, _events in _triggers(dialect_name))


def create(connection):
    """Create the triggers (and PostgreSQL's trigger function) on a connection in a transaction; the tables
    must exist."""
    dialect = connection.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError("no TLS bundle triggers for the %s database" % dialect)
    if dialect == "postgresql":
        connection.exec_driver_sql(
            "CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN %s; RETURN NULL; END $$"
            % (_FUNCTION, _BUMP)
        )
    for name, table, events in _triggers(dialect):
        if dialect == "postgresql":
            connection.exec_driver_sql(
                "CREATE TRIGGER %s AFTER %s ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()"
                % (name, events, table, _FUNCTION)
            )
        else:
            connection.exec_driver_sql("CREATE TRIGGER %s AFTER %s ON %s BEGIN %s; END" % (name, events, table, _BUMP))


def drop(connection):
    """Drop what create() made."""
    dialect = connection.dialect.name
    for name, table, _events in _triggers(dialect):
        on_table = " ON %s" % table if dialect == "postgresql" else ""
        connection.exec_driver_sql("DROP TRIGGER IF EXISTS %s%s" % (name, on_table))
    if dialect == "postgresql":
        connection.exec_driver_sql("DROP FUNCTION IF EXISTS %s()" % _FUNCTION)


def after_create(_metadata, connection, tables=(), **_kw):
    """Base.metadata's after_create hook: a database made with create_all() (tests) gets the generation's row
    and its triggers, as a migrated one does."""
    if TABLE not in {table.name for table in tables}:
        return
    connection.exec_driver_sql("INSERT INTO tls_bundle_generation (id, generation) VALUES (1, 0)")
    create(connection)
