# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Indexes for the lookups of the enrollment paths (issue 16).

An enrollment costs the same at a million certificates as at none: a device's certificates, an IDevID's
device, a domain's CAs, a CA's revoked certificates (its CRL) and a device's CMP transactions (deleting it)
are found through an index. Only new indexes: existing rows are untouched. The upgrade takes a few seconds
per million certificates (2.5 s on SQLite on the project's 2-core VM) and holds the write lock meanwhile.

Revision ID: 16_hot_path_indexes
Revises: 13_aoki
"""

from __future__ import annotations

from alembic import op

revision = "16_hot_path_indexes"
down_revision = "13_aoki"
branch_labels = None
depends_on = None

# (index, table, columns)
INDEXES = (
    ("ix_issued_certificate_device_id", "issued_certificate", ["device_id"]),
    ("ix_issued_certificate_ca_id_status", "issued_certificate", ["ca_id", "status"]),
    ("ix_device_idevid_fingerprint", "device", ["idevid_fingerprint"]),
    ("ix_device_domain_id_serial_number", "device", ["domain_id", "serial_number"]),
    ("ix_certificate_authority_domain_id", "certificate_authority", ["domain_id"]),
    ("ix_cmp_transaction_device_id", "cmp_transaction", ["device_id"]),
)


def upgrade():
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade():
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
