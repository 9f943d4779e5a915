# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Property tests: hostile bytes never make the CMP decoder or its readers raise anything but CmpFailure.

A server turns CmpFailure into an error PKIMessage; any other exception would be an HTTP 500 (or a
crashed client). Inputs are random bytes and captured OpenSSL messages (tests/fixtures/cmp) with bit
flips, truncations, insertions and deletions. Regression inputs found this way live in
test_cmp_message.py as plain tests.
"""

from __future__ import annotations

import pytest
from conftest import FIXTURES, fuzz_examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from trustpoint_core.cmp_message import (
    CmpMessage,
    cert_requests,
    cert_responses,
    cert_statuses,
    error_content,
    pkcs10_request,
)
from trustpoint_core.cmp_protection import subject_key_identifier, verify_mac, verify_signature
from trustpoint_core.errors import CmpFailure, InvalidInput

SECRET = b"trustpoint-test-secret"
VECTORS = {path.name: path.read_bytes() for path in sorted((FIXTURES / "cmp").glob("*.der"))}
# A decode error currently costs up to ~80 ms (see test_decode_error_text_is_short): keep the counts modest.
FUZZ = settings(max_examples=fuzz_examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_RANDOM = settings(FUZZ, max_examples=fuzz_examples(100))
# Inputs found by fuzzing that raised something other than CmpFailure (regression tests in test_cmp_message.py).
HUGE_LENGTH = bytes.fromhex("300c300a0288ffffffffffffffff")
# ip_pbm.der with X.509 version 5 in its first certificate (the issued one) or its last (root in extraCerts).
_V3, _V5 = bytes.fromhex("a003020102"), bytes.fromhex("a003020105")
_IP = VECTORS["ip_pbm.der"]
BAD_ISSUED_VERSION = _IP.replace(_V3, _V5, 1)
BAD_EXTRA_VERSION = _IP[: _IP.rindex(_V3)] + _V5 + _IP[_IP.rindex(_V3) + len(_V3) :]
# ir_signed.der whose extraCerts' keys (and its new key) are on prime192v2, a curve cryptography cannot load.
UNSUPPORTED_CURVE = VECTORS["ir_signed.der"].replace(
    bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex("06082a8648ce3d030102")
)


@st.composite
def mutated_vectors(draw):
    """A captured message with one to four random edits."""
    return edited(draw, VECTORS[draw(st.sampled_from(sorted(VECTORS)))], 4)


def edited(draw, der, most):
    """der with one to most random edits (bit flips, truncation, insertions, deletions, replaced bytes)."""
    data = bytearray(der)
    for _index in range(draw(st.integers(1, most))):
        operation = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "replace"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "truncate":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        elif operation == "replace" and data:
            data[position] = draw(st.integers(0, 255))
    return bytes(data)


def decode_or_none(data):
    """CmpMessage.decode: a message, or None after CmpFailure badDataFormat; anything else fails the test."""
    try:
        message = CmpMessage.decode(data)
    except CmpFailure as exc:
        assert exc.fail_info == ("badDataFormat",), exc
        return None
    assert isinstance(message, CmpMessage)
    return message


def only_cmp_failure(function, *args):
    try:
        return function(*args)
    except CmpFailure:
        return None


def read_request_side(message):
    """What a server does with a request before trusting it."""
    if message.body_type in ("ir", "cr", "kur"):
        for request in only_cmp_failure(cert_requests, message) or []:
            only_cmp_failure(request.verify_pop)
    if message.body_type == "certConf":
        only_cmp_failure(cert_statuses, message)
    if message.body_type == "p10cr":
        only_cmp_failure(pkcs10_request, message)
    only_cmp_failure(verify_mac, message, SECRET)
    # A signed request: its signer comes from extraCerts, which nothing authenticates yet.
    for signer in only_cmp_failure(message.extra_certificates) or []:
        try:
            subject_key_identifier(signer)
        except InvalidInput:
            pass  # the server answers badDataFormat
        only_cmp_failure(verify_signature, message, signer)


@FUZZ_RANDOM
@example(HUGE_LENGTH)
@given(st.binary(max_size=600))
def test_decode_random_bytes(data):
    """Random bytes decode to a CmpMessage or raise CmpFailure badDataFormat."""
    message = decode_or_none(data)
    if message is not None:
        read_request_side(message)


@FUZZ_RANDOM
@given(st.binary(max_size=64).map(lambda tail: b"\x30" + tail))
def test_decode_random_sequences(data):
    """Random bytes that start like a SEQUENCE (deeper into the decoder) give a message or badDataFormat."""
    message = decode_or_none(data)
    if message is not None:
        read_request_side(message)


@FUZZ
@example(UNSUPPORTED_CURVE)
@given(mutated_vectors())
def test_mutated_vectors_request_side(data):
    """Mutated captured messages: decode, cert_requests, verify_pop, cert_statuses, pkcs10_request, verify_mac and
    the signature check against each of extraCerts raise only CmpFailure."""
    message = decode_or_none(data)
    if message is not None:
        read_request_side(message)


@FUZZ
@example(BAD_ISSUED_VERSION)
@example(BAD_EXTRA_VERSION)
@given(mutated_vectors())
def test_mutated_vectors_response_side(data):
    """Mutated captured messages: what a client reads (cert_responses, extraCerts, error) raises only CmpFailure.

    extraCerts are not covered by PBM, so a client meets damaged ones even in authentic responses.
    """
    message = decode_or_none(data)
    if message is None:
        return
    only_cmp_failure(message.extra_certificates)
    if message.body_type in ("ip", "cp", "kup"):
        only_cmp_failure(cert_responses, message)
    if message.body_type == "error":
        only_cmp_failure(error_content, message)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_every_truncation_of_a_vector(name):
    """Every prefix of every captured message (at a stride) is badDataFormat, never another exception."""
    data = VECTORS[name]
    for end in range(0, len(data), 7):
        assert decode_or_none(data[:end]) is None
