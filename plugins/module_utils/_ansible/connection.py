# -*- coding: utf-8 -*-
# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to the collection: how modules reach the Trustpoint server (HTTP, REST API).

The only module_utils that import Ansible live in this package; the core beside it does not.
"""

from __future__ import annotations

import json
import ssl
from urllib.error import HTTPError, URLError

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.urls import open_url

from ..errors import TransportError

# Options every module that talks to the server has (doc fragment trustpoint.pki.connection).
CONNECTION_ARGS = dict(
    server_url=dict(type="str", required=True, fallback=(env_fallback, ["TRUSTPOINT_URL"])),
    validate_certs=dict(type="bool", default=True, fallback=(env_fallback, ["TRUSTPOINT_VALIDATE_CERTS"])),
    ca_path=dict(type="path", fallback=(env_fallback, ["TRUSTPOINT_CA_PATH"])),
    timeout=dict(type="int", default=30),
)
# Options of modules that use the management API (doc fragment trustpoint.pki.api).
API_ARGS = dict(
    # Checked in run_api(), for a message that names the environment variable and the playbook variable.
    api_token=dict(type="str", no_log=True, fallback=(env_fallback, ["TRUSTPOINT_API_TOKEN"])),
)


def _check_ca_path(module):
    """Raise TransportError unless ca_path (when set) is a file this process can read."""
    path = module.params.get("ca_path")
    if not path:
        return
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise TransportError(
            "cannot read the CA file %s given as ca_path (the playbooks' trustpoint_ca_path): %s; give the server's "
            "TLS trust anchor, tls-ca.pem in its data directory" % (path, exc.strerror or exc)
        ) from exc


def _tls_verification_failed(exc):
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(reason)


def _open(module, url, method="GET", data=None, headers=None, client_cert=None, client_key=None):
    """(status, headers, body) of one request; HTTP errors are answers too, not exceptions.

    client_cert/client_key: a TLS client certificate and its key (PEM files), e.g. an IDevID for EST.
    """
    params = module.params
    _check_ca_path(module)
    try:
        response = open_url(
            url,
            data=data,
            method=method,
            headers=headers or {},
            validate_certs=params["validate_certs"],
            ca_path=params.get("ca_path"),
            timeout=params["timeout"],
            follow_redirects="none",
            client_cert=client_cert,
            client_key=client_key,
        )
        return response.getcode(), response.headers, response.read()
    except HTTPError as exc:
        return exc.code, exc.headers, exc.read() if exc.fp is not None else b""
    except (URLError, OSError, ValueError) as exc:
        if _tls_verification_failed(exc):
            hint = "set ca_path (the playbooks' trustpoint_ca_path) to the server's TLS trust anchor, %s"
            if params.get("ca_path"):
                hint = "is ca_path (the playbooks' trustpoint_ca_path) the server's TLS trust anchor, %s?"
            raise TransportError(
                "the TLS certificate of the Trustpoint server at %s does not verify (%s); %s"
                % (url, getattr(exc, "reason", exc), hint % "tls-ca.pem in its data directory"),
                transient=False,
            ) from exc
        reason = getattr(exc, "reason", exc)
        # No answer (refused, reset, closed, timed out) may be temporary; a URL that cannot work is not.
        transient = isinstance(reason, OSError)
        raise TransportError(
            "cannot reach the Trustpoint server at %s: %s" % (url, reason), transient=transient
        ) from exc


def http_sender(module, client_cert=None, client_key=None):
    """send(method, url, body, headers) -> (status, content type, body), for the core's EST client."""

    def send(method, url, body, headers):
        status, answer_headers, data = _open(module, url, method, body, headers, client_cert, client_key)
        return status, answer_headers.get("Content-Type"), data

    return send


def http_transport(module):
    """A transport for the core's CMP client: post(url, body, content_type)."""
    send = http_sender(module)

    def post(url, body, content_type):
        return send("POST", url, body, {"Content-Type": content_type})

    return post


def endpoint(module, path):
    return module.params["server_url"].rstrip("/") + path


class ApiError(Exception):
    def __init__(self, status, message, from_server=False):
        super().__init__(message)
        self.status = status
        # True when the answer is the server's JSON error ({"error": ...}).
        self.from_server = from_server


class TrustpointApi:
    """The server's REST management API (/api/v1) with the module's token."""

    def __init__(self, module):
        self.module = module

    def request(self, method, path, payload=None, ok=(200, 201, 204)):
        """The decoded JSON answer of one call (None for 204 No Content); raises ApiError."""
        headers = {"Authorization": "Bearer " + self.module.params["api_token"], "Accept": "application/json"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        url = endpoint(self.module, "/api/v1" + path)
        status, answer_headers, body = _open(self.module, url, method, data, headers)
        try:
            decoded = json.loads(body) if body else None
        except ValueError:
            decoded = None
        if status not in ok:
            message = decoded.get("error") if isinstance(decoded, dict) else None
            # Only the server's own JSON error says that a resource does not exist; a 404 page of
            # something else (a proxy, a wrong server_url) says nothing about it.
            raise ApiError(
                status,
                "Trustpoint API %s %s answered HTTP %s: %s"
                % (method, path, status, message or body[:200].decode("utf-8", "replace")),
                from_server=isinstance(message, str),
            )
        if status != 204 and decoded is None:
            content_type = answer_headers.get("Content-Type") if answer_headers else None
            raise ApiError(
                status,
                "%s answered HTTP %s with %s instead of JSON; %s probably is not a Trustpoint server "
                "(a proxy or login page?); check server_url"
                % (
                    url,
                    status,
                    "no body" if not body else "a body of type %s" % (content_type or "unknown"),
                    self.module.params["server_url"],
                ),
            )
        return decoded

    def get_or_none(self, path):
        """The resource at path, or None when the server says it does not exist."""
        try:
            return self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404 and exc.from_server:
                return None
            raise


def run_api(module, function):
    """Call function(api); turn connection and API errors into fail_json."""
    if not (module.params.get("api_token") or "").strip():
        module.fail_json(
            msg="no API token: set api_token, or the environment variable TRUSTPOINT_API_TOKEN (the playbooks' "
            "trustpoint_api_token); trustpoint-server init writes the first token to admin-token in its data directory"
        )
    try:
        return function(TrustpointApi(module))
    except (ApiError, TransportError) as exc:
        module.fail_json(msg=str(exc))
