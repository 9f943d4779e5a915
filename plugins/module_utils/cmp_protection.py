# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP message protection: password-based MAC (RFC 4210 5.1.3.1, RFC 9481 6.1.1)."""

from __future__ import annotations

import hashlib
import hmac
import os

from .errors import CmpFailure

try:
    from pyasn1.codec.der import decoder, encoder
    from pyasn1.error import PyAsn1Error
    from pyasn1.type import univ
    from pyasn1_alt_modules import rfc4210
except ImportError:  # reported by deps.missing()
    pass

PBM_OID = "1.2.840.113533.7.66.13"

# One-way functions PBM may name (RFC 9481 6.1.1 and OpenSSL's -digest choices).
OWF_HASHES = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
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
# Deriving the key costs one hash per iteration: bound it before doing the work (OpenSSL refuses
# responses above 100000 too).
MAX_ITERATIONS = 100000
SALT_SIZE = 16


class PasswordBasedMac:
    """PBM protection with one set of parameters. kid is the senderKID to put in the header."""

    def __init__(self, secret, salt=None, owf=OWF_SHA256, iterations=10000, mac=MAC_HMAC_SHA256, kid=None):
        if owf not in OWF_HASHES:
            raise CmpFailure("unsupported PBM one-way function %s" % owf, "badAlg")
        if mac not in MAC_HASHES:
            raise CmpFailure("unsupported PBM MAC algorithm %s" % mac, "badAlg")
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise CmpFailure("PBM iteration count %d is outside 1..%d" % (iterations, MAX_ITERATIONS), "badAlg")
        self.secret = secret if isinstance(secret, bytes) else secret.encode()
        self.salt = salt if salt is not None else os.urandom(SALT_SIZE)
        self.owf = owf
        self.iterations = iterations
        self.mac = mac
        self.kid = kid

    @classmethod
    def from_parameters(cls, params_der, secret, kid=None):
        """The PBM a PBMParameter (DER) describes; bad parameters are badAlg or badDataFormat."""
        if params_der is None:
            raise CmpFailure("PBM protection without parameters", "badDataFormat")
        try:
            params, rest = decoder.decode(params_der, asn1Spec=rfc4210.PBMParameter())
        except PyAsn1Error as exc:
            raise CmpFailure("unreadable PBM parameters: %s" % exc, "badDataFormat") from exc
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

    def with_fresh_salt(self, kid=None):
        """The same parameters with a new salt: how a response answers a PBM-protected request."""
        return PasswordBasedMac(self.secret, None, self.owf, self.iterations, self.mac, kid)

    def algorithm(self):
        """(protectionAlg OID, DER of its parameters)."""
        params = rfc4210.PBMParameter()
        params["salt"] = self.salt
        # Parameters absent for both, as OpenSSL and RFC 9481 encode them.
        params["owf"]["algorithm"] = univ.ObjectIdentifier(self.owf)
        params["iterationCount"] = self.iterations
        params["mac"]["algorithm"] = univ.ObjectIdentifier(self.mac)
        return PBM_OID, encoder.encode(params)

    def derive_key(self):
        key = self.secret + self.salt
        owf = OWF_HASHES[self.owf]
        for _round in range(self.iterations):
            key = hashlib.new(owf, key).digest()
        return key

    def protect(self, protected_part):
        return hmac.new(self.derive_key(), protected_part, MAC_HASHES[self.mac]).digest()


def verify_pbm(message, secret):
    """Verify a PBM-protected CmpMessage with secret; returns the PasswordBasedMac it used.

    Raises CmpFailure: badMessageCheck when the MAC does not verify (or the message is not
    PBM-protected), badAlg for unsupported or excessive parameters.
    """
    if message.protection is None or message.protection_alg is None:
        raise CmpFailure("the message is not protected; PBM protection is required", "badMessageCheck")
    if message.protection_alg != PBM_OID:
        raise CmpFailure(
            "the message is protected with %s; this request needs PBM (%s)" % (message.protection_alg, PBM_OID),
            "badMessageCheck",
        )
    pbm = PasswordBasedMac.from_parameters(message.protection_params, secret, kid=message.sender_kid)
    if not hmac.compare_digest(pbm.protect(message.protected_part), message.protection):
        raise CmpFailure("message protection could not be verified", "badMessageCheck")
    return pbm
