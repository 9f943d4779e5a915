# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP processing (RFC 4210, RFC 9480, RFC 9483): who sent a request, whether it may, and the answer.

Requesters authenticate in one of three ways:

- a MAC (PBM or PBMAC1) with a device's one-time shared secret, senderKID = device id: onboarding;
- a signature with an IDevID that a DevID registration admits: onboarding (cmp_idevid and aoki devices);
- a signature with a certificate this server issued and that is valid: everything after onboarding
  (cr, kur, p10cr, rr, genm).

A rejection is an error PKIMessage whose failInfo says why, protected whenever the server can (a MAC
with the secret the request proved, or the domain CA's signature), and it changes nothing: all checks
run before the first write, and the writes of a request commit together.
"""

from __future__ import annotations

import datetime
import hmac
import logging
import math

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from trustpoint_core import keys, x509
from trustpoint_core.cmp_message import (
    ID_EC_PUBLIC_KEY,
    ID_IT_CA_CERTS,
    ID_IT_CERT_REQ_TEMPLATE,
    ID_IT_CRL_STATUS_LIST,
    ID_IT_CRLS,
    ID_IT_ROOT_CA_CERT,
    ID_IT_ROOT_CA_KEY_UPDATE,
    ID_IT_SIGN_KEY_PAIR_TYPES,
    ID_RSA_ENCRYPTION,
    MAX_REQUEST_ASN1_VALUES,
    STATUS_ACCEPTED,
    STATUS_GRANTED_WITH_MODS,
    CmpMessage,
    Header,
    cert_hash,
    cert_rep_body,
    cert_req_template_value,
    cert_request_count,
    cert_requests,
    cert_statuses,
    certificates_value,
    crl_status_list,
    crls_value,
    encode_message,
    error_body,
    genp_body,
    info_values,
    pkcs10_request,
    pkiconf_body,
    random_nonce,
    revocation_requests,
    rp_body,
    sign_key_pair_types_value,
)
from trustpoint_core.cmp_protection import (
    SignatureProtection,
    is_mac_protected,
    subject_key_identifier,
    verify_mac,
    verify_signature,
)
from trustpoint_core.errors import CmpFailure, InvalidInput, excerpt
from trustpoint_core.profiles import APPLICATION_PROFILES, get_profile

from ..runtime import on_loop
from ..services import certificates, crl, devices, enrolling, identity, keygen, names, pki
from ..storage.db import begin_write
from ..storage.models import CertificateAuthority, CmpTransaction, IssuedCertificate, utcnow
from . import cmp_checks

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/pkixcmp"
# RFC 9483 operations and the request bodies each accepts. certConf travels to the URL of the request
# it confirms; pollReq is not needed: this server answers at once.
_ENROLLING = ("ir", "cr", "kur", "p10cr")
OPERATIONS = {
    "initialization": ("ir", "certConf"),
    "certification": ("cr", "certConf"),
    "keyupdate": ("kur", "certConf"),
    "pkcs10": ("p10cr", "certConf"),
    "revocation": ("rr",),
    "getcacerts": ("genm",),
    "getrootupdate": ("genm",),
    "getcertreqtemplate": ("genm",),
    "getcrls": ("genm",),
}
# CRLs one crlStatusList may ask for: each is looked up (and issued anew when due) before the answer.
MAX_CRL_STATUSES = 8
# genm info types whose request carries no infoValue (RFC 9483 4.3.1, 4.3.3; signKeyPairTypes as RFC 4210 5.3.19.2).
_GENM_WITHOUT_VALUE = (ID_IT_CA_CERTS, ID_IT_CERT_REQ_TEMPLATE, ID_IT_SIGN_KEY_PAIR_TYPES)
# Every body some operation accepts: what a URL without an operation dispatches.
_REQUEST_BODIES = tuple(sorted({body for bodies in OPERATIONS.values() for body in bodies}))
TRANSACTION_ID_SIZES = (16, 64)
NONCE_MIN_SIZE = 16
# MAC iterations a request's key derivation may take on a worker's loop (about 5 ms of CPU; OpenSSL's client asks
# for 500, this collection's for 1000): more, and the request moves to a thread first (runtime/on_loop.py).
LOOP_MAC_ITERATIONS = 20000


class _OverMacBudget(Exception):
    """The worker's budget of MAC iterations (cmp_mac_budget) is spent for now: not a failed authentication."""


_MAC_FAILURE_TEXT = (
    "message protection could not be verified: check the reference (-ref) and the shared secret; "
    "a secret is used up once its device is onboarded and has used its credential"
)


def kid_text(kid):
    """senderKID for a log line: printable ASCII as text (a device id such as 12), anything else as hex (an SKI),
    an excerpt of a long one. Never the raw bytes: a device chooses them."""
    if kid is None:
        return "-"
    if kid and all(0x21 <= b < 0x7F for b in kid):
        return excerpt(kid.decode("ascii"))
    return "0x" + excerpt(kid) if kid else "(empty)"


class CmpResponder:
    """Answers one CMP request.

    AOKI over CMP (protocols/aoki.py) is a subclass: it overrides IDEVID_METHODS, the authentication by
    secret, the protection of answers (_sign_with) and _ca_pubs.
    """

    # The onboarding methods of the devices an IDevID may onboard here; new devices get the first.
    IDEVID_METHODS = ("cmp_idevid", "aoki")

    def __init__(self, db, vault, settings, gate=None):
        self.db = db
        self.vault = vault
        self.settings = settings
        self.gate = gate  # the request source's budgets of failed authentications (services/auth_limits.py)
        self.message = None
        self.domain = None
        self.url_domain = None
        self.url_domain_name = None  # the URL's domain, looked up by _find_url_domain()
        self.protector = None  # set once known: errors are then protected too

    # --- entry points ------------------------------------------------------------------------------

    def respond(self, domain_name, profile_name, operation, der, media_type):
        try:
            if media_type != CONTENT_TYPE:
                raise CmpFailure("Content-Type must be %s, not %r" % (CONTENT_TYPE, media_type), "badRequest")
            self.message = message = CmpMessage.decode(der, max_values=MAX_REQUEST_ASN1_VALUES)
            self.url_domain_name = domain_name
            requester = self._authenticate()
            self._find_url_domain(requester)
            self._check_header()
            if message.body_type not in OPERATIONS.get(operation, _REQUEST_BODIES):
                raise CmpFailure(
                    "%s messages are not accepted %s"
                    % (message.body_type, "at the %s operation" % operation if operation else "by this server"),
                    "badRequest",
                )
            cmp_checks.check_signature_only(message)
            if domain_name is not None and self.url_domain is None:
                raise CmpFailure("domain %r does not exist" % domain_name, "badRequest")
            self._resolve_domain(requester)
            self._check_superseded(requester)
            handler = getattr(self, "_" + message.body_type.lower())
            return handler(requester, profile_name)
        except CmpFailure as failure:
            return self.reject(failure)
        except Exception:  # a bug or the database: answer like CMP does, keep the traceback in the log
            log.exception("CMP request failed")
            return self.reject(CmpFailure("internal error; the server log has the details", "systemFailure"))

    def refuse(self, text):
        """Reject a request that could not even be read (too large)."""
        return self.reject(CmpFailure(text, "badRequest"))

    def reject(self, failure):
        self.db.rollback()
        message = self.message
        log.info(
            "CMP %s rejected (tid %s, senderKID %s): %s",
            message.body_type if message else "request",
            excerpt(message.transaction_id) if message and message.transaction_id else "-",
            kid_text(message.sender_kid if message else None),
            failure,
        )
        if self.protector is None and message is not None and not is_mac_protected(message):
            # A signed or unprotected request gets a signed error when the domain is known.
            if self.domain is None and self.url_domain is None:
                try:
                    self._find_url_domain()
                except Exception:  # the database failed: the error answer goes out unsigned
                    log.exception("CMP error answer: the URL's domain could not be read")
            domain = self.domain or self.url_domain
            if domain is not None:
                self._sign_with(domain)
        sender = self.protector.certificate.subject if isinstance(self.protector, SignatureProtection) else None
        header = Header.response_to(message, sender=sender) if message is not None else Header()
        return self._encode(header, error_body(failure.fail_info or ("badRequest",), failure.text))

    # --- authentication and checks -----------------------------------------------------------------

    def _authenticate(self):
        message = self.message
        cmp_checks.check_protection_fields(message)
        if message.protection is None:
            if message.body_type == "genm":
                return identity.Requester("anonymous")  # CA certificates, templates and CRLs are public
            raise CmpFailure("the message is not protected", "badMessageCheck")
        # A source over its budget of failed authentications gets no MAC or signature checked.
        refusal = self.gate.refusal() if self.gate is not None else None
        if refusal is not None:
            raise CmpFailure(refusal[0], "systemUnavail")
        try:
            if is_mac_protected(message):
                return self._authenticate_secret()
            return self._authenticate_signature()
        except CmpFailure:
            self._auth_failed()
            raise

    def _find_url_domain(self, requester=None):
        """The domain the URL names (None when it names none, or none that exists). The requester's device
        usually belongs to it: then the domain its query loaded is the one, without another query."""
        name = self.url_domain_name
        self.url_domain_name = None
        if name is None:
            return
        device = requester.device if requester is not None else None
        if device is not None and device.id is not None and device.domain.name == name:
            self.url_domain = device.domain
        else:
            self.url_domain = enrolling.domain_named(self.db, name)

    def _auth_failed(self, device=None):
        if self.gate is not None:
            self.gate.failed(device)

    def _authenticate_secret(self):
        """The device whose shared secret MACs the request (senderKID = device id)."""
        kid = self.message.sender_kid or b""
        device = enrolling.device(self.db, int(kid)) if kid.isdigit() and len(kid) <= 18 else None
        if device is not None and self.gate is not None and self.gate.device_refused(device):
            device = None  # locked or throttled: refused before the MAC is computed
        secret = devices.device_secret(self.vault, device) if device is not None else None
        if secret is None:
            # Unknown reference and spent, wrong, locked or throttled secret look alike to the client.
            raise CmpFailure(_MAC_FAILURE_TEXT, "badMessageCheck")
        try:
            mac = verify_mac(self.message, secret, self.settings.cmp_max_mac_iterations, charge=self._charge_mac)
        except _OverMacBudget as exc:
            raise CmpFailure(str(exc), "systemUnavail") from None
        except CmpFailure as failure:
            self._auth_failed(device)
            if "badMessageCheck" in failure.fail_info:
                raise CmpFailure(_MAC_FAILURE_TEXT, "badMessageCheck") from failure
            raise
        self.protector = mac.for_answer(kid=kid)
        cmp_checks.check_mac_sender(self.message)
        requester = identity.Requester("secret", device=device)
        # What _check_requester compares under the write lock: a new secret encrypts anew.
        requester.secret_encrypted = device.secret_encrypted
        return requester

    def _charge_mac(self, iterations):
        """verify_mac's hook, before the key derivation: a long one leaves the worker's loop; each is paid from the
        worker's budget of MAC iterations (services/auth_limits.py)."""
        if iterations > LOOP_MAC_ITERATIONS:
            on_loop.long_work_ahead()
        wait = self.gate.mac_wait(iterations) if self.gate is not None else 0
        if wait:
            raise _OverMacBudget(
                "the server is checking as many MACs as it takes per second (--cmp-mac-budget); retry in %d s"
                % math.ceil(wait)
            )

    def _authenticate_signature(self):
        """The signer: a certificate from extraCerts (the one whose SKI is senderKID, else the first)."""
        message = self.message
        certificates = message.extra_certificates()
        if not certificates:
            raise CmpFailure("a signed message must carry its signer's certificate in extraCerts", "signerNotTrusted")
        signer = certificates[0]
        if message.sender_kid is not None:
            for candidate in certificates:
                try:
                    ski = subject_key_identifier(candidate)
                except InvalidInput as exc:
                    raise CmpFailure("extraCerts: %s" % exc, "badDataFormat") from exc
                if ski == message.sender_kid:
                    signer = candidate
                    break
        verify_signature(message, signer)
        cmp_checks.check_signature_sender(message, signer)
        intermediates = [c for c in certificates if c is not signer]
        try:
            record = identity.issued_credential(self.db, signer, self.settings)
        except identity.NotAuthenticated as exc:
            raise CmpFailure(exc.reason, exc.code) from exc
        if record is not None:
            return identity.Requester("credential", device=record.device, record=record, certificate=signer)
        return identity.Requester("idevid", certificate=signer, intermediates=intermediates)

    def _check_header(self):
        message = self.message
        if message.pvno not in (2, 3):
            raise CmpFailure("pvno %s is not supported; use 2 or 3" % excerpt(message.pvno), "unsupportedVersion")
        cmp_checks.check_transaction_id(message)
        low, high = TRANSACTION_ID_SIZES
        if not low <= len(message.transaction_id) <= high:
            raise CmpFailure("transactionID must be %d to %d bytes" % (low, high), "badRequest")
        if message.sender_nonce is None or len(message.sender_nonce) < NONCE_MIN_SIZE:
            raise CmpFailure("senderNonce must be at least %d bytes" % NONCE_MIN_SIZE, "badSenderNonce")
        cmp_checks.check_first_message(message)
        skew = self.settings.cmp_max_clock_skew
        if skew and message.message_time is not None:
            now = datetime.datetime.now(datetime.timezone.utc)
            if abs((now - message.message_time).total_seconds()) > skew:
                raise CmpFailure(
                    "messageTime %s differs from the server's time by more than %d seconds"
                    % (message.message_time.strftime("%Y-%m-%dT%H:%M:%SZ"), skew),
                    "badTime",
                )

    def _resolve_domain(self, requester):
        """The domain the request is for; an IDevID is admitted here (by a DevID registration)."""
        if requester.kind == "idevid":
            try:
                requester.admissions = identity.admit_idevid(
                    self.db, requester.certificate, requester.intermediates, self.url_domain
                )
                requester.device, requester.new_device, requester.registration, requester.bind = identity.idevid_device(
                    self.db, requester.admissions, requester.certificate, self.IDEVID_METHODS
                )
            except identity.NotAuthenticated as exc:
                self._auth_failed()
                raise CmpFailure(exc.reason, exc.code) from exc
            except InvalidInput as exc:
                self._auth_failed()
                raise CmpFailure("IDevID: %s" % exc, "badDataFormat") from exc
            domain = requester.registration.domain
        elif requester.kind == "anonymous":
            domain = self.url_domain
            if domain is None:
                raise CmpFailure("name the domain in the URL: /.well-known/cmp/p/<domain>/<operation>", "badRequest")
        else:
            domain = requester.device.domain
            if self.url_domain is not None and self.url_domain.id != domain.id:
                raise CmpFailure(
                    "device %d is not registered in domain %r" % (requester.device.id, self.url_domain.name),
                    "notAuthorized",
                )
        self.domain = domain
        if self.protector is None:
            self._sign_with(domain)
        if requester.kind == "secret" and not devices.uses_mac_secret(requester.device):
            raise CmpFailure(
                "device %d onboards with %s, not a CMP shared secret"
                % (requester.device.id, requester.device.onboarding_method),
                "notAuthorized",
            )

    def _check_superseded(self, requester):
        """A renewed credential still renews (kur and its certConf) until its successor is used; nothing else."""
        if requester.kind != "credential" or self.message.body_type in ("kur", "certConf"):
            return
        reason = certificates.renewal_only(requester.record, self.settings)
        if reason is not None:
            raise CmpFailure("%s; sign with the new certificate" % reason, "notAuthorized")

    def _sign_with(self, domain):
        signer = pki.Signer(domain.ca("issuing"), self.vault)
        root = pki.ca_certificate(domain.ca("root").certificate_der)
        self.protector = SignatureProtection(signer.private_key, signer.certificate, [root])

    # --- enrollment: ir, cr, kur, p10cr ------------------------------------------------------------

    def _ir(self, requester, profile_name):
        if requester.kind == "credential" and self.domain.cmp_ir_with_credential == "certify":
            # Domain policy (docs/server.md): clients that begin every enrollment with ir enroll further
            # certificates as with cr, answered with ip.
            return self._certify(requester, profile_name, "ip")
        self._require_onboarding(requester, "ir")
        if profile_name not in (None, "domain_credential"):
            raise CmpFailure("ir issues the domain credential; profile %r is for cr" % profile_name, "badRequest")
        request = self._single_request()
        return self._enroll(requester, get_profile("domain_credential"), request, "ip", request.cert_req_id)

    def _cr(self, requester, profile_name):
        return self._certify(requester, profile_name, "cp")

    def _certify(self, requester, profile_name, response_type):
        """An application certificate for the device whose domain credential signed the request."""
        self._require_domain_credential(requester, self.message.body_type)
        profile = self._application_profile(profile_name)
        request = self._single_request()
        return self._enroll(requester, profile, request, response_type, request.cert_req_id)

    def _kur(self, requester, profile_name):
        if requester.kind != "credential":
            raise CmpFailure("kur must be signed with the certificate it updates", "notAuthorized")
        old = requester.record
        request = self._single_request()
        if request.central_keygen:
            raise CmpFailure("kur must carry the new public key; central key generation is for ir and cr",
                             "badCertTemplate")  # fmt: skip
        if request.old_cert_id is not None:
            issuer, serial = request.old_cert_id
            if serial != requester.certificate.serial_number or (
                issuer is not None and issuer != requester.certificate.issuer
            ):
                raise CmpFailure("oldCertID does not name the certificate that signed the kur", "badCertId")
        if keys.same_public_key(request.public_key, requester.certificate.public_key()):
            raise CmpFailure("kur needs a new key; the template repeats the current one", "badCertTemplate")
        # The update keeps the old certificate's subject and alternative names.
        request.subject = requester.certificate.subject
        request.subject_alt_names = x509.subject_alt_names(requester.certificate)
        return self._enroll(requester, get_profile(old.profile), request, "kup", request.cert_req_id, replaces=old)

    def _p10cr(self, requester, profile_name):
        csr = pkcs10_request(self.message)
        try:
            request = _CsrRequest(csr)
        except InvalidInput as exc:
            raise CmpFailure(str(exc), "badCertTemplate") from exc
        # cp answers a p10cr with certReqId -1 (RFC 9483 4.1.4).
        if requester.kind == "credential":
            self._require_domain_credential(requester, "p10cr")
            return self._enroll(requester, self._application_profile(profile_name), request, "cp", -1)
        self._require_onboarding(requester, "p10cr")
        return self._enroll(requester, get_profile("domain_credential"), request, "cp", -1)

    def _require_onboarding(self, requester, body):
        if requester.kind == "credential":
            raise CmpFailure(
                "%s onboards a device; a device that holds a certificate updates it with kur" % body, "notAuthorized"
            )

    def _require_domain_credential(self, requester, body):
        if requester.kind != "credential" or requester.record.profile != "domain_credential":
            raise CmpFailure("%s must be signed with the device's domain credential" % body, "notAuthorized")

    def _application_profile(self, name):
        name = name or "tls_client"
        if name not in APPLICATION_PROFILES:
            raise CmpFailure(
                "profile %r is not an application profile; use one of %s" % (name, ", ".join(APPLICATION_PROFILES)),
                "badCertTemplate",
            )
        return get_profile(name)

    def _single_request(self):
        count = cert_request_count(self.message)
        if count != 1:
            raise CmpFailure("the request must hold exactly one CertReqMsg, not %d" % count, "badRequest")
        (request,) = cert_requests(self.message)
        if request.cert_req_id != 0:
            raise CmpFailure("certReqId must be 0", "badRequest")
        request.verify_pop()
        return request

    def _enroll(self, requester, profile, request, response_type, cert_req_id, replaces=None):
        """Issue a certificate of profile for the request's key and answer; record it all at once."""
        message = self.message
        device = requester.device
        if self._transaction_used():
            raise CmpFailure("transactionID already used", "transactionIdInUse")
        if request.central_keygen:
            # Checked again under the write lock; here so that a device over its limit costs no key generation.
            self._check_limit(device)
        generated = self._central_key(requester, profile, request) if request.central_keygen else None
        try:
            key_type = keys.key_type_of(request.public_key)
        except InvalidInput as exc:  # an algorithm, curve or RSA size this PKI does not certify
            raise CmpFailure(str(exc), "badAlg") from exc
        if key_type not in profile.key_types:
            raise CmpFailure(
                "%s keys are not certified; use one of %s" % (key_type, ", ".join(profile.key_types)), "badAlg"
            )
        try:
            cert, signer, decided = pki.issue_for_device(
                self.db,
                self.vault,
                self.settings,
                device,
                self.domain,
                profile,
                request.public_key,
                request.subject,
                request.subject_alt_names,
                request.not_after,
            )
        except names.NameRefused as exc:
            raise CmpFailure(exc.message, "badCertTemplate") from exc
        except InvalidInput as exc:
            raise CmpFailure(str(exc), "badCertTemplate") from exc

        implicit = message.implicit_confirm
        issuing, root = pki.ca_chain(self.domain)
        nonce = random_nonce()
        header = self._response_header(implicit)
        header.sender_nonce = nonce
        ca_pubs = self._ca_pubs(requester, root)
        status = STATUS_GRANTED_WITH_MODS if decided.modified else STATUS_ACCEPTED
        enveloped = self._envelope(requester, generated) if generated is not None else None
        response = self._encode(
            header,
            cert_rep_body(response_type, cert_req_id, cert, ca_pubs=ca_pubs, status=status, enveloped_key=enveloped),
            [issuing, root],
        )

        begin_write(self.db)
        self._check_requester(requester, replaces)
        # Under the lock, where it holds at the commit (signing an EC certificate costs less than the count).
        self._check_limit(device)
        credential = requester.record if requester.kind == "credential" else None
        try:
            if requester.new_device:
                self.db.add(device)
                self.db.flush()
            elif requester.bind:
                device.devid_registration = requester.registration
            if not implicit:
                # At most one certificate of this requester and profile awaits confirmation.
                certificates.supersede_unconfirmed(self.db, device, profile.name, requester.identity)
            record = pki.record_certificate(
                self.db,
                signer,
                device,
                cert,
                profile.name,
                "active" if implicit else "awaiting_confirmation",
                issued_with=credential,
                replaces=replaces,
            )
            certificates.record_transaction(
                self.db,
                message.transaction_id,
                device,
                record,
                nonce,
                message.sender_nonce,
                requester.identity,
                cert_req_id,
                "confirmed" if implicit else "waiting",
            )
            if credential is not None:
                certificates.mark_used(credential)
            if implicit:
                devices.activate(self.db, device, record, self.settings, by_secret=requester.kind == "secret")
            self.db.commit()
        except IntegrityError as exc:
            self._raise_integrity(exc)
        log.info(
            "issued %s %s to device %s (id %d)%s%s",
            profile.name,
            record.serial_number,
            device.name,
            device.id,
            ", implicitly confirmed" if implicit else ", awaiting certConf",
            "; granted with modifications: " + "; ".join(decided.changes) if decided.modified else "",
        )
        return response

    def _check_limit(self, device):
        try:
            certificates.check_daily_limit(self.db, device, self.settings)
        except certificates.LimitReached as exc:
            raise CmpFailure(exc.message, "notAuthorized") from exc

    def _central_key(self, requester, profile, request):
        """Generate the key of a request without one (RFC 9483 4.1.6): ir and cr, when the domain allows it."""
        if self.message.body_type not in ("ir", "cr"):
            raise CmpFailure("%s must carry the public key to certify" % self.message.body_type, "badCertTemplate")
        try:
            key_type = keygen.key_type_for(self.domain, profile, request.key_algorithm)
            if requester.kind != "secret":
                keygen.check_recipient(requester.certificate)
        except keygen.KeygenRefused as exc:
            raise CmpFailure(exc.message, exc.fail_info) from exc
        private_key = keygen.generate_key(key_type)
        request.public_key = private_key.public_key()
        return private_key

    def _envelope(self, requester, private_key):
        """The generated key for the requester: under its shared secret, or to the certificate that signed."""
        try:
            if requester.kind == "secret":
                return keygen.envelope(private_key, self.domain, self.vault, secret=self.protector.secret)
            return keygen.envelope(private_key, self.domain, self.vault, recipient=requester.certificate)
        except keygen.KeygenRefused as exc:
            raise CmpFailure(exc.message, exc.fail_info) from exc

    def _check_requester(self, requester, replaces=None):
        """Repeat the authentication checks that a concurrent request may have undone, under the write
        lock (so they hold at the commit): a shared secret spent or replaced, a device created for the
        same IDevID, a signer or the certificate a kur replaces revoked since the request was authenticated."""
        if requester.kind == "secret":
            devices.refresh_secret(self.db, requester.device)
            if requester.device.secret_encrypted != requester.secret_encrypted or not devices.secret_usable(
                requester.device
            ):
                raise CmpFailure(_MAC_FAILURE_TEXT, "badMessageCheck")
        elif requester.new_device:
            taken = identity.registered_meanwhile(self.db, requester.device)
            if taken is not None:
                # Sent again, the request finds that device (or chooses another name).
                raise CmpFailure(
                    "device %s was registered for this IDevID, or took its name or serial number, by a concurrent "
                    "request; send the request again" % taken,
                    "systemUnavail",
                )
        elif requester.bind:
            other = identity.bound_meanwhile(self.db, requester.device, requester.registration)
            if other is not None:
                raise CmpFailure(
                    "device %s was bound to DevID registration %s meanwhile" % (requester.device.name, other),
                    "notAuthorized",
                )
        elif requester.kind == "credential":
            for record in (requester.record, replaces):
                if record is None:
                    continue
                certificates.reread(self.db, record)
                if record.status != "active" or not certificates.is_usable(record, self.settings):
                    raise CmpFailure(
                        "certificate %s was revoked (%s) by a concurrent request"
                        % (record.serial_number, record.revocation_reason or "superseded"),
                        "certRevoked",
                    )

    def _ca_pubs(self, requester, root):
        """caPubs hand out the trust anchor under the protection of the shared secret (RFC 9483 4.1.1)."""
        return [root] if requester.kind == "secret" else []

    # --- certConf ----------------------------------------------------------------------------------

    def _certconf(self, requester, profile_name):
        message = self.message
        transaction = self._transaction()
        if transaction is None:
            raise CmpFailure("no certificate of this transaction awaits confirmation", "badRequest")
        self._check_cert_conf_protection(requester, transaction)
        if not hmac.compare_digest(transaction.requester, requester.identity):
            raise CmpFailure("the certConf comes from another sender than the request it confirms", "notAuthorized")
        if message.recip_nonce is None or not hmac.compare_digest(message.recip_nonce, transaction.response_nonce):
            raise CmpFailure("recipNonce does not match the senderNonce of our response", "badRecipientNonce")
        if any(
            nonce is not None and hmac.compare_digest(message.sender_nonce, nonce)
            for nonce in (transaction.request_nonce, transaction.response_nonce)
        ):
            raise CmpFailure(
                "the certConf's senderNonce must be fresh, not one of this transaction's", "badSenderNonce"
            )
        statuses = cert_statuses(message)
        if len(statuses) != 1 or statuses[0].cert_req_id != transaction.cert_req_id:
            raise CmpFailure("certConf must confirm exactly certReqId %d" % transaction.cert_req_id, "badRequest")
        status = statuses[0]
        cmp_checks.check_cert_conf_status(status)
        record = transaction.certificate
        expected = cert_hash(x509.load_certificate(record.certificate_der), status.hash_alg)
        if not hmac.compare_digest(expected, status.cert_hash):
            raise CmpFailure("certHash does not match the certificate issued in this transaction", "badCertId")
        response = self._encode(self._response_header(), pkiconf_body())

        begin_write(self.db)
        # Read the state under the write lock: a concurrent certConf may have settled it.
        self.db.refresh(transaction)
        certificates.reread(self.db, record)
        settled = {"confirmed": True, "rejected": False}.get(transaction.state)
        if settled is not None:
            if settled == status.accepted:
                # The same answer again: our pkiConf was lost. Nothing changes.
                self.db.rollback()
                log.info("repeated certConf of transaction %s answered again", message.transaction_id.hex())
                return response
            raise CmpFailure("the certificate of this transaction is already %s" % transaction.state, "certConfirmed")
        if transaction.state in ("superseded", "expired"):
            raise CmpFailure(
                "certificate %s was revoked before this certConf arrived: %s"
                % (
                    record.serial_number,
                    "a newer request of the same sender replaced it"
                    if transaction.state == "superseded"
                    else "its confirmation window passed",
                ),
                "certRevoked",
            )
        # An rr, a newer domain credential or a device deletion may have revoked the certificate while it
        # awaited confirmation: confirming it must not make it active again.
        if record.status == "revoked":
            raise CmpFailure(
                "certificate %s was revoked (%s) before this certConf arrived"
                % (record.serial_number, record.revocation_reason),
                "certRevoked",
            )
        if record.status != "awaiting_confirmation":
            raise CmpFailure(
                "certificate %s is %s, not awaiting confirmation" % (record.serial_number, record.status), "badRequest"
            )
        if utcnow() > certificates.confirm_by(record, self.settings):
            # The sweep has not come round yet: the window is over all the same.
            certificates.expire_unconfirmed(self.db, record, transaction)
            self._commit()
            raise CmpFailure(
                "certificate %s was not confirmed within %d minutes and is revoked; request a new one"
                % (record.serial_number, self.settings.confirm_window_minutes),
                "certRevoked",
            )
        device = record.device
        if requester.kind == "credential":
            certificates.mark_used(requester.record)
        if status.accepted:
            transaction.state = "confirmed"
            devices.activate(self.db, device, record, self.settings, by_secret=requester.kind == "secret")
        else:
            # The device refuses the certificate (RFC 9483 4.1): that one, and nothing else, is revoked.
            transaction.state = "rejected"
            pki.revoke(record, "unspecified")
            log.info("device %d rejected certificate %s: %s", device.id, record.serial_number, status.text or "-")
        self._commit()
        return response

    def _check_no_update_pending(self, record, body):
        """While a kur of record awaits its certConf, record is not revoked: the device confirms or rejects the new
        certificate first. (A second kur is retry-safe instead: it supersedes the unconfirmed one, issue 11.)"""
        pending = certificates.pending_update(self.db, record, self.settings)
        if pending is not None:
            raise CmpFailure(
                "a key update of certificate %s (transaction %s) awaits its certConf; confirm or reject it before "
                "another %s" % (record.serial_number, pending.transaction_id.hex(), body),
                "badRequest",
            )

    def _check_cert_conf_protection(self, requester, transaction):
        """certConf is protected like the request it confirms (RFC 9483 4.1.1): a MAC after a signed request, or
        a signature after a MAC-protected one, is wrongIntegrity."""
        signed_request = not transaction.requester.startswith("secret:")
        if signed_request != (requester.kind != "secret"):
            raise CmpFailure(
                "the certConf must be %s like the request it confirms"
                % ("signed" if signed_request else "MAC-protected"),
                "wrongIntegrity",
            )

    # --- revocation --------------------------------------------------------------------------------

    def _rr(self, requester, profile_name):
        if requester.kind != "credential":
            raise CmpFailure("rr must be signed with a certificate of the device", "notAuthorized")
        if len(self.message.body) != 1:  # counted before any RevDetails is read, as CertReqMsgs are
            raise CmpFailure("rr must name exactly one certificate", "badRequest")
        (wanted,) = revocation_requests(self.message)
        try:
            certificates.check_revocation_reason(wanted.reason)
        except InvalidInput as exc:
            raise CmpFailure(str(exc), "badRequest") from exc
        record = self.db.scalar(
            select(IssuedCertificate).where(
                IssuedCertificate.serial_number == format(wanted.serial_number, "x"),
                IssuedCertificate.device_id == requester.device.id,
            )
        )
        if record is None or x509.load_certificate(record.ca.certificate_der).subject != wanted.issuer:
            raise CmpFailure("the device has no certificate with that issuer and serial number", "badCertId")
        if record.status == "revoked":
            raise CmpFailure("certificate %s is already revoked" % record.serial_number, "certRevoked")
        if requester.record.profile != "domain_credential" and requester.record.id != record.id:
            # An application certificate may revoke itself, nothing else; the domain credential may revoke all.
            raise CmpFailure("an application certificate may only revoke itself", "notAuthorized")
        certificate = x509.load_certificate(record.certificate_der)
        cmp_checks.check_revocation(wanted, certificate)
        self._check_no_update_pending(record, "rr")
        response = self._encode(self._response_header(), rp_body(STATUS_ACCEPTED, certificate=certificate))

        begin_write(self.db)
        certificates.reread(self.db, record)
        if record.status == "revoked":
            raise CmpFailure("certificate %s is already revoked" % record.serial_number, "certRevoked")
        certificates.mark_used(requester.record)
        revoked = certificates.revoke_certificate(record, wanted.reason)
        device = requester.device
        self._commit()
        log.info(
            "revoked %s of device %s (id %d): %s%s",
            record.serial_number,
            device.name,
            device.id,
            wanted.reason,
            ", taking %s with it" % ", ".join(r.serial_number for r in revoked[1:]) if revoked[1:] else "",
        )
        return response

    # --- general messages --------------------------------------------------------------------------

    def _genm(self, requester, profile_name):
        domain = self.domain
        issuing, root = pki.ca_chain(domain)
        answers = []
        asked = set()
        for oid, value in info_values(self.message):
            if oid in asked:  # each answered once: a genm repeating caCerts 1,000 times asked for a 9 MB answer
                raise CmpFailure("genm asks for %s more than once" % oid, "badRequest")
            asked.add(oid)
            if value is not None and oid in _GENM_WITHOUT_VALUE:
                # RFC 9483 4.3: these requests carry no infoValue; one that does is not understood.
                raise CmpFailure("genm %s must carry no infoValue" % oid, "badRequest")
            if oid == ID_IT_CA_CERTS:
                answers.append((oid, certificates_value([issuing, root])))
            elif oid == ID_IT_ROOT_CA_CERT:
                # No root CA key update is pending: rootCaKeyUpdate without a value (RFC 9483 4.3.2).
                answers.append((ID_IT_ROOT_CA_KEY_UPDATE, None))
            elif oid == ID_IT_CERT_REQ_TEMPLATE:
                answers.append((oid, self._template(requester, profile_name)))
            elif oid == ID_IT_CRL_STATUS_LIST:
                answers.append((ID_IT_CRLS, self._crls(value)))
            elif oid == ID_IT_SIGN_KEY_PAIR_TYPES:
                answers.append((oid, sign_key_pair_types_value([ID_EC_PUBLIC_KEY, ID_RSA_ENCRYPTION])))
            else:
                raise CmpFailure("general message info type %s is not supported" % oid, "badRequest")
        response = self._encode(self._response_header(), genp_body(answers))
        if requester.kind == "credential" and requester.record.first_used_at is None:
            # A genm signed with a new credential shows the device holds it (trustpoint-agent sends one after it
            # installs a credential): the secret or the certificate it replaces is no longer needed for a retry.
            begin_write(self.db)
            certificates.reread(self.db, requester.record)
            if requester.record.status == "active" and requester.record.first_used_at is None:
                certificates.mark_used(requester.record)
            self._commit()
        return response

    def _crls(self, value):
        """The CRLs a crlStatusList asks for (RFC 9483 4.3.4): of the sources it names, those newer than the
        client's; None (infoValue absent) when none is."""
        if value is None:
            raise CmpFailure(
                "genm crlStatusList must name the CRL's source (distribution point URI or issuer)", "badRequest"
            )
        lists = []
        statuses = crl_status_list(value)
        if len(statuses) > MAX_CRL_STATUSES:
            raise CmpFailure(
                "genm crlStatusList names %d CRLs; at most %d" % (len(statuses), MAX_CRL_STATUSES),
                "badRequest",
            )
        for status in statuses:
            ca_row = crl.ca_of_source(self.domain, status.uris, status.issuers)
            if ca_row is None:
                raise CmpFailure(
                    "no CA of domain %r issues a CRL with that distribution point or issuer" % self.domain.name,
                    "badRequest",
                )
            # The session's row of the CA: the CRL is issued anew on it when due (a secret's domain is a plain row).
            ca_row = self.db.get(CertificateAuthority, ca_row.id)
            der = crl.current_crl(self.db, self.vault, ca_row, self.settings)
            if crl.newer_than(der, status.this_update) and der not in lists:
                lists.append(der)
        return crls_value(lists) if lists else None

    def _template(self, requester, profile_name):
        """The template of the URL's profile (default: the domain credential), with the subject the
        server will set when it knows the device."""
        try:
            profile = get_profile(profile_name or "domain_credential")
        except InvalidInput as exc:
            raise CmpFailure(str(exc), "badRequest") from exc
        subject = None
        if profile.domain_credential and requester.device is not None:
            subject = x509.common_name(requester.device.name)
        return cert_req_template_value(subject, profile.key_types)

    # --- helpers -----------------------------------------------------------------------------------

    def _response_header(self, implicit_confirm=False):
        sender = self.protector.certificate.subject if isinstance(self.protector, SignatureProtection) else None
        return Header.response_to(self.message, sender=sender, implicit_confirm=implicit_confirm)

    def _encode(self, header, body, chain=None):
        """Encode a response; signature protection brings its signer's chain as extraCerts."""
        extra = self.protector.extra_certificates if isinstance(self.protector, SignatureProtection) else chain
        return encode_message(header, body, self.protector, extra_certs=[x509.certificate_der(c) for c in extra or ()])

    def _transaction(self):
        return self.db.scalar(
            select(CmpTransaction).where(CmpTransaction.transaction_id == self.message.transaction_id)
        )

    def _transaction_used(self):
        return certificates.transaction_used(self.db, self.message.transaction_id)

    def _commit(self):
        try:
            self.db.commit()
        except IntegrityError as exc:
            self._raise_integrity(exc)

    def _raise_integrity(self, exc):
        """A write broke a UNIQUE constraint: transactionIdInUse when another request with this
        transactionID raced past the check before the write lock; anything else stays an error."""
        self.db.rollback()
        if self._transaction() is not None:
            raise CmpFailure("transactionID already used", "transactionIdInUse") from exc
        raise exc


class _CsrRequest:
    """A PKCS#10 request seen like a CertReqMsg (its signature, the POP, is already verified)."""

    central_keygen = False  # a CSR carries its key

    def __init__(self, csr):
        self.public_key = csr.public_key()
        self.subject = csr.subject
        self.subject_alt_names = x509.subject_alt_names(csr)
        self.not_after = None
