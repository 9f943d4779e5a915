# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""server/storage/sql.py: a Statement run on the driver's cursor sends the SQL and gives the rows Core would, with
the column types' conversions both ways; errors, events and what it refuses. (On PostgreSQL the enrollment paths
of tests/integration/test_postgresql.py run it.)"""

from __future__ import annotations

import datetime

import pytest
from sqlalchemy import bindparam, event, exc, select
from trustpoint_server.storage import db as server_db
from trustpoint_server.storage import sql
from trustpoint_server.storage.models import Device, Domain

DOMAINS = Domain.__table__
DEVICES = Device.__table__
WHEN = datetime.datetime(2026, 12, 6, 23, 59, 58, 123456, tzinfo=datetime.timezone.utc)


INSERT_DOMAIN = sql.insert(
    DOMAINS,
    ("name", "key_type", "validity_days", "allowed_names", "cmp_central_keygen", "cmp_ir_with_credential",
     "created_at"),
    returning=[DOMAINS.c.id],
)  # fmt: skip
DOMAIN_BY_NAME = sql.Statement(select(DOMAINS).where(DOMAINS.c.name == bindparam("p_name")))
DOMAINS_SINCE = sql.Statement(
    select(DOMAINS.c.name).where(DOMAINS.c.created_at >= bindparam("p_since", type_=DOMAINS.c.created_at.type))
)
RENAME = sql.Statement(DOMAINS.update().where(DOMAINS.c.name == bindparam("p_old")).values(name=bindparam("p_new")))
# A literal in the statement: its value is a parameter Core fills in.
KEYGEN_OFF = sql.Statement(
    DOMAINS.update().where(DOMAINS.c.name == bindparam("p_name")).values(cmp_central_keygen=False)
)


def add(db_session, name, **values):
    row = {
        "name": name,
        "key_type": "ecdsa-p256",
        "validity_days": 30,
        "allowed_names": ["DNS:*.plant.example"],
        "cmp_central_keygen": True,
        "cmp_ir_with_credential": "refuse",
        "created_at": WHEN,
        **values,
    }
    return sql.one(db_session, INSERT_DOMAIN, **row).id


def test_rows_are_what_core_reads(sessions):
    with sessions() as db_session:
        server_db.begin_write(db_session)
        domain_id = add(db_session, "plant")
        db_session.commit()
        ours = sql.one(db_session, DOMAIN_BY_NAME, p_name="plant")
        core = db_session.execute(DOMAIN_BY_NAME.statement, {"p_name": "plant"}).one()
    assert tuple(ours) == tuple(core)
    assert ours._fields == tuple(core._fields)
    assert ours.id == domain_id
    assert ours.created_at == WHEN and ours.created_at.tzinfo is not None  # UtcDateTime's conversion, both ways
    assert ours.allowed_names == ["DNS:*.plant.example"]  # JSON
    assert ours.cmp_central_keygen is True  # Boolean


def test_parameters_go_through_the_column_types(sessions):
    """An aware datetime in another zone compares as UTC, as through Core."""
    with sessions() as db_session:
        server_db.begin_write(db_session)
        add(db_session, "plant")
        db_session.commit()
        zone = datetime.timezone(datetime.timedelta(hours=2))
        just_before = (WHEN - datetime.timedelta(microseconds=1)).astimezone(zone)
        assert [row.name for row in sql.rows(db_session, DOMAINS_SINCE, p_since=just_before)] == ["plant"]
        assert sql.rows(db_session, DOMAINS_SINCE, p_since=WHEN + datetime.timedelta(microseconds=1)) == []


def test_writes_give_their_rowcount_and_literals_their_values(sessions):
    with sessions() as db_session:
        server_db.begin_write(db_session)
        add(db_session, "plant")
        assert sql.write(db_session, RENAME, p_old="plant", p_new="plant-2") == 1
        assert sql.write(db_session, RENAME, p_old="nowhere", p_new="x") == 0
        assert sql.write(db_session, KEYGEN_OFF, p_name="plant-2") == 1
        db_session.commit()
        assert sql.one(db_session, DOMAIN_BY_NAME, p_name="plant-2").cmp_central_keygen is False


def test_the_statements_are_in_the_sessions_transaction(sessions):
    with sessions() as db_session:
        server_db.begin_write(db_session)
        add(db_session, "gone")
        db_session.rollback()
        assert sql.first(db_session, DOMAIN_BY_NAME, p_name="gone") is None


def test_a_constraint_fails_as_sqlalchemys_integrity_error(sessions):
    with sessions() as db_session:
        server_db.begin_write(db_session)
        add(db_session, "plant")
        with pytest.raises(exc.IntegrityError, match="UNIQUE"):
            add(db_session, "plant")
        db_session.rollback()


def test_engine_events_see_the_statements(sessions):
    seen = []
    with sessions() as db_session:
        engine = db_session.get_bind()
        event.listen(engine, "before_cursor_execute", lambda *args: seen.append((args[2], args[3])))
        sql.first(db_session, DOMAIN_BY_NAME, p_name="plant")
        # In the session's transaction, whose BEGIN goes to the driver directly (storage/db.py).
        assert db_session.connection().connection.driver_connection.in_transaction
    assert seen == [(DOMAIN_BY_NAME.compiled(engine.dialect).sql, ["plant"])]


def test_one_wants_exactly_one_row(sessions):
    with sessions() as db_session:
        with pytest.raises(exc.NoResultFound):
            sql.one(db_session, DOMAIN_BY_NAME, p_name="none")
        server_db.begin_write(db_session)
        add(db_session, "a", created_at=WHEN)
        add(db_session, "b", created_at=WHEN)
        with pytest.raises(exc.MultipleResultsFound):
            sql.one(db_session, DOMAINS_SINCE, p_since=WHEN)
        db_session.rollback()


def test_a_missing_parameter_is_refused_before_the_driver(sessions):
    with sessions() as db_session, pytest.raises(KeyError, match="p_name"):
        sql.rows(db_session, DOMAIN_BY_NAME)


def test_a_column_default_is_not_computed(sessions):
    """Core would fill created_at (default=utcnow); a Statement wants it given."""
    partial = sql.insert(DOMAINS, ("name", "key_type", "validity_days"))
    with sessions() as db_session:
        server_db.begin_write(db_session)
        with pytest.raises(KeyError, match="created_at"):
            sql.write(db_session, partial, name="x", key_type="ecdsa-p256", validity_days=1)
        db_session.rollback()


def test_an_in_list_is_refused(sessions):
    expanding = sql.Statement(select(DEVICES.c.id).where(DEVICES.c.id.in_(bindparam("p_ids", expanding=True))))
    with sessions() as db_session, pytest.raises(ValueError, match="expanded"):
        sql.rows(db_session, expanding, p_ids=[1])
