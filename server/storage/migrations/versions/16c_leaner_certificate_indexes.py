# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fewer index pages per enrollment (issue 16).

An enrollment's INSERT into issued_certificate changed a page of each of the table's ten indexes; each changed page
is a WAL frame written and fsynced, and a page every other worker reads again before its next statement. Two kinds of
index go:

- ix_issued_certificate_device_id: ix_issued_certificate_device_created (device_id, created_at) serves every lookup
  by device_id alone (and the foreign key's).
- The indexes of status_superseded, issued_with_id and replaces_id become partial: only the rows where that column
  is set. A new certificate is not superseded; an onboarding renews nothing and is obtained with no credential.
  Every query of these columns compares them with a value (=, <), which implies IS NOT NULL, so SQLite's and
  PostgreSQL's planners still use them (tests/unit/test_query_plans.py).

Rows are untouched; rebuilding the three indexes reads the table once each: about a second per million
certificates on SQLite on the project's 2-core VM, under the write lock.

Revision ID: 16c_leaner_certificate_indexes
Revises: 16b_tls_bundle_generation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "16c_leaner_certificate_indexes"
down_revision = "16b_tls_bundle_generation"
branch_labels = None
depends_on = None

TABLE = "issued_certificate"
# (index, columns, the column that must be set)
PARTIAL = (
    ("ix_issued_certificate_status_superseded", ["status", "superseded_at"], "superseded_at"),
    ("ix_issued_certificate_issued_with", ["issued_with_id"], "issued_with_id"),
    ("ix_issued_certificate_replaces", ["replaces_id"], "replaces_id"),
)


def upgrade():
    op.drop_index("ix_issued_certificate_device_id", table_name=TABLE)
    for name, columns, column in PARTIAL:
        where = sa.text("%s IS NOT NULL" % column)
        op.drop_index(name, table_name=TABLE)
        op.create_index(name, TABLE, columns, sqlite_where=where, postgresql_where=where)


def downgrade():
    for name, columns, _column in reversed(PARTIAL):
        op.drop_index(name, table_name=TABLE)
        op.create_index(name, TABLE, columns)
    op.create_index("ix_issued_certificate_device_id", TABLE, ["device_id"])
