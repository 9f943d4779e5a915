# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Requests the CMP server must refuse: the exact PKIFailureInfo, and nothing changed.

Each test takes a snapshot (the devices as the REST API shows them, their certificate records, and the
server-wide numbers of devices, certificates and CMP transactions from the database, read-only) right
before the bad request and compares it afterwards. Answers are PKIMessages with HTTP 200 and
Content-Type application/pkixcmp (`openssl cmp` accepts nothing else; post_cmp() checks it), protected
whenever the server can authenticate anything: signed by the domain's issuing CA for signed requests.

Requests that OpenSSL 3.0 cannot get wrong on purpose are built with the core's builders.
"""

from __future__ import annotations

import datetime
import re
import shutil
import sqlite3
import types

import cmp_helpers
import pytest
from cmp_helpers import (
    CMP_CONTENT_TYPE,
    DOMAIN_SUBJECT,
    OPERATIONS,
    UNREADABLE_CSRS,
    Credential,
    PkiDomain,
    admit_manufacturer,
    admitted_idevid,
    assert_cmp_ok,
    assert_rejected,
    certificate_status,
    certificates_of,
    cmp_url,
    enroll_application,
    enroll_with_secret,
    error_of,
    fetch_crl,
    header_for,
    idevid_args,
    mac_protected,
    make_ca,
    make_end_entity,
    malformed_csr,
    new_key_file,
    new_private_key,
    new_serial,
    post_cmp,
    query,
    register_device,
    register_directly,
    revoke_directly,
    run_cmp,
    signed,
    snapshot,
    subject_name,
    totals,
    unprotected,
    unreadable_csr,
    while_writes_wait,
    with_malformed_san,
    write_pem,
)
from conftest import openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4211
from trustpoint_core import signatures
from trustpoint_core.asn1 import der_children, der_sequence
from trustpoint_core.cmp_message import (
    ID_IT_CA_CERTS,
    CmpMessage,
    cert_conf_body,
    cert_hash,
    cert_req_body,
    cert_responses,
    genm_body,
    p10cr_body,
    rr_body,
)
from trustpoint_core.cmp_protection import PasswordBasedMac, SignatureProtection, verify_signature

# The shared fixtures (cmp_helpers.py): assigned, not imported, so that the tests' arguments of the same names
# are not taken for redefinitions of an import.
domain, onboarded = cmp_helpers.domain, cmp_helpers.onboarded
SHA512 = "2.16.840.1.101.3.4.2.3"


def assert_signed_by_domain(message, domain):
    """The error is signed by the domain's issuing CA (so `openssl cmp -trusted root` accepts it)."""
    assert message.protection is not None
    verify_signature(message, domain.issuing)


def rejected(url, der, fail_info):
    """POST der; the answer is an error with exactly fail_info. Returns the response."""
    message = post_cmp(url, der)
    found, text = error_of(message)
    assert found == (fail_info,), (found, text)
    return message


def new_csr(key=None, common_name="p10.example"):
    key = key or new_private_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def request_of(kind, enrolled):
    """(operation, body) of a well-formed request of kind for an Enrolled device."""
    key = new_private_key()
    if kind == "ir":
        return "initialization", cert_req_body("ir", key, subject_name())
    if kind == "cr":
        return "certification", cert_req_body("cr", key, subject_name("app.example"))
    if kind == "kur":
        return "keyupdate", cert_req_body("kur", key, old_certificate=enrolled.certificate)
    if kind == "p10cr":
        return "pkcs10", p10cr_body(new_csr(key))
    if kind == "rr":
        return "revocation", rr_body(enrolled.certificate)
    if kind == "genm":
        return "getcacerts", genm_body(ID_IT_CA_CERTS)
    raise ValueError(kind)


def explicit_cr(domain, enrolled):
    """A cr signed with enrolled's credential, no implicit confirm: (header, cp, issued certificate)."""
    header = header_for(sender=enrolled.certificate.subject)
    body = cert_req_body("cr", new_private_key(), subject_name("app.example"))
    _header, der = signed(body, enrolled.credential(), header)
    cp = post_cmp(domain.url("certification"), der)
    assert cp.body_type == "cp", cp.body_type == "error" and error_of(cp)
    return header, cp, cert_responses(cp)[0][0].certificate


def confirm_header(request_header, response, sender=None):
    return header_for(sender=sender, transaction_id=request_header.transaction_id, recip_nonce=response.sender_nonce)


# --- wrong protection ------------------------------------------------------------------------------------


class CorruptedMac(PasswordBasedMac):
    """PBM with the right secret whose MAC has one bit flipped."""

    def protect(self, protected_part):
        mac = bytearray(super().protect(protected_part))
        mac[-1] ^= 0x01
        return bytes(mac)


class CorruptedSignature(SignatureProtection):
    """A signature by the right key with one bit flipped."""

    def protect(self, protected_part):
        signature = bytearray(super().protect(protected_part))
        signature[-1] ^= 0x01
        return bytes(signature)


class OtherKeySignature(SignatureProtection):
    """Presents the certificate, signs with another key of the same type."""

    def protect(self, protected_part):
        other = SignatureProtection(new_private_key(), self.certificate)
        return other.protect(protected_part)


@pytest.mark.parametrize("kind", ["ir", "p10cr", "genm", "certConf"])
def test_bad_mac(server, domain, kind):
    """A PBM-protected request with the device's secret but a flipped MAC bit: badMessageCheck,
    unprotected (nothing authenticated the request), nothing changes; for a certConf the certificate
    stays unconfirmed."""
    device, secret = server.create_device(domain.name)
    kid = str(device["id"]).encode()
    if kind == "certConf":
        header, der = mac_protected(cert_req_body("ir", new_private_key(), subject_name()), device["id"], secret)
        ip = post_cmp(domain.url("initialization"), der)
        operation, body = "initialization", cert_conf_body(cert_hash(cert_responses(ip)[0][0].certificate))
        header = confirm_header(header, ip)
    else:
        operation, body = request_of(kind, None)
        header = None
    before = snapshot(server, device["id"])
    _header, der = mac_protected(body, device["id"], secret, header, CorruptedMac(secret, kid=kid))
    message = rejected(domain.url(operation), der, "badMessageCheck")
    assert message.protection is None
    assert snapshot(server, device["id"]) == before


@pytest.mark.parametrize("tamper", [CorruptedSignature, OtherKeySignature], ids=["corrupted", "other-key"])
@pytest.mark.parametrize("kind", ["cr", "kur", "p10cr", "rr", "genm", "certConf", "ir-idevid"])
def test_bad_signature(server, domain, onboarded, kind, tamper):
    """A request whose signature does not verify with the certificate it presents (a flipped bit, or
    made by another key): badMessageCheck, signed by the domain CA; nothing changes."""
    signer, header = onboarded.credential(), None
    if kind == "certConf":
        request_header, cp, certificate = explicit_cr(domain, onboarded)
        operation, body = "certification", cert_conf_body(cert_hash(certificate))
        header = confirm_header(request_header, cp, signer.certificate.subject)
    elif kind == "ir-idevid":
        idevid, _device = admitted_idevid(server, domain)
        signer = idevid
        operation, body = request_of("ir", onboarded)
    else:
        operation, body = request_of(kind, onboarded)
    before = snapshot(server, onboarded.id)
    protector = tamper(signer.key, signer.certificate, signer.chain)
    _header, der = signed(body, signer, header, protector)
    message = rejected(domain.url(operation), der, "badMessageCheck")
    assert_signed_by_domain(message, domain)
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("command", ["cr", "kur", "rr"])
def test_mac_where_a_signature_is_required(server, domain, onboarded, workdir, command):
    """An onboarded device that was handed a fresh shared secret (POST /devices/<id>/secret) sends cr,
    kur or rr protected with PBM (-ref/-secret): wrongIntegrity, these need the device's credential as
    signer; its credential and certificates are unchanged."""
    status, body = server.api("POST", "/devices/%d/secret" % onboarded.id)
    assert status == 200, body
    key = new_key_file(workdir / "new.key")
    args = ["-cmd", command, "-ref", onboarded.id, "-secret", "pass:" + body["shared_secret"]]
    if command == "cr":
        args += ["-server", domain.url("certification"), "-subject", "/CN=app.example", "-newkey", key]
        args += ["-certout", workdir / "out.pem"]
    elif command == "kur":
        args += ["-server", domain.url("keyupdate"), "-oldcert", onboarded.cert_path, "-newkey", key]
        args += ["-certout", workdir / "out.pem"]
    else:
        args += ["-server", domain.url("revocation"), "-oldcert", onboarded.cert_path, "-revreason", "1"]
    before = snapshot(server, onboarded.id)
    assert_rejected(*run_cmp(*args, cwd=workdir), "wrongIntegrity")
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("kind", ["cr", "kur", "p10cr", "rr", "certConf"])
def test_unprotected_request(server, domain, onboarded, kind):
    """An unprotected cr, kur, p10cr, rr or certConf (with the device's name as sender):
    badMessageCheck, signed by the domain CA; nothing changes."""
    header = header_for(sender=onboarded.certificate.subject)
    if kind == "certConf":
        request_header, cp, certificate = explicit_cr(domain, onboarded)
        operation, body = "certification", cert_conf_body(cert_hash(certificate))
        header = confirm_header(request_header, cp, onboarded.certificate.subject)
    else:
        operation, body = request_of(kind, onboarded)
    before = snapshot(server, onboarded.id)
    _header, der = unprotected(body, header)
    assert_signed_by_domain(rejected(domain.url(operation), der, "badMessageCheck"), domain)
    assert snapshot(server, onboarded.id) == before


# --- wrong signer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("forgery", ["self-signed", "claims-domain-issuer"])
def test_signer_not_issued_by_the_server(server, domain, onboarded, workdir, forgery):
    """A cr signed with a certificate the server never issued and that is no IDevID (no serialNumber,
    no SAN URI): self-signed, or naming the domain's issuing CA as issuer and the device as subject
    without its signature. notAuthorized; no device, certificate or transaction appears."""
    if forgery == "self-signed":
        fake_ca = make_ca("intruder")
        signer = make_end_entity(fake_ca, onboarded.device["name"])
    else:
        signer = make_end_entity(Credential(domain.issuing, new_private_key()), onboarded.device["name"])
    cert, key, _chain = signer.write(workdir, "forged")
    key_path = new_key_file(workdir / "app.key")
    before = snapshot(server, onboarded.id)
    returncode, output = run_cmp(
        "-cmd", "cr", "-server", domain.url("certification"), "-cert", cert, "-key", key,
        "-trusted", domain.root_path, "-subject", "/CN=app.example", "-newkey", key_path,
        "-certout", workdir / "out.pem", cwd=workdir,
    )  # fmt: skip
    assert_rejected(returncode, output, "notAuthorized")
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("command", ["cr", "p10cr"])
def test_application_certificate_as_signer(server, domain, onboarded, workdir, command):
    """cr and p10cr signed with an application certificate (tls_client) of the device instead of its
    domain credential: notAuthorized."""
    app = enroll_application(domain, onboarded, "tls_client", "app")
    key = new_key_file(workdir / "new.key")
    args = ["-cmd", command, *app.signer_args(domain), "-certout", workdir / "out.pem"]
    if command == "cr":
        args += ["-server", domain.url("certification"), "-subject", "/CN=other.example", "-newkey", key]
    else:
        openssl("req", "-new", "-key", str(key), "-subj", "/CN=other.example", "-out", str(workdir / "r.csr"))
        args += ["-server", domain.url("pkcs10"), "-csr", workdir / "r.csr"]
    before = snapshot(server, onboarded.id)
    assert_rejected(*run_cmp(*args, cwd=workdir), "notAuthorized")
    assert snapshot(server, onboarded.id) == before


def test_rr_with_another_devices_credential(server, domain, onboarded, workdir):
    """Device B's credential signs an rr for device A's credential (-oldcert A): badCertId (B holds no
    such certificate); A's credential stays active and off the CRL."""
    other = enroll_with_secret(server, domain, stem="other")
    before = snapshot(server, onboarded.id, other.id)
    returncode, output = run_cmp(
        "-cmd", "rr", "-server", domain.url("revocation"), *other.signer_args(domain),
        "-oldcert", onboarded.cert_path, "-revreason", "1", cwd=workdir,
    )  # fmt: skip
    assert_rejected(returncode, output, "badCertId")
    assert snapshot(server, onboarded.id, other.id) == before
    assert (
        fetch_crl(onboarded.certificate).get_revoked_certificate_by_serial_number(onboarded.certificate.serial_number)
        is None
    )


@pytest.mark.parametrize("named", ["other-device", "own-application-certificate"])
def test_kur_old_cert_id_names_another_certificate(server, domain, onboarded, workdir, named):
    """kur signed with the domain credential whose oldCertID (-oldcert) names another certificate
    (another device's credential, or the device's own application certificate): badCertId."""
    if named == "other-device":
        old = enroll_with_secret(server, domain, stem="other")
    else:
        old = enroll_application(domain, onboarded, "tls_client", "app")
    key = new_key_file(workdir / "new.key")
    before = snapshot(server, onboarded.id, old.id)
    returncode, output = run_cmp(
        "-cmd", "kur", "-server", domain.url("keyupdate"), *onboarded.signer_args(domain),
        "-oldcert", old.cert_path, "-newkey", key, "-certout", workdir / "out.pem", cwd=workdir,
    )  # fmt: skip
    assert_rejected(returncode, output, "badCertId")
    assert snapshot(server, onboarded.id, old.id) == before


@pytest.mark.parametrize("command", ["cr", "kur", "rr"])
def test_idevid_after_onboarding(server, domain, workdir, command):
    """An admitted IDevID onboards with ir only: cr, kur and rr signed with it are notAuthorized even
    after the device is onboarded."""
    idevid, device = admitted_idevid(server, domain)
    signer = idevid_args(idevid, workdir, domain)
    credential_key = new_key_file(workdir / "cred.key")
    returncode, output = run_cmp(
        "-cmd", "ir", "-server", domain.url("initialization"), *signer, "-subject", DOMAIN_SUBJECT,
        "-newkey", credential_key, "-certout", workdir / "cred.pem", "-implicit_confirm", cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    key = new_key_file(workdir / "new.key")
    args = ["-cmd", command, *signer]
    if command == "cr":
        args += ["-server", domain.url("certification"), "-subject", "/CN=x", "-newkey", key]
        args += ["-certout", workdir / "out.pem"]
    elif command == "kur":
        args += ["-server", domain.url("keyupdate"), "-newkey", key, "-certout", workdir / "out.pem"]
    else:
        args += ["-server", domain.url("revocation"), "-oldcert", workdir / "cred.pem"]
    before = snapshot(server, device["id"])
    assert_rejected(*run_cmp(*args, cwd=workdir), "notAuthorized")
    assert snapshot(server, device["id"]) == before


def test_domain_credential_cannot_send_ir(server, domain, onboarded, workdir):
    """ir signed with the device's domain credential (a certificate the server issued): notAuthorized,
    an onboarded device updates its credential with kur."""
    key = new_key_file(workdir / "new.key")
    before = snapshot(server, onboarded.id)
    returncode, output = run_cmp(
        "-cmd", "ir", "-server", domain.url("initialization"), *onboarded.signer_args(domain),
        "-subject", DOMAIN_SUBJECT, "-newkey", key, "-certout", workdir / "out.pem", cwd=workdir,
    )  # fmt: skip
    assert_rejected(returncode, output, "notAuthorized")
    assert snapshot(server, onboarded.id) == before


def test_credential_at_another_domains_url(server, domain, onboarded, workdir):
    """A cr signed with a valid domain credential, sent to another domain's URL: notAuthorized (an
    error that domain's CA signs)."""
    other = PkiDomain(server, workdir)
    key = new_key_file(workdir / "new.key")
    before = snapshot(server, onboarded.id)
    returncode, output = run_cmp(
        "-cmd", "cr", "-server", other.url("certification"), *onboarded.signer_args(other),
        "-subject", "/CN=app.example", "-newkey", key, "-certout", workdir / "out.pem", cwd=workdir,
    )  # fmt: skip
    assert_rejected(returncode, output, "notAuthorized")
    assert snapshot(server, onboarded.id) == before


def test_unconfirmed_certificate_as_signer(server, domain):
    """A domain credential whose ip was never confirmed (explicit confirmation pending) signs a cr:
    notAuthorized."""
    device, secret = server.create_device(domain.name)
    key = new_private_key()
    _header, der = mac_protected(cert_req_body("ir", key, subject_name()), device["id"], secret)
    certificate = cert_responses(post_cmp(domain.url("initialization"), der))[0][0].certificate
    assert certificate_status(server, certificate) == ("awaiting_confirmation", None)
    before = snapshot(server, device["id"])
    _header, der = signed(request_of("cr", None)[1], Credential(certificate, key, [domain.issuing]))
    assert_signed_by_domain(rejected(domain.url("certification"), der, "notAuthorized"), domain)
    assert snapshot(server, device["id"]) == before


# --- replays and certConf --------------------------------------------------------------------------------


def test_replayed_cr(server, domain, onboarded, workdir):
    """A cr captured from `openssl cmp -reqout` (implicit confirm, accepted) and POSTed again:
    transactionIdInUse, and no second certificate."""
    key = new_key_file(workdir / "app.key")
    returncode, output = run_cmp(
        "-cmd", "cr", "-server", domain.url("certification"), *onboarded.signer_args(domain),
        "-subject", "/CN=app.example", "-newkey", key, "-certout", workdir / "app.pem",
        "-implicit_confirm", "-reqout", workdir / "cr.der", cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    before = snapshot(server, onboarded.id)
    message = rejected(domain.url("certification"), (workdir / "cr.der").read_bytes(), "transactionIdInUse")
    assert_signed_by_domain(message, domain)
    assert snapshot(server, onboarded.id) == before


def test_transaction_id_of_another_device(server, domain, onboarded):
    """Device B sends a valid cr with the transactionID of device A's completed cr: transactionIdInUse."""
    first = header_for(sender=onboarded.certificate.subject, implicit_confirm=True)
    _header, der = signed(request_of("cr", onboarded)[1], onboarded.credential(), first)
    assert post_cmp(domain.url("certification"), der).body_type == "cp"
    other = enroll_with_secret(server, domain, stem="other")
    before = snapshot(server, onboarded.id, other.id)
    header = header_for(sender=other.certificate.subject, transaction_id=first.transaction_id)
    _header, der = signed(request_of("cr", other)[1], other.credential(), header)
    assert_signed_by_domain(rejected(domain.url("certification"), der, "transactionIdInUse"), domain)
    assert snapshot(server, onboarded.id, other.id) == before


@pytest.mark.parametrize("protection", ["shared-secret", "signature"])
def test_cert_conf_from_another_sender(server, domain, protection):
    """A certConf with the right transactionID, recipNonce and certHash but authenticated as another
    device of the same domain (its secret, or its credential): notAuthorized; the certificate stays
    unconfirmed, and the right sender can still confirm it."""
    if protection == "shared-secret":
        device, secret = server.create_device(domain.name)
        intruder, intruder_secret = server.create_device(domain.name)
        body = cert_req_body("ir", new_private_key(), subject_name())
        request_header, der = mac_protected(body, device["id"], secret)
        response = post_cmp(domain.url("initialization"), der)
        operation, ids = "initialization", (device["id"], intruder["id"])

        def confirm(body, header, as_intruder):
            if as_intruder:
                return mac_protected(body, intruder["id"], intruder_secret, header)[1]
            return mac_protected(body, device["id"], secret, header)[1]

    else:
        owner = enroll_with_secret(server, domain)
        intruder = enroll_with_secret(server, domain, stem="intruder")
        request_header, response, _certificate = explicit_cr(domain, owner)
        operation, ids = "certification", (owner.id, intruder.id)

        def confirm(body, header, as_intruder):
            credential = (intruder if as_intruder else owner).credential()
            header.sender = credential.certificate.subject
            return signed(body, credential, header)[1]

    certificate = cert_responses(response)[0][0].certificate
    body = cert_conf_body(cert_hash(certificate))
    before = snapshot(server, *ids)
    rejected(domain.url(operation), confirm(body, confirm_header(request_header, response), True), "notAuthorized")
    assert snapshot(server, *ids) == before
    assert certificate_status(server, certificate) == ("awaiting_confirmation", None)
    reply = post_cmp(domain.url(operation), confirm(body, confirm_header(request_header, response), False))
    assert reply.body_type == "pkiconf"
    assert certificate_status(server, certificate) == ("active", None)


def _wrong_nonce(header, certificate):
    header.recip_nonce = bytes(16)
    return cert_conf_body(cert_hash(certificate))


def _wrong_cert_req_id(header, certificate):
    return cert_conf_body(cert_hash(certificate), cert_req_id=1)


def _wrong_hash(header, certificate):
    return cert_conf_body(cert_hash(certificate, SHA512))


def _hash_alg_mismatch(header, certificate):
    """pvno 3 certConf naming hashAlg SHA-512 but carrying the SHA-256 certHash."""
    header.pvno = 3
    body_type, content = cert_conf_body(cert_hash(certificate))
    content[0]["hashAlg"]["algorithm"] = univ.ObjectIdentifier(SHA512)
    return body_type, content


@pytest.mark.parametrize(
    ("mistake", "fail_info"),
    [
        (_wrong_nonce, "badRecipientNonce"),
        (_wrong_cert_req_id, "badRequest"),
        (_wrong_hash, "badCertId"),
        (_hash_alg_mismatch, "badCertId"),
    ],
    ids=["recip-nonce", "cert-req-id", "cert-hash", "hash-alg-mismatch"],
)
def test_bad_cert_conf(server, domain, onboarded, mistake, fail_info):
    """A signed certConf by the right sender with a wrong recipNonce, certReqId or certHash (also a
    pvno 3 hashAlg that does not fit the hash): the exact failInfo, signed; the certificate stays
    unconfirmed."""
    request_header, cp, certificate = explicit_cr(domain, onboarded)
    header = confirm_header(request_header, cp, onboarded.certificate.subject)
    body = mistake(header, certificate)
    before = snapshot(server, onboarded.id)
    _header, der = signed(body, onboarded.credential(), header)
    assert_signed_by_domain(rejected(domain.url("certification"), der, fail_info), domain)
    assert snapshot(server, onboarded.id) == before
    assert certificate_status(server, certificate) == ("awaiting_confirmation", None)


def test_replayed_cert_conf(server, domain, onboarded, workdir):
    """The certConf of a completed cr (captured with -reqout) POSTed again: its pkiConf again (the first may have
    been lost), signed, and nothing changes."""
    key = new_key_file(workdir / "app.key")
    returncode, output = run_cmp(
        "-cmd", "cr", "-server", domain.url("certification"), *onboarded.signer_args(domain),
        "-subject", "/CN=app.example", "-newkey", key, "-certout", workdir / "app.pem",
        "-reqout", "%s,%s" % (workdir / "cr.der", workdir / "certconf.der"), cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    before = snapshot(server, onboarded.id)
    message = post_cmp(domain.url("certification"), (workdir / "certconf.der").read_bytes())
    assert message.body_type == "pkiconf"
    assert_signed_by_domain(message, domain)
    assert snapshot(server, onboarded.id) == before


def test_cert_conf_without_transaction(server, domain, onboarded):
    """A certConf for a transactionID the server never saw: badRequest."""
    header = header_for(sender=onboarded.certificate.subject, recip_nonce=bytes(16))
    before = snapshot(server, onboarded.id)
    _header, der = signed(cert_conf_body(cert_hash(onboarded.certificate)), onboarded.credential(), header)
    assert_signed_by_domain(rejected(domain.url("certification"), der, "badRequest"), domain)
    assert snapshot(server, onboarded.id) == before


def test_cert_conf_after_revocation(server, domain, onboarded):
    """A cr awaits its certConf; the domain credential revokes the new certificate (rr, keyCompromise);
    then the certConf arrives: certRevoked, and the certificate stays revoked (not active again)."""
    request_header, cp, certificate = explicit_cr(domain, onboarded)
    _header, der = signed(rr_body(certificate, "keyCompromise"), onboarded.credential())
    assert post_cmp(domain.url("revocation"), der).body_type == "rp"
    assert certificate_status(server, certificate) == ("revoked", "keyCompromise")
    before = snapshot(server, onboarded.id)
    header = confirm_header(request_header, cp, onboarded.certificate.subject)
    _header, der = signed(cert_conf_body(cert_hash(certificate)), onboarded.credential(), header)
    assert_signed_by_domain(rejected(domain.url("certification"), der, "certRevoked"), domain)
    assert snapshot(server, onboarded.id) == before
    assert certificate_status(server, certificate) == ("revoked", "keyCompromise")


# --- state changed by a concurrent request ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cr", "kur", "p10cr"])
def test_signer_revoked_while_the_request_waits(server, domain, onboarded, kind):
    """A cr, kur or p10cr signed with the domain credential passes its checks; before its writes, a
    concurrent rr revokes that credential (kur: a concurrent kur supersedes it): certRevoked, and no
    certificate is issued."""
    operation, body = request_of(kind, onboarded)
    header = header_for(sender=onboarded.certificate.subject, implicit_confirm=True)
    _header, der = signed(body, onboarded.credential(), header)
    reason = "superseded" if kind == "kur" else "keyCompromise"
    before = totals(server)
    answer = while_writes_wait(
        server, lambda: post_cmp(domain.url(operation), der), revoke_directly(onboarded.certificate, reason)
    )
    found, text = error_of(answer)
    assert found == ("certRevoked",), (found, text)
    assert "by a concurrent request" in text
    assert totals(server) == before
    assert [row[2:] for row in certificates_of(server, onboarded.id)] == [("revoked", reason)]


def test_shared_secret_spent_while_the_ir_waits(server, domain):
    """An ir with the shared secret passes its checks; before its writes, a concurrent ir with the same
    secret onboards the device and spends the secret: badMessageCheck, and no second certificate."""
    device, secret = server.create_device(domain.name)
    header = header_for(implicit_confirm=True)
    _header, der = mac_protected(cert_req_body("ir", new_private_key(), subject_name()), device["id"], secret, header)
    before = totals(server)
    spend = ("UPDATE device SET secret_encrypted = NULL WHERE id = ?", (device["id"],))
    answer = while_writes_wait(server, lambda: post_cmp(domain.url("initialization"), der), spend)
    assert error_of(answer)[0] == ("badMessageCheck",), error_of(answer)
    assert totals(server) == before
    assert certificates_of(server, device["id"]) == []


# --- IDevIDs ---------------------------------------------------------------------------------------------


def idevid_ir(domain, idevid, workdir, *extra, chain=True, url=None):
    """`openssl cmp -cmd ir` signed with idevid (and its chain unless chain=False) to the domain's
    initialization URL (or url); responses are verified with the domain root. (returncode, output)."""
    signer = idevid_args(idevid, workdir, domain)
    if not chain and "-extracerts" in signer:
        signer = signer[: signer.index("-extracerts")]
    key = new_key_file(workdir / "new.key")
    return run_cmp(
        "-cmd", "ir", "-server", url or domain.url("initialization"), *signer, "-subject", DOMAIN_SUBJECT,
        "-newkey", key, "-certout", workdir / "out.pem", *extra, cwd=workdir,
    )  # fmt: skip


def devices_with_serial_number(server, serial_number):
    return query(server, "SELECT id FROM device WHERE serial_number = ?", (serial_number,))


def test_unknown_idevid(server, domain, workdir):
    """An IDevID no DevID registration knows (its CA is in no truststore; the domain has no
    registration): notAuthorized, and no device is created."""
    serial = new_serial()
    idevid = make_end_entity(make_ca("Unknown Manufacturer"), "sensor", serial, ["urn:example:%s" % serial])
    before = totals(server)
    assert_rejected(*idevid_ir(domain, idevid, workdir), "notAuthorized")
    assert totals(server) == before
    assert devices_with_serial_number(server, serial) == []


@pytest.mark.parametrize(
    ("pattern", "serial_suffix", "uri"),
    [
        ("{serial}", "7", "urn:example:other"),  # the pattern matches a prefix only (fullmatch)
        ("SN-NOT-THIS-ONE", "", "urn:example:other"),
        ("urn:example:idevid", "", "urn:example:idevid:123"),  # a SAN URI prefix is no match either
    ],
    ids=["serial-prefix", "other-serial", "uri-prefix"],
)
def test_pattern_does_not_match(server, domain, workdir, pattern, serial_suffix, uri):
    """A registration whose pattern does not fully match the IDevID's serialNumber or any SAN URI,
    even with auto_create_devices: notAuthorized, no device."""
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, re.escape(pattern.format(serial=serial)))
    idevid = make_end_entity(manufacturer, "sensor", serial + serial_suffix, [uri])
    before = totals(server)
    assert_rejected(*idevid_ir(domain, idevid, workdir), "notAuthorized")
    assert totals(server) == before
    assert devices_with_serial_number(server, serial + serial_suffix) == []


@pytest.mark.parametrize("problem", ["other-ca", "expired", "missing-intermediate"])
def test_idevid_not_chaining_to_the_truststore(server, domain, workdir, problem):
    """The pattern matches but the IDevID does not validate against the registration's truststore (its
    CA is not in it; it expired; the intermediate CA is neither in the truststore nor sent):
    notAuthorized (issue 3: any IDevID a registration does not admit), no device."""
    serial = new_serial()
    manufacturer = make_ca("Manufacturer")
    trusted = [make_ca("Another Manufacturer").certificate] if problem == "other-ca" else None
    admit_manufacturer(server, domain, re.escape(serial), manufacturer=manufacturer, trusted=trusted)
    issuer = make_ca("Intermediate", issuer=manufacturer) if problem == "missing-intermediate" else manufacturer
    days = -1 if problem == "expired" else 365
    idevid = make_end_entity(issuer, "sensor", serial, ["urn:example:%s" % serial], days=days)
    before = totals(server)
    assert_rejected(*idevid_ir(domain, idevid, workdir, chain=False), "notAuthorized")
    assert totals(server) == before
    assert devices_with_serial_number(server, serial) == []


def test_idevid_device_registered_for_another_method(server, domain, workdir):
    """A device registered with onboarding_method cmp_shared_secret and the IDevID's serial number, under
    a registration that would create devices: notAuthorized; the device stays pending and its shared
    secret still onboards it."""
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, re.escape(serial), auto_create=True)
    device, secret = register_device(server, domain.name, "cmp_shared_secret", serial)
    idevid = make_end_entity(manufacturer, "sensor", serial, ["urn:example:%s" % serial])
    before = snapshot(server, device["id"])
    assert_rejected(*idevid_ir(domain, idevid, workdir), "notAuthorized")
    assert snapshot(server, device["id"]) == before
    enroll_with_secret(server, domain, device=device, secret=secret)
    assert server.device(device["id"])["status"] == "onboarded"


def test_idevid_with_two_serial_numbers(server, domain, workdir):
    """An IDevID of a manufacturer admitted for its own serial numbers whose subject also carries the
    serialNumber of another registered device (first): notAuthorized, and that device stays pending."""
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, re.escape(serial), auto_create=False)
    victim, _secret = register_device(server, domain.name, "cmp_idevid", new_serial())
    idevid = make_end_entity(manufacturer, "sensor", victim["serial_number"], more_serial_numbers=[serial])
    before = snapshot(server, victim["id"])
    returncode, output = idevid_ir(domain, idevid, workdir)
    assert_rejected(returncode, output, "notAuthorized")
    assert "the IDevID's subject has 2 serialNumber attributes" in output, output
    assert snapshot(server, victim["id"]) == before


def test_idevid_admitted_by_uri_does_not_reach_the_device_of_its_serial_number(server, domain, workdir):
    """A registration admits the IDevID by its SAN URI only; its serialNumber names another registered
    device, which the pattern does not match: that device is not the IDevID's (notAuthorized: no device,
    no auto-creation) and stays pending."""
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, re.escape("urn:example:%s" % serial), auto_create=False)
    victim, _secret = register_device(server, domain.name, "cmp_idevid", new_serial())
    idevid = make_end_entity(manufacturer, "sensor", victim["serial_number"], ["urn:example:%s" % serial])
    before = snapshot(server, victim["id"])
    assert_rejected(*idevid_ir(domain, idevid, workdir), "notAuthorized")
    assert snapshot(server, victim["id"]) == before


def test_idevid_without_device_and_without_auto_creation(server, domain, workdir):
    """A registration that admits the IDevID but creates no devices, and no device with its serial
    number: notAuthorized, no device."""
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, re.escape(serial), auto_create=False)
    idevid = make_end_entity(manufacturer, "sensor", serial, ["urn:example:%s" % serial])
    before = totals(server)
    assert_rejected(*idevid_ir(domain, idevid, workdir), "notAuthorized")
    assert totals(server) == before


def test_idevid_with_an_overlong_identifier(server, domain, workdir):
    """An IDevID whose SAN URI is longer than 256 characters, under a registration whose pattern would
    match it: notAuthorized that says why (no pattern runs on it), no device."""
    manufacturer = admit_manufacturer(server, domain, "urn:example:.*", auto_create=True)
    idevid = make_end_entity(manufacturer, "sensor", None, ["urn:example:" + "a" * 250])
    before = totals(server)
    returncode, output = idevid_ir(domain, idevid, workdir)
    assert_rejected(returncode, output, "notAuthorized")
    assert "longer than 256 characters" in output, output
    assert totals(server) == before


@pytest.mark.parametrize("clash", ["same-idevid", "same-name"])
def test_device_auto_created_while_the_ir_waits(server, domain, workdir, clash):
    """An IDevID ir that would create its device passes its checks; before its writes, a concurrent
    request registers a device for the same IDevID (or one with the name chosen for it): systemUnavail
    that says to send it again, and nothing is written. Sent again, it onboards that device (or one with
    another name)."""
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, re.escape(serial), auto_create=True)
    name = "sensor-%s" % serial.lower()
    idevid = make_end_entity(manufacturer, name, serial, ["urn:example:%s" % serial])
    racer = ("racer-" + serial.lower(), idevid.certificate.fingerprint(hashes.SHA256()).hex())
    if clash == "same-name":
        racer = (name, None)
    register = register_directly(domain.name, racer[0], "cmp_idevid", racer[1])
    before = totals(server)
    returncode, output = while_writes_wait(server, lambda: idevid_ir(domain, idevid, workdir), register)
    assert_rejected(returncode, output, "systemUnavail")
    assert "by a concurrent request; send the request again" in output, output
    devices, certificates, transactions = before
    assert totals(server) == (devices + 1, certificates, transactions)  # only the concurrent device
    assert_cmp_ok(*idevid_ir(domain, idevid, workdir))
    if clash == "same-idevid":
        onboarded = query(server, "SELECT name, status FROM device WHERE idevid_fingerprint = ?", (racer[1],))
        assert onboarded == [(racer[0], "onboarded")]
    else:
        [(created, status)] = query(server, "SELECT name, status FROM device WHERE serial_number = ?", (serial,))
        assert created.startswith(name + "-") and status == "onboarded", created


def test_idevid_ir_to_unknown_domain(server, domain, workdir):
    """A valid, admitted IDevID sends its ir to a domain that does not exist: badRequest (unprotected:
    no domain CA can sign it), and no device is created."""
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, re.escape(serial), auto_create=True)
    idevid = make_end_entity(manufacturer, "sensor", serial, ["urn:example:%s" % serial])
    url = cmp_url(server, "no-such-domain-" + serial.lower(), "initialization")
    before = totals(server)
    assert_rejected(*idevid_ir(domain, idevid, workdir, "-unprotected_errors", url=url), "badRequest")
    assert totals(server) == before
    assert devices_with_serial_number(server, serial) == []


def test_idevid_ir_to_another_domain(server, domain, workdir):
    """An IDevID admitted by a registration of domain A sends its ir to domain B's URL: notAuthorized
    (B has no registration for it), no device in either domain."""
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, re.escape(serial), auto_create=True)
    idevid = make_end_entity(manufacturer, "sensor", serial, ["urn:example:%s" % serial])
    other = PkiDomain(server, workdir)
    before = totals(server)
    assert_rejected(*idevid_ir(other, idevid, workdir), "notAuthorized")
    assert totals(server) == before
    assert devices_with_serial_number(server, serial) == []


# --- credential state ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["cr", "kur", "p10cr", "rr"])
def test_revoked_credential_as_signer(server, domain, onboarded, workdir, command):
    """The device revoked its domain credential (rr, cessationOfOperation: keyCompromise would take the
    application certificate with it); cr, kur, p10cr or rr signed with it afterwards: certRevoked."""
    app = enroll_application(domain, onboarded, "tls_client", "app")
    returncode, output = run_cmp(
        "-cmd", "rr", "-server", domain.url("revocation"), *onboarded.signer_args(domain),
        "-oldcert", onboarded.cert_path, "-revreason", "5", cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    key = new_key_file(workdir / "new.key")
    args = ["-cmd", command, *onboarded.signer_args(domain)]
    if command == "cr":
        args += ["-server", domain.url("certification"), "-subject", "/CN=x", "-newkey", key]
        args += ["-certout", workdir / "out.pem"]
    elif command == "kur":
        args += ["-server", domain.url("keyupdate"), "-newkey", key, "-certout", workdir / "out.pem"]
    elif command == "p10cr":
        openssl("req", "-new", "-key", str(key), "-subj", "/CN=x", "-out", str(workdir / "r.csr"))
        args += ["-server", domain.url("pkcs10"), "-csr", workdir / "r.csr", "-certout", workdir / "out.pem"]
    else:
        args += ["-server", domain.url("revocation"), "-oldcert", app.cert_path]
    before = snapshot(server, onboarded.id)
    assert_rejected(*run_cmp(*args, cwd=workdir), "certRevoked")
    assert snapshot(server, onboarded.id) == before
    assert certificate_status(server, app.certificate) == ("active", None)


def test_expired_credential(server, domain, onboarded, tmp_path, monkeypatch):
    """A domain credential past its notAfter signs a cr: signerNotTrusted.

    A credential cannot expire during a test (domains issue them for at least a day), so this runs the
    server's app in-process on a copy of the session server's data directory, with the clock of its
    credential check (identity.py) a day past the credential's notAfter; the control request with the
    real clock is accepted.
    """
    from trustpoint_server.app import create_app
    from trustpoint_server.services import identity
    from trustpoint_server.settings import Settings

    copy = tmp_path / "data"
    copy.mkdir()
    shutil.copy(server.data_dir / "vault.key", copy / "vault.key")
    source = sqlite3.connect("file:%s?mode=ro" % (server.data_dir / "trustpoint.db"), uri=True)
    target = sqlite3.connect(str(copy / "trustpoint.db"))
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    client = create_app(Settings(data_dir=str(copy))).test_client()
    path = "/.well-known/cmp/p/%s/certification" % domain.name

    def post(der):
        response = client.post(path, data=der, content_type=CMP_CONTENT_TYPE)
        assert response.status_code == 200
        assert response.content_type == CMP_CONTENT_TYPE
        return CmpMessage.decode(response.data)

    expired_at = onboarded.certificate.not_valid_after_utc + datetime.timedelta(days=1)

    class Later(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return expired_at.astimezone(tz) if tz is not None else expired_at.replace(tzinfo=None)

    monkeypatch.setattr(identity, "datetime", types.SimpleNamespace(datetime=Later, timezone=datetime.timezone))
    _header, der = signed(request_of("cr", onboarded)[1], onboarded.credential())
    found, text = error_of(post(der))
    assert found == ("signerNotTrusted",), (found, text)
    monkeypatch.undo()
    _header, der = signed(request_of("cr", onboarded)[1], onboarded.credential())
    assert post(der).body_type == "cp"


# --- malformed messages and header checks ----------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_malformed_der(server, domain, onboarded, operation):
    """Garbage, a truncated signed cr (cut at the end and in the middle), a cr with a trailing byte and
    an empty body at each operation path: badDataFormat, unprotected (nothing could be read), HTTP 200
    application/pkixcmp; nothing changes."""
    _header, valid = signed(request_of("cr", onboarded)[1], onboarded.credential())
    bodies = [b"not DER at all", b"\x30\x82\xff\xff" + bytes(16), valid[:-9], valid[: len(valid) // 2]]
    bodies += [valid + b"\x00", b""]
    before = snapshot(server, onboarded.id)
    for body in bodies:
        message = rejected(domain.url(operation), body, "badDataFormat")
        assert message.protection is None
    assert snapshot(server, onboarded.id) == before


class EndOfContentsInOwfParameters(PasswordBasedMac):
    """PBM whose owf AlgorithmIdentifier carries an end-of-contents tag as its parameters (an ANY pyasn1 refuses)."""

    def algorithm(self):
        oid, params = super().algorithm()
        salt, owf, *rest = der_children(params)
        return oid, der_sequence(salt, der_sequence(*der_children(owf), b"\x00\x00"), *rest)


def _ir_with_control(value):
    """An ir whose certReq carries a control (an unregistered type) with value (DER), its POP signed over it."""
    key = new_private_key()
    body_type, content = cert_req_body("ir", key, subject_name())
    message = content[0]
    control = rfc4211.AttributeTypeAndValue()
    control["type"] = univ.ObjectIdentifier("1.3.6.1.4.1.99999.1")
    control["value"] = univ.Any(value)
    message["certReq"]["controls"].append(control)
    _oid, _params, signature = signatures.sign(key, encoder.encode(message["certReq"]))
    message["popo"]["signature"]["signature"] = univ.BitString.fromOctetString(signature)
    return body_type, content


@pytest.mark.parametrize("where", ["pbm-owf-parameters", "control-value"])
def test_end_of_contents_tag_in_an_any(server, domain, where):
    """A correctly MAC-protected ir holding a value tagged [UNIVERSAL 0] where the ASN.1 says ANY (end-of-contents,
    or its constructed form), which pyasn1 refuses: badDataFormat, as before the fast DER reader (issue 16), which took
    both and enrolled the device; nothing changes."""
    device, secret = server.create_device(domain.name)
    if where == "pbm-owf-parameters":
        body = cert_req_body("ir", new_private_key(), subject_name())
        protector = EndOfContentsInOwfParameters(secret, kid=str(device["id"]).encode())
    else:
        body, protector = _ir_with_control(b"\x20\x00"), None
    before = snapshot(server, device["id"])
    _header, der = mac_protected(body, device["id"], secret, header_for(implicit_confirm=True), protector)
    message = rejected(domain.url("initialization"), der, "badDataFormat")
    assert message.protection is None
    assert snapshot(server, device["id"]) == before
    # the same ir without the odd value enrolls (the secret was not spent)
    _header, der = mac_protected(cert_req_body("ir", new_private_key(), subject_name()), device["id"], secret)
    assert post_cmp(domain.url("initialization"), der).body_type == "ip"


@pytest.mark.parametrize("problem", ["duplicate-san", "san-ip-3-bytes"])
def test_p10cr_with_malformed_extensions(server, domain, onboarded, problem):
    """A signed p10cr whose CSR carries the subjectAltName extension twice, or a SAN iPAddress of 3
    bytes: badCertTemplate that says so (not systemFailure); nothing changes."""
    before = snapshot(server, onboarded.id)
    _header, der = signed(p10cr_body(malformed_csr(problem)), onboarded.credential())
    message = rejected(domain.url("pkcs10", "tls_client"), der, "badCertTemplate")
    assert "the certificate request's extensions cannot be read" in error_of(message)[1]
    assert_signed_by_domain(message, domain)
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("problem", UNREADABLE_CSRS)
def test_p10cr_with_unreadable_csr(server, domain, onboarded, problem):
    """A signed p10cr whose CSR has a key of an unknown algorithm or curve (badAlg), or a commonName that is an
    INTEGER (badDataFormat): refused with a text that says so (not systemFailure); nothing changes."""
    before = snapshot(server, onboarded.id)
    _header, der = signed(p10cr_body(unreadable_csr(problem)), onboarded.credential())
    if problem == "integer-cn":
        message = rejected(domain.url("pkcs10", "tls_client"), der, "badDataFormat")
        assert "the certificate request cannot be read" in error_of(message)[1]
    else:
        message = rejected(domain.url("pkcs10", "tls_client"), der, "badAlg")
        assert "the PKCS#10 request's key" in error_of(message)[1]
    assert_signed_by_domain(message, domain)
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("kind", ["ir", "genm"])
@pytest.mark.parametrize("sender_kid", [True, False], ids=["with-sender-kid", "without-sender-kid"])
def test_signer_with_malformed_extensions(server, domain, kind, sender_kid):
    """An ir or genm signed by a certificate whose subjectAltName has a 3-byte iPAddress (found by
    senderKID or as the first of extraCerts): badDataFormat that says so; nothing changes."""
    key = new_private_key()
    certificate = with_malformed_san(key)
    # SignatureProtection reads the SKI itself, which the malformed extensions refuse: start from a sound
    # certificate of the same key, then present the malformed one.
    protector = SignatureProtection(key, make_end_entity(make_ca("Sound Issuer")).certificate)
    protector.certificate = certificate
    protector.kid = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest if sender_kid else None
    operation, body = request_of(kind, None)
    before = totals(server)
    _header, der = signed(body, Credential(certificate, key), header_for(sender=certificate.subject), protector)
    message = rejected(domain.url(operation), der, "badDataFormat")
    assert "the certificate's extensions cannot be read" in error_of(message)[1]
    assert totals(server) == before


def test_bad_pop(server, domain, onboarded):
    """A signed p10cr whose CSR signature does not verify (the POP): badPOP."""
    csr = new_csr()
    body_type, content = p10cr_body(csr)
    signature = bytearray(content["signature"].asOctets())
    signature[-1] ^= 0x01
    content["signature"] = univ.BitString.fromOctetString(bytes(signature))
    before = snapshot(server, onboarded.id)
    _header, der = signed((body_type, content), onboarded.credential())
    assert_signed_by_domain(rejected(domain.url("pkcs10"), der, "badPOP"), domain)
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize(
    ("kind", "operation"),
    [("cr", "keyupdate"), ("kur", "certification"), ("rr", "certification"), ("genm", "revocation"),
     ("p10cr", "initialization"), ("cr", "getcacerts")],
)  # fmt: skip
def test_body_at_the_wrong_operation(server, domain, onboarded, kind, operation):
    """A valid, signed request POSTed to an operation that does not take its body: badRequest."""
    before = snapshot(server, onboarded.id)
    _header, der = signed(request_of(kind, onboarded)[1], onboarded.credential())
    assert_signed_by_domain(rejected(domain.url(operation), der, "badRequest"), domain)
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("offset_hours", [-2, 2], ids=["stale", "future"])
def test_message_time_out_of_range(server, domain, onboarded, offset_hours):
    """A signed cr whose messageTime is two hours off: badTime."""
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=offset_hours)
    header = header_for(sender=onboarded.certificate.subject, message_time=when)
    before = snapshot(server, onboarded.id)
    _header, der = signed(request_of("cr", onboarded)[1], onboarded.credential(), header)
    assert_signed_by_domain(rejected(domain.url("certification"), der, "badTime"), domain)
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("kind", ["ir-shared-secret", "cr-signature"])
def test_pvno_1(server, domain, onboarded, kind):
    """An authentic request with pvno 1: unsupportedVersion, answered with pvno 2."""
    if kind == "ir-shared-secret":
        device, secret = server.create_device(domain.name)
        ids = (device["id"],)
        _header, der = mac_protected(request_of("ir", None)[1], device["id"], secret, header_for(pvno=1))
        url = domain.url("initialization")
    else:
        ids = (onboarded.id,)
        header = header_for(sender=onboarded.certificate.subject, pvno=1)
        _header, der = signed(request_of("cr", onboarded)[1], onboarded.credential(), header)
        url = domain.url("certification")
    before = snapshot(server, *ids)
    assert rejected(url, der, "unsupportedVersion").pvno == 2
    assert snapshot(server, *ids) == before


def test_rr_unknown_serial(server, domain, onboarded, workdir):
    """rr for a certificate naming the domain's issuing CA with a serial number the server never issued:
    badCertId."""
    unknown = make_end_entity(Credential(domain.issuing, new_private_key()), "unknown")
    write_pem(workdir / "unknown.pem", [unknown.certificate])
    before = snapshot(server, onboarded.id)
    returncode, output = run_cmp(
        "-cmd", "rr", "-server", domain.url("revocation"), *onboarded.signer_args(domain),
        "-oldcert", workdir / "unknown.pem", cwd=workdir,
    )  # fmt: skip
    assert_rejected(returncode, output, "badCertId")
    assert snapshot(server, onboarded.id) == before


def test_rr_already_revoked(server, domain, onboarded, workdir):
    """rr for an application certificate that is already revoked: certRevoked; its recorded reason
    stays the first one."""
    app = enroll_application(domain, onboarded, "tls_client", "app")
    args = ["-cmd", "rr", "-server", domain.url("revocation"), *onboarded.signer_args(domain)]
    args += ["-oldcert", app.cert_path]
    assert_cmp_ok(*run_cmp(*args, "-revreason", "1", cwd=workdir))
    before = snapshot(server, onboarded.id)
    assert_rejected(*run_cmp(*args, "-revreason", "5", cwd=workdir), "certRevoked")
    assert snapshot(server, onboarded.id) == before
    assert certificate_status(server, app.certificate) == ("revoked", "keyCompromise")


def test_rr_reason_remove_from_crl(server, domain, onboarded, workdir):
    """rr with reason removeFromCRL (-revreason 8), which RFC 5280 5.3.1 allows in delta CRLs only and
    which asks to end a hold, not to revoke: badRequest; the certificate stays active and off the CRL."""
    app = enroll_application(domain, onboarded, "tls_client", "app")
    before = snapshot(server, onboarded.id)
    returncode, output = run_cmp(
        "-cmd", "rr", "-server", domain.url("revocation"), *onboarded.signer_args(domain),
        "-oldcert", app.cert_path, "-revreason", "8", cwd=workdir,
    )  # fmt: skip
    assert_rejected(returncode, output, "badRequest")
    assert snapshot(server, onboarded.id) == before
    assert fetch_crl(app.certificate).get_revoked_certificate_by_serial_number(app.certificate.serial_number) is None


def test_rr_certificate_hold_is_refused(server, domain, onboarded, workdir):
    """rr with reason certificateHold (-revreason 6): holds are not supported, revocations are permanent;
    badRequest and the certificate stays active."""
    app = enroll_application(domain, onboarded, "tls_client", "app")
    before = snapshot(server, onboarded.id)
    returncode, output = run_cmp(
        "-cmd", "rr", "-server", domain.url("revocation"), *onboarded.signer_args(domain),
        "-oldcert", app.cert_path, "-revreason", "6", cwd=workdir,
    )  # fmt: skip
    assert_rejected(returncode, output, "badRequest")
    assert snapshot(server, onboarded.id) == before


def test_rr_signed_by_application_certificate_for_the_domain_credential(server, domain, onboarded, workdir):
    """An application certificate may revoke itself only: an rr it signs for the device's domain credential
    is notAuthorized and the credential stays active."""
    app = enroll_application(domain, onboarded, "tls_client", "app")
    before = snapshot(server, onboarded.id)
    returncode, output = run_cmp(
        "-cmd", "rr", "-server", domain.url("revocation"),
        *app.signer_args(domain),
        "-oldcert", onboarded.cert_path, "-revreason", "1", cwd=workdir,
    )  # fmt: skip
    assert_rejected(returncode, output, "notAuthorized")
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("infotype", ["preferredSymmAlg", "currentCRL", "caProtEncCert", "encKeyPairTypes"])
def test_genm_unknown_info_type(server, domain, onboarded, workdir, infotype):
    """genm with an info type the server does not serve: badRequest. encKeyPairTypes ({id-it 3}) is one
    of them: the server serves signKeyPairTypes, which RFC 4210 numbers {id-it 2}."""
    before = snapshot(server, onboarded.id)
    returncode, output = run_cmp(
        "-cmd", "genm", "-server", domain.url("getcacerts"), *onboarded.signer_args(domain),
        "-infotype", infotype, cwd=workdir,
    )  # fmt: skip
    assert_rejected(returncode, output, "badRequest")
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("case", ["kur-same-key", "tls_server-without-san", "domain-profile-in-cr", "unknown-profile"])
def test_template_refused(server, domain, onboarded, workdir, case):
    """Requests the profiles refuse: a kur repeating the current key, a tls_server cr without SANs, a cr
    for the domain_credential profile or an unknown profile: badCertTemplate."""
    args = ["-cmd", "kur" if case == "kur-same-key" else "cr", *onboarded.signer_args(domain)]
    args += ["-certout", workdir / "out.pem"]
    if case == "kur-same-key":
        args += ["-server", domain.url("keyupdate"), "-newkey", onboarded.key_path]
    else:
        profile = {"tls_server-without-san": "tls_server", "domain-profile-in-cr": "domain_credential"}.get(
            case, "no_such_profile"
        )
        # A common name that is no host name: tls_server cannot take it as its DNS name either.
        args += ["-server", domain.url("certification", profile), "-subject", "/CN=not a host name"]
        args += ["-newkey", new_key_file(workdir / "new.key")]
    before = snapshot(server, onboarded.id)
    assert_rejected(*run_cmp(*args, cwd=workdir), "badCertTemplate")
    assert snapshot(server, onboarded.id) == before


# --- a rejecting certConf --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["cr", "kur"])
def test_rejecting_cert_conf_revokes_only_that_certificate(server, domain, onboarded, workdir, command):
    """`openssl cmp` rejects the new certificate in its certConf (-out_trusted names another CA): the
    server revokes that certificate and nothing else: the domain credential (also the one a kur would
    have replaced) and an earlier application certificate stay active, the device's credential is
    unchanged, and the CRL lists only the rejected certificate."""
    app = enroll_application(domain, onboarded, "tls_client", "app")
    before = snapshot(server, onboarded.id)
    other_root = write_pem(workdir / "other-root.pem", [make_ca("Not The Domain Root").certificate])
    key = new_key_file(workdir / "new.key")
    args = ["-cmd", command, *onboarded.signer_args(domain), "-newkey", key, "-certout", workdir / "out.pem"]
    args += ["-out_trusted", other_root, "-rspout", "%s,%s" % (workdir / "rsp.der", workdir / "pkiconf.der")]
    if command == "cr":
        args += ["-server", domain.url("certification"), "-subject", "/CN=rejected.example"]
    else:
        args += ["-server", domain.url("keyupdate")]
    returncode, output = run_cmp(*args, cwd=workdir)
    assert returncode != 0
    assert "sending CERTCONF" in output and "received PKICONF" in output, output
    [response], _ca_pubs = cert_responses(CmpMessage.decode((workdir / "rsp.der").read_bytes()))
    rejected_certificate = response.certificate
    assert certificate_status(server, rejected_certificate) == ("revoked", "unspecified")
    devices, records, counts = snapshot(server, onboarded.id)
    assert devices == before[0]
    assert records[0][:-1] == before[1][0]
    assert counts[1:] == (before[2][1] + 1, before[2][2] + 1)
    assert certificate_status(server, onboarded.certificate) == ("active", None)
    assert certificate_status(server, app.certificate) == ("active", None)
    crl = fetch_crl(onboarded.certificate)
    assert [entry.serial_number for entry in crl] == [rejected_certificate.serial_number]
