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

These POSTs are answered ahead of Flask (protocols/ahead.py, wrapped around the app's wsgi_app, calls ahead()):
Flask's routes below decide which paths they are, and serve what the dispatcher hands on.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request

from ..storage.db import session
from .cmp_responder import OPERATIONS, CmpResponder
from .wire import read_body

bp = Blueprint("cmp", __name__)
CONTENT_TYPE = "application/pkixcmp"
# endpoint -> rule; every rule also answers without its trailing slash (strict_slashes=False).
RULES = {
    # Clients configured with this one URL send every message to it.
    "legacy_initialization": "/.well-known/cmp/initialization/<domain>/",
    "without_operation": "/.well-known/cmp",
    "label_without_operation": "/.well-known/cmp/p/<label>/",
    "operation_without_label": "/.well-known/cmp/<operation>/",
    "operation_with_label": "/.well-known/cmp/p/<label>/<operation>/",
}


def target(domain=None, label=None, operation=None):
    """(domain, profile, operation) that a path's values name; None where it names none."""
    profile = None
    if label is not None:
        domain, _sep, profile = label.partition("~")
    return domain or None, profile or None, operation


def _view(**values):
    return serve(CmpResponder, *target(**values))


for _endpoint, _rule in RULES.items():
    bp.add_url_rule(_rule, _endpoint, _view, methods=["POST"], strict_slashes=False)


def serve(responder_class, domain_name, profile_name, operation):
    """Answer a CMP request with responder_class (CmpResponder, or AOKI's over CMP); operation None: any body."""
    if not _known(operation):
        abort(404, "unknown CMP operation %r; known: %s" % (operation, ", ".join(OPERATIONS)))
    return answer(responder_class, request, domain_name, profile_name, operation)


def _known(operation):
    return operation is None or operation in OPERATIONS


def answer(responder_class, req, domain_name, profile_name, operation):
    """The answer (HTTP 200, a PKIMessage) to the request req: Flask's, or ahead()'s. In an app context, whose
    end closes the request's database session (storage/db.py close_session)."""
    services = current_app.extensions["trustpoint"]
    gate = services.auth_limits.gate(req.remote_addr)
    responder = responder_class(session(), services.vault, services.settings, gate)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    body = read_body(req, limit)
    if body is None:
        der = responder.refuse("the request exceeds %d bytes" % limit)
    else:
        der = responder.respond(domain_name, profile_name, operation, body, req.mimetype)
    return Response(der, 200, content_type=CONTENT_TYPE)


def ahead(req, _endpoint, values):
    """protocols/ahead.py's handler: a POST that a route of this blueprint matches (unknown operations decline: Flask's
    404 names the known ones)."""
    domain_name, profile_name, operation = target(**values)
    if not _known(operation):
        return None
    return answer(CmpResponder, req, domain_name, profile_name, operation)
