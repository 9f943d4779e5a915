# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a device needs to install and trust trustpoint-agent, over HTTPS without authentication.

GET /agent/                     an index of the wheels (pip: --find-links https://<server>/agent/)
GET /agent/<file>               one wheel (the agent, or a dependency the operator put beside it)
GET /agent/tls-truststore.pem   the server's TLS chain, anchor first: the agent checks it against the
                                pin in its onboarding token before it trusts the server
"""

from __future__ import annotations

import html

from flask import Blueprint, Response, abort, current_app, send_file
from trustpoint_core import x509

from ..services import agent, aoki
from .wire import https_base_url

bp = Blueprint("agent", __name__)


def _settings():
    return current_app.extensions["trustpoint"].settings


@bp.get("/agent/")
def index():
    settings = _settings()
    found = agent.wheels(settings)
    links = "".join(
        '<a href="%s#sha256=%s">%s</a> (%d bytes)<br>\n' % (html.escape(name), digest, html.escape(name), size)
        for name, digest, size in found
    )
    if not found:
        # The directory is not named: this page is public, the server's paths are not.
        links = (
            "<p>No wheel is served yet: the operator builds one with <code>make agent-wheel</code> and copies it to "
            "the server's agent wheels directory (<code>DATA/agent-wheels</code> or <code>--agent-wheels</code>).</p>\n"
        )
    page = (
        "<!DOCTYPE html>\n<html><head><title>trustpoint-agent</title></head><body>\n"
        "<h1>trustpoint-agent</h1>\n<p>pip install --find-links %s/agent/ trustpoint-agent</p>\n%s</body></html>\n"
    ) % (html.escape(https_base_url()), links)
    return Response(page, 200, content_type="text/html; charset=utf-8")


@bp.get("/agent/tls-truststore.pem")
def tls_truststore():
    truststore = aoki.tls_truststore(_settings())
    if not truststore:
        abort(404, "the server presents no TLS certificate chain it knows of")
    return Response(x509.certificates_to_pem(truststore), 200, content_type="application/x-pem-file")


@bp.get("/agent/<name>")
def wheel(name):
    path = agent.wheel_path(_settings(), name)
    if path is None:
        abort(404, "no file %r at /agent/; the index at /agent/ lists what there is" % name)
    return send_file(path, mimetype="application/octet-stream", as_attachment=True, download_name=name)
