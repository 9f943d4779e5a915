# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Alembic migrations of the service's schema (storage/migrate.py runs them)."""
