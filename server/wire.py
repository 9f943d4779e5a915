# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the protocol endpoints (CMP, EST) share about HTTP: reading bodies, the server's public URL."""

from __future__ import annotations

from flask import current_app, request


def public_url():
    """Base URL for the CRL distribution points of issued certificates.

    --public-url when configured. Else the request's Host, with the plain-HTTP listener's port when there is
    one (CRLs are fetched over plain HTTP: they are signed, and TLS to fetch them would need them first),
    else with the request's own scheme and port when the Host header has none (OpenSSL's CMP client sends
    the bare host).
    """
    settings = current_app.extensions["trustpoint"].settings
    if settings.public_url:
        return settings.public_url
    host = request.host
    if settings.plain_port:
        return "http://%s:%d" % (host.rsplit(":", 1)[0] if not host.endswith("]") else host, settings.plain_port)
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
