# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""PBM protection (cmp_protection) against the MACs OpenSSL computed in tests/fixtures/cmp."""

from __future__ import annotations

import hashlib
import hmac
import importlib

import pytest
from conftest import FIXTURES
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc4210, rfc9480
from trustpoint_core import cmp_protection
from trustpoint_core.cmp_message import CmpMessage, Header, encode_message, pkiconf_body
from trustpoint_core.cmp_protection import (
    MAX_ITERATIONS,
    PBM_OID,
    PasswordBasedMac,
    verify_mac,
)
from trustpoint_core.errors import CmpFailure

VECTORS = FIXTURES / "cmp"
SECRET = b"trustpoint-test-secret"
# Every PBM-protected vector; *_signed.der are signature-protected.
ALL = sorted(path.name for path in VECTORS.glob("*.der") if "_signed" not in path.name)
SHA1, SHA256, SHA512 = "1.3.14.3.2.26", "2.16.840.1.101.3.4.2.1", "2.16.840.1.101.3.4.2.3"
HMAC_SHA1 = "1.3.6.1.5.5.8.1.2"
HMAC_WITH_SHA256 = "1.2.840.113549.2.9"
# (owf, mac, iterations) each captured message was protected with.
DEFAULTS = (SHA256, HMAC_SHA1, 500)
PARAMETERS = {name: DEFAULTS for name in ALL}
# -digest sha512 -mac hmacWithSHA256 changes the client's messages; the mock keeps its defaults.
PARAMETERS.update({name: (SHA512, HMAC_WITH_SHA256, 500) for name in ("ir_sha512.der", "certconf_sha512.der")})


def raw(name):
    return (VECTORS / name).read_bytes()


def load(name):
    return CmpMessage.decode(raw(name))


def flip(der, offset):
    data = bytearray(der)
    data[offset] ^= 0x01
    return bytes(data)


def body_end(der):
    asn1, _unused = decoder.decode(der, asn1Spec=rfc9480.PKIMessage())
    header_der, body_der = encoder.encode(asn1["header"]), encoder.encode(asn1["body"])
    return der.index(header_der + body_der) + len(header_der) + len(body_der)


def reference_mac(secret, salt, owf, iterations, mac, data):
    """RFC 4210 5.1.3.1 written out independently: K = owf^n(secret || salt), MAC = HMAC(K, data)."""
    key = secret + salt
    for _index in range(iterations):
        key = hashlib.new(owf, key).digest()
    return hmac.new(key, data, mac).digest()


class RawPbm:
    """A protector with any PBMParameter, even ones PasswordBasedMac refuses (to build bad messages)."""

    def __init__(self, owf=SHA256, iterations=500, mac=HMAC_SHA1, secret=SECRET, kid=b"11"):
        self.owf, self.iterations, self.mac, self.secret, self.kid = owf, iterations, mac, secret, kid
        self.salt = b"s" * 16

    def algorithm(self):
        params = rfc4210.PBMParameter()
        params["salt"] = self.salt
        params["owf"]["algorithm"] = univ.ObjectIdentifier(self.owf)
        params["iterationCount"] = self.iterations
        params["mac"]["algorithm"] = univ.ObjectIdentifier(self.mac)
        return PBM_OID, encoder.encode(params)

    def protect(self, protected_part):
        return b"\x00" * 20  # never checked: these messages must be refused before the MAC


def message_with(protector):
    return CmpMessage.decode(encode_message(Header(transaction_id=b"t" * 16), pkiconf_body(), protector))


@pytest.fixture
def no_key_derivation(monkeypatch):
    """Fail the test if a PBM key is derived: bad parameters must be refused before the work."""

    def refuse(self):
        raise AssertionError("derive_key called for parameters that should have been refused")

    monkeypatch.setattr(PasswordBasedMac, "derive_key", refuse)


# --- captured vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_verify_mac_accepts_openssl_mac(name):
    """verify_mac accepts every captured message with the secret and returns the parameters it used."""
    message = load(name)
    pbm = verify_mac(message, SECRET)
    assert (pbm.owf, pbm.mac, pbm.iterations) == PARAMETERS[name]
    assert len(pbm.salt) == 16
    assert pbm.kid == b"11"


@pytest.mark.parametrize("name", ALL)
def test_parameters_read_from_protection_alg(name):
    """PasswordBasedMac.from_parameters reads salt/owf/iterations/mac exactly as the PBMParameter holds them."""
    message = load(name)
    params, _unused = decoder.decode(message.protection_params, asn1Spec=rfc4210.PBMParameter())
    pbm = PasswordBasedMac.from_parameters(message.protection_params, SECRET)
    assert pbm.salt == params["salt"].asOctets()
    assert (pbm.owf, pbm.mac, pbm.iterations) == PARAMETERS[name]
    # OpenSSL leaves the AlgorithmIdentifier parameters of owf and mac absent.
    assert not params["owf"]["parameters"].isValue and not params["mac"]["parameters"].isValue


@pytest.mark.parametrize("name", ALL)
def test_mac_matches_independent_computation(name):
    """The protection OpenSSL sent equals an independent RFC 4210 computation and PasswordBasedMac.protect."""
    message = load(name)
    pbm = PasswordBasedMac.from_parameters(message.protection_params, SECRET)
    names = {SHA256: "sha256", SHA512: "sha512", HMAC_SHA1: "sha1", HMAC_WITH_SHA256: "sha256"}
    expected = reference_mac(SECRET, pbm.salt, names[pbm.owf], pbm.iterations, names[pbm.mac], message.protected_part)
    assert message.protection == expected == pbm.protect(message.protected_part)
    assert len(message.protection) == (20 if pbm.mac == HMAC_SHA1 else 32)


@pytest.mark.parametrize("oid", sorted(cmp_protection.OWF_HASHES))
def test_every_owf_derives_what_hashlib_derives(oid):
    """The constructor the derivation runs (CPython's own implementation where there is one) hashes as hashlib's."""
    name = cmp_protection.OWF_HASHES[oid]
    key = PasswordBasedMac(b"secret", salt=b"s" * 16, owf=oid, iterations=37).derive_key()
    expected = b"secret" + b"s" * 16
    for _round in range(37):
        expected = hashlib.new(name, expected).digest()
    assert key == expected


def test_the_owf_is_cpythons_own_where_it_has_one():
    """What makes the derivation cheaper: hashlib's (OpenSSL's) constructor only without the builtin modules."""
    if cmp_protection._fips_mode():
        pytest.skip("OpenSSL runs in FIPS mode: hashlib's constructors are the ones to use")
    for name in ("sha1", "sha256", "sha512"):
        constructor = cmp_protection.owf_constructor(name)
        expected = None
        for module_name in cmp_protection._BUILTIN_HASH_MODULES[name]:
            try:
                expected = getattr(importlib.import_module(module_name), name)
                break
            except (ImportError, AttributeError):
                continue
        assert constructor is (expected or getattr(hashlib, name))
        assert expected is None or constructor is not getattr(hashlib, name)


def test_the_owf_falls_back_to_hashlib(monkeypatch):
    """Without CPython's own modules (another Python), or with OpenSSL in FIPS mode, hashlib's constructor."""

    def no_module(name, *args):
        raise ImportError(name)

    monkeypatch.setattr(cmp_protection.importlib, "import_module", no_module)
    assert cmp_protection.owf_constructor("sha256") is hashlib.sha256
    monkeypatch.undo()
    monkeypatch.setattr(cmp_protection, "_fips_mode", lambda: True)
    assert cmp_protection.owf_constructor("sha1") is hashlib.sha1


def test_request_and_response_use_different_salts():
    """The mock answers with a fresh salt, not the request's."""
    request, response = load("ir_pbm.der"), load("ip_pbm.der")
    assert verify_mac(request, SECRET).salt != verify_mac(response, SECRET).salt


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("secret", [b"", b"trustpoint-test-secreT", b"trustpoint-test-secret "])
def test_wrong_secret_is_bad_message_check(name, secret):
    """Any other secret gives badMessageCheck."""
    with pytest.raises(CmpFailure) as info:
        verify_mac(load(name), secret)
    assert info.value.fail_info == ("badMessageCheck",)


def test_secret_may_be_text():
    """A str secret is the same as its UTF-8 bytes."""
    verify_mac(load("ir_pbm.der"), SECRET.decode())


# The body of a pkiconf is NULL with no content: its last byte is a length, not a value.
BODY_FLIP = [name for name in ALL if not name.startswith("pkiconf")]


@pytest.mark.parametrize("name", BODY_FLIP)
def test_flipped_body_bit_is_bad_message_check(name):
    """One flipped bit in the last byte of the body still decodes but fails the MAC."""
    der = raw(name)
    message = CmpMessage.decode(flip(der, body_end(der) - 1))
    assert message.protected_part != load(name).protected_part
    with pytest.raises(CmpFailure) as info:
        verify_mac(message, SECRET)
    assert info.value.fail_info == ("badMessageCheck",)


@pytest.mark.parametrize("name", ALL)
def test_flipped_header_bit_is_bad_message_check(name):
    """One flipped bit in the senderNonce (header) fails the MAC."""
    der = raw(name)
    nonce = load(name).sender_nonce
    message = CmpMessage.decode(flip(der, der.index(nonce)))
    with pytest.raises(CmpFailure) as info:
        verify_mac(message, SECRET)
    assert info.value.fail_info == ("badMessageCheck",)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("position", [0, -1])
def test_flipped_protection_bit_is_bad_message_check(name, position):
    """One flipped bit in the first or last byte of the protection fails the MAC."""
    der = raw(name)
    protection = load(name).protection
    start = der.rindex(protection)
    message = CmpMessage.decode(flip(der, start + position % len(protection)))
    assert message.protection != protection
    with pytest.raises(CmpFailure) as info:
        verify_mac(message, SECRET)
    assert info.value.fail_info == ("badMessageCheck",)


def test_extra_certs_are_not_protected():
    """extraCerts lie outside the protected part: dropping them leaves the MAC valid (callers must check chains)."""
    asn1, _unused = decoder.decode(raw("ip_pbm.der"), asn1Spec=rfc9480.PKIMessage())
    stripped = rfc9480.PKIMessage()
    for field in ("header", "body", "protection"):
        stripped[field] = asn1[field]
    message = CmpMessage.decode(encoder.encode(stripped))
    assert message.extra_certs == []
    verify_mac(message, SECRET)


# --- parameters the core must refuse --------------------------------------------------------------


@pytest.mark.parametrize("iterations", [MAX_ITERATIONS + 1, 200000, 2**31 - 1, 2**64])
def test_excessive_iterations_are_bad_alg(iterations, no_key_derivation):
    """An iterationCount above MAX_ITERATIONS is badAlg, refused before any key derivation."""
    message = message_with(RawPbm(iterations=iterations))
    with pytest.raises(CmpFailure) as info:
        verify_mac(message, SECRET)
    assert info.value.fail_info == ("badAlg",)


@pytest.mark.parametrize("iterations", [0, -1])
def test_non_positive_iterations_are_bad_alg(iterations, no_key_derivation):
    """iterationCount 0 or negative is badAlg."""
    with pytest.raises(CmpFailure) as info:
        verify_mac(message_with(RawPbm(iterations=iterations)), SECRET)
    assert info.value.fail_info == ("badAlg",)


def test_max_iterations_is_accepted():
    """Exactly MAX_ITERATIONS (OpenSSL's own bound) is still accepted."""
    pbm = PasswordBasedMac(SECRET, iterations=MAX_ITERATIONS, kid=b"11")
    message = CmpMessage.decode(encode_message(Header(transaction_id=b"t" * 16), pkiconf_body(), pbm))
    assert verify_mac(message, SECRET).iterations == MAX_ITERATIONS


@pytest.mark.parametrize(
    ("owf", "mac"),
    [
        ("1.2.840.113549.2.5", HMAC_SHA1),  # md5 as owf
        ("1.2.3.4", HMAC_SHA1),
        (SHA256, "1.2.840.113549.2.5"),  # md5 as mac
        (SHA256, "2.16.840.1.101.3.4.2.1"),  # a hash where a MAC belongs
        (SHA256, "1.2.3.4"),
    ],
)
def test_unknown_owf_or_mac_is_bad_alg(owf, mac, no_key_derivation):
    """A one-way function or MAC outside RFC 9481's list is badAlg."""
    with pytest.raises(CmpFailure) as info:
        verify_mac(message_with(RawPbm(owf=owf, mac=mac)), SECRET)
    assert info.value.fail_info == ("badAlg",)


@pytest.mark.parametrize(
    "kwargs",
    [{"owf": "1.2.3"}, {"mac": "1.2.3"}, {"iterations": 0}, {"iterations": MAX_ITERATIONS + 1}],
)
def test_password_based_mac_refuses_bad_parameters(kwargs):
    """The constructor refuses what verify_mac refuses: unknown owf/mac and out-of-range iterations are badAlg."""
    with pytest.raises(CmpFailure) as info:
        PasswordBasedMac(SECRET, **kwargs)
    assert info.value.fail_info == ("badAlg",)


def test_unprotected_message_is_bad_message_check():
    """A message without protection is badMessageCheck."""
    with pytest.raises(CmpFailure) as info:
        verify_mac(message_with(None), SECRET)
    assert info.value.fail_info == ("badMessageCheck",)


@pytest.mark.parametrize("name", ["ir_signed.der", "ip_signed.der"])
def test_captured_signature_protection_is_bad_message_check(name):
    """OpenSSL's signature-protected ir/ip (ecdsa-with-SHA256, parameters absent) is not accepted as PBM.

    Core bug if CmpMessage.decode fails here with badDataFormat: see test_cmp_message's signed tests.
    """
    with pytest.raises(CmpFailure) as info:
        verify_mac(load(name), SECRET)
    assert info.value.fail_info == ("badMessageCheck",)


def test_signature_protected_message_is_bad_message_check():
    """A message protected by another algorithm (ecdsa-with-SHA256) is not accepted as PBM."""

    class Signature:
        kid = b"kid"

        def algorithm(self):
            return "1.2.840.10045.4.3.2", None  # parameters absent, as RFC 5758 requires

        def protect(self, protected_part):
            return b"\x30\x00"

    with pytest.raises(CmpFailure) as info:
        verify_mac(message_with(Signature()), SECRET)
    assert info.value.fail_info == ("badMessageCheck",)


@pytest.mark.parametrize("params", [None, b"\x04\x00", b"\x30\x03\x02\x01\x01"])
def test_unreadable_parameters_are_bad_data_format(params):
    """PBM without parameters, or with something that is not a PBMParameter, is badDataFormat."""
    with pytest.raises(CmpFailure) as info:
        PasswordBasedMac.from_parameters(params, SECRET)
    assert info.value.fail_info == ("badDataFormat",)


def test_parameters_with_trailing_data_are_bad_data_format():
    """Bytes after the PBMParameter are badDataFormat."""
    _unused, params = PasswordBasedMac(SECRET).algorithm()
    with pytest.raises(CmpFailure) as info:
        PasswordBasedMac.from_parameters(params + b"\x00", SECRET)
    assert info.value.fail_info == ("badDataFormat",)


# --- building protection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owf", "mac"), [(SHA256, HMAC_SHA1), (SHA512, HMAC_WITH_SHA256), (SHA1, "1.2.840.113549.2.11")]
)
def test_protect_and_verify_round_trip(owf, mac):
    """A message protected by the core verifies with its parameters; OpenSSL's encoding (absent params) is used."""
    pbm = PasswordBasedMac(SECRET, owf=owf, mac=mac, iterations=1000, kid=b"dev-1")
    message = CmpMessage.decode(encode_message(Header(transaction_id=b"t" * 16), pkiconf_body(), pbm))
    assert message.sender_kid == b"dev-1"
    assert message.protection_alg == PBM_OID
    used = verify_mac(message, SECRET)
    assert (used.owf, used.mac, used.iterations, used.salt) == (owf, mac, 1000, pbm.salt)
    params, _unused = decoder.decode(message.protection_params, asn1Spec=rfc4210.PBMParameter())
    assert not params["owf"]["parameters"].isValue and not params["mac"]["parameters"].isValue


def test_the_answer_keeps_the_parameters_and_the_key(monkeypatch):
    """for_answer: the request's secret, salt, owf, mac and iterations, the given kid, and the key derived for the
    request (RFC 4210 5.1.3.1): protecting the answer derives nothing."""
    request = verify_mac(CmpMessage.decode(raw("ir_sha512.der")), SECRET)
    answer = request.for_answer(kid=b"srv")
    assert (answer.secret, answer.salt, answer.owf, answer.mac, answer.iterations) == (
        SECRET,
        request.salt,
        request.owf,
        request.mac,
        request.iterations,
    )
    assert answer.kid == b"srv"
    fresh = cmp_protection.PasswordBasedMac(SECRET, answer.salt, answer.owf, answer.iterations, answer.mac)
    monkeypatch.setitem(cmp_protection._OWF_CONSTRUCTORS, answer.owf, None)  # a derivation fails now
    with pytest.raises(TypeError):
        fresh.protect(b"ip")
    protection = answer.protect(b"ip")
    monkeypatch.undo()
    assert protection == fresh.protect(b"ip")
