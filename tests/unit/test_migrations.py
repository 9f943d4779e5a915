# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Schema migrations: the migrated schema is the models' schema, and `run` refuses a database behind it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from trustpoint_server.storage import migrate, triggers
from trustpoint_server.storage.db import make_engine
from trustpoint_server.storage.models import Base

BIN = Path(sys.executable).parent


def test_migrations_build_exactly_the_models_schema(tmp_path):
    """Every change to models.py comes with a migration: an empty database migrated to head has the tables,
    columns, types, indexes and constraints that the models declare, no more and no less."""
    engine = make_engine("sqlite:///%s" % (tmp_path / "t.db"))
    before, after = migrate.upgrade(engine)
    assert (before, after) == (None, migrate.head())
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == [], "models.py and the migrations disagree; add a migration: %r" % differences
    # A second run changes nothing.
    assert migrate.upgrade(engine) == (after, after)


def test_migrated_indexes_are_the_models_indexes_with_their_conditions(tmp_path):
    """Alembic does not compare a partial index's condition (WHERE): the CREATE INDEX statements SQLite keeps for a
    migrated database are those of the models' schema, condition and all."""
    migrated = make_engine("sqlite:///%s" % (tmp_path / "migrated.db"))
    migrate.upgrade(migrated)
    created = make_engine("sqlite:///%s" % (tmp_path / "created.db"))
    Base.metadata.create_all(created)

    def indexes(engine):
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
            return {name: " ".join(sql.split()) for name, sql in rows}

    expected = indexes(created)
    assert "WHERE replaces_id IS NOT NULL" in expected["ix_issued_certificate_replaces"]
    assert indexes(migrated) == expected


def test_a_migrated_database_has_the_tls_bundle_triggers(tmp_path):
    """Alembic does not compare triggers, and SQLite's batch mode drops a table's triggers with the table it copies:
    a migrated database has every trigger of storage/triggers.py (a later migration that batch-alters
    certificate_authority or truststore must create them again), and 16b's downgrade takes them away."""
    engine = make_engine("sqlite:///%s" % (tmp_path / "t.db"))

    def present():
        with engine.connect() as connection:
            return sorted(connection.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars())

    migrate.upgrade(engine)
    assert present() == triggers.trigger_names("sqlite")
    with engine.begin() as connection:
        assert connection.exec_driver_sql("SELECT id, generation FROM tls_bundle_generation").all() == [(1, 0)]
        command.downgrade(migrate._config(connection), "16b_tls_bundle_generation-1")
        assert not inspect(connection).has_table("tls_bundle_generation")
    assert present() == []
    migrate.upgrade(engine)
    assert present() == triggers.trigger_names("sqlite")


def test_a_database_from_before_migrations_is_stamped_and_upgraded(tmp_path):
    """Release 0.1.0 created its tables without Alembic: such a database counts as the baseline."""
    engine = make_engine("sqlite:///%s" % (tmp_path / "t.db"))
    with engine.begin() as connection:
        # What 0.1.0's create_all made: the baseline's tables, and no alembic_version.
        context = MigrationContext.configure(connection)
        from alembic.operations import Operations

        with Operations.context(context):
            import importlib

            importlib.import_module("trustpoint_server.storage.migrations.versions.0001_baseline").upgrade()
    with engine.connect() as connection:
        assert not inspect(connection).has_table("alembic_version")
        assert migrate.current(connection) == migrate.BASELINE
    assert migrate.upgrade(engine) == (migrate.BASELINE, migrate.head())
    migrate.check(engine)


def test_check_refuses_a_database_that_is_behind_or_unknown(tmp_path):
    engine = make_engine("sqlite:///%s" % (tmp_path / "t.db"))
    with pytest.raises(migrate.SchemaError, match="has no schema"):
        migrate.check(engine)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    with pytest.raises(migrate.SchemaError, match="does not know"):
        migrate.check(engine)
    with pytest.raises(migrate.SchemaError, match="does not know"):
        migrate.upgrade(engine)


def test_run_refuses_a_database_behind_the_code_and_migrate_fixes_it(tmp_path):
    """`run` names the command that fixes an old schema instead of serving with it."""
    data = tmp_path / "data"
    cli = str(BIN / "trustpoint-server")
    subprocess.run([cli, "init", "--data-dir", str(data)], check=True, capture_output=True)
    engine = make_engine("sqlite:///%s" % (data / "trustpoint.db"))
    with engine.begin() as connection:
        # 0.1.0's state: the baseline's schema (every migration undone), without alembic_version.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        command.downgrade(migrate._config(connection), migrate.BASELINE)
        connection.exec_driver_sql("DROP TABLE alembic_version")
    engine.dispose()
    if migrate.head() != migrate.BASELINE:
        result = subprocess.run(
            [cli, "run", "--data-dir", str(data), "--listen", "127.0.0.1:1"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0
        assert "trustpoint-server migrate" in result.stderr
    result = subprocess.run([cli, "migrate", "--data-dir", str(data)], capture_output=True, text=True, check=True)
    assert "up to date" in result.stdout or "migrated the database schema" in result.stdout
    result = subprocess.run([cli, "migrate", "--data-dir", str(data)], capture_output=True, text=True, check=True)
    assert "up to date (revision %s)" % migrate.head() in result.stdout
