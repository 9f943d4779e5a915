# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Signature algorithm identifiers (RFC 9481 section 3): choose one for a key, verify by one."""

from __future__ import annotations

from .asn1 import brief, decode, optional
from .errors import InvalidInput
from .keys import hash_for

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
    from pyasn1_alt_modules import rfc4055, rfc5280
except ImportError:  # reported by deps.missing()
    pass

RSASSA_PSS = "1.2.840.113549.1.1.10"
MGF1 = "1.2.840.113549.1.1.8"
ED25519 = "1.3.101.112"
ED448 = "1.3.101.113"

# OID -> (family, hash name); PSS takes its hash from its parameters, EdDSA has none.
SIGNATURE_ALGORITHMS = {
    "1.2.840.113549.1.1.11": ("rsa", "SHA256"),
    "1.2.840.113549.1.1.12": ("rsa", "SHA384"),
    "1.2.840.113549.1.1.13": ("rsa", "SHA512"),
    RSASSA_PSS: ("rsa-pss", None),
    "1.2.840.10045.4.3.2": ("ecdsa", "SHA256"),
    "1.2.840.10045.4.3.3": ("ecdsa", "SHA384"),
    "1.2.840.10045.4.3.4": ("ecdsa", "SHA512"),
    ED25519: ("ed25519", None),
    ED448: ("ed448", None),
}
_OID_BY_FAMILY = {value: oid for oid, value in SIGNATURE_ALGORITHMS.items()}
HASH_OIDS = {
    "1.3.14.3.2.26": "SHA1",
    "2.16.840.1.101.3.4.2.4": "SHA224",
    "2.16.840.1.101.3.4.2.1": "SHA256",
    "2.16.840.1.101.3.4.2.2": "SHA384",
    "2.16.840.1.101.3.4.2.3": "SHA512",
}


def algorithm_for(private_key):
    """(OID, parameters DER or None, hash) of the signature the PKI makes with private_key.

    RSA keys sign with PKCS#1 v1.5, EC keys with ECDSA; the hash follows keys.hash_for.
    """
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return ED25519, None, None
    if isinstance(private_key, ed448.Ed448PrivateKey):
        return ED448, None, None
    hash_algorithm = hash_for(private_key)
    family = "rsa" if isinstance(private_key, rsa.RSAPrivateKey) else "ecdsa"
    return _OID_BY_FAMILY[(family, hash_algorithm.name.upper())], None, hash_algorithm


def sign(private_key, data):
    """(OID, parameters DER or None, signature) over data."""
    oid, params, hash_algorithm = algorithm_for(private_key)
    if hash_algorithm is None:
        return oid, params, private_key.sign(data)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return oid, params, private_key.sign(data, padding.PKCS1v15(), hash_algorithm)
    return oid, params, private_key.sign(data, ec.ECDSA(hash_algorithm))


def _pss_padding(params_der):
    """The PSS padding and hash of RSASSA-PSS-params (RFC 4055); absent fields take the RFC's defaults
    (SHA-1, MGF1 with SHA-1, salt length 20)."""
    try:
        params = decode(params_der, rfc4055.RSASSA_PSS_params()) if params_der else rfc4055.RSASSA_PSS_params()
        mask = optional(params, "maskGenAlgorithm")
        mask_hash = None
        if mask is not None:
            if str(mask["algorithm"]) != MGF1:
                raise InvalidInput("unsupported RSASSA-PSS mask generation function %s" % mask["algorithm"])
            mask_params = optional(mask, "parameters")
            mask_hash = decode(bytes(mask_params), rfc5280.AlgorithmIdentifier()) if mask_params else None
    except InvalidInput:
        raise
    except Exception as exc:  # parameters from the wire
        raise InvalidInput("unreadable RSASSA-PSS parameters: %s" % brief(exc)) from exc
    salt = optional(params, "saltLength")
    padding_ = padding.PSS(mgf=padding.MGF1(_hash(mask_hash)), salt_length=int(salt) if salt is not None else 20)
    return padding_, _hash(optional(params, "hashAlgorithm"))


def _hash(algorithm):
    """The cryptography hash of an AlgorithmIdentifier (None: SHA-1, the RFC 4055 default)."""
    if algorithm is None:
        return hashes.SHA1()  # noqa: S303 (RFC 4055's default; the caller's algorithm identifier decides)
    name = HASH_OIDS.get(str(algorithm["algorithm"]))
    if name is None:
        raise InvalidInput("unsupported hash algorithm %s" % algorithm["algorithm"])
    return getattr(hashes, name)()


def _eddsa_class(family):
    return ed25519.Ed25519PublicKey if family == "ed25519" else ed448.Ed448PublicKey


def verify(public_key, oid, params_der, signature, data):
    """True when signature over data verifies with public_key under the algorithm identifier.

    Raises InvalidInput for an algorithm this module does not know or that does not fit the key.
    """
    known = SIGNATURE_ALGORITHMS.get(oid)
    if known is None:
        raise InvalidInput("unsupported signature algorithm %s" % oid)
    family, hash_name = known
    try:
        if family == "rsa" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), getattr(hashes, hash_name)())
        elif family == "rsa-pss" and isinstance(public_key, rsa.RSAPublicKey):
            pss, hash_algorithm = _pss_padding(params_der)
            public_key.verify(signature, data, pss, hash_algorithm)
        elif family == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(getattr(hashes, hash_name)()))
        elif family in ("ed25519", "ed448") and isinstance(public_key, _eddsa_class(family)):
            public_key.verify(signature, data)
        else:
            raise InvalidInput("signature algorithm %s does not fit a %s key" % (oid, type(public_key).__name__))
    except InvalidSignature:
        return False
    return True
