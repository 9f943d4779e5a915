# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""HTTPS and the plain-HTTP CMP listener: certificates from `init`, handshakes with curl, openssl and
Python, optional client certificates against a bundle that follows the database, process handling.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import stat
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from conftest import BIN, Server, free_port, http, openssl, require_binary
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from trustpoint_server.runtime import tls
from trustpoint_server.storage import migrate
from trustpoint_server.storage.db import make_engine, session_factory
from trustpoint_server.storage.models import Truststore

CMP_CONTENT_TYPE = "application/pkixcmp"
SERVER = str(BIN / "trustpoint-server")


# --- helpers -----------------------------------------------------------------------------------------


def make_ca(common_name, issuer=None):
    """(certificate, key) of a CA, self-signed or below issuer = (certificate, key), e.g. an IDevID
    manufacturer's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_cert, issuer_key = issuer or (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer_cert is None else issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return certificate, key


def make_leaf(issuer, common_name, server_names=()):
    """(certificate, key) issued by issuer = (certificate, key): a client certificate, or a server
    certificate for server_names."""
    issuer_cert, issuer_key = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False)
    )
    if server_names:
        sans = [x509.IPAddress(ipaddress.ip_address(n)) for n in server_names]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def pem(*certificates):
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def write_credential(directory, stem, credential):
    """Write (certificate, key) as stem.pem and stem.key; returns their paths."""
    certificate, key = credential
    cert_path, key_path = Path(directory) / (stem + ".pem"), Path(directory) / (stem + ".key")
    cert_path.write_text(pem(certificate))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def client_context(ca_file, cert_path=None, key_path=None):
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert_path:
        context.load_cert_chain(str(cert_path), str(key_path))
    return context


def tls_request(url, raw_request, context, server_hostname=None):
    """Send raw_request bytes over TLS to url's host and port; returns (the whole answer, the SSLSocket info)."""
    parsed = urllib.parse.urlsplit(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock, context.wrap_socket(
        sock, server_hostname=server_hostname or parsed.hostname
    ) as tls_sock:
        info = {"version": tls_sock.version(), "cipher": tls_sock.cipher()[0]}
        tls_sock.sendall(raw_request)
        answer = b""
        while True:
            chunk = tls_sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, info


def get_healthz(server, cert_path=None, key_path=None, host="127.0.0.1"):
    """Status line of GET /healthz over TLS, optionally with a client certificate; raises ssl.SSLError
    (or OSError) when the handshake fails."""
    context = client_context(server.ca_file, cert_path, key_path)
    url = "https://%s:%d/" % (host, server.port)
    answer, _info = tls_request(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", context)
    if not answer:
        # TLS 1.3: the server verifies the client's certificate after the client's handshake ended
        # and then closes the connection with an alert, before reading the request.
        raise ssl.SSLError("the server closed the connection without an answer")
    return answer.split(b"\r\n", 1)[0].decode()


def handshake_accepted(server, credential_paths, attempts=4):
    """Whether GET /healthz with this client certificate succeeds; every attempt must agree (several,
    so that each gunicorn worker is likely asked)."""
    results = set()
    for _attempt in range(attempts):
        try:
            results.add(get_healthz(server, *credential_paths) == "HTTP/1.1 200 OK")
        except (ssl.SSLError, OSError):
            results.add(False)
    assert len(results) == 1, "workers disagree about the client certificate"
    return results.pop()


def add_truststore(server, usage, *certificates):
    """Create a truststore of these CA certificates through the API; returns its name."""
    name = "ts-" + uuid.uuid4().hex[:10]
    status, body = server.api(
        "POST", "/truststores", {"name": name, "usage": usage, "certificates": pem(*certificates)}
    )
    assert status == 201, body
    return name


def curl(*args):
    return subprocess.run(
        [require_binary("curl"), "-sS", "--max-time", "20", *args], capture_output=True, text=True, check=False
    )


def enroll_domain_credential(server, workdir):
    """A device credential issued by a new domain's issuing CA over CMP on the plain listener:
    (domain name, certificate path, key path)."""
    domain = server.create_domain()["name"]
    device, secret = server.create_device(domain)
    key = workdir / "credential.key"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    openssl(
        "cmp",
        "-cmd",
        "ir",
        "-server",
        "%s/.well-known/cmp/initialization/%s/" % (server.cmp_url, domain),
        "-ref",
        str(device["id"]),
        "-secret",
        "pass:" + secret,
        "-subject",
        "/CN=Trustpoint Domain Credential",
        "-newkey",
        str(key),
        "-certout",
        str(workdir / "credential.pem"),
        "-implicit_confirm",
        cwd=str(workdir),
    )
    return domain, workdir / "credential.pem", key


@pytest.fixture(scope="module")
def domain_credential(server, tmp_path_factory):
    return enroll_domain_credential(server, tmp_path_factory.mktemp("credential"))


def descendants(pid):
    """pid and every process below it (from /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path("/proc/%d/task" % current).glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def alive(pid):
    try:
        state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def port_open(port):
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def sans_of(certificate):
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def init(data_dir, *args):
    return subprocess.run(
        [SERVER, "init", "--data-dir", str(data_dir), *args], capture_output=True, text=True, check=False
    )


# --- init: the TLS CA and server certificate -----------------------------------------------------------


def test_init_writes_the_tls_ca_and_server_certificate(tmp_path):
    """init writes tls-ca.pem, tls-cert.pem (server certificate, then the CA) and tls-key.pem, all 0600,
    with the CA key only encrypted; the certificate names localhost, 127.0.0.1, ::1 and the host name."""
    data_dir = tmp_path / "data"
    result = init(data_dir)
    assert result.returncode == 0, result.stderr
    assert "tls-ca.pem" in result.stdout
    for name in ("tls-ca.pem", "tls-cert.pem", "tls-key.pem", "tls-ca-key.vault"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    assert b"PRIVATE KEY" not in (data_dir / "tls-ca-key.vault").read_bytes()
    (ca,) = x509.load_pem_x509_certificates((data_dir / "tls-ca.pem").read_bytes())
    leaf, chain_ca = x509.load_pem_x509_certificates((data_dir / "tls-cert.pem").read_bytes())
    assert chain_ca == ca and ca.subject == ca.issuer
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.verify_directly_issued_by(ca)
    names = sans_of(leaf)
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", socket.gethostname().lower()}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert openssl("verify", "-CAfile", str(data_dir / "tls-ca.pem"), str(data_dir / "tls-cert.pem")).returncode == 0


def test_init_is_idempotent_and_reissues_for_new_names(tmp_path):
    """A second init keeps the certificate; --tls-san with a new name or address reissues it under the
    same CA, keeping the names it had; an existing name changes nothing; a bad name is refused."""
    data_dir = tmp_path / "data"
    assert init(data_dir, "--tls-san", "tp.example.com").returncode == 0
    first = {name: (data_dir / name).read_bytes() for name in ("tls-ca.pem", "tls-cert.pem", "tls-key.pem")}

    again = init(data_dir, "--tls-san", "TP.example.com", "--tls-san", "127.0.0.1")
    assert again.returncode == 0, again.stderr
    assert "issued" not in again.stdout
    assert {name: (data_dir / name).read_bytes() for name in first} == first

    more = init(data_dir, "--tls-san", "10.9.8.7", "--tls-san", "fd00::7", "--tls-san", "*.devices.example")
    assert more.returncode == 0, more.stderr
    assert "issued the TLS server certificate" in more.stdout and "lacks" in more.stdout
    assert (data_dir / "tls-ca.pem").read_bytes() == first["tls-ca.pem"]
    assert (data_dir / "tls-key.pem").read_bytes() != first["tls-key.pem"]
    (ca,) = x509.load_pem_x509_certificates(first["tls-ca.pem"])
    leaf = x509.load_pem_x509_certificates((data_dir / "tls-cert.pem").read_bytes())[0]
    leaf.verify_directly_issued_by(ca)
    names = sans_of(leaf)
    assert {"tp.example.com", "*.devices.example", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address("10.9.8.7"), ipaddress.ip_address("fd00::7")} <= set(
        names.get_values_for_type(x509.IPAddress)
    )

    bad = init(data_dir, "--tls-san", "not a name")
    assert bad.returncode != 0 and "neither an IP address nor a DNS name" in bad.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", x509.IPAddress(ipaddress.ip_address("192.0.2.1"))),
        ("2001:db8::1", x509.IPAddress(ipaddress.ip_address("2001:db8::1"))),
        ("Host-1.Example.org", x509.DNSName("host-1.example.org")),
        ("*.example.org", x509.DNSName("*.example.org")),
        ("localhost", x509.DNSName("localhost")),
    ],
)
def test_parse_san_detects_addresses_and_names(text, expected):
    assert tls.parse_san(text) == expected


@pytest.mark.parametrize("text", ["", "under_score.example", "-leading.example", "a..b", "http://x", "a" * 64])
def test_parse_san_refuses_what_is_neither(text):
    with pytest.raises(ValueError, match="neither"):
        tls.parse_san(text)


# --- the handshake -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_curl_verifies_the_server_with_tls_ca(server, host):
    """curl --cacert DATA/tls-ca.pem reaches /healthz by address and by name; without it, curl refuses."""
    url = "https://%s:%d/healthz" % (host, server.port)
    result = curl("--cacert", str(server.ca_file), url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "ok"}
    untrusted = curl("--cacert", "/etc/ssl/certs/ca-certificates.crt", url)
    assert untrusted.returncode == 60, untrusted.stderr  # CURLE_PEER_FAILED_VERIFICATION


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_python_handshake_tls12_and_tls13(server, version):
    """Python's ssl verifies the server with tls-ca.pem over TLS 1.2 and 1.3; TLS 1.2 uses a
    forward-secret AEAD suite."""
    context = client_context(server.ca_file)
    context.minimum_version = context.maximum_version = version
    answer, info = tls_request(server.url, b"GET /healthz HTTP/1.0\r\n\r\n", context)
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n"), answer[:200]
    assert info["version"] == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    if version == ssl.TLSVersion.TLSv1_2:
        assert info["cipher"].startswith("ECDHE-") and ("GCM" in info["cipher"] or "CHACHA20" in info["cipher"])


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls10_and_tls11_are_refused(server, version):
    """A client limited to TLS 1.0 or 1.1 (even at OpenSSL security level 0) gets no connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    with pytest.raises((ssl.SSLError, OSError)):
        tls_request(server.url, b"GET /healthz HTTP/1.0\r\n\r\n", context)
    flag = {"TLSv1": "-tls1", "TLSv1_1": "-tls1_1"}[version]
    result = subprocess.run(
        [require_binary("openssl"), "s_client", "-connect", "127.0.0.1:%d" % server.port, flag],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0 and b"Cipher is (NONE)" in result.stdout, result.stdout + result.stderr


def test_weak_tls12_suites_are_refused(server):
    """TLS 1.2 without forward secrecy or with CBC is refused."""
    context = client_context(server.ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):
        tls_request(server.url, b"GET /healthz HTTP/1.0\r\n\r\n", context)


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
@pytest.mark.parametrize("listener", ["https", "plain"])
def test_status_line_mirrors_the_request_version(server, listener, version):
    """An HTTP/1.0 request gets an HTTP/1.0 status line and an HTTP/1.1 request an HTTP/1.1 one (EST
    clients depend on it), over TLS and on the plain listener."""
    request = ("GET /healthz %s\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % version).encode()
    if listener == "https":
        answer, _info = tls_request(server.url, request, client_context(server.ca_file))
    else:
        with socket.create_connection(("127.0.0.1", server.plain_port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    assert answer.startswith(("%s 200 OK\r\n" % version).encode()), answer[:200]
    assert b"\r\nContent-Length: " in answer.split(b"\r\n\r\n", 1)[0]


def test_openssl_s_client_http10(server):
    """openssl s_client (as OpenSSL-BIO EST clients connect) verifies the server and gets HTTP/1.0."""
    result = subprocess.run(
        [
            require_binary("openssl"),
            "s_client",
            "-connect",
            "127.0.0.1:%d" % server.port,
            "-CAfile",
            str(server.ca_file),
            "-verify_return_error",
            "-quiet",
        ],
        input=b"GET /healthz HTTP/1.0\r\n\r\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.startswith(b"HTTP/1.0 200 OK\r\n"), result.stdout + result.stderr


# --- the plain-HTTP listener -------------------------------------------------------------------------


def test_plain_listener_refuses_the_api(server):
    """Over plain HTTP the API answers 403 (JSON, 'use HTTPS'), with or without a token and whatever
    X-Forwarded-Proto says; over HTTPS the same request works."""
    for headers in ({}, {"Authorization": "Bearer " + server.token}, {"X-Forwarded-Proto": "https"}):
        status, answer_headers, body = http("GET", server.cmp_url + "/api/v1/domains", headers=headers)
        assert status == 403, body
        assert answer_headers["Content-Type"] == "application/json"
        error = json.loads(body)
        assert error["status"] == 403 and "use HTTPS" in error["error"], error
    status, _headers, body = http(
        "POST", server.cmp_url + "/api/v1/domains", b"{}", {"Content-Type": "application/json"}
    )
    assert status == 403, body
    assert server.api("GET", "/domains")[0] == 200


def test_plain_listener_serves_cmp_crl_and_healthz(server, domain_credential):
    """CMP (the enrollment itself ran there), the CRL its certificate names and /healthz answer on
    the plain listener; paths that exist nowhere are 404 there as over HTTPS."""
    domain, cert_path, _key_path = domain_credential
    assert http("GET", server.cmp_url + "/healthz")[0] == 200

    status, headers, body = http(
        "POST",
        "%s/.well-known/cmp/p/%s/initialization" % (server.cmp_url, domain),
        b"\x30\x00",
        {"Content-Type": CMP_CONTENT_TYPE},
    )
    assert status == 200 and headers["Content-Type"] == CMP_CONTENT_TYPE, body[:200]

    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl_url = points[0].full_name[0].value
    assert crl_url.startswith(server.cmp_url + "/crl/"), crl_url
    status, _headers, body = http("GET", crl_url)
    assert status == 200
    x509.load_der_x509_crl(body)
    status, _headers, _body = http("GET", crl_url.replace(server.cmp_url, server.url))
    assert status == 200

    for base in (server.cmp_url, server.url):
        assert http("GET", base + "/no/such/page")[0] == 404


# --- client certificates ---------------------------------------------------------------------------


def test_domain_credential_verifies_as_client_certificate(server, domain_credential, tmp_path):
    """A certificate from a domain's issuing CA passes the handshake, to an IP address (curl sends no
    SNI then) and to a name; a self-signed one, or one from an unknown CA, fails it."""
    _domain, cert_path, key_path = domain_credential
    for host in ("127.0.0.1", "localhost"):
        result = curl(
            "--cacert",
            str(server.ca_file),
            "--cert",
            str(cert_path),
            "--key",
            str(key_path),
            "https://%s:%d/healthz" % (host, server.port),
        )
        assert result.returncode == 0 and json.loads(result.stdout) == {"status": "ok"}, result.stderr
    assert handshake_accepted(server, (cert_path, key_path))

    stranger = make_ca("Unknown Manufacturer CA")
    foreign = write_credential(tmp_path, "foreign", make_leaf(stranger, "foreign device"))
    assert not handshake_accepted(server, foreign)
    self_signed = write_credential(tmp_path, "self", stranger)
    assert not handshake_accepted(server, self_signed)
    result = curl("--cacert", str(server.ca_file), "--cert", str(foreign[0]), "--key", str(foreign[1]), server.url)
    assert result.returncode in (35, 56), (result.returncode, result.stderr)  # TLS alert, no HTTP answer
    # Without a certificate the server still answers: client authentication is optional.
    assert get_healthz(server) == "HTTP/1.1 200 OK"


@pytest.mark.parametrize("usage", ["idevid", "tls"])
def test_truststore_added_at_runtime_is_trusted_at_once(server, tmp_path, usage):
    """A client certificate under a new truststore's CA fails the handshake before the truststore exists
    and passes right after the API call, without a restart; replacing the truststore's certificates and
    deleting it take effect the same way."""
    manufacturer = make_ca("Manufacturer CA " + uuid.uuid4().hex[:8])
    idevid = write_credential(tmp_path, "idevid", make_leaf(manufacturer, "device-" + uuid.uuid4().hex[:8]))
    assert not handshake_accepted(server, idevid)

    name = "ts-" + uuid.uuid4().hex[:10]
    status, body = server.api(
        "POST", "/truststores", {"name": name, "usage": usage, "certificates": pem(manufacturer[0])}
    )
    assert status == 201, body
    assert handshake_accepted(server, idevid)

    other = make_ca("Other CA")
    status, body = server.api("PATCH", "/truststores/" + name, {"certificates": pem(other[0])})
    assert status == 200, body
    assert not handshake_accepted(server, idevid)

    status, body = server.api("PATCH", "/truststores/" + name, {"certificates": pem(other[0], manufacturer[0])})
    assert status == 200, body
    assert handshake_accepted(server, idevid)

    assert server.api("DELETE", "/truststores/" + name)[0] == 204
    assert not handshake_accepted(server, idevid)


def test_devownerid_truststore_does_not_authenticate_tls_clients(server, tmp_path):
    """Only truststores of usage idevid and tls anchor client certificates."""
    owner_ca = make_ca("Owner CA " + uuid.uuid4().hex[:8])
    credential = write_credential(tmp_path, "owner", make_leaf(owner_ca, "owner"))
    name = "ts-" + uuid.uuid4().hex[:10]
    status, body = server.api(
        "POST", "/truststores", {"name": name, "usage": "devownerid", "certificates": pem(owner_ca[0])}
    )
    assert status == 201, body
    try:
        assert not handshake_accepted(server, credential)
    finally:
        server.api("DELETE", "/truststores/" + name)


def test_intermediate_only_truststore_anchors_its_certificates(server, tmp_path):
    """A truststore that holds a manufacturer's intermediate CA without its root anchors the devices
    below that intermediate (partial chains are accepted)."""
    root = make_ca("Manufacturer Root " + uuid.uuid4().hex[:8])
    intermediate = make_ca("Manufacturer Intermediate", issuer=root)
    credential = write_credential(tmp_path, "dev", make_leaf(intermediate, "dev"))
    name = "ts-" + uuid.uuid4().hex[:10]
    status, body = server.api(
        "POST", "/truststores", {"name": name, "usage": "idevid", "certificates": pem(intermediate[0])}
    )
    assert status == 201, body
    try:
        assert handshake_accepted(server, credential)
    finally:
        server.api("DELETE", "/truststores/" + name)


GUNICORN_APP = """
from flask import Flask, jsonify, request
from trustpoint_server.protocols.wire import client_certificate

app = Flask(__name__)


@app.get("/client")
def client():
    certificate = client_certificate(request)
    return jsonify(None if certificate is None else certificate.subject.rfc4514_string())
"""

GUNICORN_CONFIG = """
from trustpoint_server.storage.db import database_url, make_engine
from trustpoint_server.runtime.tls import ServerContexts

bind = [{bind!r}]
workers = 1
threads = 2
worker_class = "trustpoint_server.runtime.worker.DeadlineWorker"
certfile = {cert!r}
keyfile = {key!r}
_contexts = ServerContexts(certfile, keyfile)
ssl_context = _contexts.gunicorn_hook()


def post_worker_init(worker):
    _contexts.use_database(make_engine(database_url({data_dir!r})))
"""


def test_client_certificate_reaches_the_handler_under_gunicorn(server, domain_credential, tmp_path):
    """Under gunicorn with the server's worker and ServerContexts, wire.client_certificate(request) returns the
    verified certificate to a handler, and None without one (a throwaway app: the product has no route
    that shows it)."""
    _domain, cert_path, key_path = domain_credential
    (tmp_path / "client_app.py").write_text(GUNICORN_APP)
    port = free_port()
    cert, key = tls.server_files(str(server.data_dir))
    (tmp_path / "gunicorn_conf.py").write_text(
        GUNICORN_CONFIG.format(bind="127.0.0.1:%d" % port, cert=cert, key=key, data_dir=str(server.data_dir))
    )
    environment = dict(os.environ, PYTHONPATH=str(tmp_path))
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 (the process's lifetime)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(tmp_path / "gunicorn_conf.py"), "client_app:app"],
        cwd=tmp_path,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = "https://127.0.0.1:%d/client" % port
        deadline = time.monotonic() + 30
        while not port_open(port):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.1)
        context = client_context(server.ca_file, cert_path, key_path)
        status, _headers, body = http("GET", url, context=context)
        assert status == 200, body
        expected = x509.load_pem_x509_certificate(cert_path.read_bytes()).subject.rfc4514_string()
        assert json.loads(body) == expected
        status, _headers, body = http("GET", url, context=client_context(server.ca_file))
        assert (status, json.loads(body)) == (200, None)
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def test_client_certificate_without_tls_is_none(server):
    """Outside a TLS connection (plain HTTP, the test client) there is no client certificate."""
    import flask
    from trustpoint_server.app import create_app
    from trustpoint_server.protocols import wire
    from trustpoint_server.settings import Settings

    app = create_app(Settings(data_dir=str(server.data_dir)))
    with app.test_request_context("/healthz"):
        assert wire.client_certificate(flask.request) is None
        assert wire.client_chain(flask.request) == []


# --- ServerContexts on their own -------------------------------------------------------------------------


def test_server_contexts_follow_the_database_and_the_certificate(tmp_path):
    """current() returns the same context while nothing changed, a new one after a truststore change or
    a new certificate file, and keeps the last one when the database cannot be read or a half-written
    certificate cannot be loaded."""
    data_dir = tmp_path / "data"
    assert init(data_dir).returncode == 0
    cert_file, key_file = tls.server_files(str(data_dir))
    engine = make_engine("sqlite:///%s" % (tmp_path / "bundle.db"))
    migrate.upgrade(engine)
    contexts = tls.ServerContexts(cert_file, key_file)
    contexts.use_database(engine)
    first = contexts.current()
    assert first.minimum_version == ssl.TLSVersion.TLSv1_2
    assert first.verify_mode == ssl.CERT_OPTIONAL
    assert contexts.current() is first

    with session_factory(engine)() as db:
        db.add(Truststore(name="t", usage="idevid", certificates_pem=pem(make_ca("T")[0])))
        db.commit()
    second = contexts.current()
    assert second is not first and contexts.current() is second
    assert any(c["subject"] == ((("commonName", "T"),),) for c in second.get_ca_certs())

    with session_factory(engine)() as db:
        db.add(Truststore(name="o", usage="devownerid", certificates_pem=pem(make_ca("O")[0])))
        db.commit()
    assert contexts.current() is second  # not part of the client CA bundle

    assert init(data_dir, "--tls-san", "new.example").returncode == 0
    third = contexts.current()
    assert third is not second

    Path(key_file).write_text("")  # `init` in the middle of replacing the key
    assert contexts.current() is third
    contexts.use_database(make_engine("sqlite:///%s" % (tmp_path / "no" / "such.db")))
    assert contexts.current() is third
    engine.dispose()


def test_server_contexts_refuse_an_unusable_certificate(tmp_path):
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    with pytest.raises(ssl.SSLError):
        tls.ServerContexts(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))


# --- run: operator certificates and process handling ------------------------------------------------------


def test_run_with_an_operator_certificate(tmp_path):
    """run --tls-cert/--tls-key serves the operator's certificate instead of the one init issued."""
    operator_ca = make_ca("Operator CA")
    cert_path, key_path = write_credential(tmp_path, "server", make_leaf(operator_ca, "tp", ["127.0.0.1"]))
    (tmp_path / "operator-ca.pem").write_text(pem(operator_ca[0]))
    instance = Server(
        tmp_path / "data",
        free_port(),
        extra_args=("--tls-cert", str(cert_path), "--tls-key", str(key_path)),
        ca_file=tmp_path / "operator-ca.pem",
    )
    try:
        answer, _info = tls_request(instance.url, b"GET /healthz HTTP/1.0\r\n\r\n", client_context(instance.ca_file))
        assert answer.startswith(b"HTTP/1.0 200 OK")
        with pytest.raises(ssl.SSLError):
            tls_request(
                instance.url, b"GET /healthz HTTP/1.0\r\n\r\n", client_context(instance.data_dir / "tls-ca.pem")
            )
    finally:
        instance.stop()


def test_run_refuses_bad_tls_options(tmp_path):
    """--tls-cert needs --tls-key, the same address cannot be both HTTPS and plain, a missing certificate
    is named."""
    data_dir = tmp_path / "data"
    assert init(data_dir).returncode == 0
    cases = [
        (["--tls-cert", str(data_dir / "tls-cert.pem")], "go together"),
        (["--listen", "127.0.0.1:1", "--listen-plain", "127.0.0.1:1"], "same address"),
        (["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(tmp_path / "missing.key")], "missing.pem"),
    ]
    for args, message in cases:
        result = subprocess.run(
            [SERVER, "run", "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_both_listeners(tmp_path, signum):
    """SIGTERM or SIGINT to `run` stops the HTTPS and the plain-HTTP arbiters and all their workers;
    `run` exits 0 and both ports are closed."""
    instance = Server(tmp_path / "data", free_port())
    try:
        # run, two arbiters and their two workers each; workers start a moment after the first answer.
        deadline = time.monotonic() + 20
        pids = descendants(instance.process.pid)
        while len(pids) < 1 + 2 + 2 * 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = descendants(instance.process.pid)
        assert len(pids) >= 1 + 2 + 2 * 2, pids
        instance.process.send_signal(signum)
        assert instance.process.wait(30) == 0
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if alive(pid)]
        assert not port_open(instance.port) and not port_open(instance.plain_port)
    finally:
        instance.stop()


def test_no_orphans_when_run_is_killed(tmp_path):
    """Even when `run` is killed (SIGKILL), its arbiters and workers end."""
    instance = Server(tmp_path / "data", free_port())
    try:
        pids = descendants(instance.process.pid)
        instance.process.kill()
        instance.process.wait(10)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if alive(pid)]
    finally:
        instance.stop()


def test_an_arbiter_that_dies_stops_the_other(tmp_path):
    """When one listener's arbiter ends, `run` stops the other and exits non-zero (a supervisor sees it)."""
    instance = Server(tmp_path / "data", free_port())
    try:
        run_pid = instance.process.pid
        arbiters = [int(p) for p in Path("/proc/%d/task/%d/children" % (run_pid, run_pid)).read_text().split()]
        assert len(arbiters) == 2
        pids = descendants(run_pid)
        os.kill(arbiters[1], signal.SIGKILL)
        assert instance.process.wait(30) != 0
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if alive(pid)]
    finally:
        instance.stop()


# --- no session resumption ----------------------------------------------------------------------------------


def _connect_in_memory(server_context, client_ctx, session=None):
    """A handshake and a byte each way through memory BIOs, as the worker does them: (client SSLObject, the server's
    TlsInfo)."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _index in range(4))
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    client = client_ctx.wrap_bio(client_in, client_out, server_hostname="127.0.0.1", session=session)
    for _round in range(10):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    client.write(b"q")
    server_in.write(client_out.read())
    assert server.read(1) == b"q"
    server.write(b"a")  # TLS 1.3: tickets, if any, go with the server's first data
    client_in.write(server_out.read())
    assert client.read(1) == b"a"
    info = tls.TlsInfo(server)
    # Closed as the worker closes (its close_notify): OpenSSL drops a session ended without one from its cache,
    # which hid that TLS 1.2 session IDs were resumed.
    with contextlib.suppress(ssl.SSLWantReadError):
        server.unwrap()
    client_in.write(server_out.read())
    with contextlib.suppress(ssl.SSLWantReadError):
        client.unwrap()
    return client, info


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"])
def test_no_session_is_resumed_so_the_request_gets_the_verified_chain(tmp_path, version):
    """A client offering the session of its last connection gets a full handshake: its certificate is verified
    again and the request gets the chain (a resumed handshake verified nothing and gave an empty chain)."""
    root = make_ca("Root")
    sub = make_ca("Client Sub CA", issuer=root)
    cert_path, key_path = write_credential(tmp_path, "client", make_leaf(sub, "device"))
    cert_path.write_text(cert_path.read_text() + pem(sub[0]))  # the chain the client sends
    server_cert, server_key = write_credential(tmp_path, "server", make_leaf(root, "server", ["127.0.0.1"]))
    (tmp_path / "root.pem").write_text(pem(root[0]))
    server_context = tls.server_context(
        server_cert, server_key, ((root[0].public_bytes(serialization.Encoding.DER),), ())
    )
    client_ctx = client_context(tmp_path / "root.pem", cert_path, key_path)
    client_ctx.maximum_version = version
    first, first_info = _connect_in_memory(server_context, client_ctx)
    again, info = _connect_in_memory(server_context, client_ctx, session=first.session)
    assert not again.session_reused
    assert info.peer_certificate is not None
    assert info.peer_certificate == first_info.peer_certificate
    assert len(info.verified_chain) == 3  # the device, its sub CA, the root


def _first_byte_ms(server, nodelay):
    """Milliseconds from the end of a TLS 1.3 handshake to the first byte of the answer to GET /healthz, for a
    client with Nagle's algorithm on (as openssl cmp and plain Python sockets) or off (as curl)."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    if nodelay:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with context.wrap_socket(raw, server_hostname="localhost") as connection:
        started = time.perf_counter()
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert connection.recv(1)
        return (time.perf_counter() - started) * 1000


def test_a_client_with_nagles_algorithm_gets_its_answer_without_the_delayed_ack(server):
    """Without session tickets the server sends nothing after the client's TLS 1.3 Finished, so its ACK waited
    for the delayed-ACK timer (40 ms on Linux) while the client's Nagle algorithm held the request: every HTTPS
    request of openssl cmp took 40 ms more. The worker acknowledges at once. (Compared with a client without
    Nagle in the same run, medians of 7: the timer's 40 ms stand far above the noise.)"""
    nagle = statistics.median(_first_byte_ms(server, nodelay=False) for _index in range(7))
    nodelay = statistics.median(_first_byte_ms(server, nodelay=True) for _index in range(7))
    assert nagle < nodelay + 25, (nagle, nodelay)
