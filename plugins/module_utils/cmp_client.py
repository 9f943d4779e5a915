# Copyright: Trustpoint contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A CMP client for devices: initial registration (ir) with a shared secret (PBM).

HTTP is the caller's: `transport(url, body, content_type)` returns (status, content_type, body) and
raises TransportError when the server cannot be reached. Ansible modules pass one built on
ansible.module_utils.urls; anything else may pass its own.
"""

from __future__ import annotations

import hmac

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
    random_nonce,
)
from .cmp_protection import PasswordBasedMac, verify_mac
from .errors import CmpFailure, InvalidInput, TransportError
from .keys import same_public_key
from .x509 import verify_chain

CONTENT_TYPE = "application/pkixcmp"


class Enrollment:
    """What an enrollment returns: the certificate, its chain (issuer first) and the CA certificates."""

    def __init__(self, certificate, chain, ca_certificates, implicit_confirm):
        self.certificate = certificate
        self.chain = chain
        self.ca_certificates = ca_certificates
        self.implicit_confirm = implicit_confirm


class CmpClient:
    """One CMP server URL and how to reach it."""

    def __init__(self, url, transport):
        self.url = url
        self.transport = transport

    def exchange(self, request_der):
        status, content_type, body = self.transport(self.url, request_der, CONTENT_TYPE)
        media_type = (content_type or "").split(";")[0].strip().lower()
        if status != 200:
            raise TransportError("CMP server answered HTTP %s at %s" % (status, self.url))
        if media_type != CONTENT_TYPE:
            raise TransportError("CMP server answered %r instead of %s at %s" % (content_type, CONTENT_TYPE, self.url))
        try:
            return CmpMessage.decode(body)
        except CmpFailure as exc:
            raise CmpFailure("the server's response is not a PKIMessage: %s" % exc.text, *exc.fail_info) from exc

    def _check_response(self, response, request_header, secret, expected):
        """Authenticate a response and match it to its request; server errors become CmpFailure."""
        if response.transaction_id != request_header.transaction_id:
            raise CmpFailure("the response belongs to another transaction", "badRequest")
        if response.body_type == "error":
            _status, fail_info, text = error_content(response)
            # Report the server's reason even if the error is unprotected (e.g. after a wrong
            # secret), but say so: an unauthenticated error may come from anyone on the path.
            try:
                verify_mac(response, secret)
                prefix = "the server rejected the request"
            except CmpFailure:
                prefix = "the server rejected the request (unauthenticated error)"
            raise CmpFailure("%s: %s" % (prefix, text or "no reason given"), *fail_info)
        try:
            verify_mac(response, secret)
        except CmpFailure as exc:
            raise CmpFailure(
                "the response's protection does not verify with the shared secret: %s" % exc.text,
                "badMessageCheck",
            ) from exc
        if response.recip_nonce is None or not hmac.compare_digest(response.recip_nonce, request_header.sender_nonce):
            raise CmpFailure("the response's recipNonce does not match the request's senderNonce", "badRecipientNonce")
        if response.body_type != expected:
            raise CmpFailure("expected %s, the server answered %s" % (expected, response.body_type), "badRequest")

    def enroll_with_shared_secret(self, reference, secret, private_key, subject, implicit_confirm=False):
        """Obtain a certificate for private_key with an ir protected by PBM with secret.

        reference is the senderKID the server knows the secret by (Trustpoint: the device id).
        Sends certConf unless the server granted implicit confirmation. Returns an Enrollment.
        """
        secret = secret.encode() if isinstance(secret, str) else secret
        kid = str(reference).encode()
        header = Header(sender=subject, transaction_id=random_nonce(), implicit_confirm=implicit_confirm)
        request = encode_message(header, cert_req_body("ir", private_key, subject), PasswordBasedMac(secret, kid=kid))
        response = self.exchange(request)
        self._check_response(response, header, secret, "ip")

        responses, ca_pubs = cert_responses(response)
        if len(responses) != 1 or responses[0].cert_req_id != 0:
            raise CmpFailure("the ip does not answer certReqId 0", "badRequest")
        answer = responses[0]
        if answer.status not in (STATUS_ACCEPTED, STATUS_GRANTED_WITH_MODS) or answer.certificate is None:
            raise CmpFailure(
                "the server did not issue a certificate: %s" % (answer.text or "no reason given"),
                *answer.fail_info,
            )
        certificate = answer.certificate
        if not same_public_key(certificate.public_key(), private_key):
            raise CmpFailure("the issued certificate is not for our key", "badCertTemplate")
        try:
            path = verify_chain(certificate, response.extra_certificates() + ca_pubs)
        except InvalidInput as exc:
            raise CmpFailure(
                "the issued certificate does not chain to a CA of the response: %s" % exc, "badCertId"
            ) from exc

        granted = implicit_confirm and response.implicit_confirm
        if not granted:
            confirm_header = Header(
                sender=subject, transaction_id=header.transaction_id, recip_nonce=response.sender_nonce
            )
            confirm = encode_message(
                confirm_header, cert_conf_body(cert_hash(certificate)), PasswordBasedMac(secret, kid=kid)
            )
            reply = self.exchange(confirm)
            self._check_response(reply, confirm_header, secret, "pkiconf")
        return Enrollment(certificate, path[1:], ca_pubs, granted)
