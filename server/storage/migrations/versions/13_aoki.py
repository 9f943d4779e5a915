# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""AOKI: DevOwnerID credentials and the index of the IDevIDs they name.

Revision ID: 13_aoki
Revises: 14_operators_downloads
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "13_aoki"
down_revision = "14_operators_downloads"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "owner_credential",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("certificate_der", sa.LargeBinary(), nullable=False),
        sa.Column("chain_pem", sa.Text(), nullable=False),
        sa.Column("private_key_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "owner_reference",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("credential_id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(["credential_id"], ["owner_credential.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("credential_id", "reference"),
    )
    op.create_index("ix_owner_reference_reference", "owner_reference", ["reference"])


def downgrade():
    op.drop_index("ix_owner_reference_reference", table_name="owner_reference")
    op.drop_table("owner_reference")
    op.drop_table("owner_credential")
