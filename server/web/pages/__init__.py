# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The web pages: the operators' pages under /ui/ (signed in) and the device's download page under /browser/.

Server-rendered HTML that works without JavaScript, over the same services as the REST API. Sessions are
Flask's signed cookies (key derived from the vault key, so every server instance accepts them) carrying the
operator's session token (services/operators.py: signing out ends them all), Secure, HttpOnly, SameSite=Lax,
with the __Host- prefix; every form carries a CSRF token (Flask-WTF); sign-in and one-time-password attempts
are rate-limited per client address (Flask-Limiter, counted per worker process) on top of the per-account
delay of services/operators.py. HTTPS only: the plain-HTTP listener refuses these pages.
"""

from __future__ import annotations

import datetime

from flask import redirect, request, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from ...errors import HTML_BLUEPRINTS
from ...services import operators
from ...storage.db import session

# Per client address and worker process: enough for a person, too few for guessing.
SIGN_IN_LIMIT = "10 per minute"
OTP_LIMIT = "10 per minute"
IDLE_TIMEOUT = datetime.timedelta(hours=1)
# A session ends this long after sign-in however active it is.
ABSOLUTE_TIMEOUT = datetime.timedelta(hours=12)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Same-origin form posts keep their Referer: Flask-WTF checks it over HTTPS.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
}

login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(get_remote_address, storage_uri="memory://", headers_enabled=True)


@limiter.request_filter
def _not_a_page():
    # Only the pages' forms carry limits: CMP, EST and the API skip the limiter's work (2-3 % of an enrollment).
    return request.blueprint not in HTML_BLUEPRINTS


class SignedIn:
    """The operator of a request, as Flask-Login sees them."""

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def __init__(self, operator):
        self.operator = operator
        self.username = operator.username

    def get_id(self):
        return operators.session_id(self.operator)


@login_manager.user_loader
def _load(value):
    operator = operators.from_session_id(session(), value)
    return SignedIn(operator) if operator is not None else None


def _security_headers(response):
    return add_security_headers(response, request.blueprint, request.endpoint)


def add_security_headers(response, blueprint, endpoint):
    """The headers a response of blueprint and endpoint carries besides its own: after every Flask request, and
    on the CMP and EST answers given ahead of Flask (protocols/ahead.py)."""
    if blueprint in HTML_BLUEPRINTS or endpoint == "static":
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def init_app(app, vault):
    """Add the pages to app; vault provides the session cookies' signing key."""
    from . import browser, views

    app.config.update(
        SECRET_KEY=vault.derive_key("web-session-cookie"),
        SESSION_COOKIE_NAME="__Host-trustpoint",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/",
        PERMANENT_SESSION_LIFETIME=IDLE_TIMEOUT,
        # Forms check their CSRF token in the pages' before_request, not app-wide: CMP, EST and the API
        # authenticate every request themselves and carry no cookie.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=int(IDLE_TIMEOUT.total_seconds()),
    )
    login_manager.init_app(app)
    login_manager.login_view = "pages.sign_in"
    login_manager.login_message = "Sign in to see this page."
    # Flask-Login's IP/user-agent binding acts only on non-permanent sessions (ours are permanent once signed
    # in): the session token, the idle and the absolute timeouts bound a session instead.
    login_manager.session_protection = None
    csrf.init_app(app)
    limiter.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(browser.bp)
    app.after_request(_security_headers)

    @app.get("/")
    def index():
        return redirect(url_for("pages.devices"))


def protect_form():
    """before_request of the page blueprints: a POST must carry the form's CSRF token."""
    if request.method == "POST":
        csrf.protect()
