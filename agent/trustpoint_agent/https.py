# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTPS for the agent: every request over TLS 1.2+, answers bounded in size and time.

Three kinds of trust:
- provisional (AOKI's first request): no server verification; nothing in the answer is believed until the
  owner's signature over it checks out, and no secret is sent;
- pinned: the server's chain must lead to the pinned anchor, and the certificate it presents must be one
  that was pinned with it or name the host connected to (the anchor vouches for the server, the name for
  the connection);
- with a client certificate (the IDevID with its intermediates, or the credential being renewed) on top
  of either.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from trustpoint_core.errors import TransportError
from trustpoint_core.x509 import certificates_to_pem, load_certificate, subject_alt_names

MAX_ANSWER = 1 << 20
DEFAULT_TIMEOUT = 30


def _context(anchors, client_cert, client_key, client_chain=()):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # pinned connections check the name themselves (names_host)
    if anchors:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=certificates_to_pem(anchors))
    else:
        context.verify_mode = ssl.CERT_NONE
    if client_cert and client_chain:
        # The intermediates go with the certificate (an IDevID's manufacturer chain): OpenSSL reads them from
        # the certificate file, after the leaf.
        with tempfile.TemporaryDirectory() as directory:
            combined = os.path.join(directory, "client.pem")
            with open(client_cert, "rb") as leaf, open(combined, "wb") as handle:
                handle.write(leaf.read() + b"\n" + certificates_to_pem(list(client_chain)).encode())
            context.load_cert_chain(combined, client_key)
    elif client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context


def names_host(certificate, host):
    """True when the certificate's SAN names host (an IP address, or a DNS name; one leading wildcard)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for name in subject_alt_names(certificate):
        if address is not None and isinstance(name, x509.IPAddress) and name.value == address:
            return True
        if address is None and isinstance(name, x509.DNSName):
            pattern, wanted = name.value.lower().rstrip("."), host.lower().rstrip(".")
            if pattern == wanted:
                return True
            if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
                return True
    return False


def _expire(connection, expired):
    """The whole request's deadline: shut its socket down under the thread that waits on it (the plain socket's
    shutdown, not the TLS one, which would change the TLS object while it is in use)."""
    expired.append(True)
    sock = connection.sock
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass


class Https:
    """Requests to one kind of server trust (see the module documentation).

    anchors: the pinned anchor certificates (None: provisional); pinned_leaves: certificates the server may
    present whatever its name; client_cert/client_key: PEM files of a TLS client certificate.
    """

    def __init__(
        self,
        anchors=None,
        pinned_leaves=(),
        client_cert=None,
        client_key=None,
        timeout=DEFAULT_TIMEOUT,
        client_chain=(),
    ):
        self.anchors = list(anchors or ())
        self.pinned = {leaf.public_bytes(Encoding.DER) for leaf in pinned_leaves}
        self.context = _context(self.anchors, client_cert, client_key, client_chain)
        self.timeout = timeout
        self.peer = None  # the certificate the server presented last

    def request(self, method, url, body=None, headers=None):
        """(status, headers with lowercase names, body) of one request; TransportError when it fails (transient
        only when no answer came: sending again cannot change a wrong URL, a too big answer or another server)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise TransportError(
                "%s is not an https:// URL; the agent talks to servers over TLS only" % url, transient=False
            )
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port or 443, timeout=self.timeout, context=self.context
        )
        # timeout bounds each socket operation; the whole request gets as long once more: a server that sends a
        # byte now and then would otherwise keep the agent (and the state directory's lock) for days.
        expired = []
        timer = threading.Timer(2 * self.timeout, _expire, (connection, expired))
        timer.daemon = True
        timer.start()
        try:
            connection.connect()
            der = connection.sock.getpeercert(binary_form=True)
            self.peer = load_certificate(der) if der else None
            if self.anchors:
                self._check_name(parts.hostname)
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read(MAX_ANSWER + 1)
            if expired:  # the answer was cut off at the deadline, not complete
                raise OSError("no complete answer within %d s" % (2 * self.timeout))
            if len(data) > MAX_ANSWER:
                raise TransportError("the answer of %s is larger than %d bytes" % (url, MAX_ANSWER), transient=False)
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        except ssl.SSLCertVerificationError as exc:
            raise TransportError(
                "the server at %s is not the pinned one: its TLS certificate does not chain to the pinned anchor (%s)"
                % (url, exc.verify_message or exc),
                transient=False,
            ) from exc
        except (OSError, http.client.HTTPException, ssl.SSLError, socket.timeout) as exc:
            reason = "no complete answer within %d s" % (2 * self.timeout) if expired else exc
            raise TransportError("cannot reach %s: %s" % (url, reason)) from exc
        except UnicodeError as exc:  # a path or header http.client cannot send (non-ASCII, from an mDNS TXT record)
            raise TransportError("cannot send a request to %s: %s" % (url, exc), transient=False) from exc
        finally:
            timer.cancel()
            connection.close()

    def _check_name(self, host):
        if self.peer is None:
            raise TransportError("the server at %s presented no certificate" % host, transient=False)
        if self.peer.public_bytes(Encoding.DER) in self.pinned or names_host(self.peer, host):
            return
        raise TransportError(
            "the TLS certificate of %s chains to the pinned anchor but is neither the pinned server certificate "
            "nor names %s; add the address to the server's certificate (trustpoint-server init --tls-san %s)"
            % (host, host, host),
            transient=False,
        )

    # --- the core's client interfaces -------------------------------------------------------------

    def transport(self, url, body, content_type):
        """CMP: post(url, body, content_type) -> (status, content type, body)."""
        status, headers, data = self.request("POST", url, body, {"Content-Type": content_type})
        return status, headers.get("content-type"), data

    def send(self, method, url, body, headers):
        """EST: send(method, url, body, headers) -> (status, content type, body)."""
        status, answer_headers, data = self.request(method, url, body, headers)
        return status, answer_headers.get("content-type"), data
