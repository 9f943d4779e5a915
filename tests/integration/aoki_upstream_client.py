# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""An AOKI device client written from the published format alone (the upstream spec and its test client's
behaviour, shared/reference/aoki.md §4), independently of trustpoint_core and trustpoint-agent.

It does what upstream Trustpoint's `aoki/tests/client.py` does, in the same order: GET /aoki/init with the
IDevID as TLS client certificate and no server verification; status, JSON and both signature headers;
the first EST entry (an https:// URL as is, else prefixed with the server URL); the DevOwnerID verified with
cryptography's PolicyBuilder against the owner truststore, depth 2, without intermediates; the
dev-owner:cert: SAN of its IDevID; the signature with SHA-256, the algorithm header ignored; only the first
PEM block of tls-truststore as the server's trust anchor; then EST simpleenroll with the IDevID.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import ssl
import tempfile
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID


class AokiClientError(Exception):
    pass


def _request(url, method="GET", body=None, headers=None, cert=None, key=None, cafile=None):
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()  # noqa: S323
    if cert:
        context.load_cert_chain(cert, key)
    connection = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=30)
    try:
        connection.request(method, parts.path or "/", body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def aoki_init(server_url, idevid_cert, idevid_key, owner_truststore, path="/aoki/init"):
    """The checked init answer: {"est_url", "tls_truststore_pem" (first block), "owner"}."""
    status, headers, body = _request(server_url + path, cert=idevid_cert, key=idevid_key)
    if status != 200:
        raise AokiClientError("init answered HTTP %d: %s" % (status, body[:200]))
    signature = headers.get("aoki-signature")
    if not signature or not headers.get("aoki-signature-algorithm"):
        raise AokiClientError("the answer lacks the signature headers")
    document = json.loads(body)["aoki-init"]
    owner_pem, tls_pem = document["owner-id-cert"], document["tls-truststore"]
    protocols = document["enrollment-info"]["protocols"]
    if not protocols:
        raise AokiClientError("no enrollment protocol")
    est = next(p for p in protocols if p.get("protocol") == "EST" and p.get("url"))
    url = est["url"] if est["url"].startswith("https://") else server_url + est["url"]

    owner = x509.load_pem_x509_certificate(owner_pem.encode())
    with open(owner_truststore, "rb") as handle:
        anchors = x509.load_pem_x509_certificates(handle.read())
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(anchors))
        .max_chain_depth(2)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(owner, [])
    except verification.VerificationError as exc:
        raise AokiClientError("DevOwnerID not trusted: %s" % exc) from exc

    with open(idevid_cert, "rb") as handle:
        idevid = x509.load_pem_x509_certificate(handle.read())
    serial = idevid.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    expected = "dev-owner:cert:%s_%s" % (
        serial[0].value if serial else "",
        hashlib.sha256(idevid.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )
    names = owner.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if expected not in names.get_values_for_type(x509.UniformResourceIdentifier):
        raise AokiClientError("the DevOwnerID does not name this IDevID")

    raw = base64.b64decode(signature)
    public_key = owner.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(raw, body, ec.ECDSA(hashes.SHA256()))
    else:
        raise AokiClientError("unsupported DevOwnerID key %s" % type(public_key).__name__)

    anchor = x509.load_pem_x509_certificate(tls_pem.encode())  # the first PEM block only
    return {"est_url": url, "tls_truststore_pem": anchor.public_bytes(serialization.Encoding.PEM), "owner": owner}


def est_enroll(est_url, idevid_cert, idevid_key, tls_truststore_pem, key):
    """POST <url without trailing slash>/simpleenroll/ with the IDevID; the issued certificate."""
    with open(idevid_cert, "rb") as handle:
        idevid = x509.load_pem_x509_certificate(handle.read())
    serial = idevid.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "aokitest.example.com"),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    with tempfile.NamedTemporaryFile(suffix=".pem") as cafile:
        cafile.write(tls_truststore_pem)
        cafile.flush()
        status, _headers, body = _request(
            est_url.rstrip("/") + "/simpleenroll/",
            "POST",
            csr.public_bytes(serialization.Encoding.DER),
            {"Content-Type": "application/pkcs10"},
            cert=idevid_cert,
            key=idevid_key,
            cafile=cafile.name,
        )
    if status != 200:
        raise AokiClientError("EST answered HTTP %d: %s" % (status, body[:200]))
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
