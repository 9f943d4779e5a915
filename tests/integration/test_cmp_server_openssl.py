# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Interop of the enrollment server's CMP endpoint with the real `openssl cmp` client.

Every test registers its own domain and device on the session's server process. Successful
enrollments are checked the way an operator would: `openssl verify` against the domain root taken
from the REST API, and the device record the API returns. Every rejection is checked three ways: the
PKIFailureInfo the client sees, the device record (still pending, no credential, no certificate
issued) and a correct enrollment that still succeeds afterwards.
"""

from __future__ import annotations

import datetime
import http.client as http_client
import re
import sqlite3
import urllib.parse

import pytest
from cmp_helpers import cmp_ir, end_retry_window, legacy_url, openssl_key_file
from conftest import http, openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import char, univ
from pyasn1_alt_modules import rfc4211, rfc5280
from trustpoint_core import keys
from trustpoint_core.cmp_message import (
    STATUS_REJECTION,
    CmpMessage,
    Header,
    cert_conf_body,
    cert_hash,
    cert_req_body,
    cert_responses,
    encode_message,
    error_content,
    random_nonce,
)
from trustpoint_core.cmp_protection import PasswordBasedMac, verify_mac

CMP_CONTENT_TYPE = "application/pkixcmp"
SUBJECT = "/CN=Trustpoint Domain Credential"
MAX_BODY = 128 * 1024


# --- helpers ---------------------------------------------------------------------------------------


def profile_url(server, domain):
    """The RFC 9483 path of the same operation."""
    return "%s/.well-known/cmp/p/%s/initialization" % (server.cmp_url, domain)


def assert_rejected(returncode, output, fail_info):
    """The client failed and printed the server's PKIFailureInfo."""
    assert returncode != 0, output
    assert re.search(r"PKIFailureInfo: [^;]*\b%s\b" % fail_info, output), output


def pem_certificates(text):
    return x509.load_pem_x509_certificates(text.encode() if isinstance(text, str) else text)


def domain_root(server, domain):
    """(issuing CA, root CA) of a domain, as the REST API publishes them in ca_chain."""
    status, body = server.api("GET", "/domains/%s" % domain)
    assert status == 200, body
    issuing, root = pem_certificates(body["ca_chain"])
    assert root.subject == root.issuer and issuing.issuer == root.subject
    return issuing, root


def write_pem(path, certificates):
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certificates))
    return path


def assert_onboarded(server, domain, device, workdir):
    """cert.pem verifies against chain.pem with the domain root as the only trust anchor, and the
    device record holds it as its active credential. Returns the certificate."""
    _issuing, root = domain_root(server, domain)
    root_pem = write_pem(workdir / "root.pem", [root])
    openssl(
        "verify",
        "-no-CApath",
        "-no-CAstore",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        str(root_pem),
        "-untrusted",
        str(workdir / "chain.pem"),
        str(workdir / "cert.pem"),
    )
    cert = x509.load_pem_x509_certificate((workdir / "cert.pem").read_bytes())
    record = server.device(device["id"])
    assert record["status"] == "onboarded", record
    credential = record["credential"]
    assert credential is not None, record
    assert credential["serial_number"] == format(cert.serial_number, "x")
    assert credential["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()
    assert credential["status"] == "active"
    return cert


def issued_certificates(server, device_id):
    """(serial, status, revocation reason) of every certificate the database holds for a device."""
    db = sqlite3.connect("file:%s?mode=ro" % (server.data_dir / "trustpoint.db"), uri=True)
    try:
        return db.execute(
            "SELECT serial_number, status, revocation_reason FROM issued_certificate WHERE device_id = ? ORDER BY id",
            (device_id,),
        ).fetchall()
    finally:
        db.close()


def assert_untouched(server, device, issued=0):
    """The device is still pending without a credential, and no certificate beyond `issued` exists."""
    record = server.device(device["id"])
    assert record["status"] == "pending", record
    assert record["credential"] is None, record
    assert len(issued_certificates(server, device["id"])) == issued


def assert_recovers(server, domain, device, secret, workdir):
    """A correct enrollment with the device's secret still succeeds."""
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir)
    assert returncode == 0, output
    return assert_onboarded(server, domain, device, workdir)


def post_cmp(url, der, content_type=CMP_CONTENT_TYPE):
    """POST bytes to a CMP URL; the answer must be a PKIMessage with HTTP 200 and the exact type."""
    status, headers, body = http("POST", url, der, {"Content-Type": content_type})
    assert status == 200, (status, body[:300])
    assert headers.get("Content-Type") == CMP_CONTENT_TYPE
    return CmpMessage.decode(body)


def error_of(message):
    """(fail_info names, text) of a CMP error message."""
    assert message.body_type == "error", message.body_type
    status, fail_info, text = error_content(message)
    assert status == STATUS_REJECTION
    return fail_info, text


def assert_protected_with(message, secret):
    """The response carries PBM protection made with the device's secret."""
    assert message.protection is not None
    verify_mac(message, secret.encode())


def capture_ir(url, ref, secret, workdir, *extra):
    """The DER of the ir `openssl cmp` would send, captured with -reqout and never sent (-rspin)."""
    (workdir / "no-response.der").write_bytes(b"not a response")
    key = openssl_key_file(workdir / "captured-key.pem")
    result = openssl(
        "cmp",
        "-cmd",
        "ir",
        "-server",
        url,
        "-ref",
        str(ref),
        "-secret",
        "pass:" + secret,
        "-subject",
        SUBJECT,
        "-newkey",
        str(key),
        "-certout",
        str(workdir / "captured-cert.pem"),
        "-reqout",
        str(workdir / "ir.der"),
        "-rspin",
        str(workdir / "no-response.der"),
        *extra,
        check=False,
        cwd=str(workdir),
    )
    assert result.returncode != 0
    return (workdir / "ir.der").read_bytes()


def core_subject():
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Trustpoint Domain Credential")])


def core_ir(device_id, secret, key=None, tamper=None):
    """(header, der) of an ir built with the core's builders and protected with the right secret.

    tamper(content, key) may change the body after its POP was computed.
    """
    key = key or ec.generate_private_key(ec.SECP256R1())
    header = Header(sender=core_subject(), transaction_id=random_nonce())
    body_type, content = cert_req_body("ir", key, core_subject())
    if tamper is not None:
        tamper(content, key)
    der = encode_message(header, (body_type, content), PasswordBasedMac(secret, kid=str(device_id).encode()))
    return header, der


def core_cert_conf(device_id, secret, ir_header, ip, cert_hash_value, accepted=True):
    """A certConf for the ip of ir_header's transaction, built with the core and protected."""
    header = Header(sender=core_subject(), transaction_id=ir_header.transaction_id, recip_nonce=ip.sender_nonce)
    if accepted:
        body = cert_conf_body(cert_hash_value)
    else:
        body = cert_conf_body(cert_hash_value, accepted=False, text="refused by the test", fail_info=("badCertId",))
    return encode_message(header, body, PasswordBasedMac(secret, kid=str(device_id).encode()))


@pytest.fixture
def enrollment(server):
    """A fresh domain and a pending device in it: (domain name, device, secret)."""
    domain = server.create_domain()["name"]
    device, secret = server.create_device(domain)
    return domain, device, secret


# --- successful enrollment -------------------------------------------------------------------------


def test_user_doc_recipe_onboards_the_device(server, enrollment, workdir):
    """The user docs' command, unchanged, enrolls over ir/ip/certConf/pkiConf; the certificate
    verifies against the returned chain with the domain root as the only anchor and becomes the
    device's credential."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir)
    assert returncode == 0, output
    for step in ("sending IR", "received IP", "sending CERTCONF", "received PKICONF"):
        assert step in output, output
    cert = assert_onboarded(server, domain, device, workdir)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device["name"]
    assert [row[1] for row in issued_certificates(server, device["id"])] == ["active"]


def test_chain_and_root_are_both_needed_to_verify(server, enrollment, workdir):
    """The verification above is meaningful: without the chain, or with the issuing CA as the only
    anchor, `openssl verify` refuses the certificate."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir)
    assert returncode == 0, output
    _issuing, root = domain_root(server, domain)
    root_pem = write_pem(workdir / "root.pem", [root])
    cert_pem = str(workdir / "cert.pem")
    no_chain = openssl("verify", "-no-CApath", "-no-CAstore", "-CAfile", str(root_pem), cert_pem, check=False)
    assert no_chain.returncode != 0
    chain_only = openssl(
        "verify", "-no-CApath", "-no-CAstore", "-CAfile", str(workdir / "chain.pem"), cert_pem, check=False
    )
    assert chain_only.returncode != 0


def test_implicit_confirm_is_granted(server, enrollment, workdir):
    """With -implicit_confirm the server grants it: no certConf is sent and the device is onboarded."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir, "-implicit_confirm")
    assert returncode == 0, output
    assert "received IP" in output
    assert "CERTCONF" not in output, output
    assert_onboarded(server, domain, device, workdir)


def test_ca_certs_and_extra_certs(server, enrollment, workdir):
    """-cacertsout receives the domain root (caPubs) and -extracertsout the issuing CA and the root."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(
        legacy_url(server, domain),
        device["id"],
        secret,
        workdir,
        "-cacertsout",
        str(workdir / "cacerts.pem"),
        "-extracertsout",
        str(workdir / "extracerts.pem"),
    )
    assert returncode == 0, output
    assert_onboarded(server, domain, device, workdir)
    issuing, root = domain_root(server, domain)
    assert pem_certificates((workdir / "cacerts.pem").read_bytes()) == [root]
    assert pem_certificates((workdir / "extracerts.pem").read_bytes()) == [issuing, root]
    assert pem_certificates((workdir / "chain.pem").read_bytes()) == [issuing]


def test_rfc9483_path(server, enrollment, workdir):
    """/.well-known/cmp/p/<domain>/initialization serves the same enrollment."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(profile_url(server, domain), device["id"], secret, workdir, "-implicit_confirm")
    assert returncode == 0, output
    assert_onboarded(server, domain, device, workdir)


@pytest.mark.parametrize(
    ("ca_key_type", "device_key_type"),
    [
        ("ecdsa-p256", "rsa-2048"),
        ("ecdsa-p384", "rsa-4096"),
        ("rsa-2048", "ecdsa-p256"),
        ("rsa-3072", "ecdsa-p384"),
        ("rsa-4096", "rsa-3072"),
    ],
)
def test_key_type_matrix(server, workdir, ca_key_type, device_key_type):
    """Each device key type is certified under EC and RSA CAs (every type appears on each side)."""
    domain = server.create_domain(key_type=ca_key_type)["name"]
    device, secret = server.create_device(domain)
    key = openssl_key_file(workdir / "key.pem", device_key_type)
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir, key=key)
    assert returncode == 0, output
    cert = assert_onboarded(server, domain, device, workdir)
    assert keys.key_type_of(cert.public_key()) == device_key_type
    issuing, _root = domain_root(server, domain)
    assert keys.key_type_of(issuing.public_key()) == ca_key_type


# --- the secret is one-time ------------------------------------------------------------------------


def test_a_used_secret_works_only_until_its_credential_is_used(server, enrollment, workdir):
    """After onboarding, the same secret still onboards again within its retry window (the answer may have been
    lost): the new credential supersedes the first. Once the window passes, or once the credential is used, an ir
    with it is rejected with badMessageCheck (unprotected: the secret is gone) and nothing changes."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir, "-implicit_confirm")
    assert returncode == 0, output
    first = server.device(device["id"])["credential"]
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir, "-implicit_confirm")
    assert returncode == 0, output
    second = assert_onboarded(server, domain, device, workdir)
    assert [row[1:] for row in issued_certificates(server, device["id"])] == [
        ("revoked", "superseded"),
        ("active", None),
    ]
    assert server.device(device["id"])["credential"]["serial_number"] != first["serial_number"]

    end_retry_window(server, device["id"])
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir, "-unprotected_errors")
    assert_rejected(returncode, output, "badMessageCheck")
    record = server.device(device["id"])
    assert record["status"] == "onboarded"
    assert record["credential"]["fingerprint_sha256"] == second.fingerprint(hashes.SHA256()).hex()
    assert len(issued_certificates(server, device["id"])) == 2


# --- rejections ------------------------------------------------------------------------------------


def test_wrong_secret(server, enrollment, workdir):
    """A wrong secret: badMessageCheck (unprotected, since nothing authenticates the request)."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret + "x", workdir, "-unprotected_errors")
    assert_rejected(returncode, output, "badMessageCheck")
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


def test_wrong_secret_error_is_unprotected(server, enrollment, workdir):
    """Without -unprotected_errors the client refuses the (necessarily unprotected) error."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], "not-the-secret", workdir)
    assert returncode != 0
    assert "missing protection" in output, output
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


@pytest.mark.parametrize("reference", ["987654321", "0", "not-a-number", "99999999999999999999999"])
def test_unknown_reference(server, enrollment, workdir, reference):
    """A reference that names no device (with a real device's secret): badMessageCheck."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(legacy_url(server, domain), reference, secret, workdir, "-unprotected_errors")
    assert_rejected(returncode, output, "badMessageCheck")
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


@pytest.mark.parametrize("url", [legacy_url, profile_url])
def test_device_of_another_domain(server, enrollment, workdir, url):
    """A device enrolling at another domain's endpoint: notAuthorized, protected with its secret."""
    domain, device, secret = enrollment
    other = server.create_domain()["name"]
    returncode, output = cmp_ir(url(server, other), device["id"], secret, workdir)
    assert_rejected(returncode, output, "notAuthorized")
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


@pytest.mark.parametrize("url", [legacy_url, profile_url])
def test_unknown_domain(server, enrollment, workdir, url):
    """A domain that does not exist: badRequest, protected with the device's secret."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(url(server, "no-such-domain-x1"), device["id"], secret, workdir)
    assert_rejected(returncode, output, "badRequest")
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


def test_malformed_der(server, enrollment, workdir):
    """Garbage and a truncated valid ir are answered with an unprotected badDataFormat error
    (HTTP 200, application/pkixcmp) and change nothing."""
    domain, device, secret = enrollment
    url = legacy_url(server, domain)
    ir = capture_ir(url, device["id"], secret, workdir)
    for body in (b"garbage, not DER", b"\x30\x82\xff\xff" + b"\x00" * 16, ir[:-7], ir[: len(ir) // 2], ir + b"\x00"):
        message = post_cmp(url, body)
        fail_info, text = error_of(message)
        assert fail_info == ("badDataFormat",), (body[:20], fail_info, text)
        assert message.protection is None
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


def test_empty_body(server, enrollment):
    """An empty POST is a badDataFormat error, not an HTTP error."""
    domain, device, _secret = enrollment
    fail_info, _text = error_of(post_cmp(legacy_url(server, domain), b""))
    assert fail_info == ("badDataFormat",)
    assert_untouched(server, device)


def _corrupt_pop_signature(content, _key):
    signature = content[0]["popo"]["signature"]
    octets = bytearray(signature["signature"].asOctets())
    octets[-1] ^= 0x01
    signature["signature"] = univ.BitString.fromOctetString(bytes(octets))


def _swap_template_key(content, _key):
    other = ec.generate_private_key(ec.SECP256R1())
    spki, _unused = decoder.decode(keys.public_key_der(other), asn1Spec=rfc5280.SubjectPublicKeyInfo())
    content[0]["certReq"]["certTemplate"]["publicKey"]["subjectPublicKey"] = spki["subjectPublicKey"]


@pytest.mark.parametrize("tamper", [_corrupt_pop_signature, _swap_template_key], ids=["corrupt-pop", "other-key"])
def test_bad_pop(server, enrollment, workdir, tamper):
    """An ir whose POP does not verify with the template key, protected with the right secret:
    badPOP, and the error is protected with the device's secret."""
    domain, device, secret = enrollment
    header, der = core_ir(device["id"], secret, tamper=tamper)
    message = post_cmp(legacy_url(server, domain), der)
    fail_info, text = error_of(message)
    assert "badPOP" in fail_info, (fail_info, text)
    assert message.transaction_id == header.transaction_id
    assert message.recip_nonce == header.sender_nonce
    assert_protected_with(message, secret)
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


def test_core_built_ir_is_accepted(server, enrollment):
    """Control for the bad-POP test: the same core-built ir without tampering gets an ip."""
    domain, device, secret = enrollment
    header, der = core_ir(device["id"], secret)
    message = post_cmp(legacy_url(server, domain), der)
    assert message.body_type == "ip"
    assert message.recip_nonce == header.sender_nonce
    assert_protected_with(message, secret)


@pytest.mark.parametrize("command", ["cr", "p10cr", "genm"])
def test_unsupported_body(server, enrollment, workdir, command):
    """cr, p10cr and genm sent to the initialization operation: badRequest, protected. (The legacy path takes
    every body, as one-URL clients expect: test_cmp_conformance.py.)"""
    domain, device, secret = enrollment
    key = openssl_key_file(workdir / "key.pem")
    args = ["cmp", "-cmd", command, "-server", profile_url(server, domain), "-ref", str(device["id"])]
    args += ["-secret", "pass:" + secret]
    if command == "cr":
        args += ["-subject", SUBJECT, "-newkey", str(key), "-certout", str(workdir / "cert.pem")]
    elif command == "p10cr":
        csr = workdir / "req.csr"
        openssl("req", "-new", "-key", str(key), "-subj", SUBJECT, "-out", str(csr))
        args += ["-csr", str(csr), "-certout", str(workdir / "cert.pem")]
    else:
        args += ["-infotype", "signKeyPairTypes"]
    result = openssl(*args, check=False, cwd=str(workdir))
    assert_rejected(result.returncode, result.stdout + result.stderr, "badRequest")
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


def test_replayed_ir_while_awaiting_confirmation(server, enrollment, workdir):
    """A captured ir POSTed twice: the first gets an ip; the replay is authentic (the secret is not
    spent before certConf) but its transactionID is known, so it is transactionIdInUse, protected, and
    no second certificate is issued."""
    domain, device, secret = enrollment
    url = legacy_url(server, domain)
    ir = capture_ir(url, device["id"], secret, workdir)
    first = post_cmp(url, ir)
    assert first.body_type == "ip"
    replay = post_cmp(url, ir)
    fail_info, text = error_of(replay)
    assert fail_info == ("transactionIdInUse",), (fail_info, text)
    assert_protected_with(replay, secret)
    assert_untouched(server, device, issued=1)
    assert [row[1] for row in issued_certificates(server, device["id"])] == ["awaiting_confirmation"]
    assert_recovers(server, domain, device, secret, workdir)


def test_replayed_messages_after_onboarding(server, enrollment, workdir):
    """The ir and certConf of a completed enrollment (captured with -reqout) replayed: within the secret's retry
    window the ir's transactionID is refused (transactionIdInUse) and the certConf gets its pkiConf again, nothing
    changing; after it the secret is spent, so both are badMessageCheck (unprotected)."""
    domain, device, secret = enrollment
    url = legacy_url(server, domain)
    returncode, output = cmp_ir(
        url, device["id"], secret, workdir, "-reqout", "%s,%s" % (workdir / "ir.der", workdir / "certconf.der")
    )
    assert returncode == 0, output
    assert_onboarded(server, domain, device, workdir)
    credential = server.device(device["id"])["credential"]
    fail_info, text = error_of(post_cmp(url, (workdir / "ir.der").read_bytes()))
    assert fail_info == ("transactionIdInUse",), text
    assert post_cmp(url, (workdir / "certconf.der").read_bytes()).body_type == "pkiconf"
    assert server.device(device["id"])["credential"] == credential

    end_retry_window(server, device["id"])
    for name in ("ir.der", "certconf.der"):
        message = post_cmp(url, (workdir / name).read_bytes())
        fail_info, text = error_of(message)
        assert fail_info == ("badMessageCheck",), (name, fail_info, text)
        assert message.protection is None
    assert server.device(device["id"])["credential"] == credential
    assert len(issued_certificates(server, device["id"])) == 1


@pytest.mark.parametrize(
    "content_type", ["application/octet-stream", "application/x-www-form-urlencoded", "text/plain"]
)
def test_wrong_content_type(server, enrollment, workdir, content_type):
    """A valid ir with another Content-Type is a badRequest CMP error and is not processed: the same
    bytes with the right type are then accepted."""
    domain, device, secret = enrollment
    url = legacy_url(server, domain)
    ir = capture_ir(url, device["id"], secret, workdir, "-implicit_confirm")
    fail_info, text = error_of(post_cmp(url, ir, content_type))
    assert fail_info == ("badRequest",), (fail_info, text)
    assert_untouched(server, device)
    accepted = post_cmp(url, ir)
    assert accepted.body_type == "ip"
    assert server.device(device["id"])["status"] == "onboarded"


def test_body_size_limit(server, enrollment, workdir):
    """A body of exactly 128 KiB is read (and is badDataFormat); one byte more is refused as too large
    with a CMP error, HTTP 200 and Content-Type application/pkixcmp."""
    domain, device, secret = enrollment
    url = legacy_url(server, domain)
    fail_info, _text = error_of(post_cmp(url, b"\x00" * MAX_BODY))
    assert fail_info == ("badDataFormat",)
    fail_info, text = error_of(post_cmp(url, b"\x00" * (MAX_BODY + 1)))
    assert fail_info == ("badRequest",), (fail_info, text)
    fail_info, _text = error_of(post_cmp(url, b"\x30" * (4 * MAX_BODY)))
    assert fail_info == ("badRequest",)
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


# --- certConf ----------------------------------------------------------------------------------------


def test_cert_conf_with_wrong_hash(server, enrollment, workdir):
    """A certConf whose certHash is not the issued certificate's: badCertId, protected; the device stays
    pending and the certificate is not activated."""
    domain, device, secret = enrollment
    url = legacy_url(server, domain)
    header, der = core_ir(device["id"], secret)
    ip = post_cmp(url, der)
    assert ip.body_type == "ip"
    certificate = cert_responses(ip)[0][0].certificate
    wrong = bytearray(cert_hash(certificate))
    wrong[0] ^= 0xFF
    message = post_cmp(url, core_cert_conf(device["id"], secret, header, ip, bytes(wrong)))
    fail_info, text = error_of(message)
    assert fail_info == ("badCertId",), (fail_info, text)
    assert_protected_with(message, secret)
    assert_untouched(server, device, issued=1)
    assert [row[1] for row in issued_certificates(server, device["id"])] == ["awaiting_confirmation"]
    assert_recovers(server, domain, device, secret, workdir)


def test_cert_conf_rejection_revokes(server, enrollment, workdir):
    """An explicit rejection in certConf is answered with pkiConf and revokes that certificate; the
    device stays pending and can enroll again."""
    domain, device, secret = enrollment
    url = legacy_url(server, domain)
    header, der = core_ir(device["id"], secret)
    ip = post_cmp(url, der)
    certificate = cert_responses(ip)[0][0].certificate
    reply = post_cmp(url, core_cert_conf(device["id"], secret, header, ip, cert_hash(certificate), accepted=False))
    assert reply.body_type == "pkiconf"
    assert_protected_with(reply, secret)
    assert_untouched(server, device, issued=1)
    [(serial, status, _reason)] = issued_certificates(server, device["id"])
    assert serial == format(certificate.serial_number, "x")
    assert status == "revoked"
    assert_recovers(server, domain, device, secret, workdir)


def test_cert_conf_accepted_with_core(server, enrollment):
    """Control for the certConf tests: the right certHash onboards the device with that certificate."""
    domain, device, secret = enrollment
    url = legacy_url(server, domain)
    header, der = core_ir(device["id"], secret)
    ip = post_cmp(url, der)
    certificate = cert_responses(ip)[0][0].certificate
    reply = post_cmp(url, core_cert_conf(device["id"], secret, header, ip, cert_hash(certificate)))
    assert reply.body_type == "pkiconf"
    record = server.device(device["id"])
    assert record["status"] == "onboarded"
    assert record["credential"]["serial_number"] == format(certificate.serial_number, "x")


# --- paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/cmp/nonsense",
        "/.well-known/cmp/p/{domain}/bogus",
        "/.well-known/cmp/p/{domain}/initialization/bogus",
        "/.well-known/cmp/initialization/{domain}/extra/",
        "/.well-known/cmpx/initialization/{domain}/",
    ],
)
def test_unknown_paths_are_404(server, enrollment, workdir, path):
    """Paths the server does not serve are HTTP 404, which the client reports as such."""
    domain, device, secret = enrollment
    url = server.cmp_url + path.format(domain=domain)
    status, _headers, _body = http("POST", url, b"\x30\x00", {"Content-Type": CMP_CONTENT_TYPE})
    assert status == 404
    returncode, output = cmp_ir(url, device["id"], secret, workdir)
    assert returncode != 0
    assert "code=404" in output, output
    assert_untouched(server, device)


# --- protection and header checks ---------------------------------------------------------------------


def test_unprotected_request(server, enrollment, workdir):
    """An ir without protection (-unprotected_requests) is badMessageCheck and changes nothing."""
    domain, device, secret = enrollment
    returncode, output = cmp_ir(
        legacy_url(server, domain), device["id"], secret, workdir, "-unprotected_requests", "-unprotected_errors"
    )
    assert_rejected(returncode, output, "badMessageCheck")
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


class _ExcessivePbm(PasswordBasedMac):
    """PBM parameters with an iteration count no server should derive a key for (MAC not computed)."""

    def protect(self, protected_part):
        return b"\x00" * 20


def test_pbm_iteration_count_is_bounded(server, enrollment, workdir):
    """An ir naming 10**9 PBM iterations is refused (badAlg) before the server derives a key."""
    domain, device, secret = enrollment
    pbm = _ExcessivePbm(secret, kid=str(device["id"]).encode())
    pbm.iterations = 10**9
    key = ec.generate_private_key(ec.SECP256R1())
    der = encode_message(
        Header(sender=core_subject(), transaction_id=random_nonce()), cert_req_body("ir", key, core_subject()), pbm
    )
    fail_info, text = error_of(post_cmp(legacy_url(server, domain), der))
    assert "badAlg" in fail_info, (fail_info, text)
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


def test_stale_message_time(server, enrollment, workdir):
    """An authentic ir whose messageTime is two hours old is badTime, protected."""
    domain, device, secret = enrollment
    stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
    key = ec.generate_private_key(ec.SECP256R1())
    header = Header(sender=core_subject(), transaction_id=random_nonce(), message_time=stale)
    der = encode_message(
        header, cert_req_body("ir", key, core_subject()), PasswordBasedMac(secret, kid=str(device["id"]).encode())
    )
    message = post_cmp(legacy_url(server, domain), der)
    fail_info, text = error_of(message)
    assert fail_info == ("badTime",), (fail_info, text)
    assert_protected_with(message, secret)
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)


# --- body size with chunked transfer encoding ----------------------------------------------------------


def _ir_of_exact_size(device_id, secret, size):
    """A valid, protected ir padded (regInfo utf8Pairs, which the server ignores) to exactly size bytes.

    RSA: its POP signature has a fixed size (an ECDSA one varies by a byte or two from one try to the next).
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    padding = 0
    for _index in range(10):

        def pad(content, _key, length=padding):
            if length:
                pair = rfc4211.AttributeTypeAndValue()
                pair["type"] = rfc4211.id_regInfo_utf8Pairs
                pair["value"] = encoder.encode(char.UTF8String("x" * length))
                content[0]["regInfo"].append(pair)

        _header, der = core_ir(device_id, secret, key=key, tamper=pad)
        if len(der) == size:
            return der
        padding += size - len(der)
    raise AssertionError("could not pad the ir to %d bytes" % size)


def _post_chunked(url, body):
    """POST with Transfer-Encoding: chunked (no Content-Length); returns (status, content type, body)."""
    parsed = urllib.parse.urlsplit(url)
    connection = http_client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        chunks = (body[i : i + 16384] for i in range(0, len(body), 16384))
        connection.request(
            "POST", parsed.path, body=chunks, headers={"Content-Type": CMP_CONTENT_TYPE}, encode_chunked=True
        )
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def test_chunked_body_within_limit_is_served(server, enrollment):
    """Control for the next test: a chunked ir of exactly 128 KiB is a valid request and gets an ip."""
    domain, device, secret = enrollment
    der = _ir_of_exact_size(device["id"], secret, MAX_BODY)
    status, content_type, body = _post_chunked(legacy_url(server, domain), der)
    assert (status, content_type) == (200, CMP_CONTENT_TYPE)
    assert CmpMessage.decode(body).body_type == "ip"


def test_chunked_body_over_limit_is_refused(server, enrollment, workdir):
    """A chunked body over 128 KiB is refused like one with a Content-Length: the server must not
    silently cut it at the limit and process what it read (here a valid ir followed by more bytes)."""
    domain, device, secret = enrollment
    der = _ir_of_exact_size(device["id"], secret, MAX_BODY)
    status, content_type, body = _post_chunked(legacy_url(server, domain), der + b"\x00" * 4096)
    assert (status, content_type) == (200, CMP_CONTENT_TYPE)
    message = CmpMessage.decode(body)
    assert message.body_type == "error", "a %d-byte request was processed: %s" % (len(der) + 4096, message.body_type)
    fail_info, _text = error_of(message)
    assert fail_info == ("badRequest",)
    assert_untouched(server, device)
    assert_recovers(server, domain, device, secret, workdir)
