# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""encode_message and cert_rep_body write DER directly: byte for byte what the pyasn1 encoder wrote.

Two references: the captured OpenSSL messages (tests/fixtures/cmp), rebuilt exactly from their decoded
fields, and the former pyasn1 implementation (kept below as legacy_*), compared over headers, bodies,
protections and extraCerts.
"""

from __future__ import annotations

import datetime
import itertools

import pytest
from conftest import FIXTURES
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4210, rfc5280, rfc9480
from trustpoint_core import cmp_message, keys, profiles
from trustpoint_core import x509 as tp_x509
from trustpoint_core.asn1 import decode, der_children, der_sequence, der_tlv, inner_der
from trustpoint_core.cmp_message import (
    ID_IT_CA_CERTS,
    ID_IT_IMPLICIT_CONFIRM,
    STATUS_ACCEPTED,
    CmpMessage,
    Header,
    cert_conf_body,
    cert_rep_body,
    cert_req_body,
    cert_requests,
    cert_responses,
    certificates_value,
    encode_message,
    error_body,
    genp_body,
    p10cr_body,
    pkiconf_body,
    rp_body,
)
from trustpoint_core.cmp_protection import (
    MAC_HASHES,
    MAX_ITERATIONS,
    OWF_HASHES,
    PBM_OID,
    PasswordBasedMac,
    Pbmac1,
    SignatureProtection,
    verify_mac,
)
from trustpoint_core.errors import CmpFailure
from trustpoint_core.x509 import certificate_der

VECTORS = FIXTURES / "cmp"
SECRET = b"trustpoint-test-secret"
WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


# --- the former implementation, kept as the reference ---------------------------------------------


def legacy_general_name(name):
    general_name = rfc9480.PKIHeader()["sender"].clone()
    rdns = rfc5280.RDNSequence()
    if name is not None:
        rdns = decode(name.public_bytes(), rfc5280.Name())["rdnSequence"]
    general_name["directoryName"]["rdnSequence"] = rdns
    return general_name


def legacy_encode_message(header, body, protector=None, extra_certs=()):
    message = rfc9480.PKIMessage()
    asn1_header = message["header"]
    asn1_header["pvno"] = header.pvno
    asn1_header["sender"] = legacy_general_name(header.sender)
    asn1_header["recipient"] = legacy_general_name(header.recipient)
    when = header.message_time or datetime.datetime.now(datetime.timezone.utc)
    asn1_header["messageTime"] = asn1_header["messageTime"].clone(when.strftime("%Y%m%d%H%M%SZ"))
    if protector is not None:
        algorithm = asn1_header["protectionAlg"]
        oid, params_der = protector.algorithm()
        algorithm["algorithm"] = univ.ObjectIdentifier(oid)
        if params_der is not None:
            algorithm["parameters"] = univ.Any(params_der)
        if protector.kid is not None:
            asn1_header["senderKID"] = asn1_header["senderKID"].clone(protector.kid)
    elif header.sender_kid is not None:
        asn1_header["senderKID"] = asn1_header["senderKID"].clone(header.sender_kid)
    for field, value in (
        ("transactionID", header.transaction_id),
        ("senderNonce", header.sender_nonce),
        ("recipNonce", header.recip_nonce),
    ):
        if value is not None:
            asn1_header[field] = asn1_header[field].clone(value)
    if header.implicit_confirm:
        itav = rfc9480.InfoTypeAndValue()
        itav["infoType"] = univ.ObjectIdentifier(ID_IT_IMPLICIT_CONFIRM)
        itav["infoValue"] = univ.Any(encoder.encode(univ.Null("")))
        asn1_header["generalInfo"].append(itav)
    body_type, content = body
    message["body"][body_type] = content
    if protector is not None:
        protected_part = der_sequence(encoder.encode(message["header"]), encoder.encode(message["body"]))
        message["protection"] = message["protection"].clone(hexValue=protector.protect(protected_part).hex())
    for der in extra_certs:
        message["extraCerts"].append(decode(der, rfc9480.CMPCertificate()))
    return encoder.encode(message)


def legacy_cert_rep_body(body_type, cert_req_id, certificate, ca_pubs=()):
    content = rfc9480.PKIBody()[body_type].clone()
    for ca in ca_pubs:
        content["caPubs"].append(decode(certificate_der(ca), rfc9480.CMPCertificate()))
    response = rfc9480.CertResponse()
    response["certReqId"] = cert_req_id
    status = rfc9480.PKIStatusInfo()
    status["status"] = STATUS_ACCEPTED
    response["status"] = status
    target = response["certifiedKeyPair"]["certOrEncCert"]["certificate"]
    cert = decode(certificate_der(certificate), rfc9480.CMPCertificate())
    for field in ("tbsCertificate", "signatureAlgorithm", "signature"):
        target[field] = cert[field]
    content["response"].append(response)
    return body_type, content


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return tp_x509.CaChain.create("encoding-test", "ecdsa-p256")


@pytest.fixture(scope="module")
def device_key():
    return keys.generate_private_key("ecdsa-p256")


@pytest.fixture(scope="module")
def certificate(ca, device_key):
    return tp_x509.issue_certificate(
        ca.issuing_cert, ca.issuing_key, device_key.public_key(), tp_x509.common_name("dev"), profiles.DOMAIN_CREDENTIAL
    )


def _rdn(*attributes):
    return x509.RelativeDistinguishedName([x509.NameAttribute(oid, value) for oid, value in attributes])


NAMES = {
    "null-dn": None,
    "cn": tp_x509.common_name("device-1"),
    "several": tp_x509.parse_name("/C=DE/O=Trustpoint/OU=Lab/CN=dev1"),
    "unicode": tp_x509.common_name("gerät-ß-漢字"),
    # A multi-valued RDN: the SET OF must be sorted the same way by cryptography and pyasn1.
    "multi-valued": x509.Name(
        [
            _rdn((NameOID.ORGANIZATION_NAME, "zzzzzzzzzz"), (NameOID.COMMON_NAME, "a"), (NameOID.SERIAL_NUMBER, "12")),
            _rdn((NameOID.COUNTRY_NAME, "DE")),
        ]
    ),
    "long": tp_x509.common_name("x" * 60),
}


def _signature_protectors(ca):
    # Deterministic signatures only (Ed25519, RSA PKCS#1 v1.5): both encoders must sign the same bytes.
    protectors = {}
    for name, key in (
        ("ed25519", ed25519.Ed25519PrivateKey.generate()),
        ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ):
        cert = (
            x509.CertificateBuilder()
            .subject_name(tp_x509.common_name(name))
            .issuer_name(ca.issuing_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(WHEN)
            .not_valid_after(WHEN + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca.issuing_key, keys.hash_for(ca.issuing_key))
        )
        protectors[name] = SignatureProtection(key, cert, [ca.issuing_cert])
    return protectors


@pytest.fixture(scope="module")
def protectors(ca):
    return {
        "none": None,
        "pbm": PasswordBasedMac(SECRET, salt=b"s" * 16, iterations=500, kid=b"42"),
        "pbm-no-kid": PasswordBasedMac(SECRET, salt=b"t" * 16, iterations=3),
        "pbmac1": Pbmac1(SECRET, salt=b"u" * 16, iterations=100, kid=b"7"),
        **_signature_protectors(ca),
    }


def _headers():
    headers = []
    for pvno, sender, recipient, implicit, recip_nonce, sender_kid in itertools.product(
        (2, 3),
        ("null-dn", "several", "multi-valued"),
        ("null-dn", "cn", "unicode"),
        (False, True),
        (None, b"r" * 16),
        (None, b"k1"),
    ):
        headers.append(
            Header(
                pvno=pvno,
                sender=NAMES[sender],
                recipient=NAMES[recipient],
                transaction_id=b"t" * 16,
                sender_nonce=b"n" * 16,
                recip_nonce=recip_nonce,
                sender_kid=sender_kid,
                implicit_confirm=implicit,
                message_time=WHEN,
            )
        )
    return headers


HEADERS = _headers()


# --- the captured OpenSSL messages, rebuilt --------------------------------------------------------


class _Replay:
    """The protection a captured message carries (signatures cannot be made again without the key)."""

    def __init__(self, message):
        self.message = message
        self.kid = message.sender_kid

    def algorithm(self):
        return self.message.protection_alg, self.message.protection_params

    def protect(self, protected_part):
        assert protected_part == self.message.protected_part
        return self.message.protection


@pytest.mark.parametrize("name", sorted(path.name for path in VECTORS.glob("*.der")))
def test_rebuild_captured_message(name):
    """Every captured OpenSSL message comes out of encode_message byte for byte from its decoded fields.

    An accepted ip/cp goes through cert_rep_body; PBM is computed again with the shared secret.
    """
    der = (VECTORS / name).read_bytes()
    message = CmpMessage.decode(der)
    header = Header(
        pvno=message.pvno,
        sender=message.sender,
        recipient=message.recipient,
        transaction_id=message.transaction_id,
        sender_nonce=message.sender_nonce,
        recip_nonce=message.recip_nonce,
        implicit_confirm=message.implicit_confirm,
        message_time=message.message_time,
    )
    body = (message.body_type, message.body)
    if message.body_type in ("ip", "cp"):
        (response,), ca_pubs = cert_responses(message)
        if response.status == STATUS_ACCEPTED:
            body = cert_rep_body(message.body_type, response.cert_req_id, response.certificate, ca_pubs)
            assert isinstance(body[1], bytes)
    if message.protection_alg == PBM_OID:
        protector = PasswordBasedMac.from_parameters(message.protection_params, SECRET, kid=message.sender_kid)
    else:
        protector = _Replay(message)
    assert encode_message(header, body, protector, extra_certs=message.extra_certs) == der


# --- against the former encoder --------------------------------------------------------------------


@pytest.mark.parametrize("header", HEADERS, ids=range(len(HEADERS)))
def test_header_matches_legacy_encoder(header):
    """Every header variant (pvno, names, implicit confirm, recipNonce, senderKID) encodes as before."""
    body = pkiconf_body()
    assert encode_message(header, body) == legacy_encode_message(header, body)


@pytest.mark.parametrize("protector_name", ["none", "pbm", "pbm-no-kid", "pbmac1", "ed25519", "rsa"])
@pytest.mark.parametrize("with_chain", [False, True])
def test_protection_and_extra_certs_match_legacy_encoder(protectors, protector_name, with_chain, ca, certificate):
    protector = protectors[protector_name]
    extra = [certificate_der(c) for c in ca.chain] if with_chain else []
    if isinstance(protector, SignatureProtection):
        extra = [certificate_der(c) for c in protector.extra_certificates]
    for header in HEADERS[::7]:
        for new_body, old_body in (
            (pkiconf_body(), pkiconf_body()),
            (
                cert_rep_body("ip", 0, certificate, [ca.root_cert]),
                legacy_cert_rep_body("ip", 0, certificate, [ca.root_cert]),
            ),
        ):
            assert encode_message(header, new_body, protector, extra) == legacy_encode_message(
                header, old_body, protector, extra
            )


@pytest.mark.parametrize("body_type", ["ip", "cp", "kup"])
@pytest.mark.parametrize("cert_req_id", [0, -1, 1, 127, 128, 255, 256, -127, -129, -255, -257, 2**31, -(2**40) + 1])
@pytest.mark.parametrize("with_ca_pubs", [False, True])
def test_cert_rep_body_matches_legacy_encoder(body_type, cert_req_id, with_ca_pubs, ca, certificate):
    ca_pubs = [ca.root_cert, ca.issuing_cert] if with_ca_pubs else []
    header = HEADERS[5]
    protector = PasswordBasedMac(SECRET, salt=b"s" * 16, iterations=10, kid=b"1")
    new = encode_message(header, cert_rep_body(body_type, cert_req_id, certificate, ca_pubs), protector)
    old = encode_message(header, legacy_cert_rep_body(body_type, cert_req_id, certificate, ca_pubs), protector)
    assert (
        new
        == old
        == legacy_encode_message(header, legacy_cert_rep_body(body_type, cert_req_id, certificate, ca_pubs), protector)
    )
    message = CmpMessage.decode(new)
    assert message.body_type == body_type
    verify_mac(message, SECRET)
    (response,), read_ca_pubs = cert_responses(message)
    assert (response.cert_req_id, response.status, response.certificate) == (cert_req_id, STATUS_ACCEPTED, certificate)
    assert read_ca_pubs == ca_pubs


def test_pyasn1_bodies_match_legacy_encoder(ca, certificate, device_key):
    """The bodies still built with pyasn1 are encoded once, to the same bytes as before."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(tp_x509.common_name("dev"))
        .sign(device_key, keys.hash_for(device_key))
    )
    bodies = [
        error_body(("badPOP", "badRequest"), "no"),
        error_body(("duplicateCertReq",), "x" * 300),
        pkiconf_body(),
        cert_conf_body(b"h" * 32),
        cert_conf_body(b"h" * 32, accepted=False, text="wrong", fail_info=("badCertTemplate",)),
        cert_req_body("ir", device_key, tp_x509.common_name("dev")),
        cert_req_body("kur", device_key, old_certificate=certificate),
        p10cr_body(csr),
        rp_body(STATUS_ACCEPTED, certificate=certificate),
        rp_body(2, ("badCertId",), "unknown"),
        genp_body([(ID_IT_CA_CERTS, certificates_value(ca.chain)), (cmp_message.ID_IT_ROOT_CA_KEY_UPDATE, None)]),
    ]
    protector = PasswordBasedMac(SECRET, salt=b"s" * 16, iterations=10, kid=b"1")
    for header in HEADERS[::11]:
        for body in bodies:
            assert encode_message(header, body, protector) == legacy_encode_message(header, body, protector)


def test_default_message_time_is_now():
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    message = CmpMessage.decode(encode_message(Header(transaction_id=b"t" * 16), pkiconf_body()))
    after = datetime.datetime.now(datetime.timezone.utc)
    assert before <= message.message_time <= after


@pytest.mark.parametrize("cert_req_id", [-128, -32768, -(2**31)])
def test_cert_req_id_is_minimal_der_where_pyasn1_was_not(cert_req_id, certificate):
    """The one intended difference: pyasn1 pads negative powers of two with a 0xFF byte (-128 as FF 80),
    which is not DER (X.690 8.3.2) and which OpenSSL rejects. The server only ever answers certReqId 0
    or -1 (p10cr); the direct encoding is minimal for every value.
    """
    body_type, new = cert_rep_body("cp", cert_req_id, certificate)
    old = encoder.encode(univ.Integer(cert_req_id))
    minimal = b"\x02" + bytes([len(old) - 3]) + old[3:]
    assert old[2] == 0xFF and old[3] & 0x80
    assert minimal in new and old not in new
    message = CmpMessage.decode(encode_message(Header(transaction_id=b"t" * 16), (body_type, new)))
    (response,), _ca_pubs = cert_responses(message)
    assert response.cert_req_id == cert_req_id


@pytest.mark.parametrize("owf", sorted(OWF_HASHES))
@pytest.mark.parametrize("mac", sorted(MAC_HASHES))
@pytest.mark.parametrize("iterations", [1, 127, 128, 500, 1000, 10000, MAX_ITERATIONS])
def test_pbm_parameters_match_pyasn1(owf, mac, iterations):
    """PasswordBasedMac.algorithm() writes PBMParameter directly: the bytes pyasn1 wrote, and it reads back."""
    pbm = PasswordBasedMac(SECRET, salt=bytes(range(16)), owf=owf, iterations=iterations, mac=mac)
    params = rfc4210.PBMParameter()
    params["salt"] = pbm.salt
    params["owf"]["algorithm"] = univ.ObjectIdentifier(owf)
    params["iterationCount"] = iterations
    params["mac"]["algorithm"] = univ.ObjectIdentifier(mac)
    assert pbm.algorithm() == (PBM_OID, encoder.encode(params))
    again = PasswordBasedMac.from_parameters(pbm.algorithm()[1], SECRET)
    assert (again.salt, again.owf, again.iterations, again.mac) == (pbm.salt, owf, iterations, mac)


def _ir_with_cert_req(ir_der, rewrite):
    """ir_der with its certReq replaced by rewrite(certReq DER); header kept, protection dropped."""
    header, body = der_children(ir_der)[:2]
    (cert_req_msg,) = der_children(inner_der(body))
    cert_req, *rest = der_children(cert_req_msg)
    new_body = der_tlv(0xA0, der_sequence(der_sequence(rewrite(cert_req), *rest)))
    return der_sequence(header, new_body)


@pytest.fixture(scope="module")
def ir_der(device_key):
    header = Header(sender=tp_x509.common_name("dev"), transaction_id=b"t" * 16, message_time=WHEN)
    return encode_message(header, cert_req_body("ir", device_key, tp_x509.common_name("dev")))


def test_pop_is_checked_over_the_received_cert_req(ir_der):
    """cert_requests hands each CertRequest its certReq bytes as received; the POP verifies over them."""
    message = CmpMessage.decode(ir_der)
    (request,) = cert_requests(message)
    assert request.cert_req_der == encoder.encode(message.body[0]["certReq"])
    request.verify_pop()


def test_pop_over_a_changed_received_cert_req_is_bad_pop(ir_der):
    """One changed byte in the received certReq (the subject's CN) fails both the received-bytes check
    and the check over its DER encoding."""
    changed = _ir_with_cert_req(ir_der, lambda der: der.replace(b"dev", b"dew"))
    (request,) = cert_requests(CmpMessage.decode(changed))
    with pytest.raises(CmpFailure) as info:
        request.verify_pop()
    assert info.value.fail_info == ("badPOP",)


def test_pop_signed_over_der_of_a_non_der_cert_req_verifies(ir_der):
    """A certReq sent in another encoding (certReqId 0 as 02 02 00 00, which pyasn1 reads) whose POP signs
    its DER, as RFC 4211 4.1 says, verifies as it did before: the check falls back to the DER encoding."""

    def widen_cert_req_id(der):
        content = der_children(der)
        assert content[0] == b"\x02\x01\x00"
        return der_sequence(b"\x02\x02\x00\x00", *content[1:])

    message = CmpMessage.decode(_ir_with_cert_req(ir_der, widen_cert_req_id))
    (request,) = cert_requests(message)
    assert request.cert_req_der != encoder.encode(message.body[0]["certReq"])
    request.verify_pop()
