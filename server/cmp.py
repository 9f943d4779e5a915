# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP endpoint (RFC 6712 HTTP transfer, RFC 9483 paths): onboarding with a shared secret.

Every answer is a PKIMessage with HTTP 200 and Content-Type application/pkixcmp, rejections
included. A rejection changes nothing: all checks run before the first write, and the writes of
a request commit together.
"""

from __future__ import annotations

import datetime
import hmac
import logging

from flask import Blueprint, Response, abort, current_app, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from trustpoint_core import keys, x509
from trustpoint_core.cmp_message import (
    CmpMessage,
    Header,
    cert_hash,
    cert_rep_body,
    cert_requests,
    cert_statuses,
    encode_message,
    error_body,
    pkiconf_body,
    random_nonce,
)
from trustpoint_core.cmp_protection import verify_pbm
from trustpoint_core.errors import CmpFailure, InvalidInput
from trustpoint_core.profiles import get_profile

from . import devices, pki
from .db import begin_write, session
from .models import CmpTransaction, Device, Domain, IssuedCertificate

log = logging.getLogger(__name__)
bp = Blueprint("cmp", __name__)

CONTENT_TYPE = "application/pkixcmp"
# RFC 9483 operation names this server implements, each with the request bodies it accepts
# (certConf travels to the URL of the request it confirms).
OPERATIONS = {"initialization": ("ir", "certConf")}
TRANSACTION_ID_SIZES = (16, 64)
NONCE_MIN_SIZE = 16


@bp.post("/.well-known/cmp/initialization/<domain>/", strict_slashes=False)
def legacy_initialization(domain):
    """The path of the upstream user docs' `openssl cmp -cmd ir` recipe."""
    return _serve(domain, "initialization")


@bp.post("/.well-known/cmp/p/<domain>/<operation>/", strict_slashes=False)
def operation(domain, operation):
    if operation not in OPERATIONS:
        abort(404, "unknown CMP operation %r" % operation)
    return _serve(domain, operation)


def _serve(domain_name, operation):
    services = current_app.extensions["trustpoint"]
    responder = CmpResponder(session(), services.vault, services.settings)
    body = _read_body(current_app.config["MAX_CONTENT_LENGTH"])
    if body is None:
        der = responder.reject(
            CmpFailure("the request exceeds %d bytes" % current_app.config["MAX_CONTENT_LENGTH"], "badRequest")
        )
    else:
        der = responder.respond(domain_name, operation, body, request.mimetype)
    return Response(der, 200, content_type=CONTENT_TYPE)


def _read_body(limit):
    """The request body, or None when it is larger than limit bytes.

    Read from the WSGI input itself: with a chunked body (no Content-Length) Werkzeug's limited
    stream stops silently at the limit instead of refusing the rest.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks) if size <= limit else None


class CmpResponder:
    """Answers one CMP request."""

    def __init__(self, db, vault, settings):
        self.db = db
        self.vault = vault
        self.settings = settings
        self.message = None
        self.protector = None  # set once the request is authenticated: errors are then protected too

    def respond(self, domain_name, operation, der, media_type):
        try:
            if media_type != CONTENT_TYPE:
                raise CmpFailure("Content-Type must be %s, not %r" % (CONTENT_TYPE, media_type), "badRequest")
            self.message = CmpMessage.decode(der)
            device = self._authenticate()
            self._check_header()
            if self.message.body_type not in OPERATIONS[operation]:
                raise CmpFailure(
                    "%s messages are not accepted at the %s operation" % (self.message.body_type, operation),
                    "badRequest",
                )
            self._authorize(device, domain_name)
            if self.message.body_type == "ir":
                return self._initialization(device)
            return self._cert_conf(device)
        except CmpFailure as failure:
            return self.reject(failure)
        except Exception:  # a bug or the database: answer like CMP does, keep the traceback in the log
            log.exception("CMP request failed")
            return self.reject(CmpFailure("internal error; the server log has the details", "systemFailure"))

    def reject(self, failure):
        self.db.rollback()
        message = self.message
        log.info(
            "CMP %s rejected (tid %s, senderKID %r): %s",
            message.body_type if message else "request",
            message.transaction_id.hex() if message and message.transaction_id else "-",
            message.sender_kid if message else None,
            failure,
        )
        header = Header.response_to(message) if message is not None else Header()
        return encode_message(header, error_body(failure.fail_info or ("badRequest",), failure.text), self.protector)

    # --- checks ----------------------------------------------------------------------------------

    def _authenticate(self):
        """The device whose shared secret MACs the request (senderKID = device id)."""
        message = self.message
        kid = message.sender_kid or b""
        device = self.db.get(Device, int(kid)) if kid.isdigit() and len(kid) <= 18 else None
        secret = devices.device_secret(self.vault, device) if device is not None else None
        if secret is None:
            # Unknown reference and spent or wrong secret look alike to the client.
            raise CmpFailure(
                "message protection could not be verified: check the reference (-ref) and "
                "the shared secret; a secret is used up once its device is onboarded",
                "badMessageCheck",
            )
        try:
            pbm = verify_pbm(message, secret)
        except CmpFailure as failure:
            if "badMessageCheck" in failure.fail_info:
                raise CmpFailure(
                    "message protection could not be verified: check the reference (-ref) and "
                    "the shared secret; a secret is used up once its device is onboarded",
                    "badMessageCheck",
                ) from failure
            raise
        self.protector = pbm.with_fresh_salt(kid=kid)
        return device

    def _check_header(self):
        message = self.message
        if message.pvno not in (2, 3):
            raise CmpFailure("pvno %d is not supported; use 2 or 3" % message.pvno, "unsupportedVersion")
        low, high = TRANSACTION_ID_SIZES
        if message.transaction_id is None or not low <= len(message.transaction_id) <= high:
            raise CmpFailure("transactionID must be %d to %d bytes" % (low, high), "badRequest")
        if message.sender_nonce is None or len(message.sender_nonce) < NONCE_MIN_SIZE:
            raise CmpFailure("senderNonce must be at least %d bytes" % NONCE_MIN_SIZE, "badSenderNonce")
        skew = self.settings.cmp_max_clock_skew
        if skew and message.message_time is not None:
            now = datetime.datetime.now(datetime.timezone.utc)
            if abs((now - message.message_time).total_seconds()) > skew:
                raise CmpFailure(
                    "messageTime %s differs from the server's time by more than %d seconds"
                    % (message.message_time.strftime("%Y-%m-%dT%H:%M:%SZ"), skew),
                    "badTime",
                )

    def _authorize(self, device, domain_name):
        domain = self.db.scalar(select(Domain).where(Domain.name == domain_name))
        if domain is None:
            raise CmpFailure("domain %r does not exist" % domain_name, "badRequest")
        if device.domain_id != domain.id:
            raise CmpFailure("device %d is not registered in domain %r" % (device.id, domain_name), "notAuthorized")
        if device.onboarding_method != "cmp_shared_secret":
            raise CmpFailure(
                "device %d onboards with %s, not a CMP shared secret" % (device.id, device.onboarding_method),
                "notAuthorized",
            )

    # --- bodies ----------------------------------------------------------------------------------

    def _initialization(self, device):
        message = self.message
        requests = cert_requests(message)
        if len(requests) != 1:
            raise CmpFailure("an ir must hold exactly one certificate request, not %d" % len(requests), "badRequest")
        cert_request = requests[0]
        if cert_request.cert_req_id != 0:
            raise CmpFailure("certReqId must be 0", "badRequest")
        cert_request.verify_pop()
        profile = get_profile("domain_credential")
        try:
            key_type = keys.key_type_of(cert_request.public_key)
        except InvalidInput as exc:
            raise CmpFailure(str(exc), "badCertTemplate") from exc
        if key_type not in profile.key_types:
            raise CmpFailure(
                "%s keys are not certified; use one of %s" % (key_type, ", ".join(profile.key_types)),
                "badCertTemplate",
            )
        if self._transaction() is not None:
            raise CmpFailure("transactionID already used", "transactionIdInUse")

        implicit = message.implicit_confirm
        cert, signer = pki.issue_domain_credential(self.vault, device, cert_request.public_key, cert_request.not_after)
        issuing, root = pki.ca_chain(device.domain)
        nonce = random_nonce()
        header = Header.response_to(message, implicit_confirm=implicit)
        header.sender_nonce = nonce
        response = encode_message(
            header,
            cert_rep_body("ip", 0, cert, ca_pubs=[root]),
            self.protector,
            extra_certs=[x509.certificate_der(issuing), x509.certificate_der(root)],
        )

        begin_write(self.db)
        record = pki.record_certificate(
            self.db, signer, device, cert, profile.name, "active" if implicit else "awaiting_confirmation"
        )
        self.db.flush()
        self.db.add(
            CmpTransaction(
                transaction_id=message.transaction_id,
                device_id=device.id,
                certificate_id=record.id,
                response_nonce=nonce,
                state="confirmed" if implicit else "waiting",
            )
        )
        if implicit:
            self._onboarded(device, record)
        self._commit()
        log.info(
            "issued domain credential %s to device %s (id %d)%s",
            record.serial_number,
            device.name,
            device.id,
            ", implicitly confirmed" if implicit else ", awaiting certConf",
        )
        return response

    def _cert_conf(self, device):
        message = self.message
        transaction = self._transaction()
        if transaction is None or transaction.device_id != device.id:
            raise CmpFailure("no certificate of this transaction awaits confirmation", "badRequest")
        if message.recip_nonce is None or not hmac.compare_digest(message.recip_nonce, transaction.response_nonce):
            raise CmpFailure("recipNonce does not match the senderNonce of our ip", "badRecipientNonce")
        statuses = cert_statuses(message)
        if len(statuses) != 1 or statuses[0].cert_req_id != 0:
            raise CmpFailure("certConf must confirm exactly certReqId 0", "badRequest")
        status = statuses[0]
        record = transaction.certificate
        expected = cert_hash(x509.load_certificate(record.certificate_der), status.hash_alg)
        if not hmac.compare_digest(expected, status.cert_hash):
            raise CmpFailure("certHash does not match the certificate issued in this transaction", "badCertId")
        response = encode_message(Header.response_to(message), pkiconf_body(), self.protector)

        begin_write(self.db)
        # Read the state under the write lock: a concurrent certConf may have settled it.
        self.db.refresh(transaction)
        if transaction.state != "waiting":
            raise CmpFailure("the certificate of this transaction is already %s" % transaction.state, "certConfirmed")
        if status.accepted:
            transaction.state = "confirmed"
            record.status = "active"
            self._onboarded(device, record)
        else:
            # The device refuses the certificate (RFC 9483 4.1): it must not stay valid.
            transaction.state = "rejected"
            pki.revoke(record, "unspecified")
            log.info("device %d rejected certificate %s: %s", device.id, record.serial_number, status.text or "-")
        self._commit()
        return response

    # --- helpers ---------------------------------------------------------------------------------

    def _transaction(self):
        return self.db.scalar(
            select(CmpTransaction).where(CmpTransaction.transaction_id == self.message.transaction_id)
        )

    def _onboarded(self, device, record):
        """The device holds record now: its earlier credential and unconfirmed certificates are superseded."""
        superseded = self.db.scalars(
            select(IssuedCertificate).where(
                IssuedCertificate.device_id == device.id,
                IssuedCertificate.id != record.id,
                IssuedCertificate.profile == record.profile,
                IssuedCertificate.status.in_(("active", "awaiting_confirmation")),
            )
        )
        for old in superseded:
            pki.revoke(old, "superseded")
        devices.mark_onboarded(device, record)

    def _commit(self):
        try:
            self.db.commit()
        except IntegrityError as exc:
            # Two requests with one transactionID raced past the check above.
            raise CmpFailure("transactionID already used", "transactionIdInUse") from exc
