# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""cmp_message against real OpenSSL messages (tests/fixtures/cmp, see its README) and OpenSSL's parsers.

Decoding is checked field by field on every captured vector, encoding by exact round trips, by
`openssl asn1parse` and by the `openssl cmp` client accepting responses built with the core.
"""

from __future__ import annotations

import datetime
import http.server
import threading

import pytest
from conftest import FIXTURES, free_port, openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc5280, rfc9480
from trustpoint_core import cmp_message, keys, profiles
from trustpoint_core import x509 as tp_x509
from trustpoint_core.cmp_message import (
    FAIL_INFO_BITS,
    NONCE_SIZE,
    PVNO_CMP2000,
    PVNO_CMP2021,
    CertRequest,
    CmpMessage,
    Header,
    cert_conf_body,
    cert_hash,
    cert_rep_body,
    cert_req_body,
    cert_requests,
    cert_responses,
    cert_statuses,
    encode_message,
    error_body,
    error_content,
    pkiconf_body,
)
from trustpoint_core.cmp_protection import PasswordBasedMac, verify_mac
from trustpoint_core.errors import CmpFailure

VECTORS = FIXTURES / "cmp"
SECRET = b"trustpoint-test-secret"
REF = b"11"
# One tuple per captured transaction, in wire order.
TRANSACTIONS = (
    ("ir_pbm.der", "ip_pbm.der", "certconf_pbm.der", "pkiconf_pbm.der"),
    ("ir_sha512.der", "ip_sha512.der", "certconf_sha512.der", "pkiconf_sha512.der"),
    ("cr_pbm.der", "cp_pbm.der", "certconf_cr.der", "pkiconf_cr.der"),
    ("p10cr_pbm.der", "cp_p10cr.der", "certconf_p10cr.der", "pkiconf_p10cr.der"),
    ("ir_implicit.der", "ip_implicit.der"),
    ("ir_error.der", "error.der"),
    ("ir_rejected.der", "ip_rejected.der"),
)
ALL = tuple(name for transaction in TRANSACTIONS for name in transaction)
REQUESTS = tuple(transaction[0] for transaction in TRANSACTIONS)
CERT_REQUESTS = tuple(name for name in REQUESTS if not name.startswith("p10cr"))
CERT_CONFS = tuple(name for name in ALL if name.startswith("certconf"))
ISSUED = ("ip_pbm.der", "ip_sha512.der", "ip_implicit.der", "cp_pbm.der", "cp_p10cr.der")
BODY_TYPES = {
    "ir": "ir",
    "ip": "ip",
    "cr": "cr",
    "cp": "cp",
    "p10cr": "p10cr",
    "certconf": "certConf",
    "pkiconf": "pkiconf",
    "error": "error",
}


def raw(name):
    return (VECTORS / name).read_bytes()


def load(name):
    return CmpMessage.decode(raw(name))


def pem(name):
    return x509.load_pem_x509_certificate((VECTORS / name).read_bytes())


def der_length(length):
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def body_end(der):
    """Offset just past the body of a PKIMessage DER (relies on the exact round trip tested below)."""
    asn1, _unused = decoder.decode(der, asn1Spec=rfc9480.PKIMessage())
    header_der, body_der = encoder.encode(asn1["header"]), encoder.encode(asn1["body"])
    return der.index(header_der + body_der) + len(header_der) + len(body_der)


def flip(der, offset, bit=0):
    data = bytearray(der)
    data[offset] ^= 1 << bit
    return bytes(data)


def asn1parse(tmp_path, der):
    path = tmp_path / "message.der"
    path.write_bytes(der)
    return openssl("asn1parse", "-inform", "DER", "-i", "-in", str(path)).stdout


@pytest.fixture(scope="module")
def ca():
    return tp_x509.CaChain.create("cmp-test", "ecdsa-p256")


@pytest.fixture(scope="module")
def device_key():
    return keys.generate_private_key("ecdsa-p256")


def issue(ca, public_key, subject=None):
    return tp_x509.issue_certificate(
        ca.issuing_cert,
        ca.issuing_key,
        public_key,
        subject or tp_x509.common_name("device"),
        profiles.DOMAIN_CREDENTIAL,
    )


# --- decoding the captured vectors -------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_decode_header_fields(name):
    """Every captured message decodes with its body type, pvno 2, 16-byte tid/senderNonce and senderKID '11'."""
    message = load(name)
    assert message.body_type == BODY_TYPES[name.split("_")[0].split(".")[0]]
    assert message.pvno == PVNO_CMP2000
    assert len(message.transaction_id) == NONCE_SIZE
    assert len(message.sender_nonce) == NONCE_SIZE
    assert message.sender_kid == REF
    assert message.protection_alg == "1.2.840.113533.7.66.13"
    assert message.message_time is not None and message.message_time.tzinfo is not None
    assert message.implicit_confirm == name.endswith("_implicit.der")


@pytest.mark.parametrize("transaction", TRANSACTIONS, ids=lambda t: t[0])
def test_transaction_ids_and_nonces_chain(transaction):
    """All messages of a transaction share the tid; each recipNonce is the previous senderNonce, the first has none."""
    messages = [load(name) for name in transaction]
    assert messages[0].recip_nonce is None
    assert {m.transaction_id for m in messages} == {messages[0].transaction_id}
    for previous, current in zip(messages, messages[1:]):
        assert current.recip_nonce == previous.sender_nonce
        assert current.sender_nonce != previous.sender_nonce


@pytest.mark.parametrize("transaction", TRANSACTIONS, ids=lambda t: t[0])
def test_sender_and_recipient_names(transaction):
    """Requests name the -subject as sender (NULL-DN for p10cr); the mock answers from NULL-DN to that sender."""
    subject = pem("device.pem").subject
    expected_sender = None if transaction[0].startswith("p10cr") else subject
    for name in transaction:
        message = load(name)
        if message.body_type in ("ir", "cr", "p10cr", "certConf"):
            assert message.sender == expected_sender, name
            assert message.recipient is None, name
        else:
            assert message.sender is None, name
            assert message.recipient == expected_sender, name


@pytest.mark.parametrize("name", ALL)
def test_extra_certs(name):
    """The mock's ip/cp carry its -rsp_extracerts (issuing CA, then root); other messages carry none."""
    message = load(name)
    if name.startswith(("ip", "cp")):
        assert message.extra_certificates() == [pem("issuing.pem"), pem("root.pem")]
    else:
        assert message.extra_certs == []
        assert message.extra_certificates() == []


@pytest.mark.parametrize("name", ALL)
def test_reencode_round_trip(name):
    """Decoding and re-encoding a captured message gives back the exact bytes."""
    message = load(name)
    assert encoder.encode(message.asn1) == raw(name)


@pytest.mark.parametrize("name", ALL)
def test_protected_part_is_header_and_body(name):
    """protected_part is DER SEQUENCE{header, body} with both exactly as received, nothing else."""
    der = raw(name)
    message = CmpMessage.decode(der)
    asn1, _unused = decoder.decode(der, asn1Spec=rfc9480.PKIMessage())
    content = encoder.encode(asn1["header"]) + encoder.encode(asn1["body"])
    assert message.protected_part == b"\x30" + der_length(len(content)) + content
    assert content in der
    part, rest = decoder.decode(message.protected_part, asn1Spec=rfc9480.ProtectedPart())
    assert rest == b""
    assert encoder.encode(part["header"]) == encoder.encode(asn1["header"])


@pytest.mark.parametrize("name", ISSUED)
def test_cert_responses_return_the_mock_certificate(name):
    """ip/cp answer the request's certReqId (-1 for p10cr) with -rsp_cert; only the ip carries caPubs."""
    responses, ca_pubs = cert_responses(load(name))
    assert len(responses) == 1
    response = responses[0]
    assert response.cert_req_id == (-1 if name == "cp_p10cr.der" else 0)
    assert (response.status, response.fail_info, response.text) == (cmp_message.STATUS_ACCEPTED, (), "")
    assert response.certificate == pem("device.pem")
    assert ca_pubs == ([pem("root.pem")] if name.startswith("ip") else [])


def test_rejected_ip_status():
    """An ip with -pkistatus 2 -failure 9 reads as rejection, badPOP, the status string, no certificate."""
    responses, _unused = cert_responses(load("ip_rejected.der"))
    assert [(r.status, r.fail_info, r.text, r.certificate) for r in responses] == [
        (cmp_message.STATUS_REJECTION, ("badPOP",), "mock rejects the certificate request", None)
    ]


def test_error_body_content():
    """The mock's -send_error body reads as rejection, badRequest and its statusString."""
    message = load("error.der")
    assert message.body_type == "error"
    assert error_content(message) == (cmp_message.STATUS_REJECTION, ("badRequest",), "error processing message")


@pytest.mark.parametrize("transaction", [t for t in TRANSACTIONS if len(t) == 4], ids=lambda t: t[0])
def test_cert_conf_hash_matches_issued_certificate(transaction):
    """OpenSSL's certHash equals cert_hash() of the certificate in the ip/cp, for the answered certReqId."""
    _request_name, response_name, conf_name, _pkiconf_name = transaction
    certificate = cert_responses(load(response_name))[0][0].certificate
    statuses = cert_statuses(load(conf_name))
    assert len(statuses) == 1
    status = statuses[0]
    assert status.cert_hash == cert_hash(certificate)
    assert len(status.cert_hash) == 32  # the certificate is signed with ecdsa-with-SHA256
    assert status.cert_req_id == cert_responses(load(response_name))[0][0].cert_req_id
    assert status.accepted and status.hash_alg is None


@pytest.mark.parametrize("name", CERT_REQUESTS)
def test_cert_requests_read_template_and_verify_pop(name):
    """ir/cr: one request, certReqId 0, the -subject and the -newkey of the device; its POP verifies."""
    requests = cert_requests(load(name))
    assert len(requests) == 1
    request = requests[0]
    device = pem("device.pem")
    assert request.cert_req_id == 0
    assert request.subject == device.subject
    assert keys.same_public_key(request.public_key, device.public_key())
    assert request.not_after is None
    request.verify_pop()


def test_pop_hash_follows_digest_option():
    """-digest sha512 makes OpenSSL sign the POP with ecdsa-with-SHA512, which verifies too."""
    request = cert_requests(load("ir_sha512.der"))[0]
    assert str(request.asn1["popo"]["signature"]["algorithmIdentifier"]["algorithm"]) == "1.2.840.10045.4.3.4"
    request.verify_pop()


@pytest.mark.parametrize("name", CERT_REQUESTS)
def test_pop_with_flipped_signature_bit_is_bad_pop(name):
    """One flipped bit in the captured POP signature (the last byte of the body) gives badPOP."""
    der = raw(name)
    tampered = CmpMessage.decode(flip(der, body_end(der) - 1))
    request = cert_requests(tampered)[0]
    with pytest.raises(CmpFailure) as info:
        request.verify_pop()
    assert info.value.fail_info == ("badPOP",)


def test_pop_over_changed_request_is_bad_pop():
    """A POP signature no longer matches once the signed CertRequest changes (certReqId 0 -> 5)."""
    message = load("ir_pbm.der")
    message.body[0]["certReq"]["certReqId"] = 5
    with pytest.raises(CmpFailure) as info:
        CertRequest(message.body[0]).verify_pop()
    assert info.value.fail_info == ("badPOP",)


def test_pop_with_unknown_algorithm_is_bad_alg():
    """A POP signature algorithm outside RFC 9481's list is badAlg plus badPOP."""
    message = load("ir_pbm.der")
    message.body[0]["popo"]["signature"]["algorithmIdentifier"]["algorithm"] = univ.ObjectIdentifier("1.2.3.4")
    with pytest.raises(CmpFailure) as info:
        CertRequest(message.body[0]).verify_pop()
    assert info.value.fail_info == ("badAlg", "badPOP")


def test_pop_other_than_signature_is_bad_pop():
    """raVerified is not accepted as POP: badPOP."""
    message = load("ir_pbm.der")
    popo = message.body[0]["popo"]
    popo["raVerified"] = popo.componentType["raVerified"].asn1Object.clone("")
    with pytest.raises(CmpFailure) as info:
        CertRequest(message.body[0]).verify_pop()
    assert info.value.fail_info == ("badPOP",)


# --- signature-protected vectors (variant f) ----------------------------------------------------


def ski(certificate):
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


@pytest.mark.parametrize(
    ("name", "signer", "extra"),
    [
        ("ir_signed.der", "device.pem", ["device.pem", "issuing.pem"]),
        ("ip_signed.der", "issuing.pem", ["issuing.pem", "root.pem"]),
    ],
)
def test_decode_signature_protected(name, signer, extra):
    """OpenSSL's signed ir/ip decode: ecdsa-with-SHA256 without parameters, senderKID = signer SKI,
    extraCerts signer first, and the signature verifies over protected_part.

    Core bug if this fails with badDataFormat: CmpMessage.__init__ calls .isValue on the absent
    protectionAlg parameters (pyasn1 noValue), so no signature-protected message can be decoded.
    """
    message = load(name)
    signer_cert = pem(signer)
    assert message.body_type == name.split("_")[0]
    assert message.protection_alg == "1.2.840.10045.4.3.2"
    assert message.protection_params is None
    assert message.sender == signer_cert.subject
    assert message.sender_kid == ski(signer_cert)
    assert message.implicit_confirm
    assert message.extra_certificates() == [pem(n) for n in extra]
    assert encoder.encode(message.asn1) == raw(name)
    assert keys.verify_signature(signer_cert.public_key(), message.protection, message.protected_part, hashes.SHA256())


def test_signed_transaction_nonces():
    """The mock's signed ip echoes the tid and answers the ir's senderNonce."""
    request, response = load("ir_signed.der"), load("ip_signed.der")
    assert response.transaction_id == request.transaction_id
    assert response.recip_nonce == request.sender_nonce


# --- decoding bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30",
        b"\x30\x00",
        b"\x04\x02ab",
        b"not DER at all",
        b"\x30\x80\x00\x00",
    ],
    ids=["empty", "one-byte", "empty-sequence", "octet-string", "text", "indefinite-length"],
)
def test_decode_garbage_is_bad_data_format(data):
    """Input that is not a PKIMessage is CmpFailure badDataFormat."""
    with pytest.raises(CmpFailure) as info:
        CmpMessage.decode(data)
    assert info.value.fail_info == ("badDataFormat",)


@pytest.mark.parametrize("data", [b"\x04\x02ab", b"\x30\x03\x04\x01a"], ids=["octet-string", "sequence"])
def test_decode_error_text_is_short(data):
    """The badDataFormat text of a tiny bad input stays short: it ends up in logs and statusString.

    Core bug if this fails: CmpMessage.decode embeds str(PyAsn1Error), which for a tag mismatch holds
    the repr of the whole PKIMessage schema (3.6 MB and ~80 ms for the 4-byte b"\x04\x02ab").
    """
    with pytest.raises(CmpFailure) as info:
        CmpMessage.decode(data)
    assert len(str(info.value)) < 2000


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\x04\x02ab", "a value tagged [UNIVERSAL 4] where PKIMessage has no place for one"),
        (b"\x30\x06\xa0\x04\x30\x02\x05\x00", "a value tagged [0] where PKIHeader has no place for one"),
        (b"\x30\x05\x30\x03\x02\x01", "the DER ends before its values do"),
    ],
)
def test_decode_errors_speak_of_the_input_not_of_the_library(data, says):
    """The statusString a client reads names what is wrong with its bytes, without pyasn1's class names and
    schema reprs (`PyAsn1Error: <TagSet object, tags 0:0:4> not in asn1Spec: <PKIMessage schema object...`)."""
    with pytest.raises(CmpFailure) as info:
        CmpMessage.decode(data)
    assert str(info.value) == "the request is not a DER PKIMessage: %s (badDataFormat)" % says
    assert "object" not in str(info.value) and "Error" not in str(info.value)


def test_error_texts_look_at_the_start_of_a_message_that_echoes_the_input():
    """pyasn1 echoes some input in its messages (a malformed messageTime): brief() ran its patterns over all of it,
    and `<` * k + `>` * k cost quadratic time (16,000 of each: 4.2 s) before anything was authenticated."""
    from trustpoint_core.asn1 import brief

    echoed = "malformed datetime format " + "<" * 60000 + ">" * 60000
    assert brief(ValueError(echoed)) == "malformed datetime format"
    digits = "<TagSet object, tags " + "1" * 100000
    assert brief(ValueError(digits)) == brief(ValueError(digits[:1000]))  # only the start is looked at
    late = "x" * 1500 + "<TagSet object, tags 0:0:4> not in asn1Spec: <PKIMessage schema object>"
    assert not brief(ValueError(late)).startswith("a value tagged")
    from trustpoint_core.asn1 import der_children, der_sequence, der_tlv

    header, *rest = der_children(raw("ir_pbm.der"))
    unknown = der_sequence(*der_children(header), der_tlv(0xAB, b"\x05\x00"))  # a PKIHeader has no [11]
    with pytest.raises(CmpFailure) as info:
        CmpMessage.decode(der_sequence(unknown, *rest))
    assert str(info.value).endswith("a value tagged [11] where none belongs (badDataFormat)"), str(info.value)


def test_decode_trailing_data_is_bad_data_format():
    """Bytes after a complete PKIMessage are badDataFormat, not silently ignored."""
    with pytest.raises(CmpFailure) as info:
        CmpMessage.decode(raw("ir_pbm.der") + b"\x00")
    assert info.value.fail_info == ("badDataFormat",)


@pytest.mark.parametrize("name", ["ir_pbm.der", "ip_pbm.der"])
def test_decode_truncated_vector_is_bad_data_format(name):
    """A captured message cut short by one byte is badDataFormat."""
    with pytest.raises(CmpFailure) as info:
        CmpMessage.decode(raw(name)[:-1])
    assert info.value.fail_info == ("badDataFormat",)


def test_decode_huge_length_field_is_bad_data_format():
    """An 8-byte DER length >= 2**63 inside the header is badDataFormat (found by test_cmp_fuzz).

    Core bug if this fails: pyasn1 raises OverflowError, which CmpMessage.decode does not catch.
    """
    with pytest.raises(CmpFailure) as info:
        CmpMessage.decode(bytes.fromhex("300c300a0288ffffffffffffffff"))
    assert info.value.fail_info == ("badDataFormat",)


def _with_broken_certificate_version(der, certificate):
    """der with certificate's version INTEGER (v3 = 2) set to 5, which cryptography refuses to load."""
    cert_der = tp_x509.certificate_der(certificate)
    version = bytes.fromhex("a003020102")
    assert cert_der.count(version) >= 1 and der.count(cert_der) >= 1
    broken = cert_der.replace(version, bytes.fromhex("a003020105"), 1)
    return der.replace(cert_der, broken, 1)


def test_unreadable_extra_cert_is_bad_data_format():
    """A certificate in extraCerts that cryptography cannot load is badDataFormat.

    extraCerts are outside the PBM-protected part, so anyone on the path can put one into a valid
    response. Core bug if this fails: extra_certificates() catches ValueError only, and cryptography
    raises x509.InvalidVersion (not a ValueError) for a bad version.
    """
    der = _with_broken_certificate_version(raw("ip_pbm.der"), pem("issuing.pem"))
    message = CmpMessage.decode(der)
    verify_mac(message, SECRET)  # the response is still authentic
    with pytest.raises(CmpFailure) as info:
        message.extra_certificates()
    assert info.value.fail_info == ("badDataFormat",)


def test_unreadable_issued_certificate_is_cmp_failure():
    """An ip whose certificate cannot be loaded raises CmpFailure from cert_responses.

    Core bug if this fails: cert_responses() has no error handling; cryptography's InvalidVersion
    (or ValueError, PyAsn1Error for other damage) escapes to the client.
    """
    der = _with_broken_certificate_version(raw("ip_pbm.der"), pem("device.pem"))
    with pytest.raises(CmpFailure):
        cert_responses(CmpMessage.decode(der))


# --- building messages -----------------------------------------------------------------------------


@pytest.mark.parametrize("pvno", [PVNO_CMP2000, PVNO_CMP2021])
def test_response_header_answers_request(pvno, device_key):
    """Header.response_to echoes tid and pvno, sets recipNonce = request senderNonce, makes a fresh senderNonce."""
    subject = tp_x509.common_name("device")
    request_der = encode_message(
        Header(pvno=pvno, sender=subject, transaction_id=cmp_message.random_nonce()),
        cert_req_body("ir", device_key, subject),
        PasswordBasedMac(SECRET, kid=REF),
    )
    request = CmpMessage.decode(request_der)
    header = Header.response_to(request)
    assert header.pvno == pvno
    assert header.transaction_id == request.transaction_id
    assert header.recip_nonce == request.sender_nonce
    assert header.recipient == subject
    assert len(header.sender_nonce) == NONCE_SIZE
    assert header.sender_nonce not in (request.sender_nonce, Header.response_to(request).sender_nonce)
    response = CmpMessage.decode(encode_message(header, pkiconf_body()))
    assert (response.pvno, response.transaction_id, response.recip_nonce) == (
        pvno,
        request.transaction_id,
        request.sender_nonce,
    )


def test_response_header_to_captured_request():
    """A response header to OpenSSL's ir answers its tid and senderNonce with pvno 2."""
    request = load("ir_pbm.der")
    header = Header.response_to(request, implicit_confirm=True)
    assert (header.pvno, header.transaction_id, header.recip_nonce) == (2, request.transaction_id, request.sender_nonce)
    assert header.sender_nonce != request.sender_nonce
    response = CmpMessage.decode(encode_message(header, pkiconf_body()))
    assert response.implicit_confirm


@pytest.mark.parametrize(
    ("fail_info", "bit_string"),
    [
        (("badAlg",), "03020780"),
        (("badRequest",), "03020520"),
        (("badPOP",), "0303060040"),
        (("badMessageCheck", "badDataFormat"), "03020244"),
        (("badAlg", "badPOP"), "0303068040"),
        (("duplicateCertReq",), "030505" + "000000" + "20"),
    ],
)
def test_fail_info_bit_string_der(fail_info, bit_string, tmp_path):
    """failInfo is a DER named BIT STRING without trailing zero bits, read back to the same names."""
    der = encode_message(Header(transaction_id=b"t" * 16), error_body(fail_info, "text"))
    assert bytes.fromhex(bit_string) in der
    message = CmpMessage.decode(der)
    assert error_content(message) == (cmp_message.STATUS_REJECTION, fail_info, "text")
    assert "BIT STRING" in asn1parse(tmp_path, der)


@pytest.mark.parametrize(("name", "fail_info"), [("error.der", ("badRequest",)), ("ip_rejected.der", ("badPOP",))])
def test_fail_info_encoding_matches_openssl(name, fail_info):
    """Our failInfo encoding is byte for byte what the OpenSSL mock sends for the same bits."""
    ours = encode_message(Header(transaction_id=b"t" * 16), error_body(fail_info, "x"))
    info, _unused = decoder.decode(ours, asn1Spec=rfc9480.PKIMessage())
    bits = encoder.encode(info["body"]["error"]["pKIStatusInfo"]["failInfo"])
    assert bits in raw(name)


def test_fail_info_names_cover_rfc_bits():
    """The bit names are RFC 4210's 27, in order."""
    assert len(FAIL_INFO_BITS) == 27
    assert (FAIL_INFO_BITS[0], FAIL_INFO_BITS[9], FAIL_INFO_BITS[26]) == ("badAlg", "badPOP", "duplicateCertReq")


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "rsa-2048"])
def test_cert_req_body_builds_verifiable_ir(key_type, tmp_path):
    """cert_req_body: OpenSSL parses the ir; it decodes back with subject, key, certReqId 0 and a POP that verifies."""
    key = keys.generate_private_key(key_type)
    subject = tp_x509.parse_name("/CN=dev1/O=Trustpoint")
    der = encode_message(
        Header(sender=subject, transaction_id=cmp_message.random_nonce()),
        cert_req_body("ir", key, subject),
        PasswordBasedMac(SECRET, kid=REF),
    )
    assert "cont [ 0 ]" in asn1parse(tmp_path, der)
    message = CmpMessage.decode(der)
    assert encoder.encode(message.asn1) == der
    verify_mac(message, SECRET)
    (request,) = cert_requests(message)
    assert (request.cert_req_id, request.subject) == (0, subject)
    assert keys.same_public_key(request.public_key, key)
    request.verify_pop()


@pytest.mark.parametrize(
    ("extensions", "text"),
    [
        (["30058703010203"], "iPAddress must be 4 or 16 bytes, not 3"),
        (["3006820461622e63", "3006820461622e63"], "carries extension 2.5.29.17 twice"),
    ],
    ids=["san-ip-3-bytes", "duplicate-san"],
)
def test_template_with_malformed_san_is_bad_cert_template(extensions, text):
    """A certificate template whose subjectAltName has a 3-byte iPAddress, or that carries the
    extension twice: badCertTemplate that says so (not a crash)."""
    body_type, content = cert_req_body("cr", keys.generate_private_key("ecdsa-p256"), tp_x509.parse_name("/CN=a"))
    template = content[0]["certReq"]["certTemplate"]
    for value in extensions:
        extension = rfc5280.Extension()
        extension["extnID"] = univ.ObjectIdentifier("2.5.29.17")
        extension["extnValue"] = bytes.fromhex(value)
        template["extensions"].append(extension)
    der = encode_message(Header(transaction_id=cmp_message.random_nonce()), (body_type, content), None)
    with pytest.raises(CmpFailure) as caught:
        cert_requests(CmpMessage.decode(der))
    assert caught.value.fail_info == ("badCertTemplate",)
    assert text in caught.value.text


@pytest.mark.parametrize("body_type", ["ip", "cp", "kup"])
def test_cert_rep_body_round_trip(body_type, ca, device_key, tmp_path):
    """cert_rep_body: OpenSSL parses it; certificate, certReqId, status and caPubs read back unchanged."""
    certificate = issue(ca, device_key.public_key())
    ca_pubs = [ca.root_cert] if body_type == "ip" else []
    der = encode_message(
        Header(transaction_id=b"t" * 16),
        cert_rep_body(body_type, 0, certificate, ca_pubs),
        PasswordBasedMac(SECRET, kid=REF),
        extra_certs=[tp_x509.certificate_der(c) for c in ca.chain],
    )
    parsed = asn1parse(tmp_path, der)
    assert "ecdsa-with-SHA256" in parsed
    message = CmpMessage.decode(der)
    assert message.body_type == body_type
    verify_mac(message, SECRET)
    responses, read_ca_pubs = cert_responses(message)
    assert [(r.cert_req_id, r.status, r.certificate) for r in responses] == [(0, 0, certificate)]
    assert read_ca_pubs == ca_pubs
    assert message.extra_certificates() == ca.chain


def test_cert_conf_and_pkiconf_bodies(ca, device_key, tmp_path):
    """cert_conf_body (accept and reject) and pkiconf_body parse in OpenSSL and read back."""
    certificate = issue(ca, device_key.public_key())
    digest = cert_hash(certificate)
    accepted = encode_message(Header(transaction_id=b"t" * 16), cert_conf_body(digest))
    rejected = encode_message(
        Header(transaction_id=b"t" * 16),
        cert_conf_body(digest, cert_req_id=0, accepted=False, text="wrong key", fail_info=("badCertTemplate",)),
    )
    confirm = encode_message(Header(transaction_id=b"t" * 16), pkiconf_body())
    for der in (accepted, rejected):
        assert "cont [ 24 ]" in asn1parse(tmp_path, der)
    assert "cont [ 19 ]" in asn1parse(tmp_path, confirm)
    (status,) = cert_statuses(CmpMessage.decode(accepted))
    assert (status.cert_hash, status.cert_req_id, status.accepted) == (digest, 0, True)
    (status,) = cert_statuses(CmpMessage.decode(rejected))
    assert (status.accepted, status.fail_info, status.text) == (False, ("badCertTemplate",), "wrong key")
    assert CmpMessage.decode(confirm).body_type == "pkiconf"


def test_cert_hash_uses_signature_hash():
    """cert_hash: SHA-384 for an ecdsa-with-SHA384 certificate; hashAlg overrides; unknown hashAlg is badAlg."""
    p384 = tp_x509.CaChain.create("p384", "ecdsa-p384").root_cert
    assert len(cert_hash(p384)) == 48
    assert len(cert_hash(p384, "2.16.840.1.101.3.4.2.1")) == 32
    with pytest.raises(CmpFailure) as info:
        cert_hash(p384, "1.2.3")
    assert info.value.fail_info == ("badAlg",)


# --- OpenSSL's client reading our responses -----------------------------------------------------


class _Responder(http.server.BaseHTTPRequestHandler):
    """Answers the `openssl cmp` client with messages built by the core (set on the server object)."""

    protocol_version = "HTTP/1.0"

    def do_POST(self):
        request = CmpMessage.decode(self.rfile.read(int(self.headers["Content-Length"])))
        answer = self.server.answer(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/pkixcmp")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def responder():
    server = http.server.HTTPServer(("127.0.0.1", free_port()), _Responder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def _openssl_ir(responder, tmp_path, key, *extra):
    key_path = tmp_path / "key.pem"
    key_path.write_bytes(keys.private_key_to_pem(key))
    return openssl(
        "cmp",
        "-cmd",
        "ir",
        "-server",
        "127.0.0.1:%d/pkix/" % responder.server_port,
        "-ref",
        REF.decode(),
        "-secret",
        "pass:" + SECRET.decode(),
        "-subject",
        "/CN=dev1",
        "-newkey",
        str(key_path),
        "-certout",
        str(tmp_path / "cert.pem"),
        "-cacertsout",
        str(tmp_path / "capubs.pem"),
        *extra,
        check=False,
    )


def test_openssl_client_accepts_our_ip_and_pkiconf(responder, ca, tmp_path):
    """`openssl cmp` accepts an ip and pkiconf built by the core (response_to, PBM as the request's, caPubs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    seen = []

    def answer(request):
        seen.append(request)
        pbm = verify_mac(request, SECRET).for_answer(kid=REF)
        if request.body_type == "ir":
            (cert_request,) = cert_requests(request)
            cert_request.verify_pop()
            certificate = issue(ca, cert_request.public_key, cert_request.subject)
            responder.issued = certificate
            body = cert_rep_body("ip", cert_request.cert_req_id, certificate, [ca.root_cert])
            chain = [tp_x509.certificate_der(c) for c in ca.chain]
            return encode_message(Header.response_to(request), body, pbm, extra_certs=chain)
        (status,) = cert_statuses(request)
        assert status.cert_hash == cert_hash(responder.issued)
        return encode_message(Header.response_to(request), pkiconf_body(), pbm)

    responder.answer = answer
    result = _openssl_ir(responder, tmp_path, key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [m.body_type for m in seen] == ["ir", "certConf"]
    certificate = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    assert certificate == responder.issued
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev1"
    assert tp_x509.load_certificates((tmp_path / "capubs.pem").read_bytes()) == [ca.root_cert]


def test_openssl_client_reads_our_error(responder, tmp_path):
    """`openssl cmp` reads status, failInfo and text of an error body built by the core."""

    def answer(request):
        pbm = verify_mac(request, SECRET).for_answer(kid=REF)
        return encode_message(Header.response_to(request), error_body(("badPOP",), "no proof of possession"), pbm)

    responder.answer = answer
    result = _openssl_ir(responder, tmp_path, ec.generate_private_key(ec.SECP256R1()))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        'received error:PKIStatus: rejection; PKIFailureInfo: badPOP; StatusString: "no proof of possession"' in output
    )


def test_openssl_client_grants_implicit_confirm(responder, ca, tmp_path):
    """With -implicit_confirm and our granting ip, OpenSSL sends no certConf and keeps the certificate."""
    seen = []

    def answer(request):
        seen.append(request.body_type)
        assert request.implicit_confirm
        pbm = verify_mac(request, SECRET).for_answer(kid=REF)
        (cert_request,) = cert_requests(request)
        certificate = issue(ca, cert_request.public_key)
        body = cert_rep_body("ip", 0, certificate)
        chain = [tp_x509.certificate_der(c) for c in ca.chain]
        return encode_message(Header.response_to(request, implicit_confirm=True), body, pbm, extra_certs=chain)

    responder.answer = answer
    result = _openssl_ir(responder, tmp_path, ec.generate_private_key(ec.SECP256R1()), "-implicit_confirm")
    assert result.returncode == 0, result.stdout + result.stderr
    assert seen == ["ir"]
    assert (tmp_path / "cert.pem").exists()


def test_message_time_is_utc_generalized_time():
    """encode_message writes messageTime as UTC GeneralizedTime; it reads back as an aware datetime."""
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    der = encode_message(Header(transaction_id=b"t" * 16, message_time=when), pkiconf_body())
    assert b"20300102030405Z" in der
    assert CmpMessage.decode(der).message_time == when


def test_the_device_revocation_reasons_are_the_enroll_modules():
    """trustpoint-agent takes the core's list, the enroll module its own dependency-free one: the same reasons
    with their RFC 5280 codes."""
    from trustpoint_core._ansible.enroll_backends import REVOCATION_REASONS
    from trustpoint_core.cmp_message import DEVICE_REVOCATION_REASONS, REASON_CODES

    assert {name: REASON_CODES.index(name) for name in DEVICE_REVOCATION_REASONS} == REVOCATION_REASONS
