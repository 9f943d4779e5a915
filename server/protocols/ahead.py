# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The enrollment protocols' requests answered ahead of Flask's request machinery (issue 16).

A Flask request costs its request context, the session cookie's interface, the pages' and extensions'
before/after_request hooks (Flask-Login, Flask-Limiter, CSRF) and the error handlers' dispatch: about 0.2 ms of CPU
per CMP or EST request on the benchmark machine (bench/README.md), for requests that need none of it (they carry
no cookie and authenticate themselves).
"""

from __future__ import annotations

from werkzeug.exceptions import HTTPException

from ..errors import error_response, unexpected

# Every path of the protocols answered here contains it (EST's prefixed form too): other paths go to Flask without a
# look at the URL map.
WELL_KNOWN = "/.well-known/"
# What the URL map's match depends on (werkzeug's bind_to_environ: host, scheme, mount point, path, method, and a
# WebSocket upgrade, which no route takes).
_ROUTE_KEY = (
    "REQUEST_METHOD",
    "PATH_INFO",
    "SCRIPT_NAME",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "wsgi.url_scheme",
    "HTTP_UPGRADE",
    "HTTP_CONNECTION",
)
# At most MAX_ROUTES remembered, each of a key of at most MAX_ROUTE_KEY characters (paths and headers are the
# client's choice): about 150 KiB at most.
MAX_ROUTES, MAX_ROUTE_KEY = 256, 512


def for_protocols(environ):
    """Whether a request may be one of the protocols' (a look at its method and path, not at Flask's URL map). OPTIONS
    (and HEAD) are Flask's to answer: it does so without the view."""
    return environ.get("REQUEST_METHOD") in ("GET", "POST") and WELL_KNOWN in environ.get("PATH_INFO", "")


class AheadOfFlask:
    """WSGI middleware: the requests that the routes of a blueprint in handlers match are answered by its handler
    without Flask's request machinery. Flask's URL map decides, so a path means what it means to Flask; everything
    else (other blueprints, methods and paths, redirects) goes to Flask unchanged, and so does a request its handler
    declines (None).

    handlers: blueprint name -> handler(request, endpoint, URL values) -> Response or None. What a Flask request
    would do around the view is kept: an app context (flask.g holds the database session, and its end rolls back and
    closes it), add_headers(response, blueprint, endpoint) as the pages' after_request adds them, and an unexpected
    error answers 500 as server/errors.py does for the blueprint. Not kept: the "Vary: Cookie" that Flask adds because
    Flask-Login's after_request looks into the (empty) cookie session; these answers do not depend on cookies.
    """

    def __init__(self, app, add_headers, handlers):
        self.app = app
        self.flask = app.wsgi_app
        self.add_headers = add_headers
        self.handlers = handlers
        # What Flask's URL map answered for a request's _ROUTE_KEY: matching costs 15-25 us (issue 16), and
        # devices post to a handful of paths (a long path or Host is matched anew each time).
        self._routes = {}

    def __call__(self, environ, start_response):
        if not for_protocols(environ):
            return self.flask(environ, start_response)
        req = self.app.request_class(environ)
        key = tuple(environ.get(name) for name in _ROUTE_KEY)
        route = self._routes.get(key)
        if route is None:
            try:
                route = self.app.create_url_adapter(req).match()
            except HTTPException:  # no route, another method, a redirect, an untrusted Host: Flask's answer
                return self.flask(environ, start_response)
            if sum(len(value) for value in key if isinstance(value, str)) <= MAX_ROUTE_KEY:
                if len(self._routes) >= MAX_ROUTES:
                    self._routes.clear()
                self._routes[key] = route
        endpoint, values = route
        blueprint = endpoint.rpartition(".")[0]
        handler = self.handlers.get(blueprint)
        if handler is None:
            return self.flask(environ, start_response)
        with self.app.app_context():
            try:
                response = handler(req, endpoint, values)
            except Exception:  # the log gets the traceback, the client a 500 (server/errors.py)
                response = error_response(500, unexpected(req.method, req.path), blueprint=blueprint)
            if response is not None:
                self.add_headers(response, blueprint, endpoint)
        if response is None:  # declined before any work
            return self.flask(environ, start_response)
        return response(environ, start_response)
