# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Flask application factory."""

from __future__ import annotations

from flask import Flask, jsonify, request
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from . import errors
from .protocols import agent, ahead, aoki, cmp, crl, est
from .runtime.vault import Vault
from .services.auth_limits import AuthLimits
from .services.health import Readiness
from .storage.db import close_session, engine_for, session, session_factory
from .web import api, pages

# RFC 9483 messages are a few KiB; upstream Trustpoint caps CMP bodies at 128 KiB as well.
MAX_REQUEST_BYTES = 128 * 1024
# What the plain-HTTP listener serves: CMP (its messages protect themselves, AOKI over CMP included),
# CRLs (signed) and the health checks. Everything else is HTTPS only.
PLAIN_HTTP_BLUEPRINTS = ("cmp", "crl")
PLAIN_HTTP_ENDPOINTS = ("healthz", "readyz", "aoki.cmp_initialization")


class Services:
    """What request handlers share: settings, the database and the vault."""

    def __init__(self, settings):
        self.settings = settings
        self.engine = engine_for(settings)
        self.sessions = session_factory(self.engine)
        self.vault = Vault.load(settings.data_dir, settings.vault_key_file)
        self.auth_limits = AuthLimits(
            self.sessions, settings.auth_failure_budget, settings.auth_lockout, settings.cmp_mac_budget
        )
        self.readiness = Readiness(self.sessions, settings.data_dir, settings.min_free_space)


def _https_only():
    """before_request of the plain-HTTP app: 403 for what is served over HTTPS only.

    A request no route matches gets its usual 404/405 (it exists nowhere); a matched route that is
    not CMP, a CRL or /healthz gets 403, before any handler or token check runs.
    """
    if request.blueprint in PLAIN_HTTP_BLUEPRINTS or request.endpoint in PLAIN_HTTP_ENDPOINTS:
        return None
    if isinstance(request.routing_exception, HTTPException):
        return None
    message = (
        "%s is not served over plain HTTP; use HTTPS (plain HTTP serves CMP, CRLs, /healthz and /readyz)" % request.path
    )
    return errors.error_response(403, message)  # text/plain for EST (RFC 7030), a page for the pages, else JSON


def create_app(settings, plain_http=False):
    """The app; plain_http=True for the plain-HTTP listener, where only CMP, CRLs, /healthz and /readyz answer."""
    app = Flask("trustpoint_server")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.json.sort_keys = False
    app.extensions["trustpoint"] = Services(settings)
    app.teardown_appcontext(close_session)
    errors.register(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(cmp.bp)
    app.register_blueprint(crl.bp)
    app.register_blueprint(est.bp)
    pages.init_app(app, app.extensions["trustpoint"].vault)
    app.register_blueprint(aoki.bp)
    app.register_blueprint(agent.bp)
    if plain_http:
        app.before_request(_https_only)  # CMP's paths pass: the dispatcher below may skip it
    # EST is served over HTTPS only: on the plain-HTTP app its paths go to Flask, whose _https_only refuses them.
    handlers = {cmp.bp.name: cmp.ahead} if plain_http else {cmp.bp.name: cmp.ahead, est.bp.name: est.answer}
    app.wsgi_app = ahead.AheadOfFlask(app, pages.add_security_headers, handlers)

    @app.get("/healthz")
    def healthz():
        """Liveness: the process answers and reads its database."""
        session().execute(text("SELECT 1"))
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        """Readiness: writes commit and the disk has room (services/health.py); 503 says what is wrong."""
        ready, checks = app.extensions["trustpoint"].readiness.check()
        return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503

    return app
