# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Failed authentications against a device's secret, and its lockout (issue 11, services/auth_limits.py);
the row /readyz writes (services/health.py).

Existing devices start with no failures and unlocked. EST passwords that release 0.1.0 hashed with scrypt
keep working as they are (services/devices.py checks both kinds); new ones get the fast keyed hash.

Revision ID: 11a_auth_failures
Revises: 16_hot_path_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "11a_auth_failures"
down_revision = "16_hot_path_indexes"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("failed_authentications", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("secret_locked_at", sa.DateTime(), nullable=True))
    op.create_table(
        "readiness_probe",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade():
    op.drop_table("readiness_probe")
    with op.batch_alter_table("device") as batch:
        batch.drop_column("secret_locked_at")
        batch.drop_column("failed_authentications")
