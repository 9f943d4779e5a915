# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""cmp_der (issue 16) reads the envelope of a PKIMessage without pyasn1: every field it gives equals what
pyasn1's decoding of the whole message gives (CmpMessage.decode(der, fast=False)), on the captured OpenSSL
messages, on messages the core builds, and on fuzzed ones; input it does not take is decoded by pyasn1 and
gets the same failInfo and text as before."""

from __future__ import annotations

import datetime
import os

import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.der import encoder
from test_cmp_fuzz import VECTORS, mutated_vectors
from trustpoint_core import cmp_der, keys, profiles
from trustpoint_core import x509 as tp_x509
from trustpoint_core.asn1 import der_children, der_oid, der_sequence, der_tlv
from trustpoint_core.cmp_message import CmpMessage, Header, cert_req_body, encode_message, genm_body
from trustpoint_core.cmp_protection import PasswordBasedMac, SignatureProtection
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
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(der, fast):
    """The fields of the decoded message, or the failure ("failed", failInfo, text)."""
    try:
        message = CmpMessage.decode(der, fast=fast)
    except CmpFailure as failure:
        return ("failed", failure.fail_info, failure.text)
    fields = {name: getattr(message, name) for name in FIELDS}
    fields["body"] = encoder.encode(message.asn1_body)
    fields["asn1"] = encoder.encode(message.asn1)
    return fields


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


def test_extra_certs_are_the_received_bytes():
    message = CmpMessage.decode(VECTORS["ir_signed.der"])
    assert message.header is None  # read by cmp_der
    device = tp_x509.load_certificate((FIXTURES / "cmp" / "device.pem").read_bytes())
    assert message.extra_certs[0] == tp_x509.certificate_der(device)
    assert message.extra_certificates()[0].subject == device.subject


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


@settings(FUZZ, max_examples=50)
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
