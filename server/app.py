# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Flask application factory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from flask import Flask, jsonify
from sqlalchemy import text

from . import api, cmp, crl, errors
from .db import close_session, database_url, make_engine, session, session_factory
from .vault import Vault

# RFC 9483 messages are a few KiB; upstream Trustpoint caps CMP bodies at 128 KiB as well.
MAX_REQUEST_BYTES = 128 * 1024


@dataclass
class Settings:
    data_dir: str
    database_url: Optional[str] = None
    # Largest accepted difference between a CMP messageTime and the server's clock (0: not checked).
    cmp_max_clock_skew: int = 600
    # Base URL of the server as devices and relying parties reach it, for the CRL distribution point
    # of issued certificates; without it the URL of the request that caused the issuance is used.
    public_url: Optional[str] = None

    @classmethod
    def from_environment(cls, data_dir=None, **overrides):
        data_dir = data_dir or os.environ.get("TRUSTPOINT_DATA_DIR")
        if not data_dir:
            raise ValueError("no data directory: pass --data-dir or set TRUSTPOINT_DATA_DIR")
        values = {
            "database_url": os.environ.get("TRUSTPOINT_DATABASE_URL"),
            "cmp_max_clock_skew": int(os.environ.get("TRUSTPOINT_CMP_MAX_CLOCK_SKEW", "600")),
            "public_url": os.environ.get("TRUSTPOINT_PUBLIC_URL"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(data_dir=data_dir, **values)


class Services:
    """What request handlers share: settings, the database and the vault."""

    def __init__(self, settings):
        self.settings = settings
        self.engine = make_engine(database_url(settings.data_dir, settings.database_url))
        self.sessions = session_factory(self.engine)
        self.vault = Vault.load(settings.data_dir)


def create_app(settings):
    app = Flask("trustpoint_server")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.json.sort_keys = False
    app.extensions["trustpoint"] = Services(settings)
    app.teardown_appcontext(close_session)
    errors.register(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(cmp.bp)
    app.register_blueprint(crl.bp)

    @app.get("/healthz")
    def healthz():
        session().execute(text("SELECT 1"))
        return jsonify({"status": "ok"})

    return app
