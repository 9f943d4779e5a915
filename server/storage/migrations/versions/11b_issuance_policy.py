# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issuance policy and retry-safety (issue 11): allowed names per domain and device, the DevID registration a
device belongs to, a used secret's retry window, and per certificate who obtained it, what it renews, when it
was superseded and first used.

The renewal a CMP transaction made moves from cmp_transaction.replaces_id to the certificate it issued.

Revision ID: 11b_issuance_policy
Revises: 11a_auth_failures
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "11b_issuance_policy"
down_revision = "11a_auth_failures"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_issued_certificate_device_created", ["device_id", "created_at"]),
    ("ix_issued_certificate_status_created", ["status", "created_at"]),
    ("ix_issued_certificate_status_superseded", ["status", "superseded_at"]),
    ("ix_issued_certificate_issued_with", ["issued_with_id"]),
    ("ix_issued_certificate_replaces", ["replaces_id"]),
)


def _add_reference(table, column, target):
    """A nullable INTEGER column referring to target.id. SQLite takes the REFERENCES clause in ADD COLUMN
    (Alembic would copy the table, and the device table would lose its AUTOINCREMENT); PostgreSQL gets the
    constraint in a second statement."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE %s ADD COLUMN %s INTEGER REFERENCES %s (id)" % (table, column, target))
    else:
        op.add_column(table, sa.Column(column, sa.Integer(), sa.ForeignKey(target + ".id")))


def upgrade():
    op.add_column("domain", sa.Column("allowed_names", sa.JSON(), nullable=True))
    op.add_column("device", sa.Column("secret_retry_until", sa.DateTime(), nullable=True))
    _add_reference("device", "devid_registration_id", "devid_registration")
    op.add_column("device", sa.Column("allowed_names", sa.JSON(), nullable=True))
    # SQLite does not read back ON DELETE of a REFERENCES clause added by ALTER: this table (no AUTOINCREMENT)
    # is copied with table-level constraints instead.
    with op.batch_alter_table("issued_certificate") as batch:
        for name in ("issued_with_id", "replaces_id"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
            batch.create_foreign_key(
                "fk_issued_certificate_%s" % name, "issued_certificate", [name], ["id"], ondelete="SET NULL"
            )
        batch.add_column(sa.Column("superseded_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("first_used_at", sa.DateTime(), nullable=True))
    for name, columns in _INDEXES:
        op.create_index(name, "issued_certificate", columns)
    op.create_index("ix_device_secret_retry_until", "device", ["secret_retry_until"])
    op.create_index("ix_cmp_transaction_certificate", "cmp_transaction", ["certificate_id"])
    # Keep what a waiting key update renews: its certConf supersedes that certificate.
    op.execute(
        "UPDATE issued_certificate SET replaces_id = (SELECT t.replaces_id FROM cmp_transaction t"
        " WHERE t.certificate_id = issued_certificate.id)"
        " WHERE id IN (SELECT certificate_id FROM cmp_transaction WHERE replaces_id IS NOT NULL)"
    )
    with op.batch_alter_table("cmp_transaction") as batch:
        batch.drop_column("replaces_id")


def downgrade():
    with op.batch_alter_table("cmp_transaction") as batch:
        batch.add_column(sa.Column("replaces_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_cmp_transaction_replaces_id", "issued_certificate", ["replaces_id"], ["id"], ondelete="SET NULL"
        )
    op.execute(
        "UPDATE cmp_transaction SET replaces_id = (SELECT c.replaces_id FROM issued_certificate c"
        " WHERE c.id = cmp_transaction.certificate_id)"
    )
    op.drop_index("ix_cmp_transaction_certificate", "cmp_transaction")
    op.drop_index("ix_device_secret_retry_until", "device")
    for name, _columns in _INDEXES:
        op.drop_index(name, "issued_certificate")
    with op.batch_alter_table("issued_certificate") as batch:
        for name in ("first_used_at", "superseded_at", "replaces_id", "issued_with_id"):
            batch.drop_column(name)
    with op.batch_alter_table("device", table_kwargs={"sqlite_autoincrement": True}) as batch:
        for name in ("allowed_names", "devid_registration_id", "secret_retry_until"):
            batch.drop_column(name)
    with op.batch_alter_table("domain") as batch:
        batch.drop_column("allowed_names")
