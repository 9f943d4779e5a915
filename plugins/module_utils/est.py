# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""EST (RFC 7030, RFC 8951) message formats: CSRs in, certs-only PKCS#7 and server-generated keys out.

Real clients differ in small ways (see the reference notes): bodies come as base64 with or without line
breaks, raw DER or PEM; HTTP/1.0 clients need 64-character lines and a final newline, strongSwan one line.
"""

from __future__ import annotations

import base64
import binascii
import os
import time

from .asn1 import brief, der_oid, der_sequence, der_tlv
from .errors import InvalidInput, TransportError, TrustpointError
from .keys import hash_for, same_public_key
from .retry import call_with_retries
from .x509 import csr_signature_valid

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs7
except ImportError:  # reported by deps.missing()
    pass

PKCS10 = "application/pkcs10"
PKCS7_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CSRATTRS = "application/csrattrs"
PKCS8 = "application/pkcs8"


def decode_body(body):
    """The DER inside an EST request body: base64 (any line breaks), raw DER or PEM."""
    if body[:1] == b"\x30":
        return body  # raw DER, as it is: its last bytes may be those of white space
    body = body.strip()
    if not body:
        raise InvalidInput("the request body is empty")
    if body.startswith(b"-----BEGIN"):
        lines = [line for line in body.splitlines() if line and not line.startswith(b"-----")]
        body = b"".join(lines)
    try:
        # validate=False skips the line breaks (LF or CRLF) that some clients put in.
        der = base64.b64decode(body, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("the request body is neither base64 nor DER: %s" % exc) from exc
    if not der or der[:1] != b"\x30":
        raise InvalidInput("the request body does not decode to a DER structure")
    return der


def load_csr(body):
    """The CSR of a simpleenroll body, with its self-signature (the proof of possession) verified."""
    der = decode_body(body)
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise InvalidInput("the request body is not a PKCS#10 certificate request: %s" % brief(exc)) from exc
    if not csr_signature_valid(csr):
        raise InvalidInput("the certificate request's signature does not verify")
    return csr


def encode_base64(der, http_version="HTTP/1.1"):
    """base64 of a response body framed for the client's HTTP version (RFC 8951 base64, no CTE needed).

    HTTP/1.0 clients (OpenSSL BIO based) decode only lines of at most 64 characters ending in a newline;
    HTTP/1.1 clients such as strongSwan do not skip whitespace, so they get one line.
    """
    text = base64.b64encode(der)
    if http_version == "HTTP/1.0":
        return b"".join(text[i : i + 64] + b"\n" for i in range(0, len(text), 64))
    return text


def certs_only(certificates):
    """DER certs-only CMC Simple PKI Response (degenerate PKCS#7 SignedData) of certificates."""
    return pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)


def load_certs_only(body):
    """The certificates of a certs-only response (base64 or DER)."""
    der = decode_body(body)
    try:
        return pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        raise InvalidInput("the response is not a certs-only PKCS#7: %s" % exc) from exc


# PKCS#9 extensionRequest: in CsrAttrs, the extensions the CSR should carry (RFC 7030 4.5.2).
EXTENSION_REQUEST = "1.2.840.113549.1.9.14"


def csr_attributes(profile):
    """DER CsrAttrs (RFC 7030 4.5.2, a SEQUENCE OF AttrOrOID) for a certificate of profile: sign with
    ecdsa-with-SHA256 a key of type id-ecPublicKey on secp256r1 (the profile's default key type), and where
    the profile requires a subjectAltName (tls_server, opc_ua), an extensionRequest naming subjectAltName."""
    key_type = der_sequence(der_oid("1.2.840.10045.2.1"), der_tlv(0x31, der_oid("1.2.840.10045.3.1.7")))
    attributes = [der_oid("1.2.840.10045.4.3.2"), key_type]
    if profile.required_san_types:
        attributes.append(der_sequence(der_oid(EXTENSION_REQUEST), der_tlv(0x31, der_oid("2.5.29.17"))))
    return der_sequence(*attributes)


def server_keygen_response(private_key, certificate, http_version="HTTP/1.1"):
    """(multipart/mixed content type, body) of a serverkeygen answer (RFC 7030 4.4.2): the private key as
    unencrypted PKCS#8 (the TLS session protects it) and the certificate as certs-only."""
    boundary = "est-" + os.urandom(12).hex()
    key_der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    parts = []
    for content_type, der in ((PKCS8, key_der), (PKCS7_CERTS_ONLY, certs_only([certificate]))):
        parts.append(
            b"--%s\r\nContent-Type: %s\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n"
            % (boundary.encode(), content_type.encode(), encode_base64(der, http_version).strip())
        )
    body = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
    return "multipart/mixed; boundary=%s" % boundary, body


def parse_server_keygen(content_type, body):
    """(private key, certificates) of a serverkeygen answer."""
    marker = "boundary="
    if marker not in (content_type or ""):
        raise InvalidInput("serverkeygen answered %r, not multipart/mixed" % content_type)
    boundary = content_type.split(marker, 1)[1].split(";")[0].strip().strip('"').encode()
    key, certificates = None, None
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _sep, payload = part.partition(b"\r\n\r\n")
        kind = head.lower()
        if b"application/pkcs8" in kind:
            key = serialization.load_der_private_key(decode_body(payload), password=None)
        elif b"application/pkcs7-mime" in kind:
            certificates = load_certs_only(payload)
    if key is None or not certificates:
        raise InvalidInput("the serverkeygen answer lacks the key or the certificate")
    return key, certificates


class EstClient:
    """A device's EST client for one server and label (domain).

    send(method, url, body, headers) returns (status, content type, body) and raises TransportError when
    the server cannot be reached; TLS (server verification, a client certificate) is the sender's. With
    retries, a request whose answer was lost (or that met a server error) is sent again: the server issues a
    certificate again to a device whose previous one it never received.
    """

    def __init__(self, base_url, send, retries=0, sleep=time.sleep):
        self.base_url = base_url.rstrip("/")
        self.send = send
        self.retries = retries
        self.sleep = sleep

    def _request(self, method, operation, body=None, headers=None):
        url = "%s/%s" % (self.base_url, operation)

        def exchange():
            status, content_type, data = self.send(method, url, body, headers or {})
            if status != 200:
                detail = (data or b"").decode("utf-8", "replace").strip()[:300]
                raise TransportError(
                    "EST %s refused with HTTP %s: %s" % (operation, status, detail or "no reason given"), status
                )
            return content_type, data

        return call_with_retries(exchange, self.retries, self.sleep)

    def ca_certificates(self):
        """/cacerts: the domain's CA certificates (issuing CA and root)."""
        return load_certs_only(self._request("GET", "cacerts")[1])

    def enroll(self, csr, username=None, password=None, reenroll=False):
        """simpleenroll (or simplereenroll) of csr; returns the issued certificate.

        username/password: HTTP Basic; without them the TLS client certificate of the sender authenticates.
        """
        headers = {"Content-Type": PKCS10}
        if username is not None:
            token = base64.b64encode(("%s:%s" % (username, password)).encode()).decode()
            headers["Authorization"] = "Basic " + token
        body = encode_base64(csr.public_bytes(serialization.Encoding.DER), "HTTP/1.0")
        _type, data = self._request("POST", "simplereenroll" if reenroll else "simpleenroll", body, headers)
        for certificate in load_certs_only(data):
            if same_public_key(certificate.public_key(), csr.public_key()):
                return certificate
        raise TrustpointError("the EST server's answer holds no certificate for the requested key")


def build_csr(private_key, subject, subject_alt_names=()):
    """A CSR for private_key (signed with it: the proof of possession)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if subject_alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(subject_alt_names)), critical=False)
    return builder.sign(private_key, hash_for(private_key))
