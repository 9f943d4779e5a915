# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 11 against the real server and real clients (`openssl cmp`, curl): the names a device may have, one
unconfirmed certificate at a time and a confirmation window, keyCompromise taking along what a credential
obtained, the API's certificate listing and revocation, per-device limits, IDevIDs bound to their DevID
registration, the server's answers to retried exchanges, and CRL distribution points that no Host header moves.

Each attack was observed to succeed before (the issue names it); here it is refused and changes nothing.
"""

from __future__ import annotations

import datetime

import cmp_helpers
import pytest
from cmp_helpers import (
    PkiDomain,
    admit_manufacturer,
    assert_cmp_ok,
    assert_rejected,
    certificate_status,
    certificates_of,
    create_registration,
    create_truststore,
    crl_url_of,
    end_renewal_grace,
    enroll_application,
    enroll_with_secret,
    error_of,
    execute,
    fetch_crl,
    header_for,
    idevid_args,
    load_pem,
    mac_protected,
    make_ca,
    make_end_entity,
    new_key_file,
    new_private_key,
    new_serial,
    post_cmp,
    run_cmp,
    serial_hex,
    signed,
    snapshot,
    subject_name,
    unique,
)
from conftest import Server, free_port, http, openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from est_helpers import Csr, curl, est_url, onboard_with_password, password_device
from trustpoint_core.cmp_message import (
    CmpMessage,
    Header,
    cert_conf_body,
    cert_hash,
    cert_req_body,
    cert_responses,
    encode_message,
    p10cr_body,
)
from trustpoint_core.cmp_protection import PasswordBasedMac

CMP = "application/pkixcmp"


@pytest.fixture
def domain(server, workdir):
    """A domain whose devices may have their own names only (no allow-list)."""
    return PkiDomain(server, workdir, allowed_names=[])


onboarded = cmp_helpers.onboarded  # with this file's domain


def _name(enrolled):
    return enrolled.device["name"]


def _cr(domain, signer, workdir, subject, sans=None, profile=None, stem="app", extra=()):
    key = new_key_file(workdir / ("%s.key" % stem))
    args = ["-cmd", "cr", "-server", domain.url("certification", profile), *signer.signer_args(domain)]
    args += ["-subject", subject, "-newkey", key, "-certout", workdir / ("%s.pem" % stem), "-implicit_confirm", *extra]
    if sans:
        args += ["-sans", sans]
    return run_cmp(*args, cwd=workdir)


def _san_values(certificate):
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in names]


# --- names -------------------------------------------------------------------------------------------------


def test_cmp_refuses_names_the_device_may_not_have(server, domain, onboarded, workdir):
    """Observed: an onboarded device obtained certificates for another device's name, *.example, the issuing
    CA's own DN. Each is badCertTemplate now, and nothing is issued."""
    other = enroll_with_secret(server, domain, "other")
    cases = [
        ("/CN=%s" % _name(other), None, "tls_client"),
        ("/CN=%s" % _name(onboarded), _name(other), "tls_server"),
        ("/CN=%s" % _name(onboarded), "*.example", "tls_server"),
        ("/CN=%s Issuing CA/O=Trustpoint" % domain.name, None, "tls_client"),
    ]
    before = snapshot(server, onboarded.id)
    for subject, sans, profile in cases:
        returncode, output = _cr(domain, onboarded, workdir, subject, sans, profile)
        assert_rejected(returncode, output, "badCertTemplate")
    # p10cr alike.
    key = new_key_file(workdir / "p10.key")
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=%s" % _name(other), "-out", str(workdir / "p10.csr"))
    returncode, output = run_cmp("-cmd", "p10cr", "-server", domain.url("pkcs10"), *onboarded.signer_args(domain),
                                 "-csr", workdir / "p10.csr", "-certout", workdir / "p10.pem")  # fmt: skip
    assert_rejected(returncode, output, "badCertTemplate")
    assert "may not have CN:%s" % _name(other) in output
    assert snapshot(server, onboarded.id) == before


def test_control_characters_in_names_are_refused(server, domain, onboarded, workdir):
    """Observed: a CN with NUL and newline was issued. Control characters anywhere in a requested name are
    badCertTemplate; the error text shows them escaped."""
    credential = onboarded.credential()
    before = snapshot(server, onboarded.id)
    for text in ("%s\x00.example" % _name(onboarded), "%s\nCN=admin" % _name(onboarded)):
        body = cert_req_body("cr", new_private_key(), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)]))
        _header, der = signed(body, credential)
        fail_info, message = error_of(post_cmp(domain.url("certification"), der))
        assert fail_info == ("badCertTemplate",) and "control characters" in message, message
        assert "\n" not in message and "\x00" not in message
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _name(onboarded))]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:x\r\nInjected: 1")]), False)
        .sign(new_private_key(), hashes.SHA256())
    )
    _header, der = signed(p10cr_body(csr), credential)
    fail_info, message = error_of(post_cmp(domain.url("pkcs10"), der))
    assert fail_info == ("badCertTemplate",) and "control characters" in message, message
    assert snapshot(server, onboarded.id) == before


def test_allow_lists_and_granted_with_modifications(server, domain, onboarded, workdir):
    """The operator allows more names per device or per domain ({device}: each device's name); what the server
    changes (other subject attributes dropped) makes the status grantedWithMods."""
    status, body = server.api(
        "PATCH", "/devices/%d" % onboarded.id, {"allowed_names": ["dns:PLC.local", "IP:10.0.5.11"]}
    )
    assert status == 200 and body["allowed_names"] == ["DNS:plc.local", "IP:10.0.5.11"], body
    returncode, output = _cr(domain, onboarded, workdir, "/CN=plc.local/O=Acme/OU=admins", "plc.local 10.0.5.11",
                             "tls_server")  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert 'received "grantedWithMods"' in output, output
    issued = load_pem(workdir / "app.pem")[0]
    assert issued.subject.rfc4514_string() == "CN=plc.local"
    assert _san_values(issued) == ["plc.local", "10.0.5.11"]

    suffix = "%s.example" % domain.name.lower()
    status, body = server.api("PATCH", "/domains/%s" % domain.name, {"allowed_names": ["DNS:{device}." + suffix]})
    assert status == 200 and body["allowed_names"] == ["DNS:{device}." + suffix], body
    own = "%s.%s" % (_name(onboarded).lower(), suffix)
    returncode, output = _cr(domain, onboarded, workdir, "/CN=%s" % own, own, "tls_server", "own")
    assert_cmp_ok(returncode, output)
    assert "grantedWithMods" not in output, "nothing was changed"
    other = enroll_with_secret(server, domain, "other")
    returncode, output = _cr(domain, other, workdir, "/CN=%s" % own, own, "tls_server", "theirs")
    assert_rejected(returncode, output, "badCertTemplate")

    for bad in (["DNS:bad_name"], ["IP:10.0.0.1/24"], "DNS:x", ["CN:x\ny"]):
        status, body = server.api("PATCH", "/devices/%d" % onboarded.id, {"allowed_names": bad})
        assert status == 400 and "allowed_names" in body["error"], body


def test_a_domain_credential_is_named_after_its_device(server, domain, workdir):
    """ir asks for a subject; the server names the credential after the device: grantedWithMods unless asked
    for exactly that."""
    device, secret = server.create_device(domain.name)
    common = ["-cmd", "ir", "-server", domain.url("initialization"), "-ref", device["id"], "-secret", "pass:" + secret]
    key = new_key_file(workdir / "a.key")
    returncode, output = run_cmp(*common, "-subject", "/CN=Trustpoint Domain Credential", "-newkey", key,
                                 "-certout", workdir / "a.pem", cwd=workdir)  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert 'received "grantedWithMods"' in output
    assert load_pem(workdir / "a.pem")[0].subject.rfc4514_string() == "CN=%s" % device["name"]
    key = new_key_file(workdir / "b.key")
    returncode, output = run_cmp(*common, "-subject", "/CN=%s" % device["name"], "-newkey", key,
                                 "-certout", workdir / "b.pem", cwd=workdir)  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert "grantedWithMods" not in output


def test_est_applies_the_same_names_policy(server, domain, workdir):
    """EST simpleenroll and serverkeygen with an application profile: another device's name is 403, the own one
    is issued."""
    onboarded = onboard_with_password(server, workdir, domain.name)
    other = onboard_with_password(server, workdir, domain.name, stem="other")
    label = "%s/tls_client" % domain.name
    for operation in ("simpleenroll", "serverkeygen"):
        theirs = Csr(workdir, "theirs-" + operation, "/CN=%s" % other.name)
        answer = curl(server, est_url(server, operation, label), workdir, data=theirs.b64, cert=onboarded.cert_path,
                      key=onboarded.key_path)  # fmt: skip
        assert answer.status == 403 and "may not have CN:%s" % other.name in answer.text, answer
        own = Csr(workdir, "own-" + operation, "/CN=%s" % onboarded.name, sans="DNS:%s" % onboarded.name.lower())
        answer = curl(server, est_url(server, operation, label), workdir, data=own.b64, cert=onboarded.cert_path,
                      key=onboarded.key_path)  # fmt: skip
        assert answer.status == 200, answer


# --- unconfirmed certificates --------------------------------------------------------------------------------


def _ir(domain, device, secret, key=None, implicit=False):
    """An ir with the shared secret (core client messages); (header, response)."""
    body = cert_req_body("ir", key or new_private_key(), subject_name(device["name"]))
    header, der = mac_protected(body, device["id"], secret, header_for(implicit_confirm=implicit))
    return header, post_cmp(domain.url("initialization"), der)


def _cert_conf(domain, device, secret, header, response, accepted=True):
    certificate = cert_responses(response)[0][0].certificate
    confirm = Header(
        sender=header.sender, transaction_id=header.transaction_id, recip_nonce=response.sender_nonce
    )  # a fresh senderNonce each time
    body = cert_conf_body(cert_hash(certificate), accepted=accepted, text=None if accepted else "no")
    der = encode_message(confirm, body, PasswordBasedMac(secret, kid=str(device["id"]).encode()))
    return post_cmp(domain.url("initialization"), der)


def test_one_unconfirmed_certificate_per_requester_and_purpose(server, domain):
    """Observed: one shared secret minted 20 certificates without certConf, valid and off the CRL. Now the second
    ir revokes the first unconfirmed certificate; its certConf then gets certRevoked."""
    device, secret = server.create_device(domain.name)
    first_header, first = _ir(domain, device, secret)
    second_header, second = _ir(domain, device, secret)
    rows = certificates_of(server, device["id"])
    assert [(row[2], row[3]) for row in rows] == [("revoked", "superseded"), ("awaiting_confirmation", None)]
    fail_info, text = error_of(_cert_conf(domain, device, secret, first_header, first))
    assert fail_info == ("certRevoked",) and "newer request" in text, text
    assert _cert_conf(domain, device, secret, second_header, second).body_type == "pkiconf"
    issued = cert_responses(second)[0][0].certificate
    assert server.device(device["id"])["credential"]["serial_number"] == serial_hex(issued)
    revoked = fetch_crl(issued).get_revoked_certificate_by_serial_number(
        cert_responses(first)[0][0].certificate.serial_number
    )
    assert revoked is not None


def test_an_unconfirmed_certificate_is_revoked_when_its_window_passes(server, domain):
    device, secret = server.create_device(domain.name)
    header, response = _ir(domain, device, secret)
    certificate = cert_responses(response)[0][0].certificate
    execute(
        server,
        "UPDATE issued_certificate SET created_at = ? WHERE serial_number = ?",
        (
            (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=11)).strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            serial_hex(certificate),
        ),
    )
    # The operator's listing looks for ended windows at once (CRL requests at most every 30 s per worker).
    status, listed = server.api("GET", "/devices/%d/certificates" % device["id"])
    assert status == 200 and listed[0]["status"] == "revoked", listed
    entry = fetch_crl(certificate).get_revoked_certificate_by_serial_number(certificate.serial_number)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.cessation_of_operation
    )
    fail_info, text = error_of(_cert_conf(domain, device, secret, header, response))
    assert fail_info == ("certRevoked",) and "confirmation window" in text, text
    assert server.device(device["id"])["status"] == "pending"


def test_a_repeated_cert_conf_gets_its_pkiconf_again(server, domain):
    """The pkiConf may be lost: the same certConf (a fresh senderNonce) is answered again and changes nothing; a
    contradicting one (rejection after acceptance) is certConfirmed."""
    device, secret = server.create_device(domain.name)
    header, response = _ir(domain, device, secret)
    assert _cert_conf(domain, device, secret, header, response).body_type == "pkiconf"
    before = snapshot(server, device["id"])
    again = _cert_conf(domain, device, secret, header, response)
    assert again.body_type == "pkiconf" and again.protection is not None
    assert snapshot(server, device["id"]) == before
    fail_info, _text = error_of(_cert_conf(domain, device, secret, header, response, accepted=False))
    assert fail_info == ("certConfirmed",)
    assert snapshot(server, device["id"]) == before


# --- the secret and the renewed credential stay usable for a retry ------------------------------------------------


def test_the_secret_onboards_again_until_the_credential_is_used(server, domain, workdir):
    device, secret = server.create_device(domain.name)
    first = enroll_with_secret(server, domain, "first", device=device, secret=secret)
    second = enroll_with_secret(server, domain, "second", device=device, secret=secret)
    assert certificate_status(server, first.certificate) == ("revoked", "superseded")
    returncode, output = _cr(domain, second, workdir, "/CN=%s" % device["name"])  # the device uses it
    assert_cmp_ok(returncode, output)
    _header, response = _ir(domain, device, secret, implicit=True)
    assert error_of(response)[0] == ("badMessageCheck",)
    assert certificate_status(server, second.certificate) == ("active", None)


def test_a_genm_signed_with_the_new_credential_counts_as_its_use(server, domain, workdir):
    """Any request signed with the new credential shows the device holds it (trustpoint-agent sends a genm after it
    installs one): the secret stops onboarding, and what the credential renewed is revoked."""

    def genm(signer):
        return run_cmp("-cmd", "genm", "-server", domain.url("getcacerts"), *signer.signer_args(domain),
                       "-infotype", "caCerts", cwd=workdir)  # fmt: skip

    device, secret = server.create_device(domain.name)
    onboarded = enroll_with_secret(server, domain, "first", device=device, secret=secret)
    assert_cmp_ok(*genm(onboarded))
    _header, response = _ir(domain, device, secret, implicit=True)
    assert error_of(response)[0] == ("badMessageCheck",)

    assert_cmp_ok(*run_cmp("-cmd", "kur", "-server", domain.url("keyupdate"), *onboarded.signer_args(domain),
                           "-newkey", new_key_file(workdir / "renewed.key"), "-certout", workdir / "renewed.pem",
                           "-implicit_confirm", cwd=workdir))  # fmt: skip
    renewed = type(onboarded)(onboarded.device, workdir / "renewed.pem", workdir / "renewed.key", onboarded.chain_path)
    assert certificate_status(server, onboarded.certificate) == ("active", None)
    assert_cmp_ok(*genm(renewed))
    assert certificate_status(server, onboarded.certificate) == ("revoked", "superseded")


def test_a_renewed_credential_renews_until_its_successor_is_used(server, domain, onboarded, workdir):
    """The kup may be lost: the old credential renews again (the unused renewal is revoked), but does nothing
    else; once the successor is used, or the grace period ends, it is revoked."""

    def kur(signer, stem):
        return run_cmp("-cmd", "kur", "-server", domain.url("keyupdate"), *signer.signer_args(domain), "-newkey",
                       new_key_file(workdir / ("%s.key" % stem)), "-certout", workdir / ("%s.pem" % stem),
                       "-implicit_confirm", cwd=workdir)  # fmt: skip

    assert_cmp_ok(*kur(onboarded, "lost"))
    lost = load_pem(workdir / "lost.pem")[0]
    assert_cmp_ok(*kur(onboarded, "renewed"))
    renewed = type(onboarded)(onboarded.device, workdir / "renewed.pem", workdir / "renewed.key", onboarded.chain_path)
    assert certificate_status(server, lost) == ("revoked", "superseded")
    assert certificate_status(server, onboarded.certificate) == ("active", None)
    returncode, output = _cr(domain, onboarded, workdir, "/CN=%s" % _name(onboarded), stem="old-cr")
    assert_rejected(returncode, output, "notAuthorized")
    assert "may only renew" in output
    assert_cmp_ok(*_cr(domain, renewed, workdir, "/CN=%s" % _name(onboarded), stem="new-cr"))
    assert certificate_status(server, onboarded.certificate) == ("revoked", "superseded")
    assert_rejected(*kur(onboarded, "too-late"), "certRevoked")

    # Never used: the grace period ends it.
    assert_cmp_ok(*kur(renewed, "third"))
    end_renewal_grace(server, renewed.certificate)
    assert_rejected(*kur(renewed, "after-grace"), "certRevoked")


# --- listing, revocation, keyCompromise -------------------------------------------------------------------------


def test_the_api_lists_and_revokes_and_key_compromise_takes_what_the_key_obtained(server, domain, onboarded, workdir):
    own = "/CN=%s" % _name(onboarded)
    first_app = enroll_application(domain, onboarded, "tls_client", "x", own)
    assert_cmp_ok(*run_cmp("-cmd", "kur", "-server", domain.url("keyupdate"), *onboarded.signer_args(domain),
                           "-newkey", new_key_file(workdir / "b.key"), "-certout", workdir / "b.pem",
                           "-implicit_confirm", cwd=workdir))  # fmt: skip
    renewed = type(onboarded)(onboarded.device, workdir / "b.pem", workdir / "b.key", onboarded.chain_path)
    second_app = enroll_application(domain, renewed, "tls_client", "y", own)
    serials = [serial_hex(c.certificate) for c in (onboarded, first_app, renewed, second_app)]

    status, listed = server.api("GET", "/devices/%d/certificates" % onboarded.id)
    assert status == 200 and [c["serial_number"] for c in listed] == serials[::-1], listed  # newest first
    by_serial = {c["serial_number"]: c for c in listed}
    assert by_serial[serials[1]]["issued_with"] == serials[0]
    assert by_serial[serials[2]]["replaces"] == serials[0] and by_serial[serials[2]]["issued_with"] == serials[0]
    assert by_serial[serials[3]]["issued_with"] == serials[2]
    assert by_serial[serials[0]]["status"] == "revoked"  # superseded: its successor was used
    assert "BEGIN CERTIFICATE" in by_serial[serials[3]]["certificate"]
    assert server.api("GET", "/devices/%d/certificates?status=active" % onboarded.id)[1][0]["serial_number"] in serials
    padded = serials[1].upper().zfill(len(serials[1]) + len(serials[1]) % 2)
    colons = ":".join(padded[i : i + 2] for i in range(0, len(padded), 2))  # as openssl prints serial numbers
    assert server.api("GET", "/devices/%d/certificates/%s" % (onboarded.id, colons))[1]["serial_number"] == serials[1]
    assert server.api("GET", "/devices/%d/certificates/abc123" % onboarded.id)[0] == 404
    assert (
        server.api(
            "POST", "/devices/%d/certificates/%s/revoke" % (onboarded.id, serials[1]), {"reason": "certificateHold"}
        )[0]
        == 400
    )

    path = "/devices/%d/certificates/%s/revoke" % (onboarded.id, serials[1])
    status, body = server.api("POST", path, {"reason": "cessationOfOperation"})
    assert status == 200 and body["also_revoked"] == [] and body["status"] == "revoked", body
    assert server.api("POST", path, {"reason": "cessationOfOperation"})[0] == 409

    # The first key turns out compromised: it revoked as superseded is now keyCompromise, and what it obtained
    # (the renewal among it) goes too, transitively.
    status, body = server.api(
        "POST", "/devices/%d/certificates/%s/revoke" % (onboarded.id, serials[0]), {"reason": "keyCompromise"}
    )
    assert status == 200 and sorted([body["serial_number"], *body["also_revoked"]]) == sorted(serials), body
    assert server.device(onboarded.id)["status"] == "pending"
    crl = fetch_crl(second_app.certificate)
    for serial in serials:
        entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise


def test_rr_for_key_compromise_takes_what_the_credential_obtained(server, domain, onboarded, workdir):
    app = enroll_application(domain, onboarded, "tls_client", "app", "/CN=%s" % _name(onboarded))
    assert_cmp_ok(*run_cmp("-cmd", "rr", "-server", domain.url("revocation"), *onboarded.signer_args(domain),
                           "-oldcert", onboarded.cert_path, "-revreason", "1", cwd=workdir))  # fmt: skip
    assert certificate_status(server, app.certificate) == ("revoked", "keyCompromise")


# --- limits -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    instance = Server(
        tmp_path_factory.mktemp("limited"),
        free_port(),
        extra_args=["--max-certificates-per-day", "3", "--serverkeygen-key-types", "ecdsa-p256", "--workers", "1"],
    )
    yield instance
    instance.stop()


def test_certificates_per_device_per_day(limited, tmp_path):
    domain = PkiDomain(limited, tmp_path, allowed_names=[])
    onboarded = enroll_with_secret(limited, domain)
    own = "/CN=%s" % _name(onboarded)
    for stem in ("a", "b"):
        assert_cmp_ok(*_cr(domain, onboarded, tmp_path, own, stem=stem))
    returncode, output = _cr(domain, onboarded, tmp_path, own, stem="c")
    assert_rejected(returncode, output, "notAuthorized")
    assert "its limit" in output and "--max-certificates-per-day" in output
    assert len(certificates_of(limited, onboarded.id)) == 3

    est = onboard_with_password(limited, tmp_path, domain.name, stem="est")
    label = "%s/tls_client" % domain.name
    for stem in ("e1", "e2"):
        request = Csr(tmp_path, stem, "/CN=%s" % est.name)
        answer = curl(limited, est_url(limited, "simpleenroll", label), tmp_path, data=request.b64, cert=est.cert_path,
                      key=est.key_path)  # fmt: skip
        assert answer.status == 200, answer
    request = Csr(tmp_path, "e3", "/CN=%s" % est.name)
    answer = curl(limited, est_url(limited, "serverkeygen", label), tmp_path, data=request.b64, cert=est.cert_path,
                  key=est.key_path)  # fmt: skip
    assert answer.status == 429 and int(answer.headers["retry-after"]) > 80000, answer


def test_server_side_key_types(server, limited, tmp_path):
    """serverkeygen generates only the configured key types (RSA-4096 costs ~0.6 s each: not by default)."""
    for target, kind, allowed in ((server, "rsa4096", False), (limited, "rsa", False), (limited, "ec", True)):
        domain = PkiDomain(target, tmp_path, allowed_names=[])
        device, password = password_device(target, domain.name)
        csr = Csr(tmp_path, unique("kg"), "/CN=%s" % device["name"], key_kind="rsa" if kind.startswith("rsa") else "ec")
        if kind == "rsa4096":
            key = tmp_path / "rsa4096.key"
            openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096", "-out", str(key))
            openssl(
                "req",
                "-new",
                "-key",
                str(key),
                "-subj",
                "/CN=%s" % device["name"],
                "-outform",
                "DER",
                "-out",
                str(csr.der),
            )
            openssl("base64", "-in", str(csr.der), "-out", str(csr.b64))
        answer = curl(target, est_url(target, "serverkeygen", domain.name), tmp_path, data=csr.b64,
                      user="%s:%s" % (device["name"], password))  # fmt: skip
        if allowed:
            assert answer.status == 200, answer
        else:
            assert answer.status == 400 and "--serverkeygen-key-types" in answer.text, answer
            assert target.device(device["id"])["status"] == "pending"


# --- IDevIDs belong to their DevID registration -----------------------------------------------------------------


def _manufacturer(server, domain, pattern="SN-.*"):
    """A trusted manufacturer and its DevID registration in domain: (manufacturer, registration name)."""
    manufacturer = make_ca(unique("Vendor"))
    truststore = create_truststore(server, [manufacturer.certificate])
    return manufacturer, create_registration(server, domain.name, truststore, pattern, auto_create=False)


def _two_manufacturers(server, domain):
    """Two trusted manufacturers whose registrations in domain match the same serial numbers."""
    return (*_manufacturer(server, domain), *_manufacturer(server, domain))


def _ir_idevid(domain, idevid, workdir, stem):
    return run_cmp("-cmd", "ir", "-server", domain.url("initialization"), *idevid_args(idevid, workdir, domain, stem),
                   "-subject", "/CN=x", "-newkey", new_key_file(workdir / ("%s-new.key" % stem)),
                   "-certout", workdir / ("%s-new.pem" % stem), "-implicit_confirm", cwd=workdir)  # fmt: skip


def test_an_idevid_reaches_only_the_device_of_its_registration(server, domain, workdir):
    """Observed: a device registered under one DevID registration was onboarded by an IDevID of another trusted
    manufacturer whose pattern also matched its serial number."""
    serial = new_serial()
    vendor_a, registration_a, vendor_b, registration_b = _two_manufacturers(server, domain)
    fields = {"name": unique("dev"), "domain": domain.name, "onboarding_method": "cmp_idevid", "serial_number": serial}
    status, body = server.api("POST", "/devices", dict(fields, devid_registration=registration_a))
    assert status == 201 and body["device"]["devid_registration"] == registration_a, body
    device = body["device"]
    returncode, output = _ir_idevid(domain, make_end_entity(vendor_b, "sensor", serial), workdir, "b")
    assert_rejected(returncode, output, "notAuthorized")
    assert "belongs to DevID registration %s" % registration_a in output
    assert server.device(device["id"])["status"] == "pending"
    assert_cmp_ok(*_ir_idevid(domain, make_end_entity(vendor_a, "sensor", serial), workdir, "a"))
    assert server.device(device["id"])["status"] == "onboarded"
    assert server.api("DELETE", "/devid-registrations/" + registration_b)[0] == 204
    status, body = server.api("DELETE", "/devid-registrations/" + registration_a)
    assert status == 409 and device["name"] in body["error"], body


def test_an_unbound_device_admitted_by_two_registrations_waits_for_the_operator(server, domain, workdir):
    serial = new_serial()
    vendor_a, registration_a, vendor_b, _registration_b = _two_manufacturers(server, domain)
    fields = {"name": unique("dev"), "domain": domain.name, "onboarding_method": "cmp_idevid", "serial_number": serial}
    device = server.api("POST", "/devices", fields)[1]["device"]
    returncode, output = _ir_idevid(domain, make_end_entity(vendor_a, "sensor", serial), workdir, "a")
    assert_rejected(returncode, output, "notAuthorized")
    assert "several DevID registrations" in output
    status, body = server.api("PATCH", "/devices/%d" % device["id"], {"devid_registration": registration_a})
    assert status == 200 and body["devid_registration"] == registration_a, body
    assert_rejected(*_ir_idevid(domain, make_end_entity(vendor_b, "sensor", serial), workdir, "b"), "notAuthorized")
    assert_cmp_ok(*_ir_idevid(domain, make_end_entity(vendor_a, "sensor", serial), workdir, "a2"))


def test_a_device_is_bound_to_the_registration_that_admitted_it(server, domain, workdir):
    serial = new_serial()
    manufacturer, registration = _manufacturer(server, domain)
    fields = {"name": unique("dev"), "domain": domain.name, "onboarding_method": "cmp_idevid", "serial_number": serial}
    _status, body = server.api("POST", "/devices", fields)
    assert body["device"]["devid_registration"] is None
    assert_cmp_ok(*_ir_idevid(domain, make_end_entity(manufacturer, "sensor", serial), workdir, "a"))
    assert server.device(body["device"]["id"])["devid_registration"] == registration
    # A second manufacturer whose pattern matches too no longer reaches it.
    other, _registration = _manufacturer(server, domain)
    assert_rejected(*_ir_idevid(domain, make_end_entity(other, "sensor", serial), workdir, "b"), "notAuthorized")


def test_duplicate_serial_numbers_in_a_domain_are_refused(server, domain):
    serial = new_serial()
    fields = {"domain": domain.name, "onboarding_method": "cmp_idevid", "serial_number": serial}
    assert server.api("POST", "/devices", dict(fields, name=unique("dev")))[0] == 201
    status, body = server.api("POST", "/devices", dict(fields, name=unique("dev")))
    assert status == 409 and serial in body["error"], body
    other = server.create_domain()["name"]
    assert server.api("POST", "/devices", dict(fields, name=unique("dev"), domain=other))[0] == 201


def test_an_idevid_that_is_a_ca_certificate_is_refused(server, domain, workdir):
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, "SN-.*", auto_create=True)
    idevid = make_ca("sub-ca", issuer=manufacturer, serial_number=serial)
    returncode, output = _ir_idevid(domain, idevid, workdir, "ca")
    assert_rejected(returncode, output, "notAuthorized")
    assert "is a CA certificate" in output


# --- CRL distribution points -------------------------------------------------------------------------------------


def test_the_crl_distribution_point_ignores_the_host_header(server, domain):
    """Observed: an invalid Host put http://:PORT/crl/N into certificates. The CDP is the configured address."""
    device, secret = server.create_device(domain.name)
    body = cert_req_body("ir", new_private_key(), subject_name(device["name"]))
    _header, der = mac_protected(body, device["id"], secret, header_for(implicit_confirm=True))
    status, _headers, answer = http("POST", domain.url("initialization"), der,
                                    {"Content-Type": CMP, "Host": "evil.example:1"})  # fmt: skip
    assert status == 200
    certificate = cert_responses(CmpMessage.decode(answer))[0][0].certificate
    assert crl_url_of(certificate).startswith(server.cmp_url + "/crl/"), crl_url_of(certificate)


# --- the modules set the allow-lists ------------------------------------------------------------------------


def test_the_modules_set_allow_lists(server, workdir):
    """trustpoint.pki.domain and trustpoint.pki.device set allowed_names: check mode, a real run, then both again
    without a change (the server's normal form: DNS names in lower case)."""
    from test_modules import run_tasks

    connection = {"server_url": server.url, "ca_path": str(server.ca_file), "api_token": server.token}
    name = unique("d")
    domain_args = dict(connection, name=name, allowed_names=["dns:{device}.Plant.example"])
    device_args = dict(
        connection, name=unique("plc"), domain=name, allowed_names=["DNS:PLC7.plant.example", "IP:10.0.5.11"]
    )
    tasks = [
        {"name": "domain", "trustpoint.pki.domain": domain_args},
        {"name": "device", "trustpoint.pki.device": device_args},
    ]
    assert server.api("POST", "/domains", {"name": name})[0] == 201
    for check, changed in ((True, True), (False, True), (True, False), (False, False)):
        results = run_tasks(workdir, tasks, check=check, diff=True)
        assert [results[t]["changed"] for t in ("domain", "device")] == [changed, changed], results
    domain = server.api("GET", "/domains/" + name)[1]
    assert domain["allowed_names"] == ["DNS:{device}.plant.example"]
    device = server.api("GET", "/devices?name=" + tasks[1]["trustpoint.pki.device"]["name"])[1][0]
    assert device["allowed_names"] == ["DNS:plc7.plant.example", "IP:10.0.5.11"]
    failed = run_tasks(workdir, [dict(tasks[1], **{"trustpoint.pki.device": dict(tasks[1]["trustpoint.pki.device"],
                                                   allowed_names=["HOST:x"])})], expect_failure=True)  # fmt: skip
    assert "allowed_names entry" in failed["device"]["msg"]
