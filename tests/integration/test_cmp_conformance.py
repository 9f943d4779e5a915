# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP conformance (issue 15): what RFC 9483 / RFC 9810 ask that a conformance tester checks at once.

Every test decodes the server's answer (a PKIMessage, HTTP 200, application/pkixcmp) and checks the exact
body and PKIFailureInfo; a refused request changes nothing (snapshot before and after).
"""

from __future__ import annotations

import datetime
import re
import time
import uuid

import cmp_helpers
import pytest
from cmp_helpers import (
    DOMAIN_SUBJECT,
    Credential,
    admit_manufacturer,
    admitted_idevid,
    assert_cmp_ok,
    assert_rejected,
    certificate_status,
    crl_url_of,
    error_of,
    execute,
    fetch_crl,
    header_for,
    load_pem,
    mac_protected,
    new_key_file,
    new_private_key,
    post_cmp,
    run_cmp,
    signed,
    signer_args,
    snapshot,
    subject_name,
    unprotected,
    unreadable_csr,
)
from conftest import openssl, urllib_transport
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc5280, rfc5958, rfc9480
from test_cmp_negative import assert_signed_by_domain, confirm_header, explicit_cr, rejected, request_of
from trustpoint_core import keys
from trustpoint_core.asn1 import der_oid, der_sequence, der_tlv
from trustpoint_core.cmp_client import CmpClient, MacCredential, SignatureCredential
from trustpoint_core.cmp_keygen import open_private_key
from trustpoint_core.cmp_message import (
    ID_IT_CA_CERTS,
    ID_IT_CERT_REQ_TEMPLATE,
    ID_IT_CRL_STATUS_LIST,
    ID_IT_CRLS,
    Header,
    cert_conf_body,
    cert_hash,
    cert_req_body,
    cert_responses,
    crl_status_list_value,
    genm_body,
    genp_values,
    p10cr_body,
    rr_body,
)
from trustpoint_core.cmp_protection import PasswordBasedMac, Pbmac1, SignatureProtection, verify_mac, verify_signature
from trustpoint_core.errors import CmpFailure

# The shared fixtures (cmp_helpers.py): assigned, not imported, so that the tests' arguments of the same names
# are not taken for redefinitions of an import.
domain, onboarded = cmp_helpers.domain, cmp_helpers.onboarded


def _crls(value):
    items, rest = decoder.decode(value)
    assert not rest
    return [x509.load_der_x509_crl(encoder.encode(item)) for item in items]


# --- genm crlStatusList (RFC 9483 4.3.4) ------------------------------------------------------------------


def crl_request(*statuses):
    """A genm crlStatusList naming statuses: (distribution point URI or None, issuer Name or None, thisUpdate)."""
    return genm_body(ID_IT_CRL_STATUS_LIST, values={ID_IT_CRL_STATUS_LIST: crl_status_list_value(statuses)})


@pytest.mark.parametrize("source", ["distribution-point", "issuer"])
def test_getcrls_returns_only_the_named_crl(server, domain, onboarded, source):
    """One source named, one CRL back: the issuing CA's, by its distribution point (as the credential names
    it) or by issuer name; the root CA's by its issuer name."""
    if source == "distribution-point":
        statuses = [(crl_url_of(onboarded.certificate), None, None)]
    else:
        statuses = [(None, domain.issuing.subject, None)]
    _header, der = signed(crl_request(*statuses), onboarded.credential())
    genp = post_cmp(domain.url("getcrls"), der)
    verify_signature(genp, domain.issuing)
    values = genp_values(genp)
    assert list(values) == [ID_IT_CRLS]
    [crl] = _crls(values[ID_IT_CRLS])
    assert crl.issuer == domain.issuing.subject
    assert crl.is_signature_valid(domain.issuing.public_key())

    _header, der = unprotected(crl_request((None, domain.root.subject, None)))
    [crl] = _crls(genp_values(post_cmp(domain.url("getcrls"), der))[ID_IT_CRLS])
    assert crl.issuer == domain.root.subject
    assert crl.is_signature_valid(domain.root.public_key())


def test_getcrls_nothing_newer_leaves_the_value_absent(server, domain, onboarded):
    """A client whose CRL is current gets id-it-crls without infoValue; after a revocation it gets the new one."""
    current = fetch_crl(onboarded.certificate)
    url = crl_url_of(onboarded.certificate)
    _header, der = unprotected(crl_request((url, None, current.last_update_utc)))
    genp = post_cmp(domain.url("getcrls"), der)
    assert genp_values(genp) == {ID_IT_CRLS: None}

    time.sleep(1.1)  # thisUpdate counts whole seconds: the next CRL must be newer
    status, body = server.api(
        "POST",
        "/devices/%d/certificates/%s/revoke" % (onboarded.id, format(onboarded.certificate.serial_number, "x")),
        {"reason": "keyCompromise"},
    )
    assert status == 200, body
    _header, der = unprotected(crl_request((url, None, current.last_update_utc)))
    [crl] = _crls(genp_values(post_cmp(domain.url("getcrls"), der))[ID_IT_CRLS])
    assert crl.get_revoked_certificate_by_serial_number(onboarded.certificate.serial_number) is not None


@pytest.mark.parametrize("problem", ["no-value", "unknown-issuer", "unknown-distribution-point"])
def test_getcrls_refused(server, domain, onboarded, problem):
    """crlStatusList without infoValue, or naming a CRL this domain does not issue: badRequest."""
    if problem == "no-value":
        body = genm_body(ID_IT_CRL_STATUS_LIST)
    elif problem == "unknown-issuer":
        body = crl_request((None, onboarded.certificate.subject, None))
    else:
        body = crl_request(("http://127.0.0.1:1/crl/999999", None, None))
    _header, der = signed(body, onboarded.credential())
    rejected(domain.url("getcrls"), der, "badRequest")


def test_genm_asking_more_than_once_or_for_too_many_crls_is_refused(server, domain, onboarded):
    """An anonymous genm repeating caCerts 10,000 times (120 KB) asked for a 9 MB answer and held a worker for
    0.6 s: each info type is answered once, a crlStatusList names at most 8 CRLs, and pyasn1 decodes at most 2,000
    values of a message (badDataFormat before any work)."""
    _header, der = unprotected(genm_body(ID_IT_CA_CERTS, ID_IT_CA_CERTS))
    message = rejected(domain.url("getcacerts"), der, "badRequest")
    assert "more than once" in error_of(message)[1]
    statuses = [(crl_url_of(onboarded.certificate), None, None)] * 9
    _header, der = signed(crl_request(*statuses), onboarded.credential())
    assert "at most 8" in error_of(rejected(domain.url("getcrls"), der, "badRequest"))[1]
    _header, der = unprotected(genm_body(*[ID_IT_CA_CERTS] * 10000))
    assert len(der) > 100000
    message = rejected(domain.url("getcacerts"), der, "badDataFormat")
    assert "more than 2000 ASN.1 values" in error_of(message)[1]  # refused before pyasn1 decoded anything
    _header, der = unprotected(genm_body(ID_IT_CA_CERTS))
    assert genp_values(post_cmp(domain.url("getcacerts"), der))[ID_IT_CA_CERTS]  # one asked: answered


@pytest.mark.parametrize("info_type", [ID_IT_CA_CERTS, ID_IT_CERT_REQ_TEMPLATE])
def test_genm_with_info_value_where_none_belongs(server, domain, onboarded, info_type):
    """genm caCerts / certReqTemplate carry no infoValue (RFC 9483 4.3.1, 4.3.3): one that does is badRequest."""
    before = snapshot(server, onboarded.id)
    body = genm_body(info_type, values={info_type: b"\x05\x00"})
    _header, der = signed(body, onboarded.credential())
    rejected(domain.url("getcacerts"), der, "badRequest")
    assert snapshot(server, onboarded.id) == before


# --- strictness: headers ------------------------------------------------------------------------------------


def reencoded(der, change, protector=None):
    """der with its header changed by change(pyasn1 header), protected anew with protector (None: unprotected,
    the protection and protectionAlg as change left them)."""
    message, _rest = decoder.decode(der, asn1Spec=rfc9480.PKIMessage())
    header = message["header"]
    change(header)
    header_der, body_der = encoder.encode(header), encoder.encode(message["body"])
    parts = [header_der, body_der]
    if protector is not None:
        parts.append(der_tlv(0xA0, der_tlv(0x03, b"\x00" + protector.protect(der_sequence(header_der, body_der)))))
    extra = message.getComponentByName("extraCerts", instantiate=False)
    if extra is not univ.noValue and extra.isValue:
        parts.append(encoder.encode(extra))
    return der_sequence(*parts)


def test_signed_sender_must_be_the_signer(server, domain, onboarded):
    """A cr signed with the domain credential whose sender names another subject: badMessageCheck."""
    before = snapshot(server, onboarded.id)
    header = header_for(sender=subject_name("someone-else"))
    _header, der = signed(request_of("cr", onboarded)[1], onboarded.credential(), header)
    assert_signed_by_domain(rejected(domain.url("certification"), der, "badMessageCheck"), domain)
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("kid", ["other", "missing"])
def test_signed_sender_kid_must_be_the_ski(server, domain, onboarded, kid):
    """senderKID other than the signer's SubjectKeyIdentifier, or missing while the certificate has one
    (RFC 9483 3.1): badMessageCheck."""
    credential = onboarded.credential()
    protector = SignatureProtection(credential.key, credential.certificate, credential.chain)
    protector.kid = b"\x01" * 20 if kid == "other" else None
    before = snapshot(server, onboarded.id)
    _header, der = signed(request_of("cr", onboarded)[1], credential, protector=protector)
    assert_signed_by_domain(rejected(domain.url("certification"), der, "badMessageCheck"), domain)
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("kind", ["ir-mac", "cr", "rr", "genm"])
def test_first_message_with_recip_nonce(server, domain, onboarded, kind):
    """The first message of a transaction answers nothing: a recipNonce in it is badRecipientNonce."""
    device, secret = server.create_device(domain.name)
    before = snapshot(server, onboarded.id)
    if kind == "ir-mac":
        header = header_for(recip_nonce=bytes(range(16)))
        _header, der = mac_protected(request_of("ir", onboarded)[1], device["id"], secret, header)
        operation = "initialization"
    else:
        operation, body = request_of(kind, onboarded)
        header = header_for(sender=onboarded.certificate.subject, recip_nonce=bytes(range(16)))
        _header, der = signed(body, onboarded.credential(), header)
    rejected(domain.url(operation), der, "badRecipientNonce")
    assert snapshot(server, onboarded.id) == before


def _rfc822_sender(header):
    sender = rfc5280.GeneralName()
    sender["rfc822Name"] = "device@example.com"
    header["sender"] = sender


def test_mac_sender_must_be_a_directory_name(server, domain):
    """A PBM-protected ir whose sender is an rfc822Name (RFC 9483 3.1: directoryName): badMessageCheck, protected
    with the device's secret; the secret stays usable."""
    device, secret = server.create_device(domain.name)
    protector = PasswordBasedMac(secret, kid=str(device["id"]).encode())
    _header, der = mac_protected(request_of("ir", None)[1], device["id"], secret, protector=protector)
    before = snapshot(server, device["id"])
    message = rejected(domain.url("initialization"), reencoded(der, _rfc822_sender, protector), "badMessageCheck")
    verify_mac(message, secret.encode())
    assert snapshot(server, device["id"]) == before
    _header, der = mac_protected(request_of("ir", None)[1], device["id"], secret)
    assert post_cmp(domain.url("initialization"), der).body_type == "ip"


def test_missing_transaction_id(server, domain, onboarded):
    """No transactionID in the header: badDataFormat."""

    def drop(header):
        header["transactionID"] = univ.noValue

    credential = onboarded.credential()
    protector = SignatureProtection(credential.key, credential.certificate, credential.chain)
    _header, der = signed(request_of("cr", onboarded)[1], credential, protector=protector)
    before = snapshot(server, onboarded.id)
    rejected(domain.url("certification"), reencoded(der, drop, protector), "badDataFormat")
    assert snapshot(server, onboarded.id) == before


# --- failInfo precision: protection -------------------------------------------------------------------------


def _protection_alg(oid):
    def change(header):
        header["protectionAlg"]["algorithm"] = univ.ObjectIdentifier(oid)

    return change


@pytest.mark.parametrize("problem", ["unknown-alg", "protection-without-alg", "alg-without-protection"])
def test_protection_fields(server, domain, onboarded, problem):
    """An unknown protectionAlg is badAlg (never tried as a signature); protection without protectionAlg, or
    protectionAlg without protection, is badMessageCheck."""
    credential = onboarded.credential()
    protector = SignatureProtection(credential.key, credential.certificate, credential.chain)
    _header, der = signed(request_of("cr", onboarded)[1], credential, protector=protector)
    if problem == "unknown-alg":
        der, expected = reencoded(der, _protection_alg("1.2.3.4.5"), protector), "badAlg"
    elif problem == "protection-without-alg":

        def drop(header):
            header["protectionAlg"] = univ.noValue

        der, expected = reencoded(der, drop, protector), "badMessageCheck"
    else:
        der, expected = reencoded(der, lambda header: None), "badMessageCheck"
    before = snapshot(server, onboarded.id)
    rejected(domain.url("certification"), der, expected)
    assert snapshot(server, onboarded.id) == before


def test_cert_conf_with_mac_after_a_signed_request(server, domain, onboarded):
    """A cr signed with the domain credential awaits its certConf; a certConf protected with the device's (new)
    shared secret: wrongIntegrity, and the certificate stays unconfirmed."""
    request_header, cp, certificate = explicit_cr(domain, onboarded)
    status, body = server.api("POST", "/devices/%d/secret" % onboarded.id)
    assert status == 200, body
    before = snapshot(server, onboarded.id)
    header = confirm_header(request_header, cp)
    _header, der = mac_protected(cert_conf_body(cert_hash(certificate)), onboarded.id, body["shared_secret"], header)
    rejected(domain.url("certification"), der, "wrongIntegrity")
    assert snapshot(server, onboarded.id) == before
    assert certificate_status(server, certificate) == ("awaiting_confirmation", None)


# --- failInfo precision: algorithms ------------------------------------------------------------------------


@pytest.mark.parametrize("key_kind", ["ed25519", "rsa1024"])
def test_template_key_algorithm_not_certified(server, domain, onboarded, key_kind):
    """A cr for an Ed25519 key or a 1024-bit RSA key (the profile certifies neither): badAlg."""
    if key_kind == "rsa1024":
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (refused on purpose)
    else:
        key = new_private_key(key_kind)
    body = cert_req_body("cr", key, subject_name("app.example"))
    before = snapshot(server, onboarded.id)
    _header, der = signed(body, onboarded.credential())
    rejected(domain.url("certification"), der, "badAlg")
    assert snapshot(server, onboarded.id) == before


@pytest.mark.parametrize("problem", ["unknown-key-algorithm", "unsupported-curve"])
def test_csr_key_algorithm_unknown(server, domain, onboarded, problem):
    """A p10cr whose CSR key has an unknown algorithm or curve: badAlg."""
    before = snapshot(server, onboarded.id)
    _header, der = signed(p10cr_body(unreadable_csr(problem)), onboarded.credential())
    rejected(domain.url("pkcs10"), der, "badAlg")
    assert snapshot(server, onboarded.id) == before


# --- certConf --------------------------------------------------------------------------------------------


def test_cert_conf_accepting_with_fail_info(server, domain, onboarded):
    """A certConf whose status is accepted but carries a failInfo: badRequest; the certificate stays unconfirmed."""
    request_header, cp, certificate = explicit_cr(domain, onboarded)
    body_type, content = cert_conf_body(cert_hash(certificate))
    status_info = rfc9480.PKIStatusInfo()
    status_info["status"] = 0
    status_info["failInfo"] = status_info["failInfo"].clone(binValue="001")
    content[0]["statusInfo"] = status_info
    header = confirm_header(request_header, cp, onboarded.certificate.subject)
    before = snapshot(server, onboarded.id)
    _header, der = signed((body_type, content), onboarded.credential(), header)
    rejected(domain.url("certification"), der, "badRequest")
    assert snapshot(server, onboarded.id) == before
    assert certificate_status(server, certificate) == ("awaiting_confirmation", None)


@pytest.mark.parametrize("nonce", ["request", "response"])
def test_cert_conf_sender_nonce_must_be_fresh(server, domain, onboarded, nonce):
    """A certConf reusing the cr's senderNonce (or echoing the server's): badSenderNonce."""
    request_header, cp, certificate = explicit_cr(domain, onboarded)
    header = confirm_header(request_header, cp, onboarded.certificate.subject)
    header.sender_nonce = request_header.sender_nonce if nonce == "request" else cp.sender_nonce
    before = snapshot(server, onboarded.id)
    _header, der = signed(cert_conf_body(cert_hash(certificate)), onboarded.credential(), header)
    rejected(domain.url("certification"), der, "badSenderNonce")
    assert snapshot(server, onboarded.id) == before
    assert certificate_status(server, certificate) == ("awaiting_confirmation", None)


# --- rr ----------------------------------------------------------------------------------------------------


def _rr_with(certificate, reasons=1, subject=None, public_key=None):
    body_type, content = rr_body(certificate)
    details = content[0]
    extensions = details["crlEntryDetails"]
    if reasons == 0:
        details["crlEntryDetails"] = univ.noValue
    else:
        for _copy in range(reasons - 1):
            extensions.append(extensions[0])
    template = details["certDetails"]
    if subject is not None:
        template["subject"]["rdnSequence"] = decoder.decode(subject.public_bytes(), asn1Spec=rfc5280.Name())[0][
            "rdnSequence"
        ]
    if public_key is not None:
        spki = decoder.decode(keys.public_key_der(public_key), asn1Spec=rfc5280.SubjectPublicKeyInfo())[0]
        template["publicKey"]["algorithm"] = spki["algorithm"]
        template["publicKey"]["subjectPublicKey"] = spki["subjectPublicKey"]
    return body_type, content


@pytest.mark.parametrize(
    ("problem", "fail_info"),
    [("no-reason", "badRequest"), ("two-reasons", "badRequest"), ("subject", "badCertId"), ("key", "badCertId")],
)
def test_rr_details(server, domain, onboarded, problem, fail_info):
    """rr with no or two CRLReasons (RFC 9483 4.2: exactly one), or whose certDetails names another subject or
    public key than the certificate its issuer and serialNumber name: refused, the certificate stays active."""
    certificate = onboarded.certificate
    if problem == "no-reason":
        body = _rr_with(certificate, reasons=0)
    elif problem == "two-reasons":
        body = _rr_with(certificate, reasons=2)
    elif problem == "subject":
        body = _rr_with(certificate, subject=subject_name("someone-else"))
    else:
        body = _rr_with(certificate, public_key=new_private_key().public_key())
    before = snapshot(server, onboarded.id)
    _header, der = signed(body, onboarded.credential())
    assert_signed_by_domain(rejected(domain.url("revocation"), der, fail_info), domain)
    assert snapshot(server, onboarded.id) == before
    # certDetails that agree with the certificate are accepted.
    body = _rr_with(certificate, subject=certificate.subject, public_key=certificate.public_key())
    _header, der = signed(body, onboarded.credential())
    assert post_cmp(domain.url("revocation"), der).body_type == "rp"


# --- kur awaiting its certConf -----------------------------------------------------------------------------


def explicit_kur(domain, enrolled):
    """A kur signed with enrolled's credential, no implicit confirm: (header, kup, new certificate, new key)."""
    key = new_private_key()
    header = header_for(sender=enrolled.certificate.subject)
    _header, der = signed(
        cert_req_body("kur", key, old_certificate=enrolled.certificate), enrolled.credential(), header
    )
    kup = post_cmp(domain.url("keyupdate"), der)
    assert kup.body_type == "kup", kup.body_type == "error" and error_of(kup)
    return header, kup, cert_responses(kup)[0][0].certificate, key


def test_rr_while_a_kur_awaits_its_cert_conf(server, domain, onboarded):
    """The certificate a kur updates cannot be revoked while the new one awaits certConf: badRequest; after the
    certConf it is superseded as usual."""
    request_header, kup, certificate, _key = explicit_kur(domain, onboarded)
    before = snapshot(server, onboarded.id)
    _header, der = signed(rr_body(onboarded.certificate), onboarded.credential())
    rejected(domain.url("revocation"), der, "badRequest")
    assert snapshot(server, onboarded.id) == before
    header = confirm_header(request_header, kup, onboarded.certificate.subject)
    _header, der = signed(cert_conf_body(cert_hash(certificate)), onboarded.credential(), header)
    assert post_cmp(domain.url("keyupdate"), der).body_type == "pkiconf"
    assert certificate_status(server, certificate) == ("active", None)


def test_rr_after_the_confirmation_window_of_a_lost_kup(server, domain, onboarded):
    """The kup was lost, so the device can neither confirm nor reject it: once the confirmation window is over the
    old certificate can be revoked, before any sweep has revoked the unconfirmed one."""
    _request_header, _kup, certificate, _key = explicit_kur(domain, onboarded)
    execute(
        server,
        "UPDATE issued_certificate SET created_at = '2000-01-01 00:00:00' WHERE fingerprint_sha256 = ?",
        (certificate.fingerprint(hashes.SHA256()).hex(),),
    )
    _header, der = signed(rr_body(onboarded.certificate), onboarded.credential())
    assert post_cmp(domain.url("revocation"), der).body_type == "rp"
    assert certificate_status(server, onboarded.certificate)[0] == "revoked"


def test_unconfirmed_certificate_cannot_protect_its_cert_conf(server, domain, onboarded):
    """The certConf of a kur signed with the new, still unconfirmed certificate: notAuthorized; the old one can."""
    request_header, kup, certificate, key = explicit_kur(domain, onboarded)
    new_credential = Credential(certificate, key, [domain.issuing])
    header = confirm_header(request_header, kup, certificate.subject)
    before = snapshot(server, onboarded.id)
    _header, der = signed(cert_conf_body(cert_hash(certificate)), new_credential, header)
    rejected(domain.url("keyupdate"), der, "notAuthorized")
    assert snapshot(server, onboarded.id) == before
    assert certificate_status(server, certificate) == ("awaiting_confirmation", None)


# --- reachability: one URL -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["well-known", "legacy"])
def test_one_url_for_every_message(server, domain, workdir, where):
    """A client that posts every message to /.well-known/cmp (the domain of the device that authenticates) or
    to the legacy initialization path onboards (ir, certConf), enrolls (cr), updates (kur), revokes (rr) and
    asks (genm) there; an anonymous genm at /.well-known/cmp, which names no domain, is badRequest."""
    url = server.cmp_url + (
        "/.well-known/cmp" if where == "well-known" else "/.well-known/cmp/initialization/" + domain.name
    )
    device, secret = server.create_device(domain.name)
    key, cert = new_key_file(workdir / "dc.key"), workdir / "dc.pem"
    assert_cmp_ok(*run_cmp(
        "-cmd", "ir", "-server", url, "-ref", device["id"], "-secret", "pass:" + secret, "-subject", DOMAIN_SUBJECT,
        "-newkey", key, "-certout", cert, "-trusted", domain.root_path, cwd=workdir,
    ))  # fmt: skip
    signer = signer_args(cert, key, domain.root_path)
    app_key = new_key_file(workdir / "app.key")
    for args in (
        ["-cmd", "cr", "-subject", "/CN=app.example", "-newkey", app_key, "-certout", workdir / "app.pem"],
        ["-cmd", "genm", "-infotype", "caCerts"],
        ["-cmd", "kur", "-newkey", new_key_file(workdir / "dc2.key"), "-certout", workdir / "dc2.pem"],
    ):
        assert_cmp_ok(*run_cmp(*args, "-server", url, *signer, cwd=workdir))
    renewed = signer_args(workdir / "dc2.pem", workdir / "dc2.key", domain.root_path)
    assert_cmp_ok(*run_cmp("-cmd", "rr", "-server", url, *renewed, "-oldcert", workdir / "app.pem",
                           "-revreason", "0", cwd=workdir))  # fmt: skip
    assert certificate_status(server, load_pem(workdir / "app.pem")[0]) == ("revoked", "unspecified")
    _header, der = unprotected(genm_body(ID_IT_CA_CERTS))
    if where == "well-known":
        rejected(url, der, "badRequest")
    else:
        assert post_cmp(url, der).body_type == "genp"


def test_operation_paths_stay_strict(server, domain, onboarded):
    """At an operation path a body of another operation is still badRequest."""
    _header, der = signed(request_of("cr", onboarded)[1], onboarded.credential())
    rejected(domain.url("revocation"), der, "badRequest")


def test_more_than_one_cert_req_msg_is_refused_before_any_is_read(server, domain, onboarded):
    """RFC 9483 4.1: one CertReqMsg per request. A cr with more is badRequest before any is read (each may cost a key
    load and pyasn1 decodings): the first one here, whose key cannot be read, would be badCertTemplate."""
    body = request_of("cr", onboarded)[1]  # (body type, CertReqMessages)
    body[1][0]["certReq"]["certTemplate"]["publicKey"]["subjectPublicKey"] = univ.BitString(hexValue="00ff")
    body[1].append(request_of("cr", onboarded)[1][1][0])
    before = snapshot(server, onboarded.id)
    _header, der = signed(body, onboarded.credential())
    message = rejected(domain.url("certification"), der, "badRequest")
    assert "exactly one CertReqMsg, not 2" in error_of(message)[1]
    assert snapshot(server, onboarded.id) == before


def test_more_than_one_rev_details_is_refused_before_any_is_read(server, domain, onboarded):
    """RFC 9483 4.2: an rr names one certificate. One with two RevDetails is badRequest before either is read: the
    first one here, without an issuer, would be badCertTemplate. Nothing is revoked."""
    operation, (body_type, details) = request_of("rr", onboarded)
    broken = rfc9480.RevDetails()
    broken["certDetails"]["serialNumber"] = onboarded.certificate.serial_number
    content = rfc9480.PKIBody()[body_type].clone()
    content.append(broken)
    content.append(details[0])
    before = snapshot(server, onboarded.id)
    _header, der = signed((body_type, content), onboarded.credential())
    message = rejected(domain.url(operation), der, "badRequest")
    assert "exactly one certificate" in error_of(message)[1]
    assert snapshot(server, onboarded.id) == before


# --- reachability: ir signed with an issued certificate ---------------------------------------------------


def test_ir_with_domain_credential_follows_the_domain_policy(server, domain, onboarded, workdir):
    """An ir signed with the domain credential: notAuthorized by default ("refuse"); with the domain's
    cmp_ir_with_credential "certify" it is enrolled like a cr (the URL's profile, default tls_client) and
    answered with an ip."""
    args = ["-cmd", "ir", "-server", domain.url("initialization", "tls_server"), *onboarded.signer_args(domain)]
    args += ["-subject", "/CN=web.example", "-sans", "web.example", "-newkey", new_key_file(workdir / "web.key")]
    args += ["-certout", workdir / "web.pem", "-implicit_confirm"]
    before = snapshot(server, onboarded.id)
    assert_rejected(*run_cmp(*args, cwd=workdir), "notAuthorized")
    assert snapshot(server, onboarded.id) == before

    status, body = server.api("PATCH", "/domains/" + domain.name, {"cmp_ir_with_credential": "certify"})
    assert (status, body["cmp_ir_with_credential"]) == (200, "certify"), body
    returncode, output = run_cmp(*args, cwd=workdir)
    assert_cmp_ok(returncode, output)
    assert "received IP" in output, output
    [certificate] = load_pem(workdir / "web.pem")
    assert certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert certificate_status(server, certificate) == ("active", None)
    assert server.device(onboarded.id)["credential"]["serial_number"] == format(
        onboarded.certificate.serial_number, "x"
    )
    # A policy value the server does not know is a 400 that names the field.
    status, body = server.api("PATCH", "/domains/" + domain.name, {"cmp_ir_with_credential": "sometimes"})
    assert status == 400 and "cmp_ir_with_credential" in body["error"], body


# --- central key generation (RFC 9483 4.1.6) ----------------------------------------------------------------


def _openssl_opens(workdir, enveloped, root_path, *recipient_args):
    """`openssl cms` decrypts the EnvelopedData (as a ContentInfo) and verifies the SignedData in it against the
    domain root; returns the AsymmetricKeyPackage DER."""
    (workdir / "env.der").write_bytes(der_sequence(der_oid("1.2.840.113549.1.7.3"), der_tlv(0xA0, enveloped)))
    openssl("cms", "-decrypt", "-inform", "DER", "-in", workdir / "env.der", "-out", workdir / "sd.der",
            *recipient_args)  # fmt: skip
    signed_data = (workdir / "sd.der").read_bytes()
    (workdir / "sdci.der").write_bytes(der_sequence(der_oid("1.2.840.113549.1.7.2"), der_tlv(0xA0, signed_data)))
    openssl("cms", "-verify", "-inform", "DER", "-in", workdir / "sdci.der", "-CAfile", root_path,
            "-purpose", "any", "-out", workdir / "akp.der")  # fmt: skip
    return (workdir / "akp.der").read_bytes()


def _same_key(private_key, certificate):
    return keys.same_public_key(private_key.public_key(), certificate.public_key())


def test_central_keygen_with_shared_secret(server, domain, workdir):
    """An ir without a public key, MAC-protected: the ip carries the certificate and the generated key in an
    EnvelopedData with a PasswordRecipientInfo keyed by the shared secret, signed by the issuing CA. The core and
    `openssl cms` open it; the key is the certificate's; certConf confirms it."""
    device, secret = server.create_device(domain.name)
    request_header, der = mac_protected(cert_req_body("ir", None, subject_name()), device["id"], secret)
    ip = post_cmp(domain.url("initialization"), der)
    assert ip.body_type == "ip", ip.body_type == "error" and error_of(ip)
    [response], _ca_pubs = cert_responses(ip)
    assert response.enveloped_key is not None
    key = open_private_key(response.enveloped_key, [domain.root], secret=secret)
    assert _same_key(key, response.certificate)
    package = _openssl_opens(workdir, response.enveloped_key, domain.root_path, "-pwri_password", secret)
    [one_key] = decoder.decode(package, asn1Spec=rfc5958.AsymmetricKeyPackage())[0]
    assert str(one_key["privateKeyAlgorithm"]["algorithm"]) == "1.2.840.10045.2.1"
    header = confirm_header(request_header, ip)
    _header, der = mac_protected(cert_conf_body(cert_hash(response.certificate)), device["id"], secret, header)
    assert post_cmp(domain.url("initialization"), der).body_type == "pkiconf"
    assert certificate_status(server, response.certificate) == ("active", None)
    # The wrong secret does not open it.
    with pytest.raises(CmpFailure):
        open_private_key(response.enveloped_key, [domain.root], secret="wrong")


@pytest.mark.parametrize("signer", ["domain-credential-ec", "idevid-rsa"])
def test_central_keygen_to_the_signer(server, domain, onboarded, workdir, signer):
    """A signed request without a public key: the key is encrypted to the signer's certificate, by key agreement
    (EC domain credential, cr) or key transport (RSA IDevID, ir); the core and `openssl cms` open it with the
    signer's key."""
    if signer == "domain-credential-ec":
        credential, operation = onboarded.credential(), "certification"
        body = cert_req_body("cr", None, subject_name("app.example"))
    else:
        credential, _device = admitted_idevid(server, domain, key_kind="rsa")
        operation, body = "initialization", cert_req_body("ir", None, subject_name())
    header = header_for(sender=credential.certificate.subject, implicit_confirm=True)
    _header, der = signed(body, credential, header)
    answer = post_cmp(domain.url(operation), der)
    assert answer.body_type in ("ip", "cp"), answer.body_type == "error" and error_of(answer)
    [response], _ca_pubs = cert_responses(answer)
    key = open_private_key(
        response.enveloped_key, [domain.root], private_key=credential.key, certificate=credential.certificate
    )
    assert _same_key(key, response.certificate)
    cert_path, key_path, _chain = credential.write(workdir, "signer")
    _openssl_opens(workdir, response.enveloped_key, domain.root_path, "-recip", cert_path, "-inkey", key_path)
    assert certificate_status(server, response.certificate) == ("active", None)


def test_central_keygen_key_type_from_the_template(server, domain):
    """A template naming id-ecPublicKey with P-384 (algorithm only, an empty key): a P-384 key."""
    device, secret = server.create_device(domain.name)
    body_type, content = cert_req_body("ir", None, subject_name())
    public_key = content[0]["certReq"]["certTemplate"]["publicKey"]
    public_key["algorithm"]["algorithm"] = univ.ObjectIdentifier("1.2.840.10045.2.1")
    public_key["algorithm"]["parameters"] = univ.Any(der_oid("1.3.132.0.34"))
    public_key["subjectPublicKey"] = univ.BitString(binValue="")
    _header, der = mac_protected((body_type, content), device["id"], secret, header_for(implicit_confirm=True))
    [response], _ca_pubs = cert_responses(post_cmp(domain.url("initialization"), der))
    key = open_private_key(response.enveloped_key, [domain.root], secret=secret)
    assert key.curve.name == "secp384r1"
    assert _same_key(key, response.certificate)


def test_central_keygen_of_an_rsa_key(server, domain):
    """A template naming rsaEncryption: an RSA-2048 key (the domain's key type is EC). Its generation takes long: the
    request leaves the worker's loop for a thread before it (runtime/on_loop.py) and is answered from there."""
    device, secret = server.create_device(domain.name)
    body_type, content = cert_req_body("ir", None, subject_name())
    public_key = content[0]["certReq"]["certTemplate"]["publicKey"]
    public_key["algorithm"]["algorithm"] = univ.ObjectIdentifier("1.2.840.113549.1.1.1")
    public_key["algorithm"]["parameters"] = univ.Any(b"\x05\x00")
    public_key["subjectPublicKey"] = univ.BitString(binValue="")
    _header, der = mac_protected((body_type, content), device["id"], secret, header_for(implicit_confirm=True))
    answer = post_cmp(domain.url("initialization"), der)
    assert answer.body_type == "ip", answer.body_type == "error" and error_of(answer)
    [response], _ca_pubs = cert_responses(answer)
    key = open_private_key(response.enveloped_key, [domain.root], secret=secret)
    assert key.key_size == 2048
    assert _same_key(key, response.certificate)
    assert certificate_status(server, response.certificate) == ("active", None)


@pytest.mark.parametrize("case", ["switched-off", "kur", "with-pop"])
def test_central_keygen_refused(server, domain, onboarded, case):
    """Central key generation switched off for the domain (notAuthorized), asked by a kur (badCertTemplate), or a
    keyless request that carries a POP (badPOP): refused, nothing issued."""
    if case == "switched-off":
        status, body = server.api("PATCH", "/domains/" + domain.name, {"cmp_central_keygen": False})
        assert (status, body["cmp_central_keygen"]) == (200, False), body
        operation, expected = "certification", "notAuthorized"
        request = cert_req_body("cr", None, subject_name("a.example"))
    elif case == "kur":
        operation, expected = "keyupdate", "badCertTemplate"
        request = cert_req_body("kur", None, old_certificate=onboarded.certificate)
    else:
        operation, expected = "certification", "badPOP"
        body_type, content = cert_req_body("cr", new_private_key(), subject_name("a.example"))
        content[0]["certReq"]["certTemplate"]["publicKey"] = univ.noValue
        request = (body_type, content)
    before = snapshot(server, onboarded.id)
    _header, der = signed(request, onboarded.credential())
    rejected(domain.url(operation), der, expected)
    assert snapshot(server, onboarded.id) == before


# --- PBMAC1 iteration counts ------------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [262144, 1000000])
def test_pbmac1_high_iteration_counts(server, domain, iterations):
    """ir and certConf protected with PBMAC1 at common clients' 262,144 and at 1,000,000 iterations: answered,
    protected with PBMAC1 at the same count."""
    device, secret = server.create_device(domain.name)
    kid = str(device["id"]).encode()
    protector = Pbmac1(secret, iterations=iterations, kid=kid)
    request_header, der = mac_protected(cert_req_body("ir", new_private_key(), subject_name()), None, secret,
                                        protector=protector)  # fmt: skip
    ip = post_cmp(domain.url("initialization"), der)
    assert ip.body_type == "ip", ip.body_type == "error" and error_of(ip)
    assert verify_mac(ip, secret.encode()).iterations == iterations
    certificate = cert_responses(ip)[0][0].certificate
    _header, der = mac_protected(cert_conf_body(cert_hash(certificate)), None, secret,
                                 confirm_header(request_header, ip), protector)  # fmt: skip
    assert post_cmp(domain.url("initialization"), der).body_type == "pkiconf"


def test_pbmac1_iteration_count_above_the_bound(server, domain):
    """PBMAC1 asking for 1,000,001 iterations (above cmp_max_mac_iterations): badAlg before any derivation."""
    device, secret = server.create_device(domain.name)
    protector = Pbmac1(secret, iterations=1000001, kid=str(device["id"]).encode(), max_iterations=10**7)
    before = snapshot(server, device["id"])
    _header, der = mac_protected(cert_req_body("ir", new_private_key(), subject_name()), None, secret,
                                 protector=protector)  # fmt: skip
    text = error_of(post_cmp(domain.url("initialization"), der))
    assert text[0] == ("badAlg",) and "1000001" in text[1], text
    assert snapshot(server, device["id"]) == before


@pytest.mark.parametrize("credential_kind", ["shared-secret", "idevid"])
def test_core_client_onboards_with_a_generated_key(server, domain, credential_kind):
    """The core's CmpClient onboards without a key of its own (initialize(None, ...)): it opens the generated key
    with its shared secret or its IDevID's key, checks it against the certificate, and confirms."""
    client = CmpClient(domain.url("{operation}"), urllib_transport)
    if credential_kind == "shared-secret":
        device, secret = server.create_device(domain.name)
        credential, trusted = MacCredential(device["id"], secret), None
    else:
        idevid, device = admitted_idevid(server, domain)
        credential, trusted = SignatureCredential(idevid.key, idevid.certificate, idevid.chain), [domain.root]
    enrollment = client.initialize(None, subject_name(), credential, trusted)
    assert enrollment.private_key is not None
    assert keys.same_public_key(enrollment.private_key.public_key(), enrollment.certificate.public_key())
    assert certificate_status(server, enrollment.certificate) == ("active", None)
    assert server.device(device["id"])["status"] == "onboarded"


def test_idevid_with_an_empty_subject_names_itself_with_null_dn(server, domain):
    """An IDevID whose subject is empty (its identity in a SAN URI) signs an ir with sender NULL-DN: the sender
    names the signer, the ir is answered."""
    serial = uuid.uuid4().hex
    manufacturer = admit_manufacturer(server, domain, re.escape("urn:example:idevid:" + serial))
    key = new_private_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(manufacturer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:example:idevid:" + serial)]),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(manufacturer.key, hashes.SHA256())
    )  # fmt: skip
    header = Header(sender=None, transaction_id=uuid.uuid4().bytes, implicit_confirm=True)
    _header, der = signed(cert_req_body("ir", new_private_key(), subject_name()), Credential(certificate, key), header)
    ip = post_cmp(domain.url("initialization"), der)
    assert ip.body_type == "ip", ip.body_type == "error" and error_of(ip)
