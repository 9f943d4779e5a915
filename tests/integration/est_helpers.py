# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers of the EST interop and negative tests: real clients (curl, openssl, strongSwan `pki`)
against the server's EST endpoints, and the API set-up they need.

Every answer the curl helper returns has been checked for a Content-Length that matches its body (EST
clients such as strongSwan need one), so each test checks that on the way.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import urllib.parse
import uuid

from cmp_helpers import load_pem, openssl_verify, write_pem
from conftest import openssl, require_binary

PKCS10 = "application/pkcs10"
PKCS7 = "application/pkcs7-mime; smime-type=certs-only"
# The TLS errors curl reports when the server refuses the client certificate: in the handshake (35)
# or, with TLS 1.3, with an alert on the first read after it (56).
CURL_TLS_ERRORS = (35, 56)


# --- URLs and API set-up ---------------------------------------------------------------------------


def est_url(server, operation, label=None, prefix=None):
    """https URL of an EST operation: /.well-known/est[/<label>]/<operation> or /<prefix>/.well-known/est/..."""
    path = "/.well-known/est/" + ("%s/" % label if label else "") + operation
    if prefix:
        path = "/" + prefix + path
    return server.url + path


def password_device(server, domain):
    """(device, password) of a new est_password device in domain (a name)."""
    name = "est-" + uuid.uuid4().hex[:10]
    status, body = server.api("POST", "/devices", {"name": name, "domain": domain, "onboarding_method": "est_password"})
    assert status == 201, body
    assert body["password"], body
    return body["device"], body["password"]


# --- keys and CSRs (openssl) -----------------------------------------------------------------------


class Csr:
    """A private key and a CSR for it, written by openssl: key (PEM), der, b64 (64-char lines), pem."""

    def __init__(self, workdir, stem, subject, key_kind="ec", sans=None):
        self.key = workdir / ("%s.key" % stem)
        self.der = workdir / ("%s.csr.der" % stem)
        self.pem = workdir / ("%s.csr.pem" % stem)
        self.b64 = workdir / ("%s.csr.b64" % stem)
        if key_kind == "ec":
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(self.key))
        else:
            openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(self.key))
        args = ["req", "-new", "-key", str(self.key), "-subj", subject]
        if sans:
            args += ["-addext", "subjectAltName=" + sans]
        openssl(*args, "-outform", "DER", "-out", str(self.der))
        openssl("req", "-inform", "DER", "-in", str(self.der), "-out", str(self.pem))
        openssl("base64", "-in", str(self.der), "-out", str(self.b64))  # 64-character lines

    def public_key_pem(self):
        return openssl("pkey", "-in", str(self.key), "-pubout").stdout


class SwanCsr:
    """A key and a DER CSR made by strongSwan itself (`pki --gen`, `pki --req`): key (PEM), der."""

    def __init__(self, workdir, stem, dn):
        self.key = workdir / ("%s.key" % stem)
        self.der = workdir / ("%s.csr.der" % stem)
        returncode, out, err = pki("--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem")
        assert returncode == 0, err
        self.key.write_bytes(out)
        returncode, out, err = pki("--req", "--in", self.key, "--type", "priv", "--dn", dn, "--outform", "der")
        assert returncode == 0, err
        self.der.write_bytes(out)

    def public_key_pem(self):
        return openssl("pkey", "-in", str(self.key), "-pubout").stdout


def public_key_of_certificate(cert_path):
    return openssl("x509", "-in", str(cert_path), "-noout", "-pubkey").stdout


# --- curl ------------------------------------------------------------------------------------------


class Answer:
    """What curl got: returncode, HTTP status (0 when there was none), status line, headers, body."""

    def __init__(self, returncode, stderr, head, body):
        self.returncode = returncode
        self.stderr = stderr
        self.body = body
        # The last header block (curl writes a 100 Continue block first for larger bodies).
        blocks = [b for b in head.replace("\r\n", "\n").split("\n\n") if b.strip()]
        lines = blocks[-1].split("\n") if blocks else []
        self.status_line = lines[0] if lines else ""
        self.status = int(self.status_line.split()[1]) if lines else 0
        self.headers = {}
        for line in lines[1:]:
            name, _sep, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    @property
    def content_type(self):
        return self.headers.get("content-type", "")

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "Answer(rc=%d, %r, %r, %r, stderr=%r)" % (
            self.returncode,
            self.status_line,
            self.headers,
            self.body[:300],
            self.stderr[-300:],
        )


def curl(server, url, workdir, data=None, user=None, cert=None, key=None, content_type=PKCS10, extra=()):
    """GET (data None) or POST data (bytes, or a path posted with --data-binary @path) with curl.

    user: "name:password" for HTTP Basic; cert/key: the TLS client certificate. An HTTP answer must carry
    a Content-Length equal to its body's length.
    """
    head_path = workdir / ("curl-head-%s" % uuid.uuid4().hex[:8])
    body_path = workdir / ("curl-body-%s" % uuid.uuid4().hex[:8])
    args = [require_binary("curl"), "-sS", "--max-time", "20", "--cacert", str(server.ca_file)]
    args += ["-D", str(head_path), "-o", str(body_path)]
    stdin = None
    if data is not None:
        if isinstance(data, bytes):
            args += ["--data-binary", "@-"]
            stdin = data
        else:
            args += ["--data-binary", "@%s" % data]
        if content_type is not None:
            args += ["-H", "Content-Type: " + content_type]
    if user is not None:
        args += ["-u", user]
    if cert is not None:
        args += ["--cert", str(cert), "--key", str(key)]
    args += [*extra, url]
    result = subprocess.run(args, input=stdin, capture_output=True, timeout=60, check=False)
    head = head_path.read_text(errors="replace") if head_path.exists() else ""
    body = body_path.read_bytes() if body_path.exists() else b""
    answer = Answer(result.returncode, result.stderr.decode(errors="replace"), head, body)
    if answer.status:
        assert "transfer-encoding" not in answer.headers, answer
        assert int(answer.headers.get("content-length", -1)) == len(body), answer
    return answer


def assert_refused(answer, status, message):
    """An EST refusal: exactly this status, a text/plain body that contains message."""
    assert answer.status == status, answer
    assert answer.content_type.startswith("text/plain"), answer
    assert message in answer.text, answer


def assert_tls_refused(answer, alert):
    """curl saw the TLS handshake fail with this alert (e.g. "unknown ca"): no HTTP answer at all."""
    assert answer.returncode in CURL_TLS_ERRORS, answer
    assert answer.status == 0, answer
    assert "alert %s" % alert in answer.stderr, answer


def handshake_error(server, cert_path, key_path):
    """The error Python's TLS client gets with this client certificate on GET /healthz, or None when an
    HTTP answer arrived."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.load_cert_chain(str(cert_path), str(key_path))
    try:
        answer = raw_https(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", context)
    except (ssl.SSLError, ConnectionError) as exc:
        return exc
    return None if answer else ConnectionError("closed without an answer")


def raw_https(server, request, context=None):
    """Send request bytes over TLS to the server; all bytes of the answer."""
    context = context or ssl.create_default_context(cafile=str(server.ca_file))
    host = urllib.parse.urlsplit(server.url)
    with socket.create_connection((host.hostname, host.port), timeout=20) as sock, context.wrap_socket(
        sock, server_hostname=host.hostname
    ) as tls:
        tls.sendall(request)
        chunks = []
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


# --- certs-only responses (coreutils base64 + openssl pkcs7, as est.md shows) ------------------------


def print_certs(body, out_path):
    """`base64 -d | openssl pkcs7 -inform DER -print_certs -out out_path`; returns the certificates."""
    decoded = subprocess.run([require_binary("base64"), "-d"], input=body, capture_output=True, timeout=30, check=False)
    assert decoded.returncode == 0, decoded.stderr
    der_path = out_path.with_suffix(".p7b")
    der_path.write_bytes(decoded.stdout)
    openssl("pkcs7", "-inform", "DER", "-in", str(der_path), "-print_certs", "-out", str(out_path))
    return load_pem(out_path)


def issued_certificate(answer, out_path):
    """The single certificate of a successful simpleenroll/simplereenroll answer, written to out_path."""
    assert answer.status == 200, answer
    assert answer.content_type == PKCS7, answer
    certificates = print_certs(answer.body, out_path)
    assert len(certificates) == 1, certificates
    return certificates[0]


class CaCerts:
    """/cacerts of a label, fetched with curl: the root (self-signed) and the other CA certificates."""

    def __init__(self, server, workdir, label=None, prefix=None):
        answer = curl(server, est_url(server, "cacerts", label, prefix), workdir)
        assert answer.status == 200, answer
        assert answer.content_type == PKCS7, answer
        stem = "cacerts-%s" % uuid.uuid4().hex[:8]
        self.certificates = print_certs(answer.body, workdir / ("%s.pem" % stem))
        roots = [c for c in self.certificates if c.subject == c.issuer]
        assert len(roots) == 1, self.certificates
        self.root = roots[0]
        self.intermediates = [c for c in self.certificates if c.subject != c.issuer]
        self.root_path = write_pem(workdir / ("%s-root.pem" % stem), [self.root])
        self.untrusted_path = write_pem(workdir / ("%s-untrusted.pem" % stem), self.intermediates)

    def assert_verifies(self, cert_path, purpose="sslclient"):
        """`openssl verify` of an issued certificate: root of /cacerts trusted, the rest untrusted."""
        result = openssl_verify(self.root_path, cert_path, untrusted=self.untrusted_path, purpose=purpose)
        assert result.returncode == 0 and ": OK" in result.stdout, result.stdout + result.stderr


# --- multipart (serverkeygen) ----------------------------------------------------------------------


def multipart_parts(content_type, body):
    """[(part headers (lowercase names), payload)] of a multipart/mixed body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    assert content_type.startswith("multipart/mixed") and match, content_type
    delimiter = b"--" + match.group(1).encode()
    assert body.rstrip().endswith(delimiter + b"--"), body[-200:]
    parts = []
    for chunk in body.split(delimiter)[1:-1]:
        head, separator, payload = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        assert separator, chunk
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _sep, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload.rstrip(b"\r\n")))
    return parts


# --- strongSwan pki --------------------------------------------------------------------------------


def pki(*args, cwd=None):
    """strongSwan `pki` with args; (returncode, stdout bytes, stderr text without the harmless TPM lines)."""
    binary = require_binary("pki")
    result = subprocess.run([binary, *[str(a) for a in args]], capture_output=True, timeout=60, check=False, cwd=cwd)
    stderr = "\n".join(
        line for line in result.stderr.decode(errors="replace").splitlines() if "tpm" not in line.lower()
    )
    return result.returncode, result.stdout, stderr


# --- onboarding --------------------------------------------------------------------------------------


class Onboarded:
    """A device that onboarded over EST: its API record, key and CSR (csr.key), and credential (cert_path)."""

    def __init__(self, device, csr, cert_path, certificate):
        self.device = device
        self.csr = csr
        self.cert_path = cert_path
        self.certificate = certificate

    @property
    def id(self):
        return self.device["id"]

    @property
    def name(self):
        return self.device["name"]

    @property
    def key_path(self):
        return self.csr.key


def onboard_with_password(server, workdir, domain, stem="cred"):
    """A new est_password device of domain (a name) onboarded with curl simpleenroll; an Onboarded."""
    device, password = password_device(server, domain)
    csr = Csr(workdir, stem, "/CN=%s" % device["name"])
    answer = curl(
        server,
        est_url(server, "simpleenroll", domain),
        workdir,
        data=csr.b64,
        user="%s:%s" % (device["name"], password),
    )
    cert_path = workdir / ("%s.pem" % stem)
    certificate = issued_certificate(answer, cert_path)
    return Onboarded(device, csr, cert_path, certificate)
