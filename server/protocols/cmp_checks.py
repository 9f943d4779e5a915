# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""RFC 9483 / RFC 9810 checks of a CMP request that need nothing but the message (and its signer): the
responder (cmp_responder.py) calls each at its place, and each raises CmpFailure with the failInfo RFC 9483
3.6.4 names. docs/server.md ("CMP policy") lists what they refuse.
"""

from __future__ import annotations

import hmac

from cryptography import x509 as cx509
from trustpoint_core import keys, x509
from trustpoint_core.cmp_protection import is_mac_protected, subject_key_identifier
from trustpoint_core.errors import CmpFailure, InvalidInput
from trustpoint_core.signatures import SIGNATURE_ALGORITHMS

# Bodies that open a transaction: their recipNonce must be absent (RFC 9483 3.1).
FIRST_MESSAGES = ("ir", "cr", "kur", "p10cr", "rr", "genm")
# Bodies this server accepts only signed (with a certificate it issued): a MAC is wrongIntegrity.
SIGNATURE_ONLY = ("cr", "kur", "rr")


def check_protection_fields(message):
    """protection and protectionAlg come together, and protectionAlg is a MAC or signature algorithm known
    here: an unknown one is badAlg, never tried as a signature."""
    if message.protection is not None and message.protection_alg is None:
        raise CmpFailure("the message carries protection but no protectionAlg in its header", "badMessageCheck")
    if message.protection is None and message.protection_alg is not None:
        raise CmpFailure(
            "the header names protectionAlg %s but the message has no protection" % message.protection_alg,
            "badMessageCheck",
        )
    known = is_mac_protected(message) or message.protection_alg in SIGNATURE_ALGORITHMS
    if message.protection_alg is not None and not known:
        raise CmpFailure("protectionAlg %s is not supported" % message.protection_alg, "badAlg")


def check_transaction_id(message):
    if message.transaction_id is None:
        raise CmpFailure("the header has no transactionID", "badDataFormat")


def check_first_message(message):
    """The first message of a transaction answers nothing: recipNonce absent."""
    if message.body_type in FIRST_MESSAGES and message.recip_nonce is not None:
        raise CmpFailure(
            "%s opens a transaction; its header must not carry a recipNonce" % message.body_type, "badRecipientNonce"
        )


def check_mac_sender(message):
    """A MAC-protected request names its sender as a directoryName (RFC 9483 3.1; NULL-DN is one)."""
    if message.sender_form != "directoryName":
        raise CmpFailure(
            "the sender of a MAC-protected message must be a directoryName, not %s" % message.sender_form,
            "badMessageCheck",
        )


def check_signature_sender(message, signer):
    """A signed request names its signer: sender = the certificate's subject, senderKID = its SubjectKeyIdentifier
    (required when the certificate has one, RFC 9483 3.1)."""
    # NULL-DN reads as None: it names a certificate with an empty subject (an IDevID may have one).
    sender = message.sender if message.sender is not None else cx509.Name([])
    if message.sender_form != "directoryName" or sender != signer.subject:
        raise CmpFailure(
            "the sender of a signed message must be the subject of its protecting certificate (%s)"
            % x509.name_to_string(signer.subject),
            "badMessageCheck",
        )
    try:
        ski = subject_key_identifier(signer)
    except InvalidInput as exc:
        raise CmpFailure("extraCerts: %s" % exc, "badDataFormat") from exc
    if ski is None:
        if message.sender_kid is not None:
            raise CmpFailure(
                "senderKID is given but the protecting certificate has no SubjectKeyIdentifier", "badMessageCheck"
            )
    elif message.sender_kid is None:
        raise CmpFailure(
            "senderKID is missing; it must be the SubjectKeyIdentifier of the protecting certificate", "badMessageCheck"
        )
    elif not hmac.compare_digest(message.sender_kid, ski):
        raise CmpFailure("senderKID is not the SubjectKeyIdentifier of the protecting certificate", "badMessageCheck")


def check_signature_only(message):
    if message.body_type in SIGNATURE_ONLY and is_mac_protected(message):
        raise CmpFailure(
            "%s must be signed with a certificate of the device; MAC protection is not accepted" % message.body_type,
            "wrongIntegrity",
        )


def check_cert_conf_status(status):
    """A certConf that accepts carries no failInfo (RFC 9483 4.1.1)."""
    if status.accepted and status.fail_info:
        raise CmpFailure("a certConf that accepts the certificate must carry no failInfo", "badRequest")


def check_revocation(wanted, certificate):
    """An rr's RevDetails: exactly one CRLReason (RFC 9483 4.2), and what certDetails says besides issuer and
    serialNumber agrees with the certificate they name."""
    if wanted.reason_count != 1:
        raise CmpFailure(
            "crlEntryDetails must carry exactly one CRLReason, not %d (openssl cmp: -revreason 0 for unspecified)"
            % wanted.reason_count,
            "badRequest",
        )
    if wanted.subject is not None and wanted.subject != certificate.subject:
        raise CmpFailure("certDetails names another subject than the certificate's", "badCertId")
    if wanted.spki_der is not None and wanted.spki_der != keys.public_key_der(certificate.public_key()):
        raise CmpFailure("certDetails names another public key than the certificate's", "badCertId")
