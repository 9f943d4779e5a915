# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Keys the server generates for a device's request: CMP central key generation (RFC 9483 4.1.6), which key and how
it goes back (trustpoint_core.cmp_keygen builds the EnvelopedData; docs/server.md, "CMP policy"), and EST
serverkeygen's."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from trustpoint_core import cmp_keygen, keys
from trustpoint_core.asn1 import der_oid
from trustpoint_core.cmp_message import CURVE_OIDS, ID_EC_PUBLIC_KEY, ID_RSA_ENCRYPTION
from trustpoint_core.errors import InvalidInput

from ..runtime import on_loop
from .pki import Signer, ca_certificate

# The DER of a namedCurve parameter -> the key type.
_CURVE_KEY_TYPES = {der_oid(oid): key_type for key_type, oid in CURVE_OIDS.items()}


class KeygenRefused(Exception):
    """A central key generation request this domain does not serve; fail_info says which PKIFailureInfo."""

    def __init__(self, message, fail_info):
        super().__init__(message)
        self.message = message
        self.fail_info = fail_info


def key_type_for(domain, profile, key_algorithm=None):
    """The key type to generate: the one key_algorithm ((OID, parameters DER) of the template) names, else the
    domain's own key type when the profile certifies it, else the profile's first."""
    if not domain.cmp_central_keygen:
        raise KeygenRefused(
            "central key generation is switched off for domain %s; send a public key in the request" % domain.name,
            "notAuthorized",
        )
    if key_algorithm is None:
        return domain.key_type if domain.key_type in profile.key_types else profile.key_types[0]
    oid, params = key_algorithm
    if oid == ID_EC_PUBLIC_KEY:
        if params is not None:
            wanted = _CURVE_KEY_TYPES.get(params)
        else:
            wanted = next((t for t in (domain.key_type, *profile.key_types) if t in CURVE_OIDS), None)
    elif oid == ID_RSA_ENCRYPTION:
        wanted = domain.key_type if domain.key_type.startswith("rsa-") else "rsa-2048"
    else:
        wanted = None
    if wanted is None or wanted not in profile.key_types:
        raise KeygenRefused(
            "the template asks for a key of algorithm %s that profile %s does not certify; it certifies %s"
            % (oid, profile.name, ", ".join(profile.key_types)),
            "badAlg",
        )
    return wanted


def generate_key(key_type):
    """A new private key of key_type for a request (CMP central key generation, EST serverkeygen). An RSA key
    takes tens of milliseconds to seconds: a request on a worker's loop moves to a thread first (runtime/on_loop.py),
    so call this before the request changes anything."""
    if key_type.startswith("rsa-"):
        on_loop.long_work_ahead()
    return keys.generate_private_key(key_type)


def check_recipient(certificate):
    """A signed request gets its key encrypted to the signer's certificate: EC or RSA."""
    if not isinstance(certificate.public_key(), (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise KeygenRefused(
            "a centrally generated key is sent to an EC or RSA certificate; this request is signed with a %s key"
            % type(certificate.public_key()).__name__,
            "badAlg",
        )


def envelope(private_key, domain, vault, secret=None, recipient=None):
    """The EnvelopedData DER for the requester, signed by the domain's issuing CA (the key generation authority)."""
    signer = Signer(domain.ca("issuing"), vault)
    root = ca_certificate(domain.ca("root").certificate_der)
    try:
        return cmp_keygen.envelope_private_key(
            private_key, signer.private_key, signer.certificate, [root], secret=secret, recipient=recipient
        )
    except InvalidInput as exc:
        raise KeygenRefused(str(exc), "badAlg") from exc
