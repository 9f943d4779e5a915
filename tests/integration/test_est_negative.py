# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""EST requests the server must refuse: the exact status, a text/plain message that says what is
wrong, and nothing changed.

Requests are sent with curl. Each test takes a snapshot (the devices as the API shows them, their
certificate records and the server-wide counts, read-only from the database) before the bad request
and compares it afterwards; a password the refused request carried must still enroll afterwards (the
API does not show whether a password is spent). Client certificates the handshake cannot verify never
get an HTTP answer: the client sees a TLS error.
"""

from __future__ import annotations

import base64
import datetime
import re
import ssl

import pytest
from cmp_helpers import (
    UNREADABLE_CSRS,
    PkiDomain,
    admit_manufacturer,
    assert_cmp_ok,
    certificate_status,
    make_ca,
    make_end_entity,
    malformed_csr,
    new_serial,
    query,
    register_device,
    register_directly,
    revoke_directly,
    run_cmp,
    signer_args,
    snapshot,
    totals,
    unreadable_csr,
    while_writes_wait,
    write_pem,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from est_helpers import (
    Csr,
    assert_refused,
    assert_tls_refused,
    curl,
    est_url,
    handshake_error,
    issued_certificate,
    onboard_with_password,
    password_device,
)
from trustpoint_server.runtime.vault import Vault

MAX_BODY = 128 * 1024


@pytest.fixture
def domain(server, workdir):
    return PkiDomain(server, workdir)


@pytest.fixture
def enrollee(server, domain, workdir):
    """An est_password device that has not enrolled: (device, password, CSR)."""
    device, password = password_device(server, domain.name)
    return device, password, Csr(workdir, "enrollee", "/CN=%s" % device["name"])


@pytest.fixture
def onboarded(server, domain, workdir):
    """An est_password device onboarded with curl: its domain credential and key as files."""
    return onboard_with_password(server, workdir, domain.name)


def basic(device, password):
    return "%s:%s" % (device["name"], password)


def assert_password_still_enrolls(server, domain, workdir, enrollee):
    """Control: the refused request did not spend the device's password."""
    device, password, csr = enrollee
    answer = curl(
        server, est_url(server, "simpleenroll", domain.name), workdir, data=csr.b64, user=basic(device, password)
    )
    issued_certificate(answer, workdir / "control.pem")


# --- authentication --------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["simpleenroll", "simplereenroll", "serverkeygen"])
def test_no_credentials_get_a_basic_challenge(server, domain, workdir, enrollee, operation):
    """No Authorization and no client certificate: 401 with WWW-Authenticate: Basic realm="est"."""
    device, _password, csr = enrollee
    before = snapshot(server, device["id"])
    answer = curl(server, est_url(server, operation, domain.name), workdir, data=csr.b64)
    assert_refused(answer, 401, "authenticate with HTTP Basic (device name and password) or a TLS client certificate")
    assert answer.headers.get("www-authenticate") == 'Basic realm="est"', answer
    assert snapshot(server, device["id"]) == before


@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "cmp-device-secret", "empty-password"])
def test_bad_basic_credentials(server, domain, workdir, enrollee, case):
    """A wrong password, an unknown user, the shared secret of a CMP device (name and secret) and an
    empty password: 401 with the challenge again; the real password still enrolls afterwards."""
    device, password, csr = enrollee
    device_ids = [device["id"]]
    if case == "wrong-password":
        user = basic(device, password[:-1] + ("A" if password[-1] != "A" else "B"))
    elif case == "unknown-user":
        user = "no-such-device:" + password
    elif case == "cmp-device-secret":
        cmp_device, secret = server.create_device(domain.name)
        user = basic(cmp_device, secret)
        device_ids.append(cmp_device["id"])
    else:
        user = device["name"] + ":"
    before = snapshot(server, *device_ids)
    answer = curl(server, est_url(server, "simpleenroll", domain.name), workdir, data=csr.b64, user=user)
    assert_refused(answer, 401, "wrong username or password")
    assert answer.headers.get("www-authenticate") == 'Basic realm="est"', answer
    assert snapshot(server, *device_ids) == before
    assert_password_still_enrolls(server, domain, workdir, enrollee)


def test_password_in_another_domain(server, domain, workdir, enrollee):
    """A password device enrolling at another domain's label: 403 naming the device and the domain."""
    device, password, csr = enrollee
    other = server.create_domain()["name"]
    before = snapshot(server, device["id"])
    answer = curl(server, est_url(server, "simpleenroll", other), workdir, data=csr.b64, user=basic(device, password))
    assert_refused(answer, 403, "device %s is not registered in domain %s" % (device["name"], other))
    assert snapshot(server, device["id"]) == before
    assert_password_still_enrolls(server, domain, workdir, enrollee)


def test_password_for_an_application_profile(server, domain, workdir, enrollee):
    """A password cannot get an application certificate: 403 'onboard with the domain credential first'."""
    device, password, csr = enrollee
    before = snapshot(server, device["id"])
    url = est_url(server, "simpleenroll", "%s/tls_client" % domain.name)
    answer = curl(server, url, workdir, data=csr.b64, user=basic(device, password))
    assert_refused(answer, 403, "onboard with the domain credential first")
    assert snapshot(server, device["id"]) == before
    assert_password_still_enrolls(server, domain, workdir, enrollee)


# --- client certificates ---------------------------------------------------------------------------


def _tls_refused(server, domain, workdir, cert_path, key_path, alert, device_ids=()):
    """simplereenroll with this client certificate fails in the TLS handshake with alert, for curl and
    for Python's ssl; nothing changes."""
    csr = Csr(workdir, "tls", "/CN=whatever")
    before = snapshot(server, *device_ids)
    answer = curl(
        server, est_url(server, "simplereenroll", domain.name), workdir, data=csr.b64, cert=cert_path, key=key_path
    )
    assert_tls_refused(answer, alert)
    error = handshake_error(server, cert_path, key_path)
    assert isinstance(error, ssl.SSLError) and alert in str(error), repr(error)
    assert snapshot(server, *device_ids) == before


@pytest.mark.parametrize("problem", ["unknown-ca", "expired-idevid"])
def test_untrusted_client_certificate_fails_the_handshake(server, domain, workdir, problem):
    """A client certificate of a CA in no truststore, or an expired IDevID of a trusted manufacturer:
    the TLS handshake fails; no HTTP answer, nothing changes."""
    serial = new_serial()
    manufacturer = make_ca("Manufacturer %s" % serial)
    days = 365
    if problem == "expired-idevid":
        admit_manufacturer(server, domain, re.escape(serial), manufacturer=manufacturer)
        days = -1
    idevid = make_end_entity(manufacturer, "sensor", serial, days=days)
    cert_path, key_path, _chain = idevid.write(workdir, "client")
    alert = "unknown ca" if problem == "unknown-ca" else "certificate expired"
    _tls_refused(server, domain, workdir, cert_path, key_path, alert)


def test_expired_domain_credential_fails_the_handshake(server, domain, workdir, onboarded):
    """A domain credential past its notAfter fails the TLS handshake of simplereenroll ("certificate
    expired"). The server never issues one already expired, so the test signs the device's subject and key
    with the domain's issuing CA key from the server's vault; the control, the same certificate still
    valid, passes the handshake (and, unknown to the records, is refused as an IDevID with 403)."""
    [(ca_der, ca_key_blob)] = query(
        server,
        "SELECT ca.certificate_der, ca.private_key_encrypted FROM certificate_authority ca"
        " JOIN domain d ON d.id = ca.domain_id WHERE d.name = ? AND ca.role = 'issuing'",
        (domain.name,),
    )
    issuing = x509.load_der_x509_certificate(ca_der)
    ca_key = serialization.load_pem_private_key(
        Vault.load(str(server.data_dir)).decrypt(ca_key_blob, "ca-key"), password=None
    )
    current = onboarded.certificate
    now = datetime.datetime.now(datetime.timezone.utc)

    def forged(not_after):
        builder = (
            x509.CertificateBuilder()
            .subject_name(current.subject)
            .issuer_name(issuing.subject)
            .public_key(current.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(not_after)
        )
        for extension in current.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        return builder.sign(ca_key, hashes.SHA256())

    valid_path = write_pem(workdir / "valid.pem", [forged(now + datetime.timedelta(days=1))])
    csr = Csr(workdir, "renewal", "/CN=%s" % onboarded.name)
    before = snapshot(server, onboarded.id)
    answer = curl(
        server,
        est_url(server, "simplereenroll", domain.name),
        workdir,
        data=csr.b64,
        cert=valid_path,
        key=onboarded.key_path,
    )
    assert_refused(answer, 403, "the IDevID has neither a subject serialNumber nor a SAN URI")

    expired_path = write_pem(workdir / "expired.pem", [forged(now - datetime.timedelta(days=1))])
    _tls_refused(server, domain, workdir, expired_path, onboarded.key_path, "certificate expired", [onboarded.id])
    assert snapshot(server, onboarded.id) == before
    assert certificate_status(server, current) == ("active", None)


@pytest.mark.parametrize("problem", ["no-matching-pattern", "no-device", "cmp-device", "two-serial-numbers"])
@pytest.mark.parametrize("operation", ["simpleenroll", "simplereenroll"])
def test_idevid_not_admitted(server, domain, workdir, problem, operation):
    """An IDevID the handshake accepts (its manufacturer is in a truststore) that no DevID registration
    of the domain matches, or that a registration without auto-creation matches while no device is
    registered, or whose registered device onboards over CMP, or whose subject carries a second
    serialNumber (that of a registered device): 403 that says so."""
    serial = new_serial()
    manufacturer = make_ca("Manufacturer %s" % serial)
    more_serial_numbers = ()
    if problem == "no-matching-pattern":
        admit_manufacturer(server, domain, "SN-NEVER-MATCHES", manufacturer=manufacturer)
        message = "no DevID registration of domain %s matches the IDevID (%s)" % (domain.name, serial)
    elif problem == "no-device":
        admit_manufacturer(server, domain, re.escape(serial), auto_create=False, manufacturer=manufacturer)
        message = "no device is registered for it and the registration does not create devices"
    elif problem == "cmp-device":
        admit_manufacturer(server, domain, re.escape(serial), manufacturer=manufacturer)
        device, _secret = register_device(server, domain.name, "cmp_idevid", serial)
        message = "device %s onboards with cmp_idevid, not est_idevid" % device["name"]
    else:
        # Admitted for its own serial number (second), it names another registered device first.
        admit_manufacturer(server, domain, re.escape(serial), auto_create=False, manufacturer=manufacturer)
        more_serial_numbers = [serial]
        serial = register_device(server, domain.name, "est_idevid", new_serial())[0]["serial_number"]
        message = "the IDevID's subject has 2 serialNumber attributes"
    idevid = make_end_entity(manufacturer, "sensor", serial, more_serial_numbers=more_serial_numbers)
    cert_path, key_path, _chain = idevid.write(workdir, "idevid")
    csr = Csr(workdir, "req", "/CN=sensor")
    before = snapshot(server)
    answer = curl(server, est_url(server, operation, domain.name), workdir, data=csr.b64, cert=cert_path, key=key_path)
    assert_refused(answer, 403, "the TLS client certificate is not accepted: ")
    assert message in answer.text, answer
    assert snapshot(server) == before


@pytest.mark.parametrize("how", ["cmp-rr", "api-device-delete"])
def test_revoked_credential_on_reenroll(server, domain, workdir, onboarded, how):
    """simplereenroll with a domain credential revoked by CMP rr (signed with itself) or by deleting the
    device through the API: 403 'certificate <serial> is revoked'."""
    if how == "cmp-rr":
        returncode, output = run_cmp(
            "-cmd", "rr", "-server", domain.url("revocation"),
            *signer_args(onboarded.cert_path, onboarded.key_path, domain.root_path),
            "-oldcert", onboarded.cert_path, "-revreason", "5", cwd=workdir,
        )  # fmt: skip
        assert_cmp_ok(returncode, output)
        device_ids = [onboarded.id]
    else:
        assert server.api("DELETE", "/devices/%d" % onboarded.id)[0] == 204
        device_ids = []
    assert certificate_status(server, onboarded.certificate)[0] == "revoked"
    csr = Csr(workdir, "renewal", "/CN=%s" % onboarded.name)
    before = snapshot(server, *device_ids)
    answer = curl(
        server,
        est_url(server, "simplereenroll", domain.name),
        workdir,
        data=csr.b64,
        cert=onboarded.cert_path,
        key=onboarded.key_path,
    )
    serial = format(onboarded.certificate.serial_number, "x")
    assert_refused(answer, 403, "the TLS client certificate is not accepted: certificate %s is revoked" % serial)
    assert snapshot(server, *device_ids) == before


@pytest.mark.parametrize("operation", ["simplereenroll", "simpleenroll"])
def test_credential_revoked_while_the_request_waits(server, domain, workdir, onboarded, operation):
    """simplereenroll (or simpleenroll of a tls_client certificate) with the domain credential passes
    its checks; before its writes, a concurrent CMP rr revokes the credential: 403, nothing issued."""
    csr = Csr(workdir, "renewal", "/CN=%s" % onboarded.name)
    label = domain.name if operation == "simplereenroll" else "%s/tls_client" % domain.name
    url = est_url(server, operation, label)
    before = totals(server)
    answer = while_writes_wait(
        server,
        lambda: curl(server, url, workdir, data=csr.b64, cert=onboarded.cert_path, key=onboarded.key_path),
        revoke_directly(onboarded.certificate),
    )
    serial = format(onboarded.certificate.serial_number, "x")
    assert_refused(answer, 403, "certificate %s was revoked (keyCompromise) by a concurrent request" % serial)
    assert totals(server) == before
    assert certificate_status(server, onboarded.certificate) == ("revoked", "keyCompromise")


@pytest.mark.parametrize("clash", ["same-idevid", "same-name"])
def test_device_auto_created_while_the_request_waits(server, domain, workdir, clash):
    """simpleenroll with an IDevID whose device the registration would create passes its checks; before
    its writes, a concurrent request registers a device for the same IDevID (or one with the name chosen
    for it): 409 that says to send it again, nothing issued. Sent again, it enrolls."""
    serial = new_serial()
    manufacturer = make_ca("Manufacturer %s" % serial)
    admit_manufacturer(server, domain, re.escape(serial), manufacturer=manufacturer)
    name = "sensor-%s" % serial.lower()
    idevid = make_end_entity(manufacturer, name, serial)
    cert_path, key_path, _chain = idevid.write(workdir, "idevid")
    racer = ("racer-" + serial.lower(), idevid.certificate.fingerprint(hashes.SHA256()).hex())
    if clash == "same-name":
        racer = (name, None)
    register = register_directly(domain.name, racer[0], "est_idevid", racer[1])
    csr = Csr(workdir, "req", "/CN=sensor")
    url = est_url(server, "simpleenroll", domain.name)
    devices, certificates, transactions = totals(server)
    answer = while_writes_wait(
        server, lambda: curl(server, url, workdir, data=csr.b64, cert=cert_path, key=key_path), register
    )
    assert_refused(answer, 409, "by a concurrent request; send the request again")
    assert totals(server) == (devices + 1, certificates, transactions)  # only the concurrent device
    answer = curl(server, url, workdir, data=csr.b64, cert=cert_path, key=key_path)
    assert answer.status == 200, answer
    assert totals(server) == (devices + (1 if clash == "same-idevid" else 2), certificates + 1, transactions)


def test_domain_credential_at_another_domain(server, domain, workdir, onboarded):
    """The domain credential of one domain renewing at another domain's label: 403."""
    other = server.create_domain()["name"]
    csr = Csr(workdir, "renewal", "/CN=%s" % onboarded.name)
    before = snapshot(server, onboarded.id)
    answer = curl(
        server,
        est_url(server, "simplereenroll", other),
        workdir,
        data=csr.b64,
        cert=onboarded.cert_path,
        key=onboarded.key_path,
    )
    assert_refused(answer, 403, "device %s is not registered in domain %s" % (onboarded.name, other))
    assert snapshot(server, onboarded.id) == before


def test_simpleenroll_with_credential_and_no_profile(server, domain, workdir, onboarded):
    """simpleenroll with the domain credential and no application profile in the URL: 403 that points to
    simplereenroll."""
    csr = Csr(workdir, "again", "/CN=%s" % onboarded.name)
    before = snapshot(server, onboarded.id)
    answer = curl(
        server,
        est_url(server, "simpleenroll", domain.name),
        workdir,
        data=csr.b64,
        cert=onboarded.cert_path,
        key=onboarded.key_path,
    )
    assert_refused(answer, 403, "renew with simplereenroll")
    assert snapshot(server, onboarded.id) == before


# --- the CSR ---------------------------------------------------------------------------------------


def test_csr_signature_does_not_verify(server, domain, workdir, enrollee):
    """A CSR whose self-signature (the proof of possession) does not verify: 400."""
    device, password, csr = enrollee
    der = bytearray(csr.der.read_bytes())
    der[-1] ^= 0x01  # the last byte of the ECDSA signature's s
    before = snapshot(server, device["id"])
    answer = curl(
        server, est_url(server, "simpleenroll", domain.name), workdir, data=bytes(der), user=basic(device, password)
    )
    assert_refused(answer, 400, "the certificate request's signature does not verify")
    assert snapshot(server, device["id"]) == before
    assert_password_still_enrolls(server, domain, workdir, enrollee)


@pytest.mark.parametrize("problem", ["duplicate-san", "san-ip-3-bytes"])
@pytest.mark.parametrize("operation", ["simpleenroll", "serverkeygen", "simplereenroll"])
def test_csr_with_malformed_extensions(server, domain, workdir, enrollee, onboarded, problem, operation):
    """A CSR whose subjectAltName extension appears twice, or has an iPAddress of 3 bytes, at enrollment
    with a password, server key generation, or renewal with the domain credential: 400 text/plain that
    says so (not a 500)."""
    device, password, _csr = enrollee
    der = base64.b64encode(malformed_csr(problem, onboarded.name).public_bytes(serialization.Encoding.DER))
    if operation == "simplereenroll":
        credentials = {"cert": onboarded.cert_path, "key": onboarded.key_path}
    else:
        credentials = {"user": basic(device, password)}
    before = snapshot(server, device["id"], onboarded.id)
    answer = curl(server, est_url(server, operation, domain.name), workdir, data=der, **credentials)
    assert_refused(answer, 400, "the certificate request's extensions cannot be read")
    assert snapshot(server, device["id"], onboarded.id) == before
    if operation != "simplereenroll":
        assert_password_still_enrolls(server, domain, workdir, enrollee)


@pytest.mark.parametrize("problem", UNREADABLE_CSRS)
@pytest.mark.parametrize("operation", ["simpleenroll", "serverkeygen"])
def test_csr_cryptography_cannot_read(server, domain, workdir, enrollee, problem, operation):
    """A CSR with a key of an unknown algorithm or curve, or a commonName that is an INTEGER, with the
    device's password: 400 text/plain that says so (not a 500); the password still enrolls."""
    device, password, _csr = enrollee
    der = base64.b64encode(unreadable_csr(problem).public_bytes(serialization.Encoding.DER))
    before = snapshot(server, device["id"])
    answer = curl(server, est_url(server, operation, domain.name), workdir, data=der, user=basic(device, password))
    assert_refused(answer, 400, "the certificate request cannot be read")
    assert snapshot(server, device["id"]) == before
    assert_password_still_enrolls(server, domain, workdir, enrollee)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the request body is empty"),
        (b"!!!!", "does not decode to a DER structure"),
        (b"MAMCAQA=", "is not a PKCS#10 certificate request"),
    ],
    ids=["empty", "not-base64", "not-a-csr"],
)
def test_body_that_is_no_csr(server, domain, workdir, enrollee, body, message):
    """An empty body, one that is no base64 or DER, and DER that is no CSR: 400 that says which."""
    device, password, _csr = enrollee
    before = snapshot(server, device["id"])
    answer = curl(
        server, est_url(server, "simpleenroll", domain.name), workdir, data=body, user=basic(device, password)
    )
    assert_refused(answer, 400, message)
    assert snapshot(server, device["id"]) == before
    assert_password_still_enrolls(server, domain, workdir, enrollee)


@pytest.mark.parametrize("change", ["subject", "san"])
def test_reenroll_with_another_subject(server, domain, workdir, onboarded, change):
    """simplereenroll whose CSR changes the subject or adds a subjectAltName: 400 naming the subject."""
    if change == "subject":
        csr = Csr(workdir, "renewal", "/CN=someone-else")
    else:
        csr = Csr(workdir, "renewal", "/CN=%s" % onboarded.name, sans="DNS:extra.example")
    before = snapshot(server, onboarded.id)
    answer = curl(
        server,
        est_url(server, "simplereenroll", domain.name),
        workdir,
        data=csr.b64,
        cert=onboarded.cert_path,
        key=onboarded.key_path,
    )
    assert_refused(answer, 400, "simplereenroll must repeat the subject and subjectAltName")
    assert "CN=%s" % onboarded.name in answer.text, answer
    assert snapshot(server, onboarded.id) == before


# --- HTTP ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain", "application/pkcs7-mime"])
def test_wrong_content_type(server, domain, workdir, enrollee, content_type):
    """A CSR posted with another Content-Type (curl's default form type when none is given): 415."""
    device, password, csr = enrollee
    extra = [] if content_type is None else ["-H", "Content-Type: " + content_type]
    before = snapshot(server, device["id"])
    answer = curl(
        server,
        est_url(server, "simpleenroll", domain.name),
        workdir,
        data=csr.b64,
        user=basic(device, password),
        content_type=None,
        extra=extra,
    )
    received = content_type or "application/x-www-form-urlencoded"
    assert_refused(
        answer, 415, "the body must be a PKCS#10 request with Content-Type application/pkcs10, not %r" % received
    )
    assert snapshot(server, device["id"]) == before
    assert_password_still_enrolls(server, domain, workdir, enrollee)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_oversized_body(server, domain, workdir, enrollee, framing):
    """A body over 128 KiB, with a Content-Length or chunked: 413."""
    device, password, _csr = enrollee
    extra = ["-H", "Transfer-Encoding: chunked"] if framing == "chunked" else []
    before = snapshot(server, device["id"])
    answer = curl(
        server,
        est_url(server, "simpleenroll", domain.name),
        workdir,
        data=b"A" * (MAX_BODY + 1024),
        user=basic(device, password),
        extra=extra,
    )
    assert_refused(answer, 413, "the request exceeds %d bytes" % MAX_BODY)
    assert snapshot(server, device["id"]) == before
    assert_password_still_enrolls(server, domain, workdir, enrollee)


@pytest.mark.parametrize(
    ("operation", "wrong", "allowed"), [("simpleenroll", "GET", "POST"), ("cacerts", "POST", "GET")]
)
def test_wrong_method(server, domain, workdir, operation, wrong, allowed):
    """GET on simpleenroll and POST on cacerts: 405 with Allow."""
    data = b"x" if wrong == "POST" else None
    before = snapshot(server)
    answer = curl(server, est_url(server, operation, domain.name), workdir, data=data)
    assert_refused(answer, 405, "%s takes %s" % (operation, allowed))
    assert answer.headers.get("allow") == allowed, answer
    assert snapshot(server) == before


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_operation(server, domain, workdir, method):
    """An operation EST does not have (fullcmc, a typo): 404 that names it."""
    before = snapshot(server)
    for operation in ("fullcmc", "simpleenrol"):
        answer = curl(server, est_url(server, operation, domain.name), workdir, data=b"x" if method == "POST" else None)
        assert_refused(answer, 404, "unknown EST operation %r" % operation)
    assert snapshot(server) == before


def test_unknown_domain_and_profile(server, domain, workdir, enrollee):
    """A label naming no domain, or an unknown profile: 404 that names it."""
    device, password, csr = enrollee
    before = snapshot(server, device["id"])
    answer = curl(server, est_url(server, "cacerts", "no-such-domain"), workdir)
    assert_refused(answer, 404, "domain 'no-such-domain' does not exist")
    url = est_url(server, "simpleenroll", "no-such-domain")
    assert_refused(curl(server, url, workdir, data=csr.b64, user=basic(device, password)), 404, "does not exist")
    url = est_url(server, "simpleenroll", "%s/no_such_profile" % domain.name)
    answer = curl(server, url, workdir, data=csr.b64, user=basic(device, password))
    assert_refused(answer, 404, "unknown certificate profile 'no_such_profile'")
    assert snapshot(server, device["id"]) == before
    assert_password_still_enrolls(server, domain, workdir, enrollee)


@pytest.mark.parametrize("operation", ["cacerts", "simpleenroll"])
def test_est_over_plain_http(server, domain, workdir, enrollee, operation):
    """EST on the plain-HTTP listener: 403 'use HTTPS'; the password is not spent."""
    device, password, csr = enrollee
    url = "%s/.well-known/est/%s/%s" % (server.cmp_url, domain.name, operation)
    before = snapshot(server, device["id"])
    if operation == "cacerts":
        answer = curl(server, url, workdir)
    else:
        answer = curl(server, url, workdir, data=csr.b64, user=basic(device, password))
    assert_refused(answer, 403, "use HTTPS")
    assert snapshot(server, device["id"]) == before
    assert_password_still_enrolls(server, domain, workdir, enrollee)
