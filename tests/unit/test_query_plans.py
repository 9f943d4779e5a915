# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every SQL statement of the enrollment paths finds its rows through an index on SQLite (issue 16: an
enrollment costs the same at a million certificates as at none).

tests/hot_paths.py drives each path once through the app's real handlers and records the statements;
each is then run through EXPLAIN QUERY PLAN. SQLite's planner takes an index for an equality on an
indexed column whatever the table's size, so an empty database shows what a full one would do. Without
migration 16_hot_path_indexes this test fails. (tests/integration/test_postgresql.py: the same on
PostgreSQL.)
"""

from __future__ import annotations

import re
import sqlite3

import pytest
from hot_paths import GROWING, run_hot_paths, sqlite_app

FULL_SCAN = re.compile(r"^SCAN (%s)\b" % "|".join(GROWING))


@pytest.fixture
def app(tmp_path):
    with sqlite_app(tmp_path) as app:
        yield app


def plans(database, seen):
    """[(path, plan line, statement)] of every plan line of the statements seen."""
    lines = []
    connection = sqlite3.connect(database)
    try:
        for name, statement, parameters in seen:
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT")):
                continue
            for _id, _parent, _unused, detail in connection.execute("EXPLAIN QUERY PLAN " + statement, parameters):
                lines.append((name, detail, " ".join(statement.split())))
    finally:
        connection.close()
    return lines


def full_scans(database, seen):
    """[(path, plan line, statement)] of the statements that scan a growing table."""
    return [line for line in plans(database, seen) if FULL_SCAN.match(line[1])]


def test_the_hot_paths_never_scan_a_growing_table(app, monkeypatch):
    seen = run_hot_paths(app, monkeypatch)
    scans = full_scans(app.database, seen)
    assert scans == [], "full table scans on a hot path (add an index, migration + models):\n" + "\n".join(
        "%s: %s\n    %s" % scan for scan in scans
    )
    # A CA's revoked certificates come from the (ca_id, status) index, not from all of the CA's certificates.
    crl = [
        detail
        for name, detail, statement in plans(app.database, seen)
        if name == "CRL" and "issued_certificate.ca_id = ?" in statement
    ]
    assert crl and all("(ca_id=? AND status=?)" in detail for detail in crl), crl


def test_the_check_sees_a_scan(app):
    """The check itself: a statement on an unindexed column is reported."""
    seen = [("probe", "SELECT id FROM issued_certificate WHERE device_name = ?", ("x",))]
    assert [scan[1] for scan in full_scans(app.database, seen)] == ["SCAN issued_certificate"]


# Tables whose rows other rows refer to (foreign keys): deleting one makes the database look up those rows.
REFERRED = ("issued_certificate", "device", "domain", "certificate_authority", "devid_registration", "cmp_transaction")


def test_deleting_a_row_finds_the_rows_that_refer_to_it_through_an_index(app):
    """The foreign keys' own lookups (ON DELETE CASCADE / SET NULL, or the check that refuses) use an index: a
    domain's deletion deletes its CAs' certificates, and each would otherwise read every device (migration 16d)."""
    connection = sqlite3.connect(app.database)
    try:
        connection.execute("PRAGMA foreign_keys=ON")  # the server's connections have it; the plans show the lookups
        scans = [
            (table, detail)
            for table in REFERRED
            for _id, _parent, _unused, detail in connection.execute(
                "EXPLAIN QUERY PLAN DELETE FROM %s WHERE id = ?" % table,  # noqa: S608 (the tables above)
                (1,),
            )
            if FULL_SCAN.match(detail)
        ]
        # The check sees them: the device lookup of a deleted certificate is there.
        lookups = [
            row[3] for row in connection.execute("EXPLAIN QUERY PLAN DELETE FROM issued_certificate WHERE id = 1")
        ]
    finally:
        connection.close()
    assert any("ix_device_credential_id" in line for line in lookups), lookups
    assert scans == [], "a foreign key's lookup scans a growing table (add an index, migration + models): %r" % scans
