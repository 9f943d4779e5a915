# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""EST (RFC 7030) interop with real clients: curl + openssl and strongSwan 5.9.8 `pki --est/--estca`.

The command lines are the ones of the reference notes (shared/reference/est.md §8). Every issued
certificate is checked with `openssl verify` against the root and intermediates of `/cacerts`, and
every HTTP answer carries a Content-Length equal to its body (the curl helper checks it). Label-less
endpoints need a default domain, so those tests run a second server with --est-default-domain.
"""

from __future__ import annotations

import base64
import re
import uuid

import pytest
from cmp_helpers import (
    TEST_APP_NAMES,
    PkiDomain,
    admit_manufacturer,
    admitted_idevid,
    certificate_status,
    domain_chain,
    end_retry_window,
    load_pem,
    make_ca,
    make_end_entity,
    new_serial,
    write_pem,
)
from conftest import Server, free_port, openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from est_helpers import (
    PKCS7,
    CaCerts,
    Csr,
    SwanCsr,
    curl,
    est_url,
    issued_certificate,
    multipart_parts,
    onboard_with_password,
    password_device,
    pki,
    print_certs,
    public_key_of_certificate,
    raw_https,
)


@pytest.fixture
def domain(server, workdir):
    return PkiDomain(server, workdir)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """A server whose label-less /.well-known/est/<operation> serves its domain default_server.domain."""
    name = "est-default-" + uuid.uuid4().hex[:8]
    instance = Server(
        tmp_path_factory.mktemp("est-default"),
        free_port(),
        extra_args=["--est-default-domain", name, "--workers", "1"],
    )
    instance.create_domain(name, allowed_names=TEST_APP_NAMES)
    instance.domain = name
    yield instance
    instance.stop()


def fingerprint(certificate):
    return certificate.fingerprint(hashes.SHA256()).hex()


def common_name(certificate):
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def assert_credential_of(server, device_id, certificate):
    """The API shows the device onboarded with this certificate as its domain credential."""
    record = server.device(device_id)
    assert record["status"] == "onboarded", record
    assert record["credential"]["fingerprint_sha256"] == fingerprint(certificate), record


def idevid_files(idevid, workdir, stem="idevid"):
    """(certificate file with its chain, key file) for a TLS client."""
    cert_path, key_path, _chain_path = idevid.write(workdir, stem)
    write_pem(cert_path, [idevid.certificate, *idevid.chain])
    return cert_path, key_path


# --- /cacerts and /csrattrs -----------------------------------------------------------------------


def test_cacerts_curl_openssl(server, domain, workdir):
    """curl /cacerts | base64 -d | openssl pkcs7 -print_certs: the issuing CA and the root, as the API has them."""
    answer = curl(server, est_url(server, "cacerts", domain.name), workdir)
    assert answer.status == 200, answer
    assert answer.content_type == PKCS7
    certificates = print_certs(answer.body, workdir / "cacerts.pem")
    assert {fingerprint(c) for c in certificates} == {fingerprint(domain.issuing), fingerprint(domain.root)}
    cacerts = CaCerts(server, workdir, domain.name)
    assert cacerts.root == domain.root
    cacerts.assert_verifies(domain.issuing_path, purpose="any")


@pytest.mark.parametrize("profile", [None, "tls_client", "tls_server"])
def test_csrattrs_asn1parse(server, domain, workdir, profile):
    """/csrattrs: base64 DER CsrAttrs that openssl asn1parse reads: ecdsa-with-SHA256 on a P-256 key, and
    for tls_server (which requires a subjectAltName) an extensionRequest naming subjectAltName."""
    label = domain.name if profile is None else "%s/%s" % (domain.name, profile)
    answer = curl(server, est_url(server, "csrattrs", label), workdir)
    assert answer.status == 200, answer
    assert answer.content_type == "application/csrattrs"
    (workdir / "attrs.der").write_bytes(base64.b64decode(answer.body, validate=True))
    parsed = openssl("asn1parse", "-inform", "DER", "-in", str(workdir / "attrs.der")).stdout
    assert "ecdsa-with-SHA256" in parsed and "id-ecPublicKey" in parsed and "prime256v1" in parsed, parsed
    san_requested = "Extension Request" in parsed and "X509v3 Subject Alternative Name" in parsed
    assert san_requested == (profile == "tls_server"), parsed


# --- simpleenroll / simplereenroll with curl ---------------------------------------------------------


def test_simpleenroll_with_password(server, domain, workdir):
    """curl -u name:password simpleenroll: one certificate for the CSR's key, CN = device name, that
    verifies against /cacerts; the device is onboarded with it; the spent password then gets 401."""
    device, password = password_device(server, domain.name)
    csr = Csr(workdir, "dev", "/CN=%s" % device["name"])
    user = "%s:%s" % (device["name"], password)
    url = est_url(server, "simpleenroll", domain.name)
    certificate = issued_certificate(curl(server, url, workdir, data=csr.b64, user=user), workdir / "cert.pem")
    assert common_name(certificate) == device["name"]
    assert public_key_of_certificate(workdir / "cert.pem") == csr.public_key_pem()
    CaCerts(server, workdir, domain.name).assert_verifies(workdir / "cert.pem")
    assert_credential_of(server, device["id"], certificate)

    # Within its retry window the password onboards again (the answer may have been lost): the first
    # certificate, never used, is superseded. After the window it is spent.
    second = issued_certificate(curl(server, url, workdir, data=csr.b64, user=user), workdir / "second.pem")
    assert_credential_of(server, device["id"], second)
    assert certificate_status(server, certificate) == ("revoked", "superseded")
    end_retry_window(server, device["id"])
    again = curl(server, url, workdir, data=csr.b64, user=user)
    assert again.status == 401, again
    assert again.headers.get("www-authenticate") == 'Basic realm="est"', again
    assert "wrong username or password" in again.text


@pytest.mark.parametrize("setup", ["pre-registered", "auto-created", "intermediate"])
def test_simpleenroll_with_idevid(server, domain, workdir, setup):
    """The IDevID as TLS client certificate (curl --cert) onboards an est_idevid device: one registered
    for its serial number, one the registration creates, or one whose IDevID chains through a
    manufacturer intermediate that the client sends (the truststore holds the root only)."""
    if setup == "pre-registered":
        idevid, device = admitted_idevid(server, domain, method="est_idevid")
    else:
        serial = new_serial()
        manufacturer = make_ca("Manufacturer Root %s" % serial)
        issuer = manufacturer
        if setup == "intermediate":
            issuer = make_ca("Manufacturer Intermediate %s" % serial, issuer=manufacturer)
        admit_manufacturer(server, domain, re.escape(serial), manufacturer=manufacturer)
        idevid = make_end_entity(issuer, "sensor-%s" % serial.lower(), serial, ["urn:example:idevid:%s" % serial])
        device = None
    cert_path, key_path = idevid_files(idevid, workdir)
    csr = Csr(workdir, "ldevid", "/CN=ignored-for-domain-credentials")
    answer = curl(
        server, est_url(server, "simpleenroll", domain.name), workdir, data=csr.b64, cert=cert_path, key=key_path
    )
    certificate = issued_certificate(answer, workdir / "cert.pem")
    assert public_key_of_certificate(workdir / "cert.pem") == csr.public_key_pem()
    CaCerts(server, workdir, domain.name).assert_verifies(workdir / "cert.pem")
    if device is None:
        status, found = server.api("GET", "/devices?domain=%s" % domain.name)
        assert status == 200, found
        [device] = found
        assert device["onboarding_method"] == "est_idevid"
        serial_numbers = idevid.certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        assert device["serial_number"] == serial_numbers[0].value
    assert common_name(certificate) == device["name"]
    assert_credential_of(server, device["id"], certificate)


def test_simplereenroll_with_domain_credential(server, domain, workdir):
    """curl --cert credential simplereenroll with a new key: same subject and SANs, the new key, the device's
    credential the new certificate; the old one superseded: it may only renew until the new one is used. The new
    one renews again, and the old one, revoked (superseded) by that use, then gets 403."""
    onboarded = onboard_with_password(server, workdir, domain.name)
    renewal = Csr(workdir, "renewal", "/CN=%s" % onboarded.name)
    answer = curl(
        server,
        est_url(server, "simplereenroll", domain.name),
        workdir,
        data=renewal.b64,
        cert=onboarded.cert_path,
        key=onboarded.key_path,
    )
    renewed = issued_certificate(answer, workdir / "renewed.pem")
    old = onboarded.certificate
    assert renewed.subject == old.subject
    assert _sans(renewed) == _sans(old)
    assert renewed.serial_number != old.serial_number
    assert public_key_of_certificate(workdir / "renewed.pem") == renewal.public_key_pem()
    CaCerts(server, workdir, domain.name).assert_verifies(workdir / "renewed.pem")
    assert certificate_status(server, old) == ("active", None)
    assert certificate_status(server, renewed) == ("active", None)
    assert_credential_of(server, onboarded.id, renewed)

    renewed_again = curl(
        server,
        est_url(server, "simplereenroll", domain.name),
        workdir,
        data=renewal.b64,
        cert=workdir / "renewed.pem",
        key=renewal.key,
    )
    issued_certificate(renewed_again, workdir / "renewed-again.pem")
    CaCerts(server, workdir, domain.name).assert_verifies(workdir / "renewed-again.pem")
    assert certificate_status(server, old) == ("revoked", "superseded")
    again = curl(
        server,
        est_url(server, "simplereenroll", domain.name),
        workdir,
        data=renewal.b64,
        cert=onboarded.cert_path,
        key=onboarded.key_path,
    )
    assert again.status == 403 and "is revoked" in again.text, again


def _sans(certificate):
    try:
        return list(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


@pytest.mark.parametrize("key_kind", ["ec", "rsa"])
def test_serverkeygen(server, domain, workdir, key_kind):
    """serverkeygen with a password: multipart/mixed with an unencrypted PKCS#8 key (openssl pkcs8
    -nocrypt reads it) of the CSR's key type and a certs-only certificate for exactly that key. (An RSA key's
    generation moves the request from the worker's loop to a thread first: runtime/on_loop.py.)"""
    device, password = password_device(server, domain.name)
    csr = Csr(workdir, "keygen", "/CN=%s" % device["name"], key_kind=key_kind)
    answer = curl(
        server,
        est_url(server, "serverkeygen", domain.name),
        workdir,
        data=csr.b64,
        user="%s:%s" % (device["name"], password),
    )
    assert answer.status == 200, answer
    parts = multipart_parts(answer.content_type, answer.body)
    kinds = [headers["content-type"] for headers, _payload in parts]
    assert kinds == ["application/pkcs8", PKCS7], kinds
    (workdir / "key.der").write_bytes(base64.b64decode(parts[0][1], validate=True))
    key_pem = openssl("pkcs8", "-nocrypt", "-inform", "DER", "-in", str(workdir / "key.der")).stdout
    (workdir / "key.pem").write_text(key_pem)
    structure = openssl("asn1parse", "-inform", "DER", "-in", str(workdir / "key.der")).stdout
    algorithm = "id-ecPublicKey" if key_kind == "ec" else "rsaEncryption"
    assert algorithm in structure and "OCTET STRING" in structure, structure
    certificates = print_certs(parts[1][1], workdir / "cert.pem")
    assert len(certificates) == 1
    server_key = openssl("pkey", "-in", str(workdir / "key.pem"), "-pubout").stdout
    assert public_key_of_certificate(workdir / "cert.pem") == server_key
    assert server_key != csr.public_key_pem()
    CaCerts(server, workdir, domain.name).assert_verifies(workdir / "cert.pem")
    assert_credential_of(server, device["id"], certificates[0])


# --- labels ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["domain/profile", "domain~profile"])
def test_application_certificate_with_domain_credential(server, domain, workdir, form):
    """simpleenroll to /.well-known/est/<domain>/tls_server (or <domain>~tls_server) with the domain
    credential: a TLS server certificate with the requested subject and SAN; the credential stays."""
    onboarded = onboard_with_password(server, workdir, domain.name)
    label = "%s/tls_server" % domain.name if form == "domain/profile" else "%s~tls_server" % domain.name
    request = Csr(workdir, "app", "/CN=app.example", sans="DNS:app.example,IP:192.0.2.7")
    answer = curl(
        server,
        est_url(server, "simpleenroll", label),
        workdir,
        data=request.b64,
        cert=onboarded.cert_path,
        key=onboarded.key_path,
    )
    certificate = issued_certificate(answer, workdir / "app.pem")
    assert common_name(certificate) == "app.example"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["app.example"]
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    CaCerts(server, workdir, domain.name).assert_verifies(workdir / "app.pem", purpose="sslserver")
    assert_credential_of(server, onboarded.id, onboarded.certificate)
    assert certificate_status(server, onboarded.certificate) == ("active", None)


def test_serverkeygen_application_certificate(server, domain, workdir):
    """serverkeygen to <domain>/tls_client with the domain credential: a key and a TLS client
    certificate for it; the domain credential stays the device's credential."""
    onboarded = onboard_with_password(server, workdir, domain.name)
    request = Csr(workdir, "app", "/CN=client.example", sans="DNS:client.example")
    answer = curl(
        server,
        est_url(server, "serverkeygen", "%s/tls_client" % domain.name),
        workdir,
        data=request.b64,
        cert=onboarded.cert_path,
        key=onboarded.key_path,
    )
    assert answer.status == 200, answer
    key_part, cert_part = multipart_parts(answer.content_type, answer.body)
    (workdir / "key.der").write_bytes(base64.b64decode(key_part[1], validate=True))
    key_pem = openssl("pkcs8", "-nocrypt", "-inform", "DER", "-in", str(workdir / "key.der")).stdout
    (workdir / "key.pem").write_text(key_pem)
    [certificate] = print_certs(cert_part[1], workdir / "app.pem")
    assert common_name(certificate) == "client.example"
    server_key = openssl("pkey", "-in", str(workdir / "key.pem"), "-pubout").stdout
    assert public_key_of_certificate(workdir / "app.pem") == server_key
    CaCerts(server, workdir, domain.name).assert_verifies(workdir / "app.pem")
    assert_credential_of(server, onboarded.id, onboarded.certificate)


def test_label_less_endpoints_serve_the_default_domain(default_server, workdir):
    """With --est-default-domain, /.well-known/est/cacerts, /simpleenroll and /~<profile>/simpleenroll
    serve that domain."""
    cacerts = CaCerts(default_server, workdir)
    issuing, root = domain_chain(default_server, default_server.domain)
    assert cacerts.root == root and cacerts.intermediates == [issuing]
    device, password = password_device(default_server, default_server.domain)
    csr = Csr(workdir, "dev", "/CN=%s" % device["name"])
    answer = curl(
        default_server,
        est_url(default_server, "simpleenroll"),
        workdir,
        data=csr.b64,
        user="%s:%s" % (device["name"], password),
    )
    certificate = issued_certificate(answer, workdir / "cert.pem")
    cacerts.assert_verifies(workdir / "cert.pem")
    assert_credential_of(default_server, device["id"], certificate)

    # ~<profile>: an application certificate of the default domain.
    request = Csr(workdir, "app", "/CN=client.example", sans="DNS:client.example")
    answer = curl(
        default_server,
        est_url(default_server, "simpleenroll", "~tls_client"),
        workdir,
        data=request.b64,
        cert=workdir / "cert.pem",
        key=csr.key,
    )
    application = issued_certificate(answer, workdir / "app.pem")
    assert common_name(application) == "client.example"
    cacerts.assert_verifies(workdir / "app.pem")


def test_label_less_endpoint_without_default_domain(server, workdir):
    """The session server has no default EST domain: the label-less path says to name one."""
    answer = curl(server, est_url(server, "cacerts"), workdir)
    assert answer.status == 404, answer
    assert answer.content_type.startswith("text/plain")
    assert "no default EST domain" in answer.text and "/.well-known/est/<domain>/" in answer.text


def test_prefix_label_form(server, domain, workdir):
    """/<domain>/.well-known/est/<op> (how strongSwan 5.9 names a label) serves the domain."""
    cacerts = CaCerts(server, workdir, prefix=domain.name)
    assert cacerts.root == domain.root
    device, password = password_device(server, domain.name)
    csr = Csr(workdir, "dev", "/CN=%s" % device["name"])
    url = est_url(server, "simpleenroll", prefix=domain.name)
    answer = curl(server, url, workdir, data=csr.b64, user="%s:%s" % (device["name"], password))
    issued_certificate(answer, workdir / "cert.pem")
    cacerts.assert_verifies(workdir / "cert.pem")


# --- request bodies and framing ----------------------------------------------------------------------


BODY_FORMS = ["base64-64-char-lines", "base64-one-line", "base64-crlf", "base64-with-cte", "der", "pem"]


@pytest.mark.parametrize("form", BODY_FORMS)
def test_request_body_forms(server, domain, workdir, form):
    """The CSR as base64 with LF, CRLF or no line breaks (with or without Content-Transfer-Encoding), raw
    DER and PEM, and a Content-Type with parameters: each enrolls."""
    device, password = password_device(server, domain.name)
    csr = Csr(workdir, "dev", "/CN=%s" % device["name"])
    der = csr.der.read_bytes()
    one_line = base64.b64encode(der)
    wrapped = csr.b64.read_bytes()
    bodies = {
        "base64-64-char-lines": wrapped,
        "base64-one-line": one_line,
        "base64-crlf": wrapped.replace(b"\n", b"\r\n"),
        "base64-with-cte": one_line,
        "der": der,
        "pem": csr.pem.read_bytes(),
    }
    assert b"\n" in wrapped and max(len(line) for line in wrapped.splitlines()) == 64
    extra = ["-H", "Content-Transfer-Encoding: base64"] if form == "base64-with-cte" else []
    content_type = "application/pkcs10; charset=us-ascii" if form == "base64-one-line" else "application/pkcs10"
    answer = curl(
        server,
        est_url(server, "simpleenroll", domain.name),
        workdir,
        data=bodies[form],
        user="%s:%s" % (device["name"], password),
        content_type=content_type,
        extra=extra,
    )
    assert answer.status == 200, answer
    if answer.content_type == "application/x-pem-file":  # the upstream Trustpoint answer to a PEM CSR
        (workdir / "cert.pem").write_bytes(answer.body)
        certificate = load_pem(workdir / "cert.pem")[0]
    else:
        certificate = issued_certificate(answer, workdir / "cert.pem")
    assert public_key_of_certificate(workdir / "cert.pem") == csr.public_key_pem()
    CaCerts(server, workdir, domain.name).assert_verifies(workdir / "cert.pem")
    assert_credential_of(server, device["id"], certificate)


@pytest.mark.parametrize("operation", ["cacerts", "csrattrs", "simpleenroll"])
def test_trailing_slash(server, domain, workdir, operation):
    """Every EST path answers with a trailing slash too (Trustpoint-style clients post to .../simpleenroll/)."""
    url = est_url(server, operation, domain.name) + "/"
    if operation == "simpleenroll":
        device, password = password_device(server, domain.name)
        csr = Csr(workdir, "dev", "/CN=%s" % device["name"])
        answer = curl(server, url, workdir, data=csr.b64, user="%s:%s" % (device["name"], password))
        issued_certificate(answer, workdir / "cert.pem")
        CaCerts(server, workdir, domain.name).assert_verifies(workdir / "cert.pem")
    else:
        answer = curl(server, url, workdir)
        assert answer.status == 200, answer


def _split_answer(answer):
    head, _sep, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _sep, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


def assert_framed_for(version, body):
    """HTTP/1.0: 64-character base64 lines, each ending in a newline; HTTP/1.1: one unwrapped line."""
    if version == "HTTP/1.0":
        assert body.endswith(b"\n"), body[-80:]
        lines = body[:-1].split(b"\n")
        assert all(len(line) == 64 for line in lines[:-1]) and 0 < len(lines[-1]) <= 64, lines
        assert b"\r" not in body
    else:
        assert not re.search(rb"\s", body), body[-80:]
    return base64.b64decode(body, validate=False)


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_cacerts_framing_mirrors_the_http_version(server, domain, version):
    """A raw request over TLS: HTTP/1.0 gets an HTTP/1.0 status line and 64-character lines with a final
    newline, HTTP/1.1 an HTTP/1.1 status line and one line; both with Content-Length, no chunking."""
    request = "GET /.well-known/est/%s/cacerts %s\r\nHost: 127.0.0.1\r\n" % (domain.name, version)
    if version == "HTTP/1.1":
        request += "Connection: close\r\n"
    status_line, headers, body = _split_answer(raw_https(server, (request + "\r\n").encode()))
    assert status_line == "%s 200 OK" % version, status_line
    assert int(headers["content-length"]) == len(body)
    assert "transfer-encoding" not in headers
    certificates = pkcs7.load_der_pkcs7_certificates(assert_framed_for(version, body))
    assert {fingerprint(c) for c in certificates} == {fingerprint(domain.issuing), fingerprint(domain.root)}


def test_simpleenroll_over_http10(server, domain, workdir):
    """curl --http1.0 simpleenroll: an HTTP/1.0 status line and a wrapped base64 body with a final newline."""
    device, password = password_device(server, domain.name)
    csr = Csr(workdir, "dev", "/CN=%s" % device["name"])
    answer = curl(
        server,
        est_url(server, "simpleenroll", domain.name),
        workdir,
        data=csr.b64,
        user="%s:%s" % (device["name"], password),
        extra=["--http1.0"],
    )
    assert answer.status_line.startswith("HTTP/1.0 200"), answer
    assert_framed_for("HTTP/1.0", answer.body)
    issued_certificate(answer, workdir / "cert.pem")
    CaCerts(server, workdir, domain.name).assert_verifies(workdir / "cert.pem")


# --- strongSwan pki ----------------------------------------------------------------------------------


@pytest.fixture(params=["default", "prefix"])
def strongswan_target(request, server, workdir):
    """(server, --url, domain): the label-less default domain, or a new domain as /<domain> URL prefix."""
    if request.param == "default":
        instance = request.getfixturevalue("default_server")
        return instance, instance.url, instance.domain
    domain = PkiDomain(server, workdir)
    return server, "%s/%s" % (server.url, domain.name), domain.name


def test_strongswan_estca(strongswan_target, workdir):
    """pki --estca writes the root to --caout and the issuing CA to <name>-1."""
    target, url, domain = strongswan_target
    returncode, _out, err = pki(
        "--estca", "--url", url, "--cacert", target.ca_file, "--caout", "estca.pem", "--outform", "pem", "--force",
        cwd=workdir,
    )  # fmt: skip
    assert returncode == 0, err
    issuing, root = domain_chain(target, domain)
    assert load_pem(workdir / "estca.pem") == [root]
    assert load_pem(workdir / "estca-1.pem") == [issuing]
    assert not (workdir / "estca-2.pem").exists()


def assert_logged(target, operation, device_name):
    """The server log shows which EST operation issued the device its domain credential."""
    pattern = r"EST %s issued domain_credential [0-9a-f]+ to device %s " % (operation, re.escape(device_name))
    assert re.search(pattern, target.log()), target.log()[-2000:]


def _strongswan_enroll(target, url, workdir, csr, *auth):
    """pki --est --outform pem; the issued certificate, written to <csr stem>.pem."""
    returncode, out, err = pki(
        "--est", "--url", url, "--in", csr.der, "--cacert", target.ca_file, *auth, "--outform", "pem", cwd=workdir
    )
    assert returncode == 0, err
    assert "Issued certificate" in err, err
    cert_path = csr.key.with_suffix(".pem")
    cert_path.write_bytes(out)
    return load_pem(cert_path)[0], cert_path


def test_strongswan_simpleenroll_with_password(strongswan_target, workdir):
    """pki --est --userpass (label-less default domain, or the /<domain> prefix) with a `pki --req` CSR: a
    certificate for the CSR's key that verifies against /cacerts; the device is onboarded."""
    target, url, domain = strongswan_target
    device, password = password_device(target, domain)
    csr = SwanCsr(workdir, "swan", "CN=%s" % device["name"])
    certificate, cert_path = _strongswan_enroll(
        target, url, workdir, csr, "--userpass", "%s:%s" % (device["name"], password)
    )
    assert public_key_of_certificate(cert_path) == csr.public_key_pem()
    CaCerts(target, workdir, domain).assert_verifies(cert_path)
    assert_credential_of(target, device["id"], certificate)
    assert_logged(target, "simpleenroll", device["name"])


def test_strongswan_reenroll_with_domain_credential(strongswan_target, workdir):
    """pki --est --cert/--key (sent to /simplereenroll) with the domain credential renews it; the CSRs come
    from `pki --req` (a PrintableString CN, where the issued certificate has a UTF8String one)."""
    target, url, domain = strongswan_target
    device, password = password_device(target, domain)
    first = SwanCsr(workdir, "first", "CN=%s" % device["name"])
    old, old_path = _strongswan_enroll(target, url, workdir, first, "--userpass", "%s:%s" % (device["name"], password))
    second = SwanCsr(workdir, "second", "CN=%s" % device["name"])
    renewed, renewed_path = _strongswan_enroll(target, url, workdir, second, "--cert", old_path, "--key", first.key)
    assert renewed.subject == old.subject and renewed.serial_number != old.serial_number
    assert public_key_of_certificate(renewed_path) == second.public_key_pem()
    CaCerts(target, workdir, domain).assert_verifies(renewed_path)
    assert certificate_status(target, old) == ("active", None)  # superseded: it may renew until renewed is used
    assert target.api("GET", "/devices/%d/certificates/%x" % (device["id"], old.serial_number))[1]["superseded_at"]
    assert_credential_of(target, device["id"], renewed)
    assert_logged(target, "simplereenroll", device["name"])


@pytest.mark.parametrize("setup", ["pre-registered", "auto-created"])
def test_strongswan_idevid_onboarding(server, workdir, setup):
    """pki --est --cert/--key with an IDevID (strongSwan uses /simplereenroll): initial enrollment of an
    est_idevid device, pre-registered or created by the DevID registration."""
    domain = PkiDomain(server, workdir)
    if setup == "pre-registered":
        idevid, device = admitted_idevid(server, domain, method="est_idevid")
    else:
        serial = new_serial()
        manufacturer = admit_manufacturer(server, domain, re.escape(serial))
        idevid = make_end_entity(manufacturer, "swan-%s" % serial.lower(), serial)
        device = None
    cert_path, key_path = idevid_files(idevid, workdir)
    csr = SwanCsr(workdir, "ldevid", "CN=strongswan")
    url = "%s/%s" % (server.url, domain.name)
    certificate, issued_path = _strongswan_enroll(server, url, workdir, csr, "--cert", cert_path, "--key", key_path)
    assert public_key_of_certificate(issued_path) == csr.public_key_pem()
    CaCerts(server, workdir, domain.name).assert_verifies(issued_path)
    if device is None:
        [device] = server.api("GET", "/devices?domain=%s" % domain.name)[1]
        assert device["onboarding_method"] == "est_idevid"
    assert common_name(certificate) == device["name"]
    assert_credential_of(server, device["id"], certificate)
    assert_logged(server, "simplereenroll", device["name"])
