# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP over HTTP (RFC 6712, RFC 9811) at the RFC 9483 paths.

    POST /.well-known/cmp/initialization/<domain>/          legacy path of the upstream user docs
    POST /.well-known/cmp/<operation>                       domain of the authenticated device
    POST /.well-known/cmp/p/<label>/<operation>             label: <domain>, <domain>~<profile> or ~<profile>
    POST /.well-known/cmp                                   one URL for every message (RFC 9811 3.3):
    POST /.well-known/cmp/p/<label>                         dispatched by the PKIBody (and genm infoType)

An operation path accepts its bodies only; the paths without one, and the legacy path, accept every body.
Every answer is a PKIMessage with HTTP 200 and Content-Type application/pkixcmp, rejections included;
unknown paths are 404. cmp_responder.py decides what the answer says.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request

from ..storage.db import session
from .cmp_responder import OPERATIONS, CmpResponder
from .wire import read_body

bp = Blueprint("cmp", __name__)
CONTENT_TYPE = "application/pkixcmp"


@bp.post("/.well-known/cmp/initialization/<domain>/", strict_slashes=False)
def legacy_initialization(domain):
    # Clients configured with this one URL send every message to it.
    return _serve(domain, None, None)


@bp.post("/.well-known/cmp", strict_slashes=False)
def without_operation():
    return _serve(None, None, None)


@bp.post("/.well-known/cmp/p/<label>/", strict_slashes=False)
def label_without_operation(label):
    domain, _sep, profile = label.partition("~")
    return _serve(domain or None, profile or None, None)


@bp.post("/.well-known/cmp/<operation>/", strict_slashes=False)
def operation_without_label(operation):
    return _serve(None, None, operation)


@bp.post("/.well-known/cmp/p/<label>/<operation>/", strict_slashes=False)
def operation_with_label(label, operation):
    domain, _sep, profile = label.partition("~")
    return _serve(domain or None, profile or None, operation)


def _serve(domain_name, profile_name, operation):
    return serve(CmpResponder, domain_name, profile_name, operation)


def serve(responder_class, domain_name, profile_name, operation):
    """Answer a CMP request with responder_class (CmpResponder, or AOKI's over CMP); operation None: any body."""
    if operation is not None and operation not in OPERATIONS:
        abort(404, "unknown CMP operation %r; known: %s" % (operation, ", ".join(OPERATIONS)))
    services = current_app.extensions["trustpoint"]
    responder = responder_class(
        session(), services.vault, services.settings, services.auth_limits.gate(request.remote_addr)
    )
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    body = read_body(limit)
    if body is None:
        der = responder.refuse("the request exceeds %d bytes" % limit)
    else:
        der = responder.respond(domain_name, profile_name, operation, body, request.mimetype)
    return Response(der, 200, content_type=CONTENT_TYPE)
