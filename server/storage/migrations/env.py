# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Alembic's environment: migrations run on the connection storage/migrate.py hands over."""

from __future__ import annotations

from alembic import context
from trustpoint_server.storage.models import Base

connection = context.config.attributes["connection"]
# SQLite cannot ALTER most things: batch mode copies the table instead.
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
