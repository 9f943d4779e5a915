# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP message protection: PBM and PBMAC1 (RFC 9481 6.1), signatures (RFC 9481 3)."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os

from . import cmp_der, signatures
from .asn1 import der_integer, der_oid, der_sequence, der_tlv, optional
from .errors import CmpFailure, InvalidInput, excerpt
from .x509 import extension_value

try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from pyasn1.codec.der import decoder, encoder
    from pyasn1.error import PyAsn1Error
    from pyasn1.type import univ
    from pyasn1_alt_modules import rfc4210, rfc8018
except ImportError:  # reported by deps.missing()
    pass

PBM_OID = "1.2.840.113533.7.66.13"
PBMAC1_OID = "1.2.840.113549.1.5.14"
PBKDF2_OID = "1.2.840.113549.1.5.12"

# One-way functions PBM may name (RFC 9481 6.1.1 and OpenSSL's -digest choices).
OWF_HASHES = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
# CPython's own implementations of these hashes, by module (3.12 merged _sha256 and _sha512 into _sha2).
_BUILTIN_HASH_MODULES = {
    "sha1": ("_sha1",),
    "sha224": ("_sha2", "_sha256"),
    "sha256": ("_sha2", "_sha256"),
    "sha384": ("_sha2", "_sha512"),
    "sha512": ("_sha2", "_sha512"),
}


def _fips_mode():
    try:
        return bool(importlib.import_module("_hashlib").get_fips_mode())
    except (ImportError, AttributeError):
        return False


def owf_constructor(name):
    """The hash constructor PBM's key derivation calls once per iteration, on a 20-64 byte value: CPython's own
    implementation when it has one (a quarter less CPU per call than OpenSSL's through hashlib, which sets up an
    EVP context each time: 0.26 -> 0.19 ms for OpenSSL's 500 iterations, issue 16), else hashlib's. hashlib's
    (OpenSSL) always when OpenSSL runs in FIPS mode: the validated implementation then."""
    if not _fips_mode():
        for module_name in _BUILTIN_HASH_MODULES[name]:
            try:
                constructor = getattr(importlib.import_module(module_name), name)
            except (ImportError, AttributeError):
                continue
            if constructor(b"abc").digest() == hashlib.new(name, b"abc").digest():
                return constructor
    return getattr(hashlib, name)


_OWF_CONSTRUCTORS = {oid: owf_constructor(name) for oid, name in OWF_HASHES.items()}
# MAC algorithms: hmac-sha1 of RFC 2104/IPsec (OpenSSL's default) and PKCS#5 hmacWithSHA* (RFC 8018).
MAC_HASHES = {
    "1.3.6.1.5.5.8.1.2": "sha1",
    "1.2.840.113549.2.7": "sha1",
    "1.2.840.113549.2.8": "sha224",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}
OWF_SHA256 = "2.16.840.1.101.3.4.2.1"
MAC_HMAC_SHA256 = "1.2.840.113549.2.9"
HMAC_SHA1 = "1.2.840.113549.2.7"
# Deriving the key costs one hash per iteration: bound it before doing the work (OpenSSL refuses
# responses above 100000 too).
MAX_ITERATIONS = 100000
# PBMAC1 (PBKDF2) may ask for more: common clients use 262,144 (RFC 9481 suggests counts that cost), the server
# bounds it with a setting (cmp_max_mac_iterations) and a budget of iterations per second.
MAX_PBMAC1_ITERATIONS = 1000000
SALT_SIZE = 16
# The iteration count a new PasswordBasedMac uses (the core client's requests; a server answers with the
# request's count). RFC 4211 4.4 requires at least 100 and notes that many suggest 1000 as the minimum;
# OpenSSL's client uses 500. Iterations only slow down guessing a low-entropy secret from a captured
# message; the 192-bit random secrets this project's server hands out cannot be guessed either way.
# Both sides pay for every iteration; the server derives the key once per request, for the request and
# its answer (for_answer). 1000 keeps RFC 4211's suggested minimum at a tenth of the former
# 10000's cost: about 0.25 ms instead of 2.5 ms of server CPU per request on the project's 2-core VMs.
DEFAULT_PBM_ITERATIONS = 1000


class PasswordBasedMac:
    """PBM protection with one set of parameters. kid is the senderKID to put in the header."""

    def __init__(
        self, secret, salt=None, owf=OWF_SHA256, iterations=DEFAULT_PBM_ITERATIONS, mac=MAC_HMAC_SHA256, kid=None
    ):
        if owf not in OWF_HASHES:
            raise CmpFailure("unsupported PBM one-way function %s" % excerpt(owf), "badAlg")
        if mac not in MAC_HASHES:
            raise CmpFailure("unsupported PBM MAC algorithm %s" % excerpt(mac), "badAlg")
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise CmpFailure(
                "PBM iteration count %s is outside 1..%d" % (excerpt(iterations), MAX_ITERATIONS), "badAlg"
            )
        self.secret = secret if isinstance(secret, bytes) else secret.encode()
        self.salt = salt if salt is not None else os.urandom(SALT_SIZE)
        self.owf = owf
        self.iterations = iterations
        self.mac = mac
        self.kid = kid
        self._key = None

    @classmethod
    def from_parameters(cls, params_der, secret, kid=None):
        """The PBM a PBMParameter (DER) describes; bad parameters are badAlg or badDataFormat."""
        if params_der is None:
            raise CmpFailure("PBM protection without parameters", "badDataFormat")
        try:
            salt, owf, iterations, mac = cmp_der.pbm_parameters(params_der)
        except cmp_der.NotCommon:  # pyasn1 reads (or refuses) every other form
            pass
        else:
            return cls(secret, salt=salt, owf=owf, iterations=iterations, mac=mac, kid=kid)
        try:
            params, rest = decoder.decode(params_der, asn1Spec=rfc4210.PBMParameter())
        except PyAsn1Error as exc:
            raise CmpFailure("unreadable PBM parameters: %s" % excerpt(exc, 160), "badDataFormat") from exc
        if rest:
            raise CmpFailure("trailing data after the PBM parameters", "badDataFormat")
        return cls(
            secret,
            salt=params["salt"].asOctets(),
            owf=str(params["owf"]["algorithm"]),
            iterations=int(params["iterationCount"]),
            mac=str(params["mac"]["algorithm"]),
            kid=kid,
        )

    def for_answer(self, kid=None):
        """The protection of the answer to the request this one verified: the same parameters, salt included, and
        so the same key, derived once. RFC 4210 5.1.3.1 recommends PBMParameter constant throughout a transaction
        (ir/ip/certConf/pkiConf) to save the derivation; a salt of the answer's own would add nothing, the
        request's salt and MAC being in the open already."""
        answer = PasswordBasedMac(self.secret, self.salt, self.owf, self.iterations, self.mac, kid)
        answer._key = self.derive_key()
        return answer

    def algorithm(self):
        """(protectionAlg OID, DER of its parameters)."""
        # PBMParameter { salt, owf, iterationCount, mac }, written as DER directly. The AlgorithmIdentifiers
        # have no parameters, as OpenSSL and RFC 9481 encode them.
        return PBM_OID, der_sequence(
            der_tlv(0x04, self.salt),
            der_sequence(der_oid(self.owf)),
            der_integer(self.iterations),
            der_sequence(der_oid(self.mac)),
        )

    def derive_key(self):
        """The MAC key (secret and parameters do not change: derived once per object)."""
        if self._key is None:
            key = self.secret + self.salt
            owf = _OWF_CONSTRUCTORS[self.owf]
            for _round in range(self.iterations):
                key = owf(key).digest()
            self._key = key
        return self._key

    def protect(self, protected_part):
        return hmac.digest(self.derive_key(), protected_part, MAC_HASHES[self.mac])


class Pbmac1:
    """PBMAC1 protection (RFC 8018 7.1, RFC 9481 6.1.2): PBKDF2 key derivation, then HMAC."""

    def __init__(
        self,
        secret,
        salt=None,
        iterations=10000,
        key_length=32,
        prf=MAC_HMAC_SHA256,
        mac=MAC_HMAC_SHA256,
        kid=None,
        max_iterations=MAX_PBMAC1_ITERATIONS,
    ):
        for oid in (prf, mac):
            if oid not in MAC_HASHES:
                raise CmpFailure("unsupported PBMAC1 algorithm %s" % excerpt(oid), "badAlg")
        if not 1 <= iterations <= max_iterations:
            raise CmpFailure(
                "PBMAC1 iteration count %s is outside 1..%d" % (excerpt(iterations), max_iterations), "badAlg"
            )
        if not 16 <= key_length <= 64:
            raise CmpFailure("PBMAC1 key length %s is outside 16..64 bytes" % excerpt(key_length), "badAlg")
        self.secret = secret if isinstance(secret, bytes) else secret.encode()
        self.salt = salt if salt is not None else os.urandom(SALT_SIZE)
        self.iterations = iterations
        self.key_length = key_length
        self.prf = prf
        self.mac = mac
        self.kid = kid
        self._key = None

    @classmethod
    def from_parameters(cls, params_der, secret, kid=None, max_iterations=MAX_PBMAC1_ITERATIONS):
        if params_der is None:
            raise CmpFailure("PBMAC1 protection without parameters", "badDataFormat")
        try:
            params, rest = decoder.decode(params_der, asn1Spec=rfc8018.PBMAC1_params())
            if rest or str(params["keyDerivationFunc"]["algorithm"]) != PBKDF2_OID:
                raise CmpFailure("PBMAC1 must derive its key with PBKDF2", "badAlg")
            kdf, rest = decoder.decode(
                bytes(params["keyDerivationFunc"]["parameters"]), asn1Spec=rfc8018.PBKDF2_params()
            )
        except PyAsn1Error as exc:
            raise CmpFailure("unreadable PBMAC1 parameters: %s" % excerpt(exc, 160), "badDataFormat") from exc
        if rest or kdf["salt"].getName() != "specified":
            raise CmpFailure("PBKDF2 parameters must carry the salt itself", "badDataFormat")
        prf = optional(kdf, "prf")
        key_length = optional(kdf, "keyLength")
        mac = str(params["messageAuthScheme"]["algorithm"])
        return cls(
            secret,
            salt=kdf["salt"]["specified"].asOctets(),
            iterations=int(kdf["iterationCount"]),
            # RFC 9481 requires keyLength; without it use the MAC's output size.
            key_length=int(key_length)
            if key_length is not None
            else hashlib.new(MAC_HASHES.get(mac, "sha256")).digest_size,
            prf=str(prf["algorithm"]) if prf is not None else HMAC_SHA1,  # PBKDF2's default PRF
            mac=mac,
            kid=kid,
            max_iterations=max_iterations,
        )

    def for_answer(self, kid=None):
        """As PasswordBasedMac.for_answer: the same parameters and key."""
        answer = Pbmac1(
            self.secret, self.salt, self.iterations, self.key_length, self.prf, self.mac, kid, self.iterations
        )
        answer._key = self.derive_key()
        return answer

    def algorithm(self):
        kdf = rfc8018.PBKDF2_params()
        kdf["salt"]["specified"] = self.salt
        kdf["iterationCount"] = self.iterations
        kdf["keyLength"] = self.key_length
        kdf["prf"]["algorithm"] = univ.ObjectIdentifier(self.prf)
        params = rfc8018.PBMAC1_params()
        params["keyDerivationFunc"]["algorithm"] = univ.ObjectIdentifier(PBKDF2_OID)
        params["keyDerivationFunc"]["parameters"] = univ.Any(encoder.encode(kdf))
        params["messageAuthScheme"]["algorithm"] = univ.ObjectIdentifier(self.mac)
        return PBMAC1_OID, encoder.encode(params)

    def derive_key(self):
        """The MAC key (secret and parameters do not change: derived once per object)."""
        if self._key is None:
            self._key = hashlib.pbkdf2_hmac(
                MAC_HASHES[self.prf], self.secret, self.salt, self.iterations, self.key_length
            )
        return self._key

    def protect(self, protected_part):
        return hmac.new(self.derive_key(), protected_part, MAC_HASHES[self.mac]).digest()


class SignatureProtection:
    """Signature protection with a key and its certificate (RFC 4210 5.1.3.3, RFC 9483 3.2).

    The header's sender is the certificate's subject and senderKID its SKI; extraCerts start with the
    certificate, then its chain.
    """

    def __init__(self, private_key, certificate, chain=()):
        self.private_key = private_key
        self.certificate = certificate
        self.chain = list(chain)
        self.kid = subject_key_identifier(certificate)
        self._algorithm = signatures.algorithm_for(private_key)

    def algorithm(self):
        oid, params, _hash = self._algorithm
        return oid, params

    def protect(self, protected_part):
        return signatures.sign(self.private_key, protected_part)[2]

    @property
    def extra_certificates(self):
        return [self.certificate, *self.chain]


def subject_key_identifier(certificate):
    """The certificate's SKI, or None. Raises InvalidInput when its extensions are malformed."""
    value = extension_value(certificate, x509.SubjectKeyIdentifier)
    return value.digest if value is not None else None


def is_mac_protected(message):
    return message.protection_alg in (PBM_OID, PBMAC1_OID)


def verify_mac(message, secret, max_iterations=MAX_PBMAC1_ITERATIONS, charge=None):
    """Verify a PBM- or PBMAC1-protected CmpMessage with secret; returns the protector it used.

    max_iterations bounds a PBMAC1 count (PBM's is MAX_ITERATIONS); charge(iterations), when given, is called
    with the count before any derivation and may raise (a server's CPU budget). Raises CmpFailure:
    badMessageCheck when the MAC does not verify (or the message is not MAC-protected), badAlg for unsupported
    or excessive parameters.
    """
    if message.protection is None or message.protection_alg is None:
        raise CmpFailure("the message is not protected; PBM or PBMAC1 protection is required", "badMessageCheck")
    if message.protection_alg == PBM_OID:
        protector = PasswordBasedMac.from_parameters(message.protection_params, secret, kid=message.sender_kid)
    elif message.protection_alg == PBMAC1_OID:
        protector = Pbmac1.from_parameters(
            message.protection_params, secret, kid=message.sender_kid, max_iterations=max_iterations
        )
    else:
        raise CmpFailure(
            "the message is protected with %s; this request needs a MAC (PBM or PBMAC1)" % message.protection_alg,
            "badMessageCheck",
        )
    if charge is not None:
        charge(protector.iterations)
    if not hmac.compare_digest(protector.protect(message.protected_part), message.protection):
        raise CmpFailure("message protection could not be verified", "badMessageCheck")
    return protector


def verify_signature(message, certificate):
    """Verify a signature-protected CmpMessage with certificate's public key.

    Raises CmpFailure: badMessageCheck when the signature does not verify or the message is MAC-protected,
    badAlg for an unsupported algorithm.
    """
    if message.protection is None or message.protection_alg is None:
        raise CmpFailure("the message is not protected; a signature is required", "badMessageCheck")
    if is_mac_protected(message):
        raise CmpFailure("the message is MAC-protected; this request needs a signature", "badMessageCheck")
    try:
        public_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:  # the peer's certificate: an unknown algorithm or curve
        raise CmpFailure("the signer's public key cannot be used: %s" % exc, "badAlg") from exc
    try:
        valid = signatures.verify(
            public_key, message.protection_alg, message.protection_params, message.protection, message.protected_part
        )
    except (InvalidInput, ValueError) as exc:  # ValueError: parameters cryptography refuses (a PSS salt length)
        raise CmpFailure("message protection: %s" % exc, "badAlg") from exc
    if not valid:
        raise CmpFailure("the message signature does not verify with the signer's certificate", "badMessageCheck")
