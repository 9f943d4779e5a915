# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Indexes for the foreign keys' own lookups when rows are deleted.

Deleting a row that other rows refer to makes the database look for those rows (to set their reference to NULL,
delete them, or refuse). Without an index that look read the whole referring table for each deleted row:
deleting a domain deletes its CAs' certificates, and each certificate read every device (is it a device's
credential?): 15 ms per certificate at 100,000 devices on SQLite, minutes for a domain of thousands of
certificates, under the write lock that every enrollment waits for. Now:

- device.credential_id and device.devid_registration_id: partial indexes, on the rows where they are set;
- credential_download.device_id, and credential_download.certificate_id (partial).

New indexes only; building them reads the device and credential_download tables once each.

Revision ID: 16d_foreign_key_indexes
Revises: 16c_leaner_certificate_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "16d_foreign_key_indexes"
down_revision = "16c_leaner_certificate_indexes"
branch_labels = None
depends_on = None

# (index, table, columns, the column that must be set for a partial index, or None)
INDEXES = (
    ("ix_device_credential_id", "device", ["credential_id"], "credential_id"),
    ("ix_device_devid_registration_id", "device", ["devid_registration_id"], "devid_registration_id"),
    ("ix_credential_download_device_id", "credential_download", ["device_id"], None),
    ("ix_credential_download_certificate", "credential_download", ["certificate_id"], "certificate_id"),
)


def upgrade():
    for name, table, columns, column in INDEXES:
        where = {}
        if column is not None:
            where["sqlite_where"] = where["postgresql_where"] = sa.text("%s IS NOT NULL" % column)
        op.create_index(name, table, columns, **where)


def downgrade():
    for name, table, _columns, _column in reversed(INDEXES):
        op.drop_index(name, table_name=table)
