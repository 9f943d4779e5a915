# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the protocol endpoints (CMP, EST, AOKI) share about HTTP: reading bodies, the TLS client certificate,
the base URL handed back to a client.

The request's Host header is the client's choice: only https_base_url() reads it, for URLs that go back to the
same client. Nothing that outlives the request (a certificate's CRL distribution point: Settings.crl_base_url)
comes from it."""

from __future__ import annotations

from cryptography import x509 as cx509
from flask import current_app, g, request

from ..runtime.tls import TLS_ENVIRON_KEY


def https_base_url():
    """The HTTPS base URL devices reach the server at, for URLs the server hands to them (AOKI's enrollment
    URLs, the agent's command): --public-url when it is https, else the scheme-less host the request named
    (over HTTPS: the device's own view of the server)."""
    settings = current_app.extensions["trustpoint"].settings
    if settings.public_url and settings.public_url.startswith("https://"):
        return settings.public_url.rstrip("/")
    return "https://%s" % request.host


def read_body(req, limit):
    """The body of req (Flask's request, or a Werkzeug Request of CMP's dispatcher), or None when it is larger
    than limit bytes.

    Read from the WSGI input itself: with a chunked body (no Content-Length) Werkzeug's limited
    stream stops silently at the limit instead of refusing the rest.
    """
    if req.content_length is not None and req.content_length > limit:
        return None
    stream = req.environ["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks) if size <= limit else None


# --- the client's certificate (handlers) ---------------------------------------------------------


def client_certificate(req):
    """The TLS client certificate (cryptography Certificate) of req (Flask's request, or a Werkzeug Request of
    protocols/ahead.py), or None.

    Only a certificate that verified in the handshake against the domains' CAs and the idevid/tls
    truststores reaches here: a connection with any other certificate never gets a request through.
    None over plain HTTP and when the client sent no certificate. Its revocation is not checked.
    """
    if "tls_client_certificate" not in g:
        tls = req.environ.get(TLS_ENVIRON_KEY)
        der = tls.peer_certificate if tls is not None else None
        g.tls_client_certificate = cx509.load_der_x509_certificate(der) if der else None
    return g.tls_client_certificate


def client_chain(req):
    """The CA certificates the handshake verified the client certificate with (leaf excluded), as
    cryptography Certificates: the intermediates an IDevID's manufacturer chain needs, which TLS delivers
    but the peer certificate alone lacks. Empty when there is no client certificate."""
    tls = req.environ.get(TLS_ENVIRON_KEY)
    if tls is None or client_certificate(req) is None:
        return []
    return [cx509.load_der_x509_certificate(der) for der in tls.verified_chain[1:]]
