# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Interop matrix of the CMP server with the real `openssl cmp` 3.0 client, one test per cell.

Cells: ir with a shared secret (PBM) and with an IDevID, cr (tls_client, tls_server), kur, p10cr
(domain credential and shared secret), each with implicit confirmation and with an explicit certConf;
rr with several reasons; genm with each info type OpenSSL 3.0 can name. Every issued certificate is
checked with `openssl verify` against the domain root from the REST API, for its profile's contents,
and against the server's records (REST API and database); revocations against the CRL at the
certificate's distribution point. Every cell runs at the operation paths and again at the label-only path
(/.well-known/cmp/p/<domain>), where one-URL clients post every message.

What OpenSSL 3.0 cannot send is covered with the core's builders: pvno 3, PBMAC1, certConf with
hashAlg, RSASSA-PSS and Ed25519 signatures (OpenSSL 3.0 refuses to protect a message with an
Ed25519 key: "unsupported key type"), genm rootCaCert and crlStatusList (3.0 has no names for them).
"""

from __future__ import annotations

import ipaddress
import re

import cmp_helpers
import pytest
from cmp_helpers import (
    DOMAIN_SUBJECT,
    REASONS,
    Credential,
    PkiDomain,
    admit_manufacturer,
    assert_cmp_ok,
    assert_confirm_exchange,
    assert_rejected,
    certificate_status,
    certificates_of,
    common_name_of,
    confirm_args,
    crl_url_of,
    end_renewal_grace,
    enroll_application,
    enroll_with_secret,
    error_of,
    extension,
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
    openssl_verify,
    post_cmp,
    register_device,
    run_cmp,
    serial_hex,
    signed,
    subject_name,
    unprotected,
)
from conftest import openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4055, rfc4210, rfc5280, rfc8018, rfc9480
from trustpoint_core.cmp_message import (
    ID_IT_CA_CERTS,
    ID_IT_CERT_REQ_TEMPLATE,
    ID_IT_CRL_STATUS_LIST,
    ID_IT_CRLS,
    ID_IT_ROOT_CA_CERT,
    ID_IT_ROOT_CA_KEY_UPDATE,
    ID_REGCTRL_ALG_ID,
    ID_REGCTRL_RSA_KEY_LEN,
    CmpMessage,
    cert_conf_body,
    cert_hash,
    cert_req_body,
    cert_responses,
    crl_status_list_value,
    genm_body,
    genp_values,
)
from trustpoint_core.cmp_protection import (
    PBM_OID,
    PBMAC1_OID,
    Pbmac1,
    SignatureProtection,
    verify_mac,
    verify_signature,
)
from trustpoint_core.signatures import RSASSA_PSS

# The shared fixture (cmp_helpers.py): assigned, not imported, so that the tests' arguments of its name
# are not taken for redefinitions of an import.
onboarded = cmp_helpers.onboarded
CONFIRM = ["implicit", "explicit"]
SHA512 = "2.16.840.1.101.3.4.2.3"
HMAC_SHA256 = "1.2.840.113549.2.9"
HMAC_SHA512 = "1.2.840.113549.2.11"
HMAC_SHA1_PKCS5 = "1.2.840.113549.2.7"
# RFC 4210 id-it-signKeyPairTypes {id-it 2}, as OpenSSL's -infotype signKeyPairTypes sends it.
ID_IT_SIGN_KEY_PAIR_TYPES_RFC = "1.3.6.1.5.5.7.4.2"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
REASON_FLAGS = {
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
}
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"


@pytest.fixture(params=["operation-paths", "label-only"])
def domain(server, workdir, request):
    """The whole matrix runs twice: at the operation paths, and at the label-only path where a client that
    posts every message to one URL sends it (issue 15)."""
    return PkiDomain(server, workdir, label_only=request.param == "label-only")


# --- checks --------------------------------------------------------------------------------------------


def assert_verifies(domain, cert_path, purpose="sslclient"):
    """openssl verify: the certificate chains to the domain root (the only anchor) through the
    issuing CA and fits purpose."""
    result = openssl_verify(domain.root_path, cert_path, untrusted=domain.issuing_path, purpose=purpose)
    assert result.returncode == 0, result.stdout + result.stderr


def eku_of(certificate):
    return list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def sans_of(certificate):
    value = extension(certificate, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    return set(value.value) if value is not None else set()


def same_key(certificate, key_path):
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(serialization.Encoding.DER, spki) == key.public_key().public_bytes(
        serialization.Encoding.DER, spki
    )


def assert_domain_credential(server, domain, device_id, cert_path, key_path):
    """cert_path is the device's active domain credential: it verifies, is named after the device
    (nothing else in the subject, no SANs), is for client authentication with the device's key, and the
    REST API shows the device onboarded with it. Returns the certificate."""
    assert_verifies(domain, cert_path)
    certificate = load_pem(cert_path)[0]
    record = server.device(device_id)
    assert certificate.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, record["name"])])
    assert eku_of(certificate) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert sans_of(certificate) == set()
    assert same_key(certificate, key_path)
    assert record["status"] == "onboarded", record
    credential = record["credential"]
    assert credential["serial_number"] == serial_hex(certificate)
    assert credential["fingerprint_sha256"] == certificate.fingerprint(hashes.SHA256()).hex()
    assert credential["status"] == "active"
    return certificate


def cert_path_in(workdir, stem):
    return workdir / ("%s.pem" % stem)


# --- ir with a shared secret ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", CONFIRM)
def test_ir_shared_secret(server, domain, workdir, mode):
    """ir protected with PBM (-ref/-secret) at the RFC 9483 path onboards the device with a domain
    credential, with implicit confirmation or an explicit certConf."""
    device, secret = server.create_device(domain.name)
    key = new_key_file(workdir / "new.key")
    cert = cert_path_in(workdir, "new")
    returncode, output = run_cmp(
        "-cmd", "ir", "-server", domain.url("initialization"), "-ref", device["id"], "-secret", "pass:" + secret,
        "-subject", DOMAIN_SUBJECT, "-newkey", key, "-certout", cert, *confirm_args(mode), cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert_confirm_exchange(output, mode)
    assert_domain_credential(server, domain, device["id"], cert, key)
    assert [row[1:3] for row in certificates_of(server, device["id"])] == [("domain_credential", "active")]


@pytest.mark.parametrize(
    ("digest", "mac", "owf_oid", "mac_oid"),
    [
        ("sha256", "hmac-sha1", "2.16.840.1.101.3.4.2.1", "1.3.6.1.5.5.8.1.2"),
        ("sha512", "hmacWithSHA256", SHA512, HMAC_SHA256),
        ("sha256", "hmacWithSHA512", "2.16.840.1.101.3.4.2.1", HMAC_SHA512),
    ],
)
def test_ir_pbm_algorithms(server, domain, workdir, digest, mac, owf_oid, mac_oid):
    """PBM with OpenSSL's default and RFC 9481 algorithms (-digest, -mac): the ip is protected with
    the request's one-way function, MAC, iteration count and salt (RFC 4210 5.1.3.1: constant through the
    transaction, one key derivation for both)."""
    device, secret = server.create_device(domain.name)
    key = new_key_file(workdir / "new.key")
    returncode, output = run_cmp(
        "-cmd", "ir", "-server", domain.url("initialization"), "-ref", device["id"], "-secret", "pass:" + secret,
        "-digest", digest, "-mac", mac, "-subject", DOMAIN_SUBJECT, "-newkey", key,
        "-certout", cert_path_in(workdir, "new"), "-implicit_confirm",
        "-reqout", workdir / "ir.der", "-rspout", workdir / "ip.der", cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    request, response = (CmpMessage.decode((workdir / name).read_bytes()) for name in ("ir.der", "ip.der"))
    assert response.protection_alg == PBM_OID
    sent, _rest = decoder.decode(request.protection_params, asn1Spec=rfc4210.PBMParameter())
    got, _rest = decoder.decode(response.protection_params, asn1Spec=rfc4210.PBMParameter())
    assert (str(got["owf"]["algorithm"]), str(got["mac"]["algorithm"])) == (owf_oid, mac_oid)
    assert int(got["iterationCount"]) == int(sent["iterationCount"])
    assert bytes(got["salt"]) == bytes(sent["salt"])
    assert server.device(device["id"])["status"] == "onboarded"


# --- ir with an IDevID ------------------------------------------------------------------------------


# variant -> how the device is known (pre-registered or created by the registration), what the IDevID
# carries (subject serialNumber, SAN URI, key type), which identifier the pattern matches, and the
# manufacturer's PKI.
IDEVID_VARIANTS = {
    # A pre-registered cmp_idevid device found by the IDevID's serialNumber; the registration would
    # create devices, but must use the registered one.
    "preregistered-serial": {"preregister": True, "auto_create": True, "serial": True, "uri": True, "match": "serial"},
    # No device for it yet (another device of the domain is): the registration creates it.
    "auto-created-serial": {"preregister": False, "auto_create": True, "serial": True, "uri": True, "match": "serial"},
    # No device yet and no serialNumber: the pattern matches a SAN URI.
    "auto-created-san-uri": {"preregister": False, "auto_create": True, "serial": False, "uri": True, "match": "uri"},
    # An 802.1AR-style IDevID identified by its subject serialNumber alone (no SAN, no EKU).
    "serial-without-san": {"preregister": True, "auto_create": False, "serial": True, "uri": False, "match": "serial"},
    # IDevID below a manufacturer intermediate CA; the truststore holds the root, -extracerts the chain.
    "intermediate-ca": {
        "preregister": True, "auto_create": False, "serial": True, "uri": True, "match": "serial", "intermediate": True,
    },
    # RSA manufacturer CA and RSA IDevID (PKCS#1 v1.5 protection).
    "rsa": {"preregister": True, "auto_create": False, "serial": True, "uri": True, "match": "serial", "key": "rsa"},
}  # fmt: skip


def setup_idevid(server, domain, variant):
    """(IDevID, device expected to onboard: its id or None when the registration creates it) for a
    variant; the domain also holds another pre-registered cmp_idevid device."""
    spec = IDEVID_VARIANTS[variant]
    serial = new_serial()
    uri = "urn:example:idevid:%s" % serial.lower()
    pattern = re.escape(serial) if spec["match"] == "serial" else r"urn:example:idevid:sn-[0-9a-f]{12}"
    key_kind = spec.get("key", "ec")
    root = make_ca("Manufacturer Root %s" % serial, key_kind=key_kind)
    issuer = make_ca("Manufacturer Intermediate %s" % serial, issuer=root) if spec.get("intermediate") else root
    admit_manufacturer(server, domain, pattern, auto_create=spec["auto_create"], manufacturer=root)
    idevid = make_end_entity(
        issuer,
        "sensor-%s" % serial.lower(),
        serial_number=serial if spec["serial"] else None,
        san_uris=[uri] if spec["uri"] else (),
        key_kind=key_kind,
    )
    register_device(server, domain.name, "cmp_idevid", new_serial())
    device_id = None
    if spec["preregister"]:
        device_id = register_device(server, domain.name, "cmp_idevid", serial)[0]["id"]
    return idevid, device_id


def domain_devices(server, domain):
    status, listing = server.api("GET", "/devices?domain=%s" % domain.name)
    assert status == 200, listing
    return listing


@pytest.mark.parametrize("mode", CONFIRM)
@pytest.mark.parametrize("variant", list(IDEVID_VARIANTS))
def test_ir_idevid(server, domain, workdir, variant, mode):
    """ir signed with an IDevID (-cert/-key, -extracerts its chain, -trusted the domain root) that a
    DevID registration admits onboards the device: pre-registered by serial number, or created by the
    registration with onboarding_method cmp_idevid and the IDevID's serial number."""
    idevid, device_id = setup_idevid(server, domain, variant)
    known = domain_devices(server, domain)
    key = new_key_file(workdir / "new.key")
    cert = cert_path_in(workdir, "new")
    returncode, output = run_cmp(
        "-cmd", "ir", "-server", domain.url("initialization"), *idevid_args(idevid, workdir, domain),
        "-subject", DOMAIN_SUBJECT, "-newkey", key, "-certout", cert, *confirm_args(mode), cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert_confirm_exchange(output, mode)
    devices = domain_devices(server, domain)
    if device_id is None:
        [record] = [d for d in devices if d["id"] not in {k["id"] for k in known}]
        assert record["name"] == common_name_of(idevid.certificate)
    else:
        assert len(devices) == len(known)
        record = server.device(device_id)
    assert record["onboarding_method"] == "cmp_idevid"
    serial_numbers = idevid.certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    assert record["serial_number"] == (serial_numbers[0].value if serial_numbers else None)
    assert_domain_credential(server, domain, record["id"], cert, key)


# --- cr --------------------------------------------------------------------------------------------------


CR_PROFILES = {
    "tls_client": {
        "subject": "/CN=client.example",
        "sans": "client.example urn:example:client",
        "expected_sans": {x509.DNSName("client.example"), x509.UniformResourceIdentifier("urn:example:client")},
        "purpose": "sslclient",
        "eku": ExtendedKeyUsageOID.CLIENT_AUTH,
    },
    "tls_server": {
        "subject": "/CN=web.example",
        "sans": "web.example 127.0.0.1",
        "expected_sans": {x509.DNSName("web.example"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))},
        "purpose": "sslserver",
        "eku": ExtendedKeyUsageOID.SERVER_AUTH,
    },
}


@pytest.mark.parametrize("mode", CONFIRM)
@pytest.mark.parametrize("profile", list(CR_PROFILES))
def test_cr(server, domain, onboarded, workdir, profile, mode):
    """cr signed with the domain credential at /p/<domain>~<profile>/certification issues an
    application certificate of that profile (requested subject, SANs, the profile's EKU) and leaves
    the device's domain credential as it is."""
    spec = CR_PROFILES[profile]
    before = server.device(onboarded.id)["credential"]
    key = new_key_file(workdir / "app.key")
    cert = cert_path_in(workdir, "app")
    returncode, output = run_cmp(
        "-cmd", "cr", "-server", domain.url("certification", profile), *onboarded.signer_args(domain),
        "-subject", spec["subject"], "-sans", spec["sans"], "-newkey", key, "-certout", cert,
        *confirm_args(mode), cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert_confirm_exchange(output, mode, "CP")
    assert_verifies(domain, cert, spec["purpose"])
    certificate = load_pem(cert)[0]
    assert common_name_of(certificate) == spec["subject"][4:]
    assert eku_of(certificate) == [spec["eku"]]
    assert sans_of(certificate) == spec["expected_sans"]
    assert same_key(certificate, key)
    assert certificate_status(server, certificate) == ("active", None)
    assert server.device(onboarded.id)["credential"] == before
    assert [row[1] for row in certificates_of(server, onboarded.id)] == ["domain_credential", profile]


# --- kur -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", CONFIRM)
@pytest.mark.parametrize("target", ["domain_credential", "tls_server"])
def test_kur(server, domain, onboarded, workdir, target, mode):
    """kur signed with the certificate it updates (-cert/-key, new -newkey) issues a certificate with
    the same subject and SANs for the new key; once confirmed the old one is superseded: when its grace period
    ends it is revoked as superseded and listed so on the CRL; a domain credential update becomes the device's
    credential."""
    old = onboarded
    if target == "tls_server":
        old = enroll_application(domain, onboarded, "tls_server", "srv", "/CN=web.example", "web.example 127.0.0.1")
    key = new_key_file(workdir / "updated.key")
    cert = cert_path_in(workdir, "updated")
    returncode, output = run_cmp(
        "-cmd", "kur", "-server", domain.url("keyupdate"), *old.signer_args(domain), "-newkey", key,
        "-certout", cert, *confirm_args(mode), cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert_confirm_exchange(output, mode, "KUP")
    updated, previous = load_pem(cert)[0], old.certificate
    assert_verifies(domain, cert, "sslclient" if target == "domain_credential" else "sslserver")
    assert updated.subject == previous.subject
    assert sans_of(updated) == sans_of(previous)
    assert eku_of(updated) == eku_of(previous)
    assert same_key(updated, key)
    assert not same_key(updated, old.key_path)
    # The old certificate still renews (nothing else) until the new one is used or its grace period ends.
    assert certificate_status(server, previous) == ("active", None)
    assert certificate_status(server, updated) == ("active", None)
    end_renewal_grace(server, previous)
    # CRL requests look for ended windows at most every 30 s per worker; the operator's listing at once.
    assert server.api("GET", "/devices/%d/certificates" % onboarded.id)[0] == 200
    entry = fetch_crl(updated).get_revoked_certificate_by_serial_number(previous.serial_number)
    assert certificate_status(server, previous) == ("revoked", "superseded")
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.superseded
    credential = server.device(onboarded.id)["credential"]
    expected = updated if target == "domain_credential" else onboarded.certificate
    assert credential["serial_number"] == serial_hex(expected)
    assert credential["status"] == "active"


# --- p10cr -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", CONFIRM)
@pytest.mark.parametrize("auth", ["domain-credential", "shared-secret"])
def test_p10cr(server, domain, workdir, auth, mode):
    """p10cr: signed with the domain credential it issues an application certificate (tls_client) with
    the CSR's subject; protected with a device's shared secret it onboards the device with a domain
    credential named after the device. The cp carries certReqId -1."""
    key = new_key_file(workdir / "p10.key")
    csr = workdir / "p10.csr"
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=p10.example", "-out", str(csr))
    if auth == "domain-credential":
        enrolled = enroll_with_secret(server, domain)
        device, protection = enrolled.device, enrolled.signer_args(domain)
    else:
        device, secret = server.create_device(domain.name)
        protection = ["-ref", device["id"], "-secret", "pass:" + secret]
    cert = cert_path_in(workdir, "p10")
    returncode, output = run_cmp(
        "-cmd", "p10cr", "-server", domain.url("pkcs10"), *protection, "-csr", csr, "-certout", cert,
        "-rspout", ",".join(str(workdir / n) for n in ("cp.der", "pkiconf.der")), *confirm_args(mode), cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert_confirm_exchange(output, mode, "CP")
    [response], _ca_pubs = cert_responses(CmpMessage.decode((workdir / "cp.der").read_bytes()))
    assert response.cert_req_id == -1
    if auth == "shared-secret":
        assert_domain_credential(server, domain, device["id"], cert, key)
        return
    assert_verifies(domain, cert)
    certificate = load_pem(cert)[0]
    assert common_name_of(certificate) == "p10.example"
    assert eku_of(certificate) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert certificate_status(server, certificate) == ("active", None)
    assert [row[1] for row in certificates_of(server, device["id"])] == ["domain_credential", "tls_client"]


# --- rr --------------------------------------------------------------------------------------------------


def assert_crl_revokes(domain, workdir, certificate, cert_path, reason):
    """The CRL at the certificate's distribution point lists it with reason, and `openssl verify
    -crl_check` with that CRL refuses the certificate as revoked."""
    crl = fetch_crl(certificate)
    assert crl.is_signature_valid(domain.issuing.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
    assert entry is not None, "serial %s is not on the CRL" % serial_hex(certificate)
    reasons = [e.value.reason for e in entry.extensions if isinstance(e.value, x509.CRLReason)]
    # RFC 5280 5.3.1: the reason code unspecified is not encoded.
    assert reasons == ([] if reason == "unspecified" else [REASON_FLAGS[reason]])
    crl_path = workdir / "crl.pem"
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    result = openssl_verify(domain.root_path, cert_path, untrusted=domain.issuing_path, crl=crl_path)
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr


def assert_crl_accepts(domain, workdir, certificate, cert_path):
    """Control: before revocation, `openssl verify -crl_check` with the current CRL accepts it."""
    crl_path = workdir / "crl-before.pem"
    crl_path.write_bytes(fetch_crl(certificate).public_bytes(serialization.Encoding.PEM))
    result = openssl_verify(domain.root_path, cert_path, untrusted=domain.issuing_path, crl=crl_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("revreason", sorted(REASONS))
def test_rr_application_certificate(server, domain, onboarded, workdir, revreason):
    """rr signed with the domain credential (-oldcert, -revreason) revokes an application certificate of
    the device with that reason; the CRL lists it; the domain credential stays active. Without a reason
    (-revreason -1, OpenSSL's default, sends no crlEntryDetails) the rr is refused: RFC 9483 4.2 asks for
    exactly one CRLReason (0 for unspecified)."""
    app = enroll_application(domain, onboarded, "tls_client", "app")
    certificate = app.certificate
    assert_crl_accepts(domain, workdir, certificate, app.cert_path)
    returncode, output = run_cmp(
        "-cmd", "rr", "-server", domain.url("revocation"), *onboarded.signer_args(domain),
        "-oldcert", app.cert_path, "-revreason", revreason, cwd=workdir,
    )  # fmt: skip
    if revreason == -1:
        assert_rejected(returncode, output, "badRequest")
        assert "-revreason 0 for unspecified" in output, output
        assert certificate_status(server, certificate) == ("active", None)
        return
    assert_cmp_ok(returncode, output)
    assert "received RP" in output and "revocation accepted" in output, output
    reason = REASONS[revreason]
    assert certificate_status(server, certificate) == ("revoked", reason)
    assert_crl_revokes(domain, workdir, certificate, app.cert_path, reason)
    record = server.device(onboarded.id)
    assert record["status"] == "onboarded"
    assert record["credential"]["status"] == "active"


def test_rr_own_domain_credential(server, domain, onboarded, workdir):
    """rr of the domain credential signed with itself revokes it (cessationOfOperation); the device is
    pending again and the CRL lists the credential."""
    certificate = onboarded.certificate
    returncode, output = run_cmp(
        "-cmd", "rr", "-server", domain.url("revocation"), *onboarded.signer_args(domain),
        "-oldcert", onboarded.cert_path, "-revreason", "5", cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert "revocation accepted" in output, output
    assert certificate_status(server, certificate) == ("revoked", "cessationOfOperation")
    record = server.device(onboarded.id)
    assert record["status"] == "pending"
    assert record["credential"]["status"] == "revoked"
    assert_crl_revokes(domain, workdir, certificate, onboarded.cert_path, "cessationOfOperation")


# --- genm ------------------------------------------------------------------------------------------------


def _sequence_of(der):
    """The raw elements of a DER SEQUENCE OF."""
    value, rest = decoder.decode(der)
    assert not rest
    return [encoder.encode(item) for item in value]


def check_ca_certs(value, domain, device_name):
    assert [x509.load_der_x509_certificate(der) for der in _sequence_of(value)] == [domain.issuing, domain.root]


def check_cert_req_template(value, domain, device_name):
    content, rest = decoder.decode(value, asn1Spec=rfc9480.CertReqTemplateContent())
    assert not rest
    template = content["certTemplate"]
    subject = template.getComponentByName("subject", instantiate=False)
    if device_name is None:
        assert subject is univ.noValue or not subject.isValue
    else:
        name = x509.Name.from_rfc4514_string("CN=%s" % device_name)
        assert encoder.encode(subject["rdnSequence"]) == name.public_bytes()
    # A strict decoder of RFC 9480 (its open-type map) reads every control: algId for the curves, rsaKeyLen
    # for the RSA key lengths the domain credential profile certifies.
    strict, rest = decoder.decode(value, asn1Spec=rfc9480.CertReqTemplateValue(), decodeOpenTypes=True)
    assert not rest
    controls = [(str(spec["type"]), spec["value"]) for spec in strict["keySpec"]]
    algorithms = [value for oid, value in controls if oid == ID_REGCTRL_ALG_ID]
    curves = [str(decoder.decode(encoder.encode(a["parameters"]))[0]) for a in algorithms]
    assert curves == ["1.2.840.10045.3.1.7", "1.3.132.0.34"]
    assert [int(v) for oid, v in controls if oid == ID_REGCTRL_RSA_KEY_LEN] == [2048, 3072, 4096]


def check_sign_key_pair_types(value, domain, device_name):
    oids = {
        str(decoder.decode(der, asn1Spec=rfc5280.AlgorithmIdentifier())[0]["algorithm"]) for der in _sequence_of(value)
    }
    assert {EC_PUBLIC_KEY, RSA_ENCRYPTION} <= oids


GENM_INFO_TYPES = {
    "caCerts": ("getcacerts", ID_IT_CA_CERTS, check_ca_certs),
    "certReqTemplate": ("getcertreqtemplate", ID_IT_CERT_REQ_TEMPLATE, check_cert_req_template),
    "signKeyPairTypes": ("getcacerts", ID_IT_SIGN_KEY_PAIR_TYPES_RFC, check_sign_key_pair_types),
}


@pytest.mark.parametrize("auth", ["signature", "shared-secret", "unprotected"])
@pytest.mark.parametrize("infotype", list(GENM_INFO_TYPES))
def test_genm(server, domain, workdir, infotype, auth):
    """genm -infotype answered with a genp holding exactly that info type: caCerts = issuing CA and
    root; certReqTemplate with the device's name as subject when the requester is known;
    signKeyPairTypes with the EC and RSA key types. Signed, PBM-protected and unprotected requests."""
    operation, oid, check = GENM_INFO_TYPES[infotype]
    device_name = None
    if auth == "signature":
        enrolled = enroll_with_secret(server, domain)
        protection, device_name = enrolled.signer_args(domain), enrolled.device["name"]
    elif auth == "shared-secret":
        device, secret = server.create_device(domain.name)
        protection, device_name = ["-ref", device["id"], "-secret", "pass:" + secret], device["name"]
    else:
        protection = ["-unprotected_requests", "-subject", "/CN=anonymous", "-trusted", domain.root_path]
    returncode, output = run_cmp(
        "-cmd", "genm", "-server", domain.url(operation), *protection, "-infotype", infotype,
        "-rspout", workdir / "genp.der", cwd=workdir,
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert "received GENP" in output, output
    genp = CmpMessage.decode((workdir / "genp.der").read_bytes())
    values = genp_values(genp)
    assert list(values) == [oid]
    check(values[oid], domain, device_name)


# --- what OpenSSL 3.0 cannot send: the core's builders ---------------------------------------------------


def test_genm_root_ca_cert_with_core(server, domain):
    """genm rootCaCert (RFC 9483 4.3.2) at getrootupdate: genp rootCaKeyUpdate without a value (no root
    update pending)."""
    header, der = unprotected(genm_body(ID_IT_ROOT_CA_CERT))
    genp = post_cmp(domain.url("getrootupdate"), der)
    assert genp.body_type == "genp"
    assert genp.recip_nonce == header.sender_nonce
    assert genp_values(genp) == {ID_IT_ROOT_CA_KEY_UPDATE: None}
    verify_signature(genp, domain.issuing)


def test_genm_crl_status_list_with_core(server, domain, onboarded):
    """genm crlStatusList (RFC 9483 4.3.4) at getcrls, one source per request as common clients send it:
    genp crls with exactly the CRL of the CA named (issuing CA by the credential's distribution point, root
    by issuer name), signed by it."""
    for source, ca in ((crl_url_of(onboarded.certificate), domain.issuing), (domain.root.subject, domain.root)):
        status = (source, None, None) if isinstance(source, str) else (None, source, None)
        value = crl_status_list_value([status])
        body = genm_body(ID_IT_CRL_STATUS_LIST, values={ID_IT_CRL_STATUS_LIST: value})
        _header, der = signed(body, onboarded.credential())
        genp = post_cmp(domain.url("getcrls"), der)
        values = genp_values(genp)
        assert list(values) == [ID_IT_CRLS]
        [crl] = [x509.load_der_x509_crl(item) for item in _sequence_of(values[ID_IT_CRLS])]
        assert crl.issuer == ca.subject
        assert crl.is_signature_valid(ca.public_key())


def cert_conf_with_hash_alg(certificate, hash_oid):
    """certConf (pvno 3) whose certHash uses hashAlg hash_oid (RFC 9480 2.10)."""
    body_type, content = cert_conf_body(cert_hash(certificate, hash_oid))
    content[0]["hashAlg"]["algorithm"] = univ.ObjectIdentifier(hash_oid)
    return body_type, content


@pytest.mark.parametrize("auth", ["shared-secret", "domain-credential"])
def test_pvno3_with_cert_conf_hash_alg(server, domain, auth):
    """pvno 3 requests (ir with PBM, cr signed with the domain credential) are answered with pvno 3,
    and a pvno 3 certConf whose certHash uses hashAlg SHA-512 (not the certificate's SHA-256) confirms
    the certificate."""
    key = new_private_key()
    if auth == "shared-secret":
        device, secret = server.create_device(domain.name)
        url = domain.url("initialization")

        def protect(body, header):
            return mac_protected(body, device["id"], secret, header=header)[1]

        body, expected = cert_req_body("ir", key, subject_name()), "ip"
    else:
        enrolled = enroll_with_secret(server, domain)
        device, credential, url = enrolled.device, enrolled.credential(), domain.url("certification", "tls_client")

        def protect(body, header):
            header.sender = credential.certificate.subject  # a signed message names its signer
            return signed(body, credential, header=header)[1]

        body, expected = cert_req_body("cr", key, subject_name("app.example")), "cp"
    header = header_for(pvno=3)
    response = post_cmp(url, protect(body, header))
    assert (response.body_type, response.pvno) == (expected, 3)
    certificate = cert_responses(response)[0][0].certificate
    confirm = header_for(pvno=3, transaction_id=header.transaction_id, recip_nonce=response.sender_nonce)
    reply = post_cmp(url, protect(cert_conf_with_hash_alg(certificate, SHA512), confirm))
    assert (reply.body_type, reply.pvno) == ("pkiconf", 3)
    assert certificate_status(server, certificate) == ("active", None)
    if auth == "shared-secret":
        assert server.device(device["id"])["credential"]["serial_number"] == serial_hex(certificate)


class Pbmac1Defaults(Pbmac1):
    """PBMAC1 whose PBKDF2 parameters leave out the PRF (DEFAULT hmacWithSHA1) and/or keyLength."""

    def __init__(self, secret, omit, **fields):
        super().__init__(secret, **fields)
        self.omit = omit

    def algorithm(self):
        kdf = rfc8018.PBKDF2_params()
        kdf["salt"]["specified"] = self.salt
        kdf["iterationCount"] = self.iterations
        if "keyLength" not in self.omit:
            kdf["keyLength"] = self.key_length
        if "prf" not in self.omit:
            kdf["prf"]["algorithm"] = univ.ObjectIdentifier(self.prf)
        params = rfc8018.PBMAC1_params()
        params["keyDerivationFunc"]["algorithm"] = univ.ObjectIdentifier("1.2.840.113549.1.5.12")
        params["keyDerivationFunc"]["parameters"] = univ.Any(encoder.encode(kdf))
        params["messageAuthScheme"]["algorithm"] = univ.ObjectIdentifier(self.mac)
        return PBMAC1_OID, encoder.encode(params)


PBMAC1_VARIANTS = {
    "sha256": ({"prf": HMAC_SHA256, "mac": HMAC_SHA256}, (), HMAC_SHA256),
    "sha512": ({"prf": HMAC_SHA512, "mac": HMAC_SHA512, "key_length": 64}, (), HMAC_SHA512),
    # PBKDF2's DEFAULT PRF hmacWithSHA1 (RFC 8018 A.2), absent in DER.
    "prf-default": ({"prf": HMAC_SHA1_PKCS5, "mac": HMAC_SHA256}, ("prf",), HMAC_SHA1_PKCS5),
}


@pytest.mark.parametrize("variant", list(PBMAC1_VARIANTS))
def test_pbmac1_ir(server, domain, variant):
    """ir and certConf protected with PBMAC1 (RFC 9481 6.1.2), also with PBKDF2's default PRF: the ip
    and the pkiConf are protected with PBMAC1 too (the parameters of the message they answer), verifiable with the
    device's secret."""
    fields, omit, expected_prf = PBMAC1_VARIANTS[variant]
    device, secret = server.create_device(domain.name)
    kid = str(device["id"]).encode()
    url = domain.url("initialization")
    pbmac1 = Pbmac1Defaults(secret, omit, kid=kid, **fields)
    header, der = mac_protected(cert_req_body("ir", new_private_key(), subject_name()), None, secret, protector=pbmac1)
    ip = post_cmp(url, der)
    assert ip.body_type == "ip", ip.body_type == "error" and error_of(ip)
    assert ip.protection_alg == PBMAC1_OID
    verify_mac(ip, secret.encode())
    params, _rest = decoder.decode(ip.protection_params, asn1Spec=rfc8018.PBMAC1_params())
    kdf, _rest = decoder.decode(bytes(params["keyDerivationFunc"]["parameters"]), asn1Spec=rfc8018.PBKDF2_params())
    assert str(kdf["prf"]["algorithm"]) == expected_prf
    assert str(params["messageAuthScheme"]["algorithm"]) == fields["mac"]
    assert kdf["salt"]["specified"].asOctets() == pbmac1.salt
    certificate = cert_responses(ip)[0][0].certificate
    confirm = header_for(transaction_id=header.transaction_id, recip_nonce=ip.sender_nonce)
    _header, der = mac_protected(cert_conf_body(cert_hash(certificate)), None, secret, confirm, Pbmac1(secret, kid=kid))
    reply = post_cmp(url, der)
    assert reply.body_type == "pkiconf", reply.body_type == "error" and error_of(reply)
    assert reply.protection_alg == PBMAC1_OID
    verify_mac(reply, secret.encode())
    assert server.device(device["id"])["credential"]["serial_number"] == serial_hex(certificate)


class PssProtection(SignatureProtection):
    """RSASSA-PSS with SHA-256 and MGF1-SHA-256 (RFC 4055, RFC 9481 3.1).

    salt_length 32 is RFC 9481's choice and is encoded; 20 is RFC 4055's DEFAULT, which DER omits.
    """

    def __init__(self, private_key, certificate, chain=(), salt_length=32):
        super().__init__(private_key, certificate, chain)
        self.salt_length = salt_length

    def algorithm(self):
        params = rfc4055.RSASSA_PSS_params()
        params["hashAlgorithm"]["algorithm"] = rfc4055.id_sha256
        params["maskGenAlgorithm"]["algorithm"] = rfc4055.id_mgf1
        params["maskGenAlgorithm"]["parameters"] = univ.Any(encoder.encode(rfc4055.sha256Identifier))
        if self.salt_length != 20:
            params["saltLength"] = self.salt_length
        return RSASSA_PSS, encoder.encode(params)

    def protect(self, protected_part):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=self.salt_length)
        return self.private_key.sign(protected_part, pss, hashes.SHA256())


@pytest.mark.parametrize("salt_length", [32, 20], ids=["salt-32", "salt-default-20"])
@pytest.mark.parametrize("request_kind", ["cr-domain-credential", "ir-idevid"])
def test_rsa_pss_signed_requests(server, domain, request_kind, salt_length):
    """Requests protected with RSASSA-PSS (an RSA domain credential's cr, an RSA IDevID's ir) are
    accepted, also when the parameters leave saltLength at its DEFAULT (absent in DER); the answer is
    signed by the domain's issuing CA with its own algorithm."""
    key = new_private_key()
    if request_kind == "cr-domain-credential":
        credential = enroll_with_secret(server, domain, key_kind="rsa").credential()
        url, body, expected = domain.url("certification"), cert_req_body("cr", key, subject_name("pss")), "cp"
    else:
        serial = new_serial()
        manufacturer = make_ca("RSA Manufacturer", key_kind="rsa")
        admit_manufacturer(server, domain, re.escape(serial), manufacturer=manufacturer)
        idevid = make_end_entity(manufacturer, "pss", serial, ["urn:example:%s" % serial], key_kind="rsa")
        credential = Credential(idevid.certificate, idevid.key)
        register_device(server, domain.name, "cmp_idevid", serial)
        url, body, expected = domain.url("initialization"), cert_req_body("ir", key, subject_name()), "ip"
    header = header_for(sender=credential.certificate.subject, implicit_confirm=True)
    protector = PssProtection(credential.key, credential.certificate, credential.chain, salt_length)
    response = post_cmp(url, signed(body, credential, header, protector)[1])
    assert response.body_type == expected, response.body_type == "error" and error_of(response)
    assert response.protection_alg == "1.2.840.10045.4.3.2"  # ecdsa-with-SHA256 of the EC issuing CA
    verify_signature(response, domain.issuing)
    certificate = cert_responses(response)[0][0].certificate
    assert certificate_status(server, certificate) == ("active", None)


@pytest.mark.parametrize("mode", CONFIRM)
def test_ed25519_idevid_ir_with_core(server, domain, mode):
    """ir (and certConf) signed with an Ed25519 IDevID under an ECDSA manufacturer CA onboards the
    pre-registered device."""
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, re.escape(serial), auto_create=False)
    idevid = make_end_entity(manufacturer, "ed", serial, ["urn:example:%s" % serial], key_kind="ed25519")
    device, _secret = register_device(server, domain.name, "cmp_idevid", serial)
    url = domain.url("initialization")
    header = header_for(sender=idevid.certificate.subject, implicit_confirm=mode == "implicit")
    _header, der = signed(cert_req_body("ir", new_private_key(), subject_name()), idevid, header)
    ip = post_cmp(url, der)
    assert ip.body_type == "ip", ip.body_type == "error" and error_of(ip)
    assert ip.implicit_confirm == (mode == "implicit")
    certificate = cert_responses(ip)[0][0].certificate
    if mode == "explicit":
        confirm = header_for(
            sender=idevid.certificate.subject, transaction_id=header.transaction_id, recip_nonce=ip.sender_nonce
        )
        reply = post_cmp(url, signed(cert_conf_body(cert_hash(certificate)), idevid, confirm)[1])
        assert reply.body_type == "pkiconf", reply.body_type == "error" and error_of(reply)
    record = server.device(device["id"])
    assert record["status"] == "onboarded"
    assert record["credential"]["serial_number"] == serial_hex(certificate)
