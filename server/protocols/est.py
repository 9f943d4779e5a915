# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""EST (RFC 7030, RFC 8951) over HTTPS.

    GET  /.well-known/est[/<label>]/cacerts | csrattrs
    POST /.well-known/est[/<label>]/simpleenroll | simplereenroll | serverkeygen
         label: <domain>, <domain>/<profile>, <domain>~<profile> or ~<profile>; no label: the default
         domain (--est-default-domain), for clients that cannot name one
    POST /<label>/.well-known/est/<operation>   the same, for clients (strongSwan 5.9) that prefix paths

Who may enroll: a device with its one-time password (HTTP Basic, username = device name; est_password),
an IDevID that a DevID registration admits (TLS client certificate; est_idevid), or the holder of a
certificate this server issued (TLS client certificate): simplereenroll renews it, simpleenroll with an
application profile issues an application certificate. No credentials: 401 with a Basic challenge.
Errors are text/plain and change nothing.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import IntegrityError
from trustpoint_core import est, keys, x509
from trustpoint_core.errors import InvalidInput
from trustpoint_core.profiles import APPLICATION_PROFILES, get_profile

from ..errors import ApiError, conflict, text_error
from ..services import certificates, devices, enrolling, identity, keygen, names, pki
from ..storage.db import begin_write, session
from .wire import client_certificate, client_chain, read_body

log = logging.getLogger(__name__)
bp = Blueprint("est", __name__)

OPERATIONS = {
    "cacerts": "GET",
    "csrattrs": "GET",
    "simpleenroll": "POST",
    "simplereenroll": "POST",
    "serverkeygen": "POST",
}
CHALLENGE = {"WWW-Authenticate": 'Basic realm="est"'}


class EstError(ApiError):
    """An EST request refused: HTTP status, a message that says why, extra headers; answered in text/plain and
    logged (answer())."""


# endpoint -> (rule, the domain and profile its values name); every rule ends in the operation.
ROUTES = {
    "operation_without_label": ("/.well-known/est/<operation>/", lambda values: (None, None)),
    "operation_with_label": ("/.well-known/est/<label>/<operation>/", lambda values: _label(values["label"])),
    "operation_with_profile": (
        "/.well-known/est/<domain>/<profile>/<operation>/",
        lambda values: (values["domain"], values["profile"]),
    ),
    "operation_with_prefix": ("/<label>/.well-known/est/<operation>/", lambda values: _label(values["label"])),
}


def _label(label):
    domain, _sep, profile = label.partition("~")
    return domain or None, profile or None


def _view(**values):
    return answer(request, request.endpoint, values)


for _endpoint, (_rule, _target) in ROUTES.items():
    bp.add_url_rule(_rule, _endpoint, _view, methods=["GET", "POST"], strict_slashes=False)


def answer(req, endpoint, values):
    """The answer to the EST request req (Flask's, or protocols/ahead.py's) at endpoint (of this blueprint) with the
    URL's values. Refusals (EstError, ApiError of the services, a write that conflicts) are text/plain, logged."""
    domain_name, profile_name = ROUTES[endpoint.rpartition(".")[2]][1](values)
    try:
        return _serve(req, domain_name, profile_name, values["operation"])
    except ApiError as exc:
        log.info("EST %s %s refused (%d): %s", req.method, req.path, exc.status, exc.message)
        return text_error(exc.status, exc.message, exc.headers)
    except IntegrityError as exc:
        return text_error(409, conflict(req.method, req.path, exc))


def _serve(req, domain_name, profile_name, operation):
    if operation not in OPERATIONS:
        raise EstError(404, "unknown EST operation %r; known: %s" % (operation, ", ".join(OPERATIONS)))
    # HEAD is a GET without the body (RFC 9110 9.3.2): the server leaves the body out.
    if (req.method if req.method != "HEAD" else "GET") != OPERATIONS[operation]:
        raise EstError(405, "%s takes %s" % (operation, OPERATIONS[operation]), {"Allow": OPERATIONS[operation]})
    domain = _domain(domain_name)
    if profile_name is not None and profile_name not in (*APPLICATION_PROFILES, "domain_credential"):
        raise EstError(404, "unknown certificate profile %r" % profile_name)
    if operation == "cacerts":
        return _pkcs7(req, pki.ca_chain(domain))
    if operation == "csrattrs":
        # The label's profile: what a CSR for /<domain>/<profile>/simpleenroll needs.
        return _base64(req, est.csr_attributes(get_profile(profile_name or "domain_credential")), est.CSRATTRS)
    return EstEnrollment(req, domain, profile_name, operation).respond()


def _domain(name):
    db = session()
    name = name or current_app.extensions["trustpoint"].settings.est_default_domain
    if not name:
        raise EstError(404, "name a domain (/.well-known/est/<domain>/...): the server has no default EST domain")
    domain = enrolling.domain_named(db, name)
    if domain is None:
        raise EstError(404, "domain %r does not exist" % name)
    return domain


def _http_version(req):
    return req.environ.get("SERVER_PROTOCOL", "HTTP/1.1")


def _base64(req, der, content_type):
    """A base64 body framed for the client's HTTP version (est.encode_base64), with Content-Length."""
    return Response(
        est.encode_base64(der, _http_version(req)),
        200,
        content_type=content_type,
        headers={"Content-Transfer-Encoding": "base64"},
    )


def _pkcs7(req, certificates):
    return _base64(req, est.certs_only(certificates), est.PKCS7_CERTS_ONLY)


class EstEnrollment:
    """One simpleenroll, simplereenroll or serverkeygen request."""

    def __init__(self, req, domain, profile_name, operation):
        self.request = req
        self.db = session()
        self.vault = current_app.extensions["trustpoint"].vault
        self.settings = current_app.extensions["trustpoint"].settings
        self.domain = domain
        self.profile_name = profile_name
        self.operation = operation

    def respond(self):
        req = self.request
        if not req.is_secure:
            raise EstError(403, "EST needs HTTPS")
        if req.mimetype != est.PKCS10:
            raise EstError(
                415, "the body must be a PKCS#10 request with Content-Type %s, not %r" % (est.PKCS10, req.mimetype)
            )
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        body = read_body(req, limit)
        if body is None:
            raise EstError(413, "the request exceeds %d bytes" % limit)
        requester = self._authenticate()
        try:
            csr = est.load_csr(body)
        except InvalidInput as exc:
            raise EstError(400, str(exc)) from exc
        profile, replaces = self._profile(requester, csr)
        if self.operation == "serverkeygen":
            # Before the key generation (up to seconds); _issue checks again under the write lock.
            self._check_limit(requester.device)
            return self._serverkeygen(requester, profile, csr)
        certificate = self._issue(requester, profile, csr.public_key(), csr, replaces)
        return _pkcs7(req, [certificate])

    # --- who ---------------------------------------------------------------------------------------

    def _authenticate(self):
        """TLS client certificate first (issued credential, then IDevID), then HTTP Basic.

        A source over its budget of failed authentications is refused before any of it (auth_limits)."""
        req = self.request
        gate = current_app.extensions["trustpoint"].auth_limits.gate(req.remote_addr)
        over_budget = gate.refusal()
        if over_budget is not None:
            raise EstError.too_many_requests(*over_budget)
        presented = client_certificate(req)
        refusal = None
        certificate_failed = False
        if presented is not None:
            try:
                record = identity.issued_credential(self.db, presented, self.settings)
                if record is not None:
                    return identity.Requester("credential", device=record.device, record=record, certificate=presented)
                requester = identity.Requester("idevid", certificate=presented)
                requester.admissions = identity.admit_idevid(self.db, presented, client_chain(req), self.domain)
                requester.device, requester.new_device, requester.registration, requester.bind = identity.idevid_device(
                    self.db, requester.admissions, presented, ("est_idevid", "aoki")
                )
                return requester
            except identity.NotAuthenticated as exc:
                # Counted once the password below is checked: a legacy one leaves the event loop first, and the
                # request runs again from its start in a thread (runtime/on_loop.py), which would count it twice.
                certificate_failed = True
                refusal = exc.reason
            except InvalidInput as exc:
                gate.failed()
                raise EstError(400, "the TLS client certificate cannot be read: %s" % exc) from exc
        credentials = req.authorization
        if credentials is not None and credentials.type == "basic":
            device = enrolling.device_named(self.db, credentials.username, self.domain)
            if device is not None and device.onboarding_method != "est_password":
                device = None
            # Unknown names, spent, wrong, locked and throttled passwords look alike and cost alike.
            if device is not None and gate.device_refused(device):
                devices.check_password(None, credentials.password)
                gate.failed()
                device = None
            elif not devices.check_password(device, credentials.password):
                gate.failed(device if device is not None and device.password_hash else None)
                device = None
            if certificate_failed:
                gate.failed()
            if device is None:
                raise EstError(
                    401,
                    "wrong username or password (a password is used up once its device is onboarded and uses its "
                    "credential)",
                    CHALLENGE,
                )
            requester = identity.Requester("password", device=device)
            requester.password_hash = device.password_hash
            return requester
        if certificate_failed:
            gate.failed()
            raise EstError(403, "the TLS client certificate is not accepted: %s" % refusal)
        raise EstError(
            401, "authenticate with HTTP Basic (device name and password) or a TLS client certificate", CHALLENGE
        )

    # --- what --------------------------------------------------------------------------------------

    def _profile(self, requester, csr):
        """(profile, certificate replaced) the request gets, or EstError."""
        device = requester.device
        if device.domain_id != self.domain.id:
            raise EstError(403, "device %s is not registered in domain %s" % (device.name, self.domain.name))
        if requester.kind in ("password", "idevid"):
            # Onboarding (strongSwan sends an IDevID to simplereenroll: treat it as initial enrollment).
            if self.profile_name not in (None, "domain_credential"):
                raise EstError(
                    403, "onboard with the domain credential first; %s is an application profile" % self.profile_name
                )
            return get_profile("domain_credential"), None
        record = requester.record
        superseded = certificates.renewal_only(record, self.settings)
        if superseded is not None and self.operation != "simplereenroll":
            raise EstError(403, "the TLS client certificate is not accepted: %s (simplereenroll)" % superseded)
        if self.operation == "simplereenroll":
            # RFC 7030 4.2.2: the CSR renews the certificate of the TLS session: same subject and SANs.
            current = requester.certificate
            try:
                same_names = x509.subject_alt_names(csr) == x509.subject_alt_names(current)
            except InvalidInput as exc:
                raise EstError(400, str(exc)) from exc
            if csr.subject != current.subject or not same_names:
                raise EstError(
                    400,
                    "simplereenroll must repeat the subject and subjectAltName of the certificate "
                    "being renewed (%s)" % x509.name_to_string(current.subject),
                )
            return get_profile(record.profile), record
        if record.profile != "domain_credential" or self.profile_name in (None, "domain_credential"):
            raise EstError(
                403,
                "renew with simplereenroll; simpleenroll with a certificate issues an application "
                "certificate of the profile in the URL (%s)" % ", ".join(APPLICATION_PROFILES),
            )
        return get_profile(self.profile_name), None

    def _check_limit(self, device):
        try:
            certificates.check_daily_limit(self.db, device, self.settings)
        except certificates.LimitReached as exc:
            raise EstError.too_many_requests(exc.message, exc.retry_after) from exc

    def _issue(self, requester, profile, public_key, csr, replaces):
        device = requester.device
        try:
            key_type = keys.key_type_of(public_key)
            if key_type not in profile.key_types:
                raise InvalidInput("%s keys are not certified" % key_type)
            certificate, signer, decided = pki.issue_for_device(
                self.db,
                self.vault,
                self.settings,
                device,
                self.domain,
                profile,
                public_key,
                csr.subject,
                x509.subject_alt_names(csr),
                None,
            )
        except names.NameRefused as exc:
            raise EstError(403 if exc.not_allowed else 400, exc.message) from exc
        except InvalidInput as exc:
            raise EstError(400, str(exc)) from exc
        begin_write(self.db)
        if requester.new_device:
            taken = identity.registered_meanwhile(self.db, device)
            if taken is not None:
                raise EstError(
                    409,
                    "device %s was registered for this IDevID, or took its name or serial number, by a concurrent "
                    "request; send the request again" % taken,
                )
            self.db.add(device)
            self.db.flush()
        elif requester.kind == "password":
            devices.refresh_secret(self.db, device)
            if device.password_hash != requester.password_hash or not devices.secret_usable(device):
                # Spent by a concurrent request since it was checked.
                raise EstError(401, "wrong username or password", CHALLENGE)
        elif requester.kind == "credential":
            # A concurrent revocation or renewal since the TLS client certificate was checked: it must
            # not still obtain (or renew into) a certificate.
            for old in (requester.record, replaces):
                if old is None:
                    continue
                certificates.reread(self.db, old)
                if old.status != "active" or not certificates.is_usable(old, self.settings):
                    raise EstError(
                        403,
                        "the TLS client certificate is not accepted: certificate %s was revoked (%s) by a "
                        "concurrent request" % (old.serial_number, old.revocation_reason or "superseded"),
                    )
        elif requester.bind:
            other = identity.bound_meanwhile(self.db, device, requester.registration)
            if other is not None:
                raise EstError(403, "device %s was bound to DevID registration %s meanwhile" % (device.name, other))
            device.devid_registration = requester.registration
        self._check_limit(device)
        credential = requester.record if requester.kind == "credential" else None
        record = pki.record_certificate(
            self.db, signer, device, certificate, profile.name, "active", issued_with=credential, replaces=replaces
        )
        if credential is not None:  # mark_used and activate flush what is pending first
            certificates.mark_used(credential)
        devices.activate(self.db, device, record, self.settings, by_secret=requester.kind == "password")
        self.db.commit()
        log.info(
            "EST %s issued %s %s to device %s (id %d)%s",
            self.operation,
            profile.name,
            record.serial_number,
            device.name,
            device.id,
            "; granted with modifications: " + "; ".join(decided.changes) if decided.modified else "",
        )
        return certificate

    def _serverkeygen(self, requester, profile, csr):
        """RFC 7030 4.4: the server makes the key (of the CSR's key type) and returns it with the certificate."""
        try:
            key_type = keys.key_type_of(csr.public_key())
        except InvalidInput as exc:
            raise EstError(400, str(exc)) from exc
        allowed = self.settings.serverkeygen_key_types
        if key_type not in allowed:
            raise EstError(
                400,
                "serverkeygen makes keys of the CSR's key type, %s, which this server does not generate "
                "(--serverkeygen-key-types); send a CSR with a key of type %s" % (key_type, ", ".join(allowed)),
            )
        key = keygen.generate_key(key_type)
        certificate = self._issue(requester, profile, key.public_key(), csr, None)
        content_type, body = est.server_keygen_response(key, certificate, _http_version(self.request))
        return Response(body, 200, content_type=content_type)
