# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The DER of an end-entity certificate, put together from parts (issue 16).

cryptography's CertificateBuilder took 0.1-0.2 ms of CPU per issued certificate, of which the signature is 25 us
(ECDSA P-256): each builder step copies the builder, and each extension and name is read back from its Python
objects into the encoder. Here the parts that stay the same (the issuer's name and key identifier, a profile's
key usages) are encoded once per process and the certificate is the bytes around them. The bytes are the ones
cryptography's builder writes for the same certificate (tests/unit/test_x509_der.py compares them), so a
certificate does not depend on which of the two made it.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress

from .asn1 import der_children, der_integer, der_oid, der_sequence, der_tlv, inner_der
from .errors import InvalidInput
from .keys import public_key_der, sign
from .profiles import KEY_USAGE_FLAGS

try:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
except ImportError:  # reported by deps.missing()
    pass

_VERSION_3 = der_tlv(0xA0, der_integer(2))
_CRITICAL = der_tlv(0x01, b"\xff")
_NULL = b"\x05\x00"
# signatureAlgorithm of (issuer key kind, hash name): RFC 5758 3.2 (ECDSA, no parameters), RFC 4055 5 (RSA, NULL).
_SIGNATURE_ALGORITHMS = {
    ("ec", "sha256"): "1.2.840.10045.4.3.2",
    ("ec", "sha384"): "1.2.840.10045.4.3.3",
    ("ec", "sha512"): "1.2.840.10045.4.3.4",
    ("rsa", "sha256"): "1.2.840.113549.1.1.11",
    ("rsa", "sha384"): "1.2.840.113549.1.1.12",
    ("rsa", "sha512"): "1.2.840.113549.1.1.13",
}
_BASIC_CONSTRAINTS = "2.5.29.19"
_KEY_USAGE = "2.5.29.15"
_SUBJECT_KEY_IDENTIFIER = "2.5.29.14"
_AUTHORITY_KEY_IDENTIFIER = "2.5.29.35"
_EXTENDED_KEY_USAGE = "2.5.29.37"
_SUBJECT_ALT_NAME = "2.5.29.17"
_CRL_DISTRIBUTION_POINTS = "2.5.29.31"


def _extension(oid, critical, value):
    return der_sequence(der_oid(oid), _CRITICAL if critical else b"", der_tlv(0x04, value))


def _time(when):
    """UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5); whole seconds, UTC (a naive time is
    taken as UTC, as cryptography does)."""
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc)
    if when.year < 2050:
        return der_tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return der_tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


def _bit_string(bits):
    """A DER BIT STRING of named bits (indexes set), without trailing zero bits (X.690 11.2.2)."""
    if not bits:
        return der_tlv(0x03, b"\x00")
    size = max(bits) + 1
    value = sum(1 << (8 * ((size + 7) // 8) - 1 - bit) for bit in bits)
    return der_tlv(0x03, bytes([(8 - size % 8) % 8]) + value.to_bytes((size + 7) // 8, "big"))


def key_identifier(spki_der):
    """RFC 5280 4.2.1.2 (1): SHA-1 of the subjectPublicKey BIT STRING's bits, as cryptography's from_public_key."""
    bits = inner_der(der_children(spki_der)[1])[1:]  # after the unused-bits octet (0 for keys)
    return hashlib.sha1(bits).digest()  # noqa: S324 (an identifier, not a signature)


@functools.lru_cache(maxsize=64)
def _issuer_parts(issuer_cert):
    """(the issuer's name, its authorityKeyIdentifier extension) for the certificates issuer_cert signs."""
    aki = der_sequence(der_tlv(0x80, key_identifier(public_key_der(issuer_cert.public_key()))))
    return issuer_cert.subject.public_bytes(), _extension(_AUTHORITY_KEY_IDENTIFIER, False, aki)


@functools.lru_cache(maxsize=64)
def _usage_extensions(key_usage, extended_key_usage_oids):
    """basicConstraints (not a CA), keyUsage (critical) and extendedKeyUsage of a profile, encoded."""
    bits = [KEY_USAGE_FLAGS.index(flag) for flag in key_usage]
    parts = _extension(_BASIC_CONSTRAINTS, True, der_sequence()) + _extension(_KEY_USAGE, True, _bit_string(bits))
    return parts, (
        _extension(_EXTENDED_KEY_USAGE, False, der_sequence(*(der_oid(oid) for oid in extended_key_usage_oids)))
        if extended_key_usage_oids
        else b""
    )


def _general_name(name):
    """A GeneralName (RFC 5280 4.2.1.6) of the kinds the PKI issues."""
    if isinstance(name, x509.DNSName):
        return der_tlv(0x82, name.value.encode("ascii"))
    if isinstance(name, x509.IPAddress) and isinstance(name.value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return der_tlv(0x87, name.value.packed)
    if isinstance(name, x509.UniformResourceIdentifier):
        return der_tlv(0x86, name.value.encode("ascii"))
    if isinstance(name, x509.RFC822Name):
        return der_tlv(0x81, name.value.encode("ascii"))
    raise InvalidInput("subject alternative names like %s are not issued" % name)


def _signature_algorithm(issuer_key, hash_algorithm):
    kind = "ec" if isinstance(issuer_key, ec.EllipticCurvePrivateKey) else "rsa"
    if kind == "rsa" and not isinstance(issuer_key, rsa.RSAPrivateKey):
        raise InvalidInput("cannot sign certificates with a %s key" % type(issuer_key).__name__)
    oid = _SIGNATURE_ALGORITHMS.get((kind, hash_algorithm.name))
    if oid is None:
        raise InvalidInput("cannot sign certificates with %s and %s" % (kind, hash_algorithm.name))
    return der_sequence(der_oid(oid), _NULL if kind == "rsa" else b"")


def tbs_certificate(
    issuer_cert,
    issuer_key,
    hash_algorithm,
    public_key,
    subject,
    serial_number,
    not_before,
    not_after,
    key_usage,
    extended_key_usage_oids=(),
    subject_alt_names=(),
    san_critical=False,
    crl_url=None,
):
    """The TBSCertificate DER: version 3, the extensions in this order: basicConstraints, keyUsage,
    subjectKeyIdentifier, authorityKeyIdentifier, extendedKeyUsage, subjectAltName, cRLDistributionPoints
    (the last three when given). key_usage: cryptography's KeyUsage argument names that are set."""
    issuer_name, aki = _issuer_parts(issuer_cert)
    usage, extended = _usage_extensions(tuple(key_usage), tuple(oid.dotted_string for oid in extended_key_usage_oids))
    spki = public_key_der(public_key)
    extensions = [usage, _extension(_SUBJECT_KEY_IDENTIFIER, False, der_tlv(0x04, key_identifier(spki))), aki, extended]
    if subject_alt_names:
        sans = der_sequence(*(_general_name(name) for name in subject_alt_names))
        extensions.append(_extension(_SUBJECT_ALT_NAME, san_critical, sans))
    if crl_url:
        point = der_sequence(der_tlv(0xA0, der_tlv(0xA0, der_tlv(0x86, crl_url.encode("ascii")))))
        extensions.append(_extension(_CRL_DISTRIBUTION_POINTS, False, der_sequence(point)))
    return der_sequence(
        _VERSION_3,
        der_integer(serial_number),
        _signature_algorithm(issuer_key, hash_algorithm),
        issuer_name,
        der_sequence(_time(not_before), _time(not_after)),
        subject.public_bytes(),
        spki,
        der_tlv(0xA3, der_sequence(*extensions)),
    )


def sign_certificate(tbs, issuer_key, hash_algorithm):
    """The Certificate (cryptography's) of tbs (tbs_certificate's, with the same key and hash) signed."""
    signature = sign(issuer_key, tbs, hash_algorithm)
    algorithm = _signature_algorithm(issuer_key, hash_algorithm)
    return x509.load_der_x509_certificate(der_sequence(tbs, algorithm, der_tlv(0x03, b"\x00" + signature)))
