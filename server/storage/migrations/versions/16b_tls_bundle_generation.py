# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The TLS client CA bundle's generation (issue 16): a one-row table and the triggers that move its number with
every change of the domain CAs' certificates and the truststores (storage/triggers.py).

A handshake then reads that number instead of every CA certificate and truststore. Existing rows are untouched;
the number starts at 0 and a running server reads the bundle once more when it first sees it.

Revision ID: 16b_tls_bundle_generation
Revises: 15a_cmp_conformance
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from trustpoint_server.storage import triggers

revision = "16b_tls_bundle_generation"
down_revision = "15a_cmp_conformance"
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        triggers.TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": 1, "generation": 0}])
    triggers.create(op.get_bind())


def downgrade():
    triggers.drop(op.get_bind())
    op.drop_table(triggers.TABLE)
