# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP over HTTP (RFC 6712, RFC 9811) at the RFC 9483 paths.

    POST /.well-known/cmp/initialization/<domain>/          legacy path of the upstream user docs
    POST /.well-known/cmp/<operation>                       domain of the authenticated device
    POST /.well-known/cmp/p/<label>/<operation>             label: <domain>, <domain>~<profile> or ~<profile>

Every answer is a PKIMessage with HTTP 200 and Content-Type application/pkixcmp, rejections included;
unknown paths are 404. cmp_service.py decides what the answer says.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request

from .cmp_service import OPERATIONS, CmpResponder
from .db import session

bp = Blueprint("cmp", __name__)
CONTENT_TYPE = "application/pkixcmp"


@bp.post("/.well-known/cmp/initialization/<domain>/", strict_slashes=False)
def legacy_initialization(domain):
    return _serve(domain, None, "initialization")


@bp.post("/.well-known/cmp/<operation>/", strict_slashes=False)
def operation_without_label(operation):
    return _serve(None, None, operation)


@bp.post("/.well-known/cmp/p/<label>/<operation>/", strict_slashes=False)
def operation_with_label(label, operation):
    domain, _sep, profile = label.partition("~")
    return _serve(domain or None, profile or None, operation)


def _serve(domain_name, profile_name, operation):
    if operation not in OPERATIONS:
        abort(404, "unknown CMP operation %r; known: %s" % (operation, ", ".join(OPERATIONS)))
    services = current_app.extensions["trustpoint"]
    responder = CmpResponder(session(), services.vault, services.settings, public_url())
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    body = read_body(limit)
    if body is None:
        der = responder.refuse("the request exceeds %d bytes" % limit)
    else:
        der = responder.respond(domain_name, profile_name, operation, body, request.mimetype)
    return Response(der, 200, content_type=CONTENT_TYPE)


def public_url():
    """Base URL for the CRL distribution points of issued certificates.

    --public-url when configured; else the request's scheme and Host, with the port the request came in
    on when the Host header has none (OpenSSL's CMP client sends the bare host).
    """
    configured = current_app.extensions["trustpoint"].settings.public_url
    if configured:
        return configured
    host = request.host
    sock = request.environ.get("gunicorn.socket")
    if ":" not in host.rsplit("]", 1)[-1] and sock is not None:
        port = sock.getsockname()[1]
        if (request.scheme, port) not in (("http", 80), ("https", 443)):
            host = "%s:%d" % (host, port)
    return "%s://%s" % (request.scheme, host)


def read_body(limit):
    """The request body, or None when it is larger than limit bytes.

    Read from the WSGI input itself: with a chunked body (no Content-Length) Werkzeug's limited
    stream stops silently at the limit instead of refusing the rest.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks) if size <= limit else None
