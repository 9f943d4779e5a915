# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures of the tests that call the server's services directly, on a real (SQLite) database."""

from __future__ import annotations

import os

import pytest
from trustpoint_server.runtime.vault import Vault
from trustpoint_server.services import devices, pki
from trustpoint_server.settings import Settings
from trustpoint_server.storage import migrate
from trustpoint_server.storage.db import make_engine, session_factory


@pytest.fixture
def db(tmp_path):
    """A session on a migrated SQLite database (its engine: db.get_bind())."""
    engine = make_engine("sqlite:///%s" % (tmp_path / "t.db"))
    migrate.upgrade(engine)
    with session_factory(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture
def vault():
    return Vault(os.urandom(32))


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=str(tmp_path))


@pytest.fixture
def device(db, vault):
    """Device plc-1 of a new domain d1, onboarding with a CMP shared secret."""
    domain = pki.create_domain(db, vault, "d1")
    db.commit()
    item, _secret = devices.create_device(db, vault, "plc-1", domain, "cmp_shared_secret")
    db.commit()
    return item
