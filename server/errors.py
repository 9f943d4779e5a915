# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Errors the REST API answers with: JSON bodies whose message says what is wrong (text/plain for EST)."""

from __future__ import annotations

import logging

from flask import Response, jsonify, render_template, request
from sqlalchemy.exc import IntegrityError
from trustpoint_core.errors import bounded
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status, message, headers=None):
        message = bounded(message)  # it may quote what the client sent
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    @classmethod
    def too_many_requests(cls, message, retry_after):
        """429 Too Many Requests: message says why, Retry-After in how many seconds an attempt may succeed."""
        return cls(429, message, {"Retry-After": str(retry_after)})


def json_error(status, message, headers=None):
    response = jsonify({"error": message, "status": status})
    response.status_code = status
    response.headers.update(headers or {})
    return response


# Blueprints whose errors are web pages (server/web/pages/).
HTML_BLUEPRINTS = ("pages", "browser")


def error_response(status, message, headers=None, blueprint=None):
    """JSON for the API; text/plain for EST, whose clients expect no JSON (RFC 7030); a page for the pages.
    blueprint: the request's (default: Flask's request's)."""
    blueprint = blueprint or request.blueprint
    if blueprint in HTML_BLUEPRINTS:
        response = Response(render_template("error.html", status=status, message=message), status)
        response.headers.update(headers or {})
        return response
    if blueprint == "est":
        return text_error(status, message, headers)
    return json_error(status, message, headers)


def text_error(status, message, headers=None):
    """An error answer in text/plain (EST's)."""
    response = Response(message + "\n", status, content_type="text/plain; charset=utf-8")
    response.headers.update(headers or {})
    return response


def register(app):
    @app.errorhandler(ApiError)
    def _api_error(exc):
        return error_response(exc.status, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        # Keep headers such as Allow (405); the body becomes JSON.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(exc.code, bounded(exc.description or ""), headers)

    @app.errorhandler(IntegrityError)
    def _conflict(exc):
        return error_response(409, conflict(request.method, request.path, exc))

    @app.errorhandler(Exception)
    def _unexpected(exc):
        return error_response(500, unexpected(request.method, request.path))


def conflict(method, path, exc):
    """Log an IntegrityError, a concurrent request that created the same name between our check and our commit; the
    message the client gets (409)."""
    log.info("conflicting write on %s %s: %s", method, path, str(exc).splitlines()[0])
    return "the request conflicts with data written at the same time; read it again and retry"


def unexpected(method, path):
    """Log the exception being handled, traceback included; the message the client gets instead of it."""
    log.exception("unhandled error on %s %s", method, path)
    return "internal server error; the server log has the details"
