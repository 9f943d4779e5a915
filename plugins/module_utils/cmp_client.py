# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A CMP client for devices (RFC 9483): onboard (ir), update the key (kur), revoke (rr).

Requests are protected with a shared secret (MacCredential: PBM) or signed (SignatureCredential: an
IDevID or the current domain credential). Responses to signed requests must be signed by a CA that
chains to the caller's trust anchors.

HTTP is the caller's: `transport(url, body, content_type)` returns (status, content_type, body) and
raises TransportError when the server cannot be reached. Ansible modules pass one built on
ansible.module_utils.urls; anything else may pass its own.

With retries, a request whose answer was lost is sent again in a new transaction (with the same key), and a
certConf whose pkiConf was lost is sent again in its transaction (retry.py says what counts as lost).
"""

from __future__ import annotations

import hmac
import time

from .cmp_keygen import open_private_key
from .cmp_message import (
    STATUS_ACCEPTED,
    STATUS_GRANTED_WITH_MODS,
    CmpMessage,
    Header,
    cert_conf_body,
    cert_hash,
    cert_req_body,
    cert_responses,
    encode_message,
    error_content,
    genm_body,
    genp_values,
    random_nonce,
    revocation_statuses,
    rr_body,
)
from .cmp_protection import PasswordBasedMac, SignatureProtection, subject_key_identifier, verify_mac, verify_signature
from .errors import CmpFailure, ConfirmationUnknown, InvalidInput, TransportError
from .keys import same_public_key
from .retry import call_with_retries
from .x509 import certificate_der, verify_chain

try:
    from cryptography import x509
except ImportError:  # reported by deps.missing()
    pass

CONTENT_TYPE = "application/pkixcmp"
# A response signer must be a CA of the PKI, or a CMP RA (EKU id-kp-cmcRA): not just any certificate
# that chains to the trust anchor, such as another device's credential.
ID_KP_CMC_RA = "1.3.6.1.5.5.7.3.28"


class MacCredential:
    """A reference (senderKID; Trustpoint: the device id) and its shared secret."""

    sender = None  # PBM requests name no sender (NULL-DN), as OpenSSL's -ref/-secret
    extra_certificates = ()

    def __init__(self, reference, secret):
        self.kid = str(reference).encode()
        self.secret = secret.encode() if isinstance(secret, str) else secret

    def protector(self):
        return PasswordBasedMac(self.secret, kid=self.kid)

    def verify(self, response, trusted):
        verify_mac(response, self.secret)


class SignatureCredential:
    """A private key with its certificate (and the certificate's chain) that signs requests."""

    def __init__(self, private_key, certificate, chain=()):
        self.private_key = private_key
        self.certificate = certificate
        self.chain = list(chain)

    def protector(self):
        return SignatureProtection(self.private_key, self.certificate, self.chain)

    @property
    def sender(self):
        return self.certificate.subject

    @property
    def extra_certificates(self):
        return [self.certificate, *self.chain]

    def verify(self, response, trusted):
        verify_signed_response(response, trusted)


def trust_anchors(certificates):
    """The self-signed certificates among certificates (a domain's CA chain, say): the roots to trust.

    Intermediates given along are chain material, not anchors; without any root all count as anchors.
    """
    roots = [c for c in certificates or () if c.issuer == c.subject]
    return roots or list(certificates or ())


def verify_signed_response(response, trusted):
    """Verify a signed response: the signer chains to trusted and is a CA or CMP RA."""
    trusted = trust_anchors(trusted)
    if not trusted:
        raise CmpFailure("no trust anchor to verify the server's signature with", "signerNotTrusted")
    extra = response.extra_certificates()
    signer = next((c for c in extra if subject_key_identifier(c) == response.sender_kid), extra[0] if extra else None)
    if signer is None:
        raise CmpFailure("the signed response carries no signer certificate", "signerNotTrusted")
    try:
        verify_chain(signer, extra, trusted)
    except InvalidInput as exc:
        raise CmpFailure("the response signer is not trusted: %s" % exc, "signerNotTrusted") from exc
    if not (_is_ca(signer) or _has_cmc_ra(signer)):
        raise CmpFailure("the response signer is neither a CA nor a CMP RA", "signerNotTrusted")
    verify_signature(response, signer)


def _extension(certificate, name):
    try:
        return certificate.extensions.get_extension_for_class(getattr(x509, name)).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(certificate):
    constraints = _extension(certificate, "BasicConstraints")
    return bool(constraints and constraints.ca)


def _has_cmc_ra(certificate):
    usage = _extension(certificate, "ExtendedKeyUsage")
    return bool(usage and any(oid.dotted_string == ID_KP_CMC_RA for oid in usage))


class Enrollment:
    """What an enrollment returns: the certificate, its chain (issuer first) and the CA certificates."""

    def __init__(self, certificate, chain, ca_certificates, implicit_confirm, private_key=None):
        self.certificate = certificate
        self.chain = chain
        self.ca_certificates = ca_certificates
        self.implicit_confirm = implicit_confirm
        self.private_key = private_key  # the key the server generated (central key generation), else None


class CmpClient:
    """One CMP server and domain.

    url may hold "{operation}", replaced by the RFC 9483 operation name of each request (Trustpoint:
    https://host/.well-known/cmp/p/<domain>/{operation}); without it every request goes to url.
    """

    def __init__(self, url, transport, retries=0, sleep=time.sleep):
        self.url = url
        self.transport = transport
        self.retries = retries
        self.sleep = sleep

    def _retrying(self, call):
        return call_with_retries(call, self.retries, self.sleep)

    # --- operations --------------------------------------------------------------------------------

    def initialize(self, private_key, subject, credential, trusted=None, implicit_confirm=False):
        """Onboard: an ir for private_key, authenticated by credential (shared secret or IDevID). private_key
        None: the server generates the key (RFC 9483 4.1.6), returned as the Enrollment's private_key."""
        body = cert_req_body("ir", private_key, subject)
        return self._enroll("initialization", body, "ip", private_key, credential, trusted, implicit_confirm)

    def update_key(self, private_key, credential, trusted, implicit_confirm=False):
        """Renew: a kur for a new private_key, signed with the certificate it replaces (credential)."""
        body = cert_req_body("kur", private_key, credential.certificate.subject, old_certificate=credential.certificate)
        return self._enroll("keyupdate", body, "kup", private_key, credential, trusted, implicit_confirm)

    def revoke(self, certificate, credential, trusted, reason="unspecified"):
        """Revoke certificate with an rr signed by credential. A certificate already revoked is fine: so the
        server says, in an authenticated answer, to an rr whose rp was lost."""
        try:
            response = self._retrying(
                lambda: self._exchange(
                    "revocation", self._header(credential), rr_body(certificate, reason), credential, trusted, "rp"
                )
            )
        except CmpFailure as exc:
            if "certRevoked" in exc.fail_info and getattr(exc, "authenticated", False):
                return
            raise
        (status, fail_info, text), *more = revocation_statuses(response)
        if more:
            raise CmpFailure("the rp answers %d revocations, not one" % (len(more) + 1), "badRequest")
        if status not in (STATUS_ACCEPTED, STATUS_GRANTED_WITH_MODS) and "certRevoked" not in fail_info:
            raise CmpFailure("the server did not revoke the certificate: %s" % (text or "no reason given"), *fail_info)

    def general_message(self, operation, credential, trusted, *info_types):
        """A genm asking for info_types (OIDs), authenticated by credential: {OID: value DER or None}.

        Answered only while the server accepts credential: a device that lost the answer to its certConf
        learns this way whether its new certificate was confirmed (ConfirmationUnknown).
        """
        header = self._header(credential)
        response = self._exchange(operation, header, genm_body(*info_types), credential, trusted, "genp")
        return genp_values(response)

    # --- the exchange -----------------------------------------------------------------------------

    def _header(self, credential, **fields):
        return Header(
            sender=credential.sender, transaction_id=fields.pop("transaction_id", None) or random_nonce(), **fields
        )

    def _post(self, operation, request_der):
        url = self.url.replace("{operation}", operation)
        status, content_type, body = self.transport(url, request_der, CONTENT_TYPE)
        media_type = (content_type or "").split(";")[0].strip().lower()
        if status != 200:
            raise TransportError("CMP server answered HTTP %s at %s" % (status, url), status)
        if media_type != CONTENT_TYPE:
            raise TransportError(
                "CMP server answered %r instead of %s at %s" % (content_type, CONTENT_TYPE, url), status, False
            )
        try:
            return CmpMessage.decode(body)
        except CmpFailure as exc:
            raise CmpFailure("the server's response is not a PKIMessage: %s" % exc.text, *exc.fail_info) from exc

    def _exchange(self, operation, header, body, credential, trusted, expected):
        extra = [certificate_der(c) for c in credential.extra_certificates]
        response = self._post(operation, encode_message(header, body, credential.protector(), extra))
        self._check_response(response, header, credential, trusted, expected)
        return response

    def _check_response(self, response, request_header, credential, trusted, expected):
        """Authenticate a response and match it to its request; server errors become CmpFailure."""
        if response.transaction_id != request_header.transaction_id:
            raise CmpFailure("the response belongs to another transaction", "badRequest")
        if response.body_type == "error":
            _status, fail_info, text = error_content(response)
            # Report the server's reason even if the error is not authenticated (e.g. after a wrong
            # secret), but say so: an unauthenticated error may come from anyone on the path.
            try:
                credential.verify(response, trusted)
                authenticated = True
            except CmpFailure:
                authenticated = False
            prefix = "the server rejected the request" + ("" if authenticated else " (unauthenticated error)")
            failure = CmpFailure("%s: %s" % (prefix, text or "no reason given"), *fail_info)
            failure.authenticated = authenticated
            raise failure
        try:
            credential.verify(response, trusted)
        except CmpFailure as exc:
            raise CmpFailure("the response's protection does not verify: %s" % exc.text, *exc.fail_info) from exc
        if response.recip_nonce is None or not hmac.compare_digest(response.recip_nonce, request_header.sender_nonce):
            raise CmpFailure("the response's recipNonce does not match the request's senderNonce", "badRecipientNonce")
        if response.body_type != expected:
            raise CmpFailure("expected %s, the server answered %s" % (expected, response.body_type), "badRequest")

    @staticmethod
    def _generated_key(answer, credential, trusted, ca_pubs):
        """The key the server generated, opened with the credential the request was protected with; its key
        generation authority must chain to trusted (or, under a MAC, to the caPubs the server sent)."""
        if answer.enveloped_key is None:
            raise CmpFailure("the server generated no key although the request carried none", "badCertTemplate")
        anchors = trust_anchors(trusted) or trust_anchors(ca_pubs)
        if isinstance(credential, MacCredential):
            return open_private_key(answer.enveloped_key, anchors, secret=credential.secret)
        return open_private_key(
            answer.enveloped_key, anchors, private_key=credential.private_key, certificate=credential.certificate
        )

    def _enroll(self, operation, body, expected, private_key, credential, trusted, implicit_confirm):
        def send():
            header = self._header(credential, implicit_confirm=implicit_confirm)
            return header, self._exchange(operation, header, body, credential, trusted, expected)

        header, response = self._retrying(send)
        responses, ca_pubs = cert_responses(response)
        if len(responses) != 1 or responses[0].cert_req_id != 0:
            raise CmpFailure("the %s does not answer certReqId 0" % expected, "badRequest")
        answer = responses[0]
        if answer.status not in (STATUS_ACCEPTED, STATUS_GRANTED_WITH_MODS) or answer.certificate is None:
            raise CmpFailure(
                "the server did not issue a certificate: %s" % (answer.text or "no reason given"), *answer.fail_info
            )
        certificate = answer.certificate
        generated = None
        if private_key is None:
            private_key = generated = self._generated_key(answer, credential, trusted, ca_pubs)
        if not same_public_key(certificate.public_key(), private_key):
            raise CmpFailure("the issued certificate is not for our key", "badCertTemplate")
        anchors = trust_anchors(trusted) or None
        try:
            path = verify_chain(certificate, response.extra_certificates() + ca_pubs, anchors)
        except InvalidInput as exc:
            raise CmpFailure("the issued certificate does not chain to a trusted CA: %s" % exc, "badCertId") from exc

        granted = implicit_confirm and response.implicit_confirm
        enrollment = Enrollment(certificate, path[1:], ca_pubs, granted, generated)
        if not granted:

            def confirm():
                # Each attempt has a fresh senderNonce; the server answers a repeated certConf again.
                confirm_header = self._header(
                    credential, transaction_id=header.transaction_id, recip_nonce=response.sender_nonce
                )
                self._exchange(
                    operation, confirm_header, cert_conf_body(cert_hash(certificate)), credential, trusted, "pkiconf"
                )

            try:
                self._retrying(confirm)
            except TransportError as exc:
                raise ConfirmationUnknown("the certConf got no answer: %s" % exc, enrollment) from exc
        return enrollment
