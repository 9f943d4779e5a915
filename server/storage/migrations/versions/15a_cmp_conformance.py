# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP conformance (issue 15): the request's senderNonce of a CMP transaction (a certConf must bring a fresh
one), and the per-domain CMP policy: central key generation and ir signed with an issued certificate.

Existing domains get central key generation on and keep refusing such an ir; existing transactions have no
request nonce (their certConf is checked as before).

Revision ID: 15a_cmp_conformance
Revises: 11b_issuance_policy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "15a_cmp_conformance"
down_revision = "11b_issuance_policy"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("cmp_transaction") as batch:
        batch.add_column(sa.Column("request_nonce", sa.LargeBinary(length=128), nullable=True))
    with op.batch_alter_table("domain") as batch:
        batch.add_column(sa.Column("cmp_central_keygen", sa.Boolean(), server_default=sa.true(), nullable=False))
        batch.add_column(
            sa.Column("cmp_ir_with_credential", sa.String(length=16), server_default="refuse", nullable=False)
        )


def downgrade():
    with op.batch_alter_table("domain") as batch:
        batch.drop_column("cmp_ir_with_credential")
        batch.drop_column("cmp_central_keygen")
    with op.batch_alter_table("cmp_transaction") as batch:
        batch.drop_column("request_nonce")
