# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""cmp_der (issue 16) reads the envelope of a PKIMessage without pyasn1: every field it gives equals what
pyasn1's decoding of the whole message gives (CmpMessage.decode(der, fast=False)), on the captured OpenSSL
messages, on messages the core builds, and on fuzzed ones; input it does not take is decoded by pyasn1 and
gets the same failInfo and text as before."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from unittest import mock

import pytest
from conftest import FIXTURES, fuzz_examples
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4211, rfc5280
from test_cmp_fuzz import VECTORS, edited, mutated_vectors
from trustpoint_core import cmp_der, cmp_message, keys, profiles, signatures
from trustpoint_core import x509 as tp_x509
from trustpoint_core.asn1 import der_children, der_oid, der_sequence, der_tlv
from trustpoint_core.cmp_message import CmpMessage, Header, cert_req_body, cert_requests, encode_message, genm_body
from trustpoint_core.cmp_protection import PBM_OID, PasswordBasedMac, SignatureProtection
from trustpoint_core.errors import CmpFailure

FIELDS = (
    "der",
    "pvno",
    "body_type",
    "sender",
    "sender_form",
    "recipient",
    "transaction_id",
    "sender_nonce",
    "recip_nonce",
    "sender_kid",
    "recip_kid",
    "message_time",
    "protection_alg",
    "protection_params",
    "protection",
    "implicit_confirm",
    "extra_certs",
    "protected_part",
)
FUZZ = settings(max_examples=fuzz_examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(der, fast):
    """The fields of the decoded message, or the failure ("failed", failInfo, text)."""
    try:
        message = CmpMessage.decode(der, fast=fast)
    except CmpFailure as failure:
        return ("failed", failure.fail_info, failure.text)
    fields = {name: getattr(message, name) for name in FIELDS}
    fields["body"] = encoded(message.asn1_body)
    fields["asn1"] = encoded(message.asn1)
    return fields


def encoded(asn1):
    """pyasn1's DER of a decoded value, or the error class: it refuses to encode what violates a SIZE constraint, a
    BIT STRING with more unused bits than content bits (03 01 01) fails with ValueError (its length is < 0), and an
    empty UTCTime (17 00) with IndexError (its CER encoder reads the last character)."""
    try:
        return encoder.encode(asn1)
    except (PyAsn1Error, ValueError, IndexError) as exc:
        return type(exc)


def read_by_cmp_der(der):
    try:
        cmp_der.read(der, 26)
    except cmp_der.NotCommon:
        return False
    return True


def assert_same(der):
    assert outcome(der, True) == outcome(der, False)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_every_captured_message_is_read_by_cmp_der_with_pyasn1s_fields(name):
    der = VECTORS[name]
    assert read_by_cmp_der(der), "the common form: OpenSSL's messages must take the fast path"
    assert_same(der)


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")  # mutated serials, on purpose
@FUZZ
@given(st.data())
def test_fuzzed_extra_certs_read_alike(data):
    """A byte of a certificate in extraCerts changed: cryptography's strict DER reading of it (cmp_der) and
    pyasn1's decoding of the whole message give the same outcome."""
    der = VECTORS["ir_signed.der"]
    certificate = data.draw(st.sampled_from(CmpMessage.decode(der).extra_certs))
    position = der.index(certificate) + data.draw(st.integers(0, len(certificate) - 1))
    value = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF]) | st.integers(0, 255))
    mutated = der[:position] + bytes([value]) + der[position + 1 :]
    assert_same(mutated)


def _certificate_with(tbs_edit):
    """The signed ir's first extraCert with its TBSCertificate's fields edited (the signature no longer matters:
    the outcome of reading it is compared), and the message that carries it."""
    der = VECTORS["ir_signed.der"]
    certificate = CmpMessage.decode(der).extra_certs[0]
    tbs, *rest = der_children(certificate)
    fields = der_children(tbs)
    edited = der_sequence(der_sequence(*tbs_edit(fields)), *rest)
    return der.replace(certificate, edited) if len(edited) == len(certificate) else _resized(der, certificate, edited)


def _resized(der, old, new):
    """der (a PKIMessage) with one extraCert replaced by one of another length: the lengths around it rebuilt."""
    message = der_children(der)
    extra = der_children(_inner(message[-1]))
    certificates = der_sequence(*(new if c == old else c for c in extra))
    return der_sequence(*message[:-1], der_tlv(0xA1, certificates))


def _certificate_byte(find, offset, value):
    """The signed ir with one byte of its first extraCert set to value: offset bytes after where find starts."""
    der = VECTORS["ir_signed.der"]
    position = der.index(CmpMessage.decode(der).extra_certs[0]) + offset
    position += der[position:].index(find)
    return der[:position] + bytes([value]) + der[position + 1 :]


# Certificates pyasn1 refuses that cmp_der refuses by its own checks, whatever cryptography takes.
CMP_DER_REFUSES = {
    # issuer (after version, serial, signature) with an empty RDN: pyasn1 refuses SET SIZE (1..MAX)
    "empty-issuer-rdn": lambda: _certificate_with(
        lambda f: [*f[:3], der_sequence(*der_children(f[3]), der_tlv(0x31, b"")), *f[4:]]
    ),
    # subject likewise
    "empty-subject-rdn": lambda: _certificate_with(
        lambda f: [*f[:5], der_sequence(der_tlv(0x31, b""), *der_children(f[5])), *f[6:]]
    ),
    # extensions [3] holding an empty SEQUENCE: pyasn1 refuses SIZE (1..MAX)
    "empty-extensions": lambda: _certificate_with(
        lambda f: [*(x for x in f if x[0] != 0xA3), der_tlv(0xA3, der_sequence())]
    ),
    # the issuer's CN value tagged 0 (end-of-contents), which cryptography takes as an ANY
    "end-of-contents": lambda: _certificate_byte(b"\x0c\x16CMP Capture Issuing CA", 0, 0x00),
    # ecdsa-with-SHA256 (2a 86 48 ce 3d 04 03 02) with the arc 3 written 80 03: cryptography 37 reads it
    "oid-arc-not-shortest": lambda: _certificate_byte(b"\x2a\x86\x48\xce\x3d\x04\x03\x02", 5, 0x80),
    # the same OID starting with 0x80: cryptography 37 reads it too
    "oid-first-byte-80": lambda: _certificate_byte(b"\x2a\x86\x48\xce\x3d\x04\x03\x02", 0, 0x80),
    # the issuer's first attribute value a constructed [UNIVERSAL 0] (20 00): pyasn1 refuses it as an ANY, as it
    # refuses end-of-contents (pyasn1 compares tags without their form)
    "constructed-end-of-contents": lambda: _certificate_with(
        lambda f: [*f[:3], _first_value(f[3], b"\x20\x00"), *f[4:]]
    ),
    # the serial -2**71 (80 00 .. 00, 9 bytes): pyasn1 re-encodes it as FF 80 00 .., so the extraCert it gives is not
    # the one received; cryptography reads it (found by a long differential campaign)
    "negative-serial-80-00": lambda: _certificate_with(lambda f: [f[0], der_tlv(0x02, b"\x80" + bytes(8)), *f[2:]]),
    # -128 likewise
    "negative-serial-80": lambda: _certificate_with(lambda f: [f[0], der_tlv(0x02, b"\x80"), *f[2:]]),
}


def _first_value(name, value):
    """A Name's DER with the value of its first attribute replaced by value (DER)."""
    first, *rdns = der_children(name)
    attribute, *others = der_children(der_sequence(_inner(first)))  # the SET's members
    return der_sequence(der_tlv(0x31, der_sequence(der_children(attribute)[0], value) + b"".join(others)), *rdns)


REBUILT = {
    **CMP_DER_REFUSES,
    # version v1 written out (DEFAULT): not DER, which cryptography refuses
    "explicit-v1": lambda: _certificate_with(lambda f: [der_tlv(0xA0, b"\x02\x01\x00"), *f[1:]]),
}


@pytest.mark.parametrize("edit", sorted(REBUILT))
@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_rebuilt_extra_certs_read_alike(edit):
    """What random byte edits rarely make: a certificate pyasn1 refuses, read as pyasn1 reads the whole message."""
    mutated = REBUILT[edit]()
    assert not read_by_cmp_der(mutated)
    assert_same(mutated)


@pytest.mark.parametrize("edit", sorted(CMP_DER_REFUSES))
@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_extra_certs_cmp_der_refuses_whatever_cryptography_reads(edit):
    """cmp_der's own share of the check does not rest on the installed cryptography: with a loader that takes any
    certificate (as cryptography 37 took OIDs with arcs not in their shortest form), these still go to pyasn1."""
    mutated = CMP_DER_REFUSES[edit]()
    with mock.patch.object(cmp_der.x509, "load_der_x509_certificate", lambda der: None):
        cmp_der._check_certificate.cache_clear()
        assert not read_by_cmp_der(mutated)
    cmp_der._check_certificate.cache_clear()
    assert_same(mutated)


def test_extra_certs_are_the_received_bytes():
    message = CmpMessage.decode(VECTORS["ir_signed.der"])
    assert message.header is None  # read by cmp_der
    device = tp_x509.load_certificate((FIXTURES / "cmp" / "device.pem").read_bytes())
    assert message.extra_certs[0] == tp_x509.certificate_der(device)
    assert message.extra_certificates()[0].subject == device.subject


def test_extra_certs_go_to_pyasn1_with_a_cryptography_older_than_the_floor():
    """A cryptography older than deps.CRYPTOGRAPHY_FLOOR (a distribution's 3.x, 36 or 37) was not compared with
    pyasn1: the fast path leaves extraCerts to pyasn1 there, and the message reads the same."""
    der = VECTORS["ir_signed.der"]
    cmp_der._check_certificate.cache_clear()
    with mock.patch.object(cmp_der, "_VERIFIED_PARSER", False):
        assert not read_by_cmp_der(der)
        assert_same(der)
    assert read_by_cmp_der(der)


def _subject():
    return tp_x509.parse_name("/CN=plc-1/O=Plant")


def _built(**header):
    key = keys.generate_private_key("ecdsa-p256")
    fields = {"sender": _subject(), "transaction_id": os.urandom(16), "implicit_confirm": True}
    fields.update(header)
    return encode_message(Header(**fields), cert_req_body("ir", key, _subject()), PasswordBasedMac(b"s", kid=b"7"))


@pytest.mark.parametrize(
    "header",
    [
        {},
        {"sender": None},  # NULL-DN
        {"recipient": tp_x509.parse_name("/CN=Issuing CA")},
        {"implicit_confirm": False, "recip_nonce": os.urandom(16), "pvno": 3},
        {"message_time": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)},
        {"transaction_id": b""},
        {"sender_nonce": os.urandom(300)},  # a long-form length
    ],
)
def test_messages_the_core_builds(header):
    der = _built(**header)
    assert read_by_cmp_der(der)
    assert_same(der)


def test_signed_genm_with_extra_certs():
    key = keys.generate_private_key("ecdsa-p256")
    chain = tp_x509.CaChain.create("der-test", "ecdsa-p256")
    certificate = tp_x509.issue_certificate(
        chain.issuing_cert, chain.issuing_key, key.public_key(), _subject(), profiles.get_profile("domain_credential")
    )
    protector = SignatureProtection(key, certificate, chain.chain)
    header = Header(sender=certificate.subject, transaction_id=os.urandom(16))
    extra = [tp_x509.certificate_der(c) for c in protector.extra_certificates]
    der = encode_message(header, genm_body("1.3.6.1.5.5.7.4.17"), protector, extra_certs=extra)
    assert read_by_cmp_der(der)
    assert_same(der)
    assert CmpMessage.decode(der).extra_certs == extra


def _replace_header(der, header_der):
    children = der_children(der)
    return der_sequence(header_der, *children[1:])


def _fields(der):
    return der_children(der_children(der)[0])


def _header_with(der, *fields):
    """der with these fields appended to its header (tagged values, DER)."""
    header = der_children(der)[0]
    return _replace_header(der, der_sequence(*der_children(header), *fields))


def test_free_text_and_general_info():
    der = _built(implicit_confirm=False)
    free = der_tlv(0xA7, der_sequence(der_tlv(0x0C, "grüße".encode())))
    info = der_tlv(0xA8, der_sequence(der_sequence(der_oid("1.3.6.1.5.5.7.4.13"), b"\x05\x00")))
    extended = _header_with(der, free, info)
    assert read_by_cmp_der(extended)
    assert_same(extended)
    assert CmpMessage.decode(extended).implicit_confirm


@pytest.mark.parametrize(
    "mangle",
    [
        # a length in more bytes than it needs (BER, not DER)
        lambda der: b"\x30\x83" + len(der[4:]).to_bytes(3, "big") + der[4:],
        # sender as an rfc822Name
        lambda der: _replace_header(der, der_sequence(_fields(der)[0], der_tlv(0x81, b"a@b"), *_fields(der)[2:])),
        # a field out of order (freeText before senderKID)
        lambda der: _replace_header(
            der,
            der_sequence(*_fields(der)[:4], der_tlv(0xA7, der_sequence(der_tlv(0x0C, b"x"))), *_fields(der)[4:]),
        ),
        # protection with unused bits
        lambda der: der.replace(b"\xa0\x17\x03\x15\x00", b"\xa0\x17\x03\x15\x01"),
        # trailing data
        lambda der: der + b"\x00",
    ],
)
def test_what_cmp_der_does_not_take_pyasn1_decides(mangle):
    der = VECTORS["ir_pbm.der"]
    mangled = mangle(der)
    assert mangled != der
    assert not read_by_cmp_der(mangled)
    assert_same(mangled)


@FUZZ
@given(mutated_vectors())
def test_fuzzed_messages_decode_alike(der):
    assert_same(der)


@settings(FUZZ, max_examples=fuzz_examples(50))
@given(st.binary(max_size=600))
def test_random_bytes_decode_alike(der):
    assert_same(der)


def test_only_small_values_are_cached():
    """What every device sends (its CA's chain) is checked once; an unauthenticated sender's big or many distinct
    values cannot fill memory: at most CACHE_ENTRIES of at most CACHED_SIZE bytes are kept."""
    calls = []

    @cmp_der.cached_if_small
    def check(der):
        calls.append(len(der))
        return len(der)

    small, big = b"\x30" * 100, b"\x30" * (cmp_der.CACHED_SIZE + 1)
    assert [check(small), check(small), check(big), check(big)] == [100, 100, len(big), len(big)]
    assert calls == [100, len(big), len(big)]
    for number in range(cmp_der.CACHE_ENTRIES * 2):
        check(number.to_bytes(4, "big"))
    info = check.cache_info()
    assert info.currsize == info.maxsize == cmp_der.CACHE_ENTRIES
    assert cmp_der.CACHE_ENTRIES * cmp_der.CACHED_SIZE <= 4 << 20


def test_only_short_object_identifiers_are_cached():
    """read_oid keeps the dotted strings of OIDs of at most OID_CACHED_SIZE bytes: a long one's string is larger
    than its bytes (up to 3 characters per byte), and the sender is not yet authenticated."""
    cmp_der.read_oid.cache_clear()
    short, long = b"\x55\x1d\x13", b"\x2a" + b"\x01" * cmp_der.OID_CACHED_SIZE
    assert cmp_der.read_oid(short) == "2.5.29.19" and cmp_der.read_oid(short) == "2.5.29.19"
    assert cmp_der.read_oid(long) == "1.2" + ".1" * cmp_der.OID_CACHED_SIZE
    info = cmp_der.read_oid.cache_info()
    assert (info.currsize, info.hits) == (1, 1)


# --- the body of ir, cr and kur, names, PBM parameters ------------------------------------------------------


@contextlib.contextmanager
def pyasn1_only():
    """The reference: CmpMessage.decode(fast=False) and every value inside a request read by pyasn1."""
    with contextlib.ExitStack() as stack:
        for reader in ("name_values", "general_names", "old_cert_id", "pbm_parameters", "read_cert_requests"):
            stack.enter_context(mock.patch.object(cmp_der, reader, side_effect=cmp_der.NotCommon("reference")))
        cmp_message._name_from_der.cache_clear()
        yield
    cmp_message._name_from_der.cache_clear()


REQUEST_FIELDS = (
    "cert_req_der",
    "cert_req_id",
    "subject",
    "central_keygen",
    "key_algorithm",
    "spki_der",
    "subject_alt_names",
    "extension_oids",
    "old_cert_id",
    "not_after",
)


def failed(function, *args):
    """function's result, or ("failed", failInfo, text) of its CmpFailure."""
    try:
        return function(*args)
    except CmpFailure as failure:
        return ("failed", failure.fail_info, failure.text)


def request_side(der, fast):
    """What the server reads of a request: the message's fields, each CertReqMsg's fields and POP check (or the
    failure), the PBM parameters."""
    fields = outcome(der, fast)
    if isinstance(fields, tuple):
        return fields
    message = CmpMessage.decode(der, fast=fast)
    if message.body_type in ("ir", "cr", "kur"):
        requests = failed(cert_requests, message)
        if isinstance(requests, list):
            requests = [
                (
                    {name: getattr(request, name) for name in REQUEST_FIELDS},
                    request.public_key is not None,
                    encoded(request.asn1),
                    failed(request.verify_pop),
                )
                for request in requests
            ]
        fields["requests"] = requests
    if message.protection_alg == PBM_OID:
        fields["pbm"] = pbm_fields(message.protection_params)
    return fields


def pbm_fields(params):
    """(salt, owf, iterationCount, mac) of PBM parameters, or the failure."""
    mac = failed(PasswordBasedMac.from_parameters, params, b"secret")
    return mac if isinstance(mac, tuple) else (mac.salt, mac.owf, mac.iterations, mac.mac)


def assert_same_request(der, fast_path=None):
    """The fast reader's result equals pyasn1's; fast_path True/False: cmp_der must (not) read the body."""
    fast = request_side(der, True)
    with pyasn1_only():
        reference = request_side(der, False)
    assert fast == reference
    if fast_path is not None and not isinstance(fast, tuple):
        message = CmpMessage.decode(der)
        assert (message._cert_req_fields is not None) == fast_path
    return fast


KEYS = {
    "ecdsa-p256": lambda: keys.generate_private_key("ecdsa-p256"),
    "ecdsa-p384": lambda: keys.generate_private_key("ecdsa-p384"),
    "rsa-2048": lambda: keys.generate_private_key("rsa-2048"),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


def _extension(oid, value_der, critical=False):
    extension = rfc5280.Extension()
    extension["extnID"] = univ.ObjectIdentifier(oid)
    if critical:
        extension["critical"] = True
    extension["extnValue"] = value_der
    return extension


def _san(*names):
    return x509.SubjectAlternativeName(list(names)).public_bytes()


def _time(template_time, when, generalized):
    if generalized:
        template_time["generalTime"] = when.strftime("%Y%m%d%H%M%SZ")
    else:
        template_time["utcTime"] = when.strftime("%y%m%d%H%M%SZ")


def build_request(
    body_type="ir",
    key=None,
    subject=None,
    extensions=(),
    not_before=None,
    not_after=None,
    generalized=False,
    old_certificate=None,
    controls=(),
    reg_info=(),
    popo="signature",
    central=None,
    sender=None,
):
    """A PBM-protected ir/cr/kur whose one CertReqMsg carries these template fields, controls ((OID, value DER)),
    regInfo and POP ("signature", "raVerified" or None); central: (OID, parameters DER) of a central key generation
    request that names its algorithm (then key is None)."""
    _body_type, content = cert_req_body(body_type, key, subject, old_certificate=old_certificate)
    message = content[0]
    request = message["certReq"]
    template = request["certTemplate"]
    if central is not None:
        public_key = template["publicKey"]
        public_key["algorithm"]["algorithm"] = univ.ObjectIdentifier(central[0])
        if central[1] is not None:
            public_key["algorithm"]["parameters"] = univ.Any(central[1])
        public_key["subjectPublicKey"] = univ.BitString(binValue="")
    for extension in extensions:
        template["extensions"].append(extension)
    if not_before is not None or not_after is not None:
        if not_before is not None:
            _time(template["validity"]["notBefore"], not_before, generalized)
        if not_after is not None:
            _time(template["validity"]["notAfter"], not_after, generalized)
    for oid, value in controls:
        control = rfc4211.AttributeTypeAndValue()
        control["type"] = univ.ObjectIdentifier(oid)
        control["value"] = univ.Any(value)
        request["controls"].append(control)
    signed = message
    message = rfc4211.CertReqMsg()
    message["certReq"] = request
    if popo == "signature" and key is not None:
        message["popo"] = signed["popo"]
        _oid, _params, signature = signatures.sign(key, encoder.encode(request))
        message["popo"]["signature"]["signature"] = univ.BitString.fromOctetString(signature)
    elif popo == "raVerified":
        message["popo"]["raVerified"] = message["popo"]["raVerified"].clone("")
    for oid, value in reg_info:
        info = rfc4211.AttributeTypeAndValue()
        info["type"] = univ.ObjectIdentifier(oid)
        info["value"] = univ.Any(value)
        message["regInfo"].append(info)
    content = content.clone()
    content.append(message)
    header = Header(sender=sender or _subject(), transaction_id=os.urandom(16), implicit_confirm=True)
    return encode_message(header, (body_type, content), PasswordBasedMac(b"secret", kid=b"7"))


NOW = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.timezone.utc)
SANS = _san(
    x509.DNSName("plc-1.plant.example"),
    x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
    x509.IPAddress(ipaddress.ip_address("2001:db8::7")),
    x509.UniformResourceIdentifier("urn:plant:plc-1"),
    x509.RFC822Name("ops@plant.example"),
)


def _old_certificate():
    chain = tp_x509.CaChain.create("der-test", "ecdsa-p256")
    key = keys.generate_private_key("ecdsa-p256")
    return tp_x509.issue_certificate(
        chain.issuing_cert, chain.issuing_key, key.public_key(), _subject(), profiles.get_profile("domain_credential")
    )


REQUESTS = {
    "ir ecdsa-p256": dict(),
    "ir ecdsa-p384": dict(key="ecdsa-p384"),
    "ir rsa-2048": dict(key="rsa-2048"),
    "ir ed25519": dict(key="ed25519"),
    "ir no subject": dict(subject=None),
    "ir NULL-DN sender": dict(sender=tp_x509.parse_name("/CN=x"), subject=x509.Name([])),
    "ir SANs": dict(extensions=[_extension("2.5.29.17", SANS)]),
    "ir SANs critical, key usage": dict(
        extensions=[_extension("2.5.29.17", SANS, critical=True), _extension("2.5.29.15", b"\x03\x02\x07\x80")]
    ),
    "ir validity utc": dict(not_before=NOW, not_after=NOW + datetime.timedelta(days=30)),
    "ir validity generalized": dict(
        not_after=datetime.datetime(2051, 1, 1, tzinfo=datetime.timezone.utc), generalized=True
    ),
    "ir notBefore only": dict(not_before=NOW),
    "cr with regInfo": dict(body_type="cr", reg_info=[("1.3.6.1.5.5.7.5.2.1", b"\x0c\x05a=b%c")]),
    "cr raVerified": dict(body_type="cr", popo="raVerified"),
    "ir without POP": dict(popo=None),
    "ir central keygen, no key": dict(key=None, popo=None),
    "ir central keygen, EC algorithm": dict(
        key=None, popo=None, central=("1.2.840.10045.2.1", der_oid("1.2.840.10045.3.1.7"))
    ),
    "ir central keygen, RSA algorithm": dict(key=None, popo=None, central=("1.2.840.113549.1.1.1", b"\x05\x00")),
    "ir central keygen with a POP": dict(key=None, popo="raVerified"),
    "kur oldCertID": dict(body_type="kur", old_certificate="yes"),
    "kur oldCertID and regToken": dict(
        body_type="kur", old_certificate="yes", controls=[("1.3.6.1.5.5.7.5.1.1", b"\x0c\x03abc")]
    ),
    "subject printable and IA5 strings": dict(
        subject=x509.Name(
            [
                x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "DE", _type=x509.name._ASN1Type.PrintableString),
                x509.NameAttribute(x509.NameOID.EMAIL_ADDRESS, "a@b.example"),
                x509.NameAttribute(x509.NameOID.COMMON_NAME, "grüße"),
            ]
        )
    ),
    "subject BMPString": dict(
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bmp", _type=x509.name._ASN1Type.BMPString)])
    ),
    "SAN with a directoryName": dict(
        extensions=[_extension("2.5.29.17", _san(x509.DirectoryName(tp_x509.parse_name("/CN=dir"))))]
    ),
    "SAN iPAddress of 5 bytes": dict(extensions=[_extension("2.5.29.17", der_sequence(der_tlv(0x87, b"\x01" * 5)))]),
    "SAN twice": dict(extensions=[_extension("2.5.29.17", SANS), _extension("2.5.29.17", SANS)]),
    "SAN unreadable": dict(extensions=[_extension("2.5.29.17", b"\x30\x03\x82\x05a")]),
    # directoryNames, a form cmp_der leaves to pyasn1: more values than a request may hold (2,000)
    "SAN of 3,001 values": dict(
        extensions=[_extension("2.5.29.17", der_sequence(*[der_tlv(0xA4, b"\x30\x00")] * 1500))]
    ),
    "oldCertID by rfc822Name": dict(
        body_type="kur", controls=[("1.3.6.1.5.5.7.5.1.5", der_sequence(der_tlv(0x81, b"a@b"), b"\x02\x01\x05"))]
    ),
    "oldCertID unreadable": dict(body_type="kur", controls=[("1.3.6.1.5.5.7.5.1.5", b"\x30\x00")]),
}
# The requests above that a server refuses when it reads them (cert_requests), by failInfo.
REFUSED = {
    "SAN with a directoryName": "badCertTemplate",
    "SAN iPAddress of 5 bytes": "badCertTemplate",
    "SAN twice": "badCertTemplate",
    "SAN unreadable": "badDataFormat",
    "SAN of 3,001 values": "badDataFormat",
    "oldCertID unreadable": "badDataFormat",
}


def _built_request(name):
    options = dict(REQUESTS[name])
    if "key" not in options:
        options["key"] = "ecdsa-p256"
    if options["key"] is not None:
        options["key"] = KEYS[options["key"]]()
    options.setdefault("subject", _subject())
    if options.get("old_certificate"):
        options["old_certificate"] = _old_certificate()
    return build_request(**options)


BUILT = {name: _built_request(name) for name in REQUESTS}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_requests_the_core_and_clients_build(name):
    """Every option of ir/cr/kur: cmp_der reads the body, and every field equals pyasn1's."""
    requests = assert_same_request(BUILT[name], fast_path=True)["requests"]
    if name in REFUSED:
        assert requests[:2] == ("failed", (REFUSED[name],))
    else:
        assert isinstance(requests, list)


@pytest.mark.parametrize("name", sorted(n for n in VECTORS if n.startswith(("ir", "cr", "kur"))))
def test_captured_requests_take_the_fast_path(name):
    fields = assert_same_request(VECTORS[name], fast_path=True)
    assert fields["requests"][0][3] in (
        None,
        ("failed", ("badPOP",), "the proof-of-possession signature does not verify"),
    )


def test_fast_fields_are_the_expected_values():
    """Not only equal to pyasn1's: the values a server acts on."""
    (request,) = cert_requests(CmpMessage.decode(BUILT["ir SANs"]))
    assert request._fields is not None
    assert [str(name.value) for name in request.subject_alt_names] == [
        "plc-1.plant.example",
        "192.0.2.7",
        "2001:db8::7",
        "urn:plant:plc-1",
        "ops@plant.example",
    ]
    assert request.subject == _subject()
    request.verify_pop()
    (kur,) = cert_requests(CmpMessage.decode(BUILT["kur oldCertID"]))
    assert kur.old_cert_id[0] is not None and kur.old_cert_id[1] > 0
    (valid,) = cert_requests(CmpMessage.decode(BUILT["ir validity generalized"]))
    assert valid.not_after == datetime.datetime(2051, 1, 1, tzinfo=datetime.timezone.utc)
    (central,) = cert_requests(CmpMessage.decode(BUILT["ir central keygen, EC algorithm"]))
    assert central.central_keygen and central.key_algorithm == ("1.2.840.10045.2.1", der_oid("1.2.840.10045.3.1.7"))


def _with_body(der, content):
    """der with its body's content replaced (the body's tag and every length rewritten)."""
    parts = der_children(der)
    return der_sequence(parts[0], der_tlv(parts[1][0], content), *parts[2:])


def _inner(tlv):
    length = tlv[1]
    return tlv[2 + (length & 0x7F if length & 0x80 else 0) :]


def _cert_req_msg_parts(der):
    """The parts (certReq's parts, then popo and regInfo) of the first CertReqMsg of a built request."""
    (message,) = der_children(_inner(der_children(der)[1]))
    parts = der_children(message)
    return der_children(parts[0]), parts[1:]


def _rebuilt(der, cert_request, rest):
    return _with_body(der, der_sequence(der_sequence(der_sequence(*cert_request), *rest)))


def _template_with(der, field):
    """der whose template holds field (a TLV) too, in the order of the fields' tags."""
    cert_request, rest = _cert_req_msg_parts(der)
    template = der_sequence(*sorted([field, *der_children(cert_request[1])], key=lambda part: part[0]))
    return _rebuilt(der, [cert_request[0], template, *cert_request[2:]], rest)


@pytest.mark.parametrize(
    "mangle",
    [
        # certReqId not in its shortest form
        lambda der: _rebuilt(der, [b"\x02\x02\x00\x00", *_cert_req_msg_parts(der)[0][1:]], _cert_req_msg_parts(der)[1]),
        # the template's version [0] and serialNumber [1]
        lambda der: _template_with(der, b"\x80\x01\x02"),
        lambda der: _template_with(der, b"\x81\x01\x05"),
        # POP by keyEncipherment (thisMessage)
        lambda der: _rebuilt(der, _cert_req_msg_parts(der)[0], [b"\xa2\x04\x80\x02\x00\x00"]),
        # a critical flag FALSE written out, which DER leaves out
        lambda der: _template_with(
            der, der_tlv(0xA9, der_sequence(der_oid("2.5.29.17"), b"\x01\x01\x00", der_tlv(0x04, SANS)))
        ),
        # no CertReqMsg
        lambda der: _with_body(der, der_sequence()),
        # empty controls
        lambda der: _rebuilt(der, [*_cert_req_msg_parts(der)[0], der_sequence()], _cert_req_msg_parts(der)[1]),
        # trailing bytes inside the body
        lambda der: _with_body(der, _inner(der_children(der)[1]) + b"\x00\x00"),
    ],
)
def test_body_forms_cmp_der_leaves_to_pyasn1(mangle):
    der = mangle(BUILT["ir ecdsa-p256"])
    assert read_by_cmp_der(der)  # the envelope is common, the body is not
    assert_same_request(der, fast_path=False)


@pytest.mark.parametrize(
    "time",
    [
        der_tlv(0x18, b"20510101000000"),  # no time zone: UTC, as pyasn1's reader takes it
        der_tlv(0x18, b"20510101000000.5+0100"),
        der_tlv(0x17, b"510101000000+0100"),
        der_tlv(0x17, b"5101010000Z"),
        der_tlv(0x18, b"20511301000000Z"),  # month 13
        der_tlv(0x18, b"2051"),
    ],
)
def test_validity_times_read_alike(time):
    """Times beyond DER's (which pyasn1's decoder takes too): the same notAfter or the same failure."""
    der = _template_with(BUILT["ir ecdsa-p256"], der_tlv(0xA4, der_tlv(0xA1, time)))
    assert_same_request(der, fast_path=True)


@pytest.mark.parametrize("fast", [True, False])
def test_a_bad_pop_over_a_template_pyasn1_cannot_write_is_bad_pop(fast):
    """A POP that does not verify over the received certReq is checked over pyasn1's DER of it as well; pyasn1
    writes no GeneralizedTime without "Z": that is badPOP, not a library error (systemFailure)."""
    der = _template_with(BUILT["ir ecdsa-p256"], der_tlv(0xA4, der_tlv(0xA1, der_tlv(0x18, b"20510101000000"))))
    (request,) = cert_requests(CmpMessage.decode(der, fast=fast))
    with pytest.raises(CmpFailure) as failure:
        request.verify_pop()
    assert failure.value.fail_info == ("badPOP",)


# The requests the fuzzers start from: built ones and OpenSSL's.
REQUEST_SOURCES = {**BUILT, **{name: der for name, der in VECTORS.items() if name.startswith(("ir", "cr"))}}


@st.composite
def mutated_bodies(draw):
    """A built or captured request whose body (CertReqMessages) has one to three random edits, the lengths around
    it rewritten so that the envelope stays readable."""
    der = REQUEST_SOURCES[draw(st.sampled_from(sorted(REQUEST_SOURCES)))]
    return _with_body(der, edited(draw, _inner(der_children(der)[1]), 3))


# Found by the fuzzer: the template's publicKey is a BIT STRING with one unused bit and no content (03 01 01), which
# pyasn1 decodes but cannot encode (ValueError); both readers answer badDataFormat.
PUBLIC_KEY_WITHOUT_BITS = (
    b'0\x82\x0100\x81\xbd\x02\x01\x02\xa4"0 1\x0e0\x0c\x06\x03U\x04\x03\x0c\x05plc-11\x0e0\x0c\x06\x03'
    b"U\x04\n\x0c\x05Plant\xa4\x020\x00\xa0\x11\x18\x0f20261206235417Z\xa1>0"
    b"<\x06\t*\x86H\x86\xf6}\x07B\r0/\x04\x10o\x91NQ\xa8\x83 \xc8\xaf\xad\xd1\t\xa8\x8d\xc6,0\x0b\x06\t"
    b"`\x86H\x01e\x03\x04\x02\x01\x02\x02\x03\xe80\n\x06\x08*\x86H\x86\xf7\r\x02\t\xa2\x03\x04\x017\xa4\x12\x04\x10\xadz"
    b"\x1b\x81\x16\xea\xb3l\xeb\x00\x00\x04\xd0J3\x94\xa5\x12\x04\x10\x9a\xe5\xd8\x9c\x0e\xa8\xc8&\x94LO\x94'\xba\xfd\x17\xa8\x10"
    b'0\x0e0\x0c\x06\x08+\x06\x01\x05\x05\x07\x04\r\x05\x00\xa0I0G0E0C\x02\x01\x000>\xa5"0 1\x0e0'
    b"\x0c\x06\x03U\x04\x03\x0c\x05plc-11\x0e0\x0c\x06\x03U\x04\n\x0c\x05Plant\xa6\x180\x13\x06\x07*"
    b"\x86H\xce=\x02\x01\x06\x08*\x86H\xce=\x03\x01\x07\x03\x01\x01\xa0#\x03!\x00\x03kn\xf4\x81m\x10\x0c\x11\xa0\xa3\xdb"
    b"\x9fY.\x8f\x0b(\x9a\xd8*\xd7 k\xa8\x91\xb7(\x16?q\xee"
)


@FUZZ
@given(mutated_bodies())
@example(PUBLIC_KEY_WITHOUT_BITS)
def test_fuzzed_bodies_read_alike(der):
    assert_same_request(der)


def _tree(tlv):
    """(tag, content bytes or [subtrees]) of a DER value; constructed values are split while they parse."""
    tag, content = tlv[0], _inner(tlv)
    if tag & 0x20:
        try:
            return tag, [_tree(child) for child in der_children(der_sequence(content))]
        except (ValueError, IndexError):
            pass
    return tag, content


def _der(tree):
    tag, content = tree
    return der_tlv(tag, content if isinstance(content, bytes) else b"".join(_der(child) for child in content))


def _nodes(tree, path=()):
    yield path
    if not isinstance(tree[1], bytes):
        for index, child in enumerate(tree[1]):
            yield from _nodes(child, (*path, index))


def _replace(tree, path, node):
    if not path:
        return node
    children = list(tree[1])
    children[path[0]] = _replace(children[path[0]], path[1:], node)
    return tree[0], children


@st.composite
def mutated_values(draw):
    """A built or captured request with one to three values of its body replaced: a value's content by random bytes,
    its tag by another, or the value dropped or doubled; every length around it rewritten. The structure stays
    mostly readable, so the values' readers (names, keys, names of the SAN, times, POP) see the odd input."""
    der = REQUEST_SOURCES[draw(st.sampled_from(sorted(REQUEST_SOURCES)))]
    tree = _tree(der_children(der)[1])
    for _index in range(draw(st.integers(1, 3))):
        paths = list(_nodes(tree))[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        node = tree
        for index in path:
            node = node[1][index]
        operation = draw(st.sampled_from(["content", "tag", "drop", "double"]))
        if operation == "content" or (operation == "tag" and isinstance(node[1], bytes)):
            if operation == "content":
                node = (node[0], draw(st.binary(max_size=12)))
            else:
                node = (
                    draw(
                        st.sampled_from(
                            [
                                0x00,  # end-of-contents, which pyasn1 refuses as an ANY
                                0x20,  # its constructed form, refused alike
                                0x01,
                                0x02,
                                0x03,
                                0x04,
                                0x05,
                                0x06,
                                0x0C,
                                0x13,
                                0x16,
                                0x17,
                                0x18,
                                0x1E,
                                0x80,
                                0x81,
                                0x82,
                                0x87,
                            ]
                        )
                    ),
                    node[1],
                )
            tree = _replace(tree, path, node)
        elif operation in ("drop", "double"):
            parent = tree
            for index in path[:-1]:
                parent = parent[1][index]
            children = list(parent[1])
            if operation == "drop":
                del children[path[-1]]
            else:
                children.insert(path[-1], children[path[-1]])
            tree = _replace(tree, path[:-1], (parent[0], children))
    parts = der_children(der)
    return der_sequence(parts[0], _der(tree), *parts[2:])


# A CertTemplate whose validity's notBefore is an empty UTCTime (a0 02 17 00): pyasn1 encodes it again with an
# IndexError, which escaped the POP check's re-encoding (found by this test).
EMPTY_UTC_TIME_IN_THE_TEMPLATE = (
    b'0\x82\x01\xd30\x81\xbd\x02\x01\x02\xa4"0 1\x0e0\x0c\x06\x03U\x04\x03\x0c\x05plc-11\x0e0\x0c\x06\x03U\x04'
    b"\n\x0c\x05Plant\xa4\x020\x00\xa0\x11\x18\x0f20261207122235Z\xa1>0<\x06\t*\x86H\x86\xf6}\x07B\r0/\x04\x10"
    b"\xda\x87Y\xfd\x93\x9b\xc4\xdd\x9b\x9d\xdb\x8aF\r\x11a0\x0b\x06\t`\x86H\x01e\x03\x04\x02\x01\x02\x02\x03"
    b"\xe80\n\x06\x08*\x86H\x86\xf7\r\x02\t\xa2\x03\x04\x017\xa4\x12\x04\x10\xab#\xe3\xe0&\xd6\xdb\x88Qe\xa4Z"
    b"\xef\x8d\x1bH\xa5\x12\x04\x10?\x188\xb5\xd4\\\xe8\xb9\x17b\xf4\xc6\x19|\x98\x04\xa8\x100\x0e0\x0c\x06\x08"
    b"+\x06\x01\x05\x05\x07\x04\r\x05\x00\xa0\x81\xeb0\x81\xe80\x81\xe50\x81\x8b\x02\x01\x000\x81\x85\xa4\x04"
    b'\xa0\x02\x17\x00\xa5"0 1\x0e0\x0c\x06\x03U\x04\x03\x0c\x05plc-11\x0e0\x0c\x06\x03U\x04\n\x0c\x05Plant\xa6'
    b"Y0\x13\x06\x07*\x86H\xce=\x02\x01\x06\x08*\x86H\xce=\x03\x01\x07\x03B\x00\x04\xa5\xc0\xf5\xc3\xca\xfau@"
    b"\xd1[\xf93x\xf1\xda\x9b\x8b\x98\x92\x9ehIY\x19\x9d\xa7\x87C\xc0\xad\xa8\xdb4\xe7-\xcb\xc5\x8d\xb584W\xb9"
    b"\xa0\x00\\\x8d\xf3\xa1TiO\xe0\xc6P\xa6\xb1\x12\x87\xd4\xde}\xea\xf1\xa1U0\n\x06\x08*\x86H\xce=\x04\x03"
    b'\x02\x03G\x000D\x02 ns\xf7\\^\xff\x1d|"M1\xd19cZ\xcf0c\r+\x91x\xadUT\x94\xa5\x05bZ>\x89\x02 (.\xf3\x01'
    b"\x1e\xc1\xeb\xd5\xb9\xc9U\xafW;%}\xb5\xbf/\x1fX\xcb\x14\xba\xdd\xe0V\xb9\xca\x9bP\x83\xa0#\x03!\x00p\x19"
    b"\xd2;CT\xeb\xa7\x15uw|\xdb\x1f_r\x7f\x0bQ\xea\xbe\r*\xd3\xe0'E\xe8 \t\xed\xe0"
)


@FUZZ
@given(mutated_values())
@example(EMPTY_UTC_TIME_IN_THE_TEMPLATE)
def test_fuzzed_values_read_alike(der):
    assert_same_request(der)


def test_an_end_of_contents_tag_in_a_templates_key_parameters_goes_to_pyasn1():
    """The curve OID of the template's key tagged 0 (end-of-contents): an ANY the reader took, pyasn1 refuses (found
    by test_fuzzed_bodies_read_alike); now both answer badDataFormat."""
    der = BUILT["ir ecdsa-p256"]
    curve = der.index(b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07")
    mutated = der[:curve] + b"\x00" + der[curve + 1 :]
    assert assert_same_request(mutated)[:2] == ("failed", ("badDataFormat",))


def _header_field(der, tag, field):
    """der with its header field of tag (a TLV) replaced by field, or field added in the order of the tags; the PBM
    protection of the captured message no longer matters: the outcome of reading it is compared."""
    pvno, sender, recipient, *fields = der_children(der_children(der)[0])
    fields = sorted([*(f for f in fields if f[0] != tag), field], key=lambda f: f[0])
    return _replace_header(der, der_sequence(pvno, sender, recipient, *fields))


# Values pyasn1 refuses where the ASN.1 says ANY, in every place the fast reader passes one by: [UNIVERSAL 0],
# primitive (end-of-contents) or constructed (pyasn1 compares tags without their form). Found while building a
# differential campaign (pyasn1's Any refuses only that tag): the reader took each, pyasn1 refuses each.
END_OF_CONTENTS_IN_AN_ANY = {
    "protectionAlg parameters": lambda: _header_field(
        VECTORS["ir_pbm.der"], 0xA1, der_tlv(0xA1, der_sequence(der_oid(PBM_OID), b"\x00\x00"))
    ),
    "generalInfo value, constructed": lambda: _header_field(
        VECTORS["ir_pbm.der"],
        0xA8,
        der_tlv(0xA8, der_sequence(der_sequence(der_oid(cmp_der.ID_IT_IMPLICIT_CONFIRM), b"\x20\x00"))),
    ),
    "PBM owf parameters": lambda: _header_field(
        VECTORS["ir_pbm.der"], 0xA1, der_tlv(0xA1, der_sequence(der_oid(PBM_OID), PBM_OWF_EOC))
    ),
    "control value, constructed": lambda: build_request(
        key=KEYS["ecdsa-p256"](), subject=_subject(), controls=[("1.3.6.1.4.1.99999.1", b"\x20\x00")]
    ),
    "central key parameters, constructed": lambda: build_request(
        key=None, subject=_subject(), popo=None, central=("1.2.840.10045.2.1", b"\x20\x02\x05\x00")
    ),
    "template issuer value, constructed": lambda: _template_with(
        BUILT["ir ecdsa-p256"], der_tlv(0xA3, _first_value(_subject().public_bytes(), b"\x20\x00"))
    ),
}
# PBMParameter with owf's parameters an end-of-contents tag
PBM_OWF_EOC = der_sequence(
    der_tlv(0x04, b"salt"),
    der_sequence(der_oid("1.3.14.3.2.26"), b"\x00\x00"),
    b"\x02\x02\x01\xf4",
    der_sequence(der_oid("1.3.6.1.5.5.8.1.2")),
)


@pytest.mark.parametrize("where", sorted(END_OF_CONTENTS_IN_AN_ANY))
def test_an_end_of_contents_tag_in_an_any_goes_to_pyasn1(where):
    """The message reads as pyasn1 reads it: badDataFormat, as the server answered before the fast reader (for the
    PBM parameters, which pyasn1 decodes as an ANY in the message, when the server reads them)."""
    read = assert_same_request(END_OF_CONTENTS_IN_AN_ANY[where]())
    assert (read if isinstance(read, tuple) else read["pbm"])[:2] == ("failed", ("badDataFormat",))


@pytest.mark.parametrize(
    "params",
    [
        PBM_OWF_EOC,
        der_sequence(
            der_tlv(0x04, b"salt"),
            der_sequence(der_oid("1.3.14.3.2.26")),
            b"\x02\x02\x01\xf4",
            der_sequence(der_oid("1.3.6.1.5.5.8.1.2"), b"\x20\x00"),
        ),
    ],
    ids=["owf-end-of-contents", "mac-constructed-end-of-contents"],
)
def test_pbm_parameters_with_an_end_of_contents_tag_go_to_pyasn1(params):
    """PBM parameters pyasn1 refuses, read on their own (a message whose envelope pyasn1 decoded): refused alike."""
    assert pbm_fields(params)[:2] == ("failed", ("badDataFormat",))
    with pyasn1_only():
        assert pbm_fields(params)[:2] == ("failed", ("badDataFormat",))


def test_a_wrong_tag_does_not_write_the_schema_into_pyasn1s_error():
    """pyasn1 puts repr(schema) into the message of a tag the schema does not expect, and that repr walked every
    nested type: 3.5 MB for PKIBody, 0.24 s of CPU for a 600-byte request, before anything is authenticated
    (bench/inprocess.py --flow malformed-ir). trustpoint_core.asn1 shortens it to the components' names."""
    from pyasn1_alt_modules import rfc9480

    assert len(repr(rfc9480.PKIBody())) < 2000
    with pytest.raises(CmpFailure) as failure:
        CmpMessage.decode(_with_body(BUILT["ir ecdsa-p256"], b"\x04\x00"))
    assert failure.value.fail_info == ("badDataFormat",)
    assert failure.value.text.endswith("a value tagged [0] where PKIBody has no place for one")


@settings(FUZZ, max_examples=fuzz_examples(100))
@given(st.binary(max_size=300))
def test_random_bodies_read_alike(content):
    assert_same_request(_with_body(BUILT["ir ecdsa-p256"], content))


@pytest.mark.parametrize(
    "params",
    [
        PasswordBasedMac(b"s").algorithm()[1],
        PasswordBasedMac(b"s", iterations=100000, owf="1.3.14.3.2.26", mac="1.3.6.1.5.5.8.1.2").algorithm()[1],
        der_sequence(
            der_tlv(0x04, b"salt"),
            der_sequence(der_oid("1.3.14.3.2.26"), b"\x05\x00"),
            b"\x02\x02\x01\xf4",
            der_sequence(der_oid("1.3.6.1.5.5.8.1.2"), b"\x05\x00"),
        ),
        der_sequence(der_tlv(0x04, b""), der_sequence(der_oid("1.2.3")), b"\x02\x01\x00", der_sequence(der_oid("1.2"))),
        der_sequence(
            der_tlv(0x04, b"s"),
            der_sequence(der_oid("1.3.14.3.2.26")),
            b"\x02\x03\x01\x86\xa1",
            der_sequence(der_oid("1.3.6.1.5.5.8.1.2")),
        ),  # (100001 iterations)
        der_sequence(
            der_tlv(0x04, b"s"),
            der_sequence(der_oid("1.3.14.3.2.26")),
            b"\x02\x01\xff",
            der_sequence(der_oid("1.3.6.1.5.5.8.1.2")),
        ),  # (-1 iterations)
        der_sequence(
            der_tlv(0x04, b"s"),
            der_sequence(der_oid("1.3.14.3.2.26")),
            b"\x02\x02\x00\x10",
            der_sequence(der_oid("1.3.6.1.5.5.8.1.2")),
        ),  # (not DER: pyasn1 reads it)
        der_sequence(der_tlv(0x04, b"s")),
        # salt is OCTET STRING (SIZE (0..128)) in pyasn1's module: a longer one is badDataFormat
        der_sequence(
            der_tlv(0x04, b"s" * 128),
            der_sequence(der_oid("1.3.14.3.2.26")),
            b"\x02\x01\x0a",
            der_sequence(der_oid("1.3.6.1.5.5.8.1.2")),
        ),
        der_sequence(
            der_tlv(0x04, b"s" * 129),
            der_sequence(der_oid("1.3.14.3.2.26")),
            b"\x02\x01\x0a",
            der_sequence(der_oid("1.3.6.1.5.5.8.1.2")),
        ),
        b"\x05\x00",
        b"\x30\x00\x00",
    ],
    # Ids by size: the first two carry random salts, and every pytest-xdist worker must collect the same ids.
    ids=lambda params: "%d-bytes" % len(params),
)
def test_pbm_parameters_read_alike(params):
    fast = pbm_fields(params)
    with pyasn1_only():
        assert fast == pbm_fields(params)


@settings(FUZZ, max_examples=fuzz_examples(100))
@given(st.binary(max_size=80))
def test_random_pbm_parameters_read_alike(params):
    fast = pbm_fields(params)
    with pyasn1_only():
        assert fast == pbm_fields(params)


@pytest.mark.parametrize(
    "name",
    [
        tp_x509.parse_name("/CN=plc-1/O=Plant/C=DE"),
        x509.Name([]),
        x509.Name(
            [
                x509.RelativeDistinguishedName(
                    [
                        x509.NameAttribute(x509.NameOID.COMMON_NAME, "a"),
                        x509.NameAttribute(x509.NameOID.SERIAL_NUMBER, "7"),
                    ]
                )
            ]
        ),
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "\u00e9", _type=x509.name._ASN1Type.BMPString)]),
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "u", _type=x509.name._ASN1Type.UniversalString)]),
    ],
)
def test_names_read_alike(name):
    der = name.public_bytes()
    fast = cmp_message._load_name_der(der)
    with pyasn1_only():
        assert cmp_message._load_name_der(der) == fast
    assert fast == name


@settings(FUZZ, max_examples=fuzz_examples(150))
@given(st.binary(max_size=120))
def test_random_names_read_alike(content):
    der = der_sequence(content) if content[:1] != b"\x30" else content
    fast = _name_or_error(der)
    with pyasn1_only():
        assert _name_or_error(der) == fast


def _name_or_error(der):
    try:
        return cmp_message._load_name_der(der)
    except Exception as exc:  # the same exception either way
        return (type(exc), str(exc))


def test_count_values_counts_what_pyasn1_decodes_at_every_depth():
    """count_values bounds pyasn1's work on a request (CmpMessage.decode's max_values): it counts every
    value, in DER and in the BER forms pyasn1 takes, and stops past its limit."""
    from trustpoint_core.cmp_der import count_values

    nested = der_sequence(der_sequence(der_oid("1.2.3"), b"\x05\x00"), der_tlv(0x04, b"abc"))
    assert count_values(nested, 100) == 5
    long_length = b"\x30\x82\x00\x05" + der_oid("1.2.3")  # a length in more bytes than needed (BER)
    assert count_values(long_length, 100) == 2
    indefinite = b"\x30\x80" + der_oid("1.2.3") + b"\x05\x00\x00\x00"  # end-of-contents counts too
    assert count_values(indefinite, 100) == 4
    assert count_values(b"\x3f\x81\x01\x00", 100) == 1  # a tag number in two bytes
    many = der_sequence(*[b"\x05\x00"] * 5000)
    assert count_values(many, 10) == 11
    for name, der in VECTORS.items():  # OpenSSL's messages hold far fewer
        assert count_values(der, 2000) < 300, name


def test_only_a_server_bounds_the_values_it_decodes():
    """A server refuses a request of more than max_values values before pyasn1 decodes it; a client (no bound)
    decodes an answer of any length, as a genp of long CRLs."""
    from trustpoint_core.cmp_message import ID_IT_CA_CERTS, Header, encode_message, genm_body

    der = encode_message(Header(transaction_id=os.urandom(16)), genm_body(*[ID_IT_CA_CERTS] * 1500))
    assert len(CmpMessage.decode(der).body) == 1500
    with pytest.raises(CmpFailure, match=r"more than 2000 ASN\.1 values") as info:
        CmpMessage.decode(der, max_values=2000)
    assert info.value.fail_info == ("badDataFormat",)
    assert CmpMessage.decode(VECTORS["ir_signed.der"], max_values=2000).body_type == "ir"
