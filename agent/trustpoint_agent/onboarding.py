# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the agent does: onboard with AOKI or a one-time token, renew, tell the state.

Every key is generated here and never leaves the device. Nothing from a server is trusted before it is
authenticated: an AOKI answer by the DevOwnerID's signature (checked against the factory's owner anchor),
a token onboarding by the MAC over the token's secret, a renewal by the domain CA's signature and the
pinned TLS anchor. A check that fails says which, and the device stays as it was.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time

from cryptography import x509 as cx509
from trustpoint_core import aoki, keys, x509
from trustpoint_core.cmp_client import CmpClient, MacCredential, SignatureCredential, trust_anchors
from trustpoint_core.cmp_message import ID_IT_CA_CERTS
from trustpoint_core.cmp_protection import subject_key_identifier, verify_signature
from trustpoint_core.errors import CmpFailure, ConfirmationUnknown, InvalidInput, TransportError, TrustpointError
from trustpoint_core.est import EstClient, build_csr

from . import files
from .https import Https

log = logging.getLogger("trustpoint_agent")

DEFAULT_KEY_TYPE = "ecdsa-p256"
# How long `status` waits for another command to finish moving a credential in (the moves take milliseconds).
STATUS_SETTLE_SECONDS = 5.0
TOKEN = re.compile(r"(\d{1,18})\.([A-Za-z0-9_-]{16,128})(?:\.([A-Za-z0-9_-]{43}))?")
CMP_URL = "/.well-known/cmp/{operation}"  # the device's domain follows from its credential or secret
TLS_TRUSTSTORE_URL = "/agent/tls-truststore.pem"


class AgentError(TrustpointError):
    """The agent cannot do what it was asked; the message says why and what to do."""


class Factory:
    """What the factory provisioned: the IDevID (certificate, key, chain) and the owner trust anchors."""

    def __init__(self, certificate, key, chain, owner_truststore):
        self.certificate_path = certificate
        self.key_path = key
        self.chain_path = chain
        self.owner_truststore_path = owner_truststore

    def load(self):
        try:
            self.certificate = x509.load_certificate(files.read(self.certificate_path))
            self.key = keys.load_private_key(files.read(self.key_path))
            chain = files.read(self.chain_path, required=False) if self.chain_path else None
            self.chain = x509.load_certificates(chain) if chain else []
            self.owner_anchors = x509.load_certificates(files.read(self.owner_truststore_path))
        except (files.FilesError, InvalidInput) as exc:
            raise AgentError("the factory provisioning is incomplete: %s" % exc) from exc
        if not keys.same_public_key(self.key, self.certificate.public_key()):
            raise AgentError("%s is not the key of the IDevID %s" % (self.key_path, self.certificate_path))
        if not self.owner_anchors:
            raise AgentError("%s holds no certificate: the device trusts no owner" % self.owner_truststore_path)
        return self


class OwnerSignedCredential(SignatureCredential):
    """AOKI over CMP: requests signed with the IDevID; answers must be signed by the device's owner, a
    DevOwnerID that chains to the factory's owner anchor and names this IDevID (or the domain's CA)."""

    def __init__(self, factory, expected_owner=None, max_depth=aoki.DEFAULT_OWNER_CHAIN_DEPTH):
        super().__init__(factory.key, factory.certificate, factory.chain)
        self.factory = factory
        self.expected_owner = expected_owner
        self.max_depth = max_depth
        self.owner = None

    def verify(self, response, trusted):
        extra = response.extra_certificates()
        signer = next((c for c in extra if subject_key_identifier(c) == response.sender_kid), None)
        if signer is None:
            raise CmpFailure("the answer carries no certificate of its signer (senderKID)", "signerNotTrusted")
        expected = self.expected_owner
        if expected is not None and x509.certificate_der(signer) != x509.certificate_der(expected):
            raise CmpFailure("the answer is signed by another DevOwnerID than the init answer's", "signerNotTrusted")
        try:
            aoki.check_owner(signer, self.factory.owner_anchors, self.factory.certificate, extra, self.max_depth)
        except aoki.OwnerRefused as exc:
            raise CmpFailure(str(exc), "signerNotTrusted") from exc
        verify_signature(response, signer)
        self.owner = signer


def parse_token(token):
    """(device id, secret, pin or None) of an onboarding token `<id>.<secret>[.<pin>]`."""
    match = TOKEN.fullmatch((token or "").strip())
    if match is None:
        raise AgentError("the token is not an onboarding token (<device id>.<secret>[.<pin>]); copy it whole")
    return int(match.group(1)), match.group(2), match.group(3)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _stamp(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _leaves(certificates):
    """The end-entity certificates of a TLS truststore (the server certificates pinned with the anchor)."""
    found = []
    for certificate in certificates:
        constraints = x509.extension_value(certificate, cx509.BasicConstraints)
        if constraints is None or not constraints.ca:
            found.append(certificate)
    return found


class Agent:
    """The agent on one device: its state directory, its factory provisioning (for AOKI) and options."""

    def __init__(self, state, factory=None, key_type=DEFAULT_KEY_TYPE, timeout=30, max_owner_depth=2, retries=3):
        self.state = state
        # How often a request whose answer was lost is sent again (the server makes that safe: docs/onboarding.md).
        self.retries = retries
        self.factory = factory
        self.key_type = key_type
        self.timeout = timeout
        self.max_owner_depth = max_owner_depth

    # --- what the device holds ---------------------------------------------------------------------

    def credential(self):
        """(key, certificate, chain, state) of the installed credential, or None when there is none.
        Raises AgentError when the files are inconsistent."""
        if self.revoked():
            return None  # revoked; files that remain are an interrupted `revoke`'s, which the next one deletes
        key_pem, cert_pem = self.state.read(files.KEY), self.state.read(files.CERT)
        if key_pem is None and cert_pem is None:
            return None
        try:
            key = keys.load_private_key(key_pem or b"")
            certificate = x509.load_certificate(cert_pem or b"")
            chain = x509.load_certificates(self.state.read(files.CHAIN) or b"")
        except InvalidInput as exc:
            raise AgentError("the credential in %s cannot be read: %s" % (self.state.path, exc)) from exc
        if not keys.same_public_key(key, certificate.public_key()):
            raise AgentError("the certificate in %s is not for its key" % self.state.path)
        return key, certificate, chain, self.state.state()

    def valid_credential(self):
        """The credential tuple when its certificate is valid now and chains to its root, else None."""
        try:
            current = self.credential()
        except AgentError as exc:
            log.warning("%s", exc)
            return None
        if current is None:
            return None
        _key, certificate, chain, _state = current
        try:
            x509.verify_chain(certificate, chain, trust_anchors(chain) or None)
        except InvalidInput as exc:
            log.info("the installed credential is not valid: %s", exc)
            return None
        return current

    def tls_trust(self):
        """(anchors, pinned leaves) of the server's TLS, as pinned at onboarding."""
        pem = self.state.read(files.TLS_TRUSTSTORE)
        certificates = x509.load_certificates(pem) if pem else []
        if not certificates:
            raise AgentError("no pinned TLS trust in %s: onboard first" % self.state.path)
        return certificates[:1], _leaves(certificates[1:])

    # --- AOKI ----------------------------------------------------------------------------------------

    def aoki(self, candidates, protocol="auto"):
        """Onboard with the first candidate (discovery.Candidate) that proves to be this device's owner.

        Returns a description of the outcome; raises AgentError naming why each candidate was refused.
        """
        if self.factory is None:
            raise AgentError("AOKI needs the factory provisioning (IDevID and owner trust anchor)")
        self.factory.load()
        reasons = []
        for candidate in candidates:
            try:
                return self._aoki_with(candidate, protocol)
            except aoki.OwnerRefused as exc:
                log.warning("refused the owner service at %s: %s", candidate.url, exc)
                reasons.append("%s: refused: %s" % (candidate.url, exc))
            except (TrustpointError, files.FilesError) as exc:
                log.warning("onboarding with %s failed: %s", candidate.url, exc)
                reasons.append("%s: %s" % (candidate.url, exc))
            except Exception as exc:  # one server's answer, whatever it breaks, must not stop the next
                log.warning("onboarding with %s failed unexpectedly: %s: %s", candidate.url, type(exc).__name__, exc)
                reasons.append("%s: %s: %s" % (candidate.url, type(exc).__name__, exc))
        if not reasons:
            raise AgentError("no owner service found (mDNS _aoki._tcp); pass --url to name one")
        raise AgentError("not onboarded: " + "; ".join(reasons))

    def _aoki_with(self, candidate, protocol):
        factory = self.factory
        provisional = Https(
            client_cert=factory.certificate_path,
            client_key=factory.key_path,
            timeout=self.timeout,
            client_chain=factory.chain,
        )
        status, headers, body = provisional.request("GET", candidate.url + candidate.init_path)
        if status != 200:
            detail = body[:200].decode("utf-8", "replace").strip()
            raise AgentError("the AOKI init answered HTTP %d: %s" % (status, detail or "no reason given"))
        seen = provisional.peer
        if candidate.tls_fingerprint and seen is not None and x509.fingerprint(seen) != candidate.tls_fingerprint:
            log.warning("%s presents another TLS certificate than its mDNS TXT record names", candidate.url)
        answer = aoki.InitAnswer.parse(body, candidate.url)
        owner = answer.owner_certificate
        reference = aoki.check_owner(owner, factory.owner_anchors, factory.certificate, max_depth=self.max_owner_depth)
        aoki.verify_signature(owner, body, headers.get("aoki-signature"), headers.get("aoki-signature-algorithm"))
        previous = self.state.read(files.OWNER)
        aoki.check_rollback(owner, x509.load_certificate(previous) if previous else None)
        anchor, leaves = answer.tls_truststore[:1], _leaves(answer.tls_truststore)
        if seen is None:
            raise aoki.OwnerRefused("the server presented no TLS certificate")
        try:
            x509.verify_chain(seen, answer.tls_truststore, anchor)
        except InvalidInput as exc:
            raise aoki.OwnerRefused("the server's TLS certificate is not one its owner vouches for: %s" % exc) from exc
        log.info("%s is this device's owner (%s, %s)", candidate.url, owner.subject.rfc4514_string(), reference)
        pinned = Https(
            anchor, leaves or [seen], factory.certificate_path, factory.key_path, self.timeout, factory.chain
        )
        usable = [(n, u) for n, u in answer.protocols if n in ("EST", "CMP") and protocol in ("auto", n.lower())]
        if not usable:
            offered = ", ".join(n for n, _u in answer.protocols)
            raise AgentError("the owner service offers %s, none of which this agent uses (%s)" % (offered, protocol))
        name, url = usable[0]
        key = keys.generate_private_key(self.key_type)
        if name == "EST":
            certificate, chain = self._est_enroll(pinned, url, key)
            state = {"protocol": "est", "est_url": url.rstrip("/")}
        else:
            credential = OwnerSignedCredential(factory, owner, self.max_owner_depth)
            certificate, chain = self._cmp_enroll(pinned, url, key, credential, candidate.url + CMP_URL)
            state = {"protocol": "cmp", "cmp_url": candidate.url + CMP_URL}
        state.update(method="aoki", server=candidate.url, owner_reference=reference, onboarded_at=_stamp(_now()))
        contents = {files.OWNER: x509.certificates_to_pem(owner).encode()}
        return self._install(key, certificate, chain, answer.tls_truststore, state, contents)

    # --- the guided flow: a one-time token -----------------------------------------------------------

    def onboard(self, url, token, cacert=None):
        """Onboard with an agent device's one-time token (CMP ir protected by a MAC over its secret)."""
        device_id, secret, pin = parse_token(token)
        base = url.rstrip("/")
        if pin is not None:
            truststore = self._pinned_truststore(base, pin)
        elif cacert is not None:
            truststore = x509.load_certificates(files.read(cacert))
        else:
            raise AgentError("the token pins no TLS anchor; pass --cacert with the server's TLS CA certificate")
        pinned = Https(truststore[:1], _leaves(truststore[1:]), timeout=self.timeout)
        key = keys.generate_private_key(self.key_type)
        try:
            credential = MacCredential(device_id, secret)
            certificate, chain = self._cmp_enroll(pinned, base + CMP_URL, key, credential, base + CMP_URL)
        except CmpFailure as exc:
            if "badMessageCheck" in exc.fail_info:
                raise AgentError(
                    "the server refused the token: it is wrong or already used (a token onboards once); ask the "
                    "operator for a new one (%s)" % exc.text
                ) from exc
            raise
        state = {
            "protocol": "cmp",
            "cmp_url": base + CMP_URL,
            "method": "agent",
            "server": base,
            "onboarded_at": _stamp(_now()),
        }
        done = self._install(key, certificate, chain, truststore, state)
        self._use_once(CmpClient(base + CMP_URL, pinned.transport, self.retries), key, certificate, chain)
        return done

    def _pinned_truststore(self, base, pin):
        provisional = Https(timeout=self.timeout)
        status, _headers, body = provisional.request("GET", base + TLS_TRUSTSTORE_URL)
        if status != 200:
            raise AgentError("%s answered HTTP %d: is %s a Trustpoint server?" % (TLS_TRUSTSTORE_URL, status, base))
        try:
            certificates = x509.load_certificates(body)
        except InvalidInput as exc:
            raise AgentError("%s%s holds no certificates: %s" % (base, TLS_TRUSTSTORE_URL, exc)) from exc
        anchors = [c for c in certificates if aoki.pin(c) == pin]
        if not anchors:
            raise AgentError(
                "the server at %s does not present the TLS anchor the token pins: it is another server, or its "
                "TLS CA changed since the token was issued (ask for a new token)" % base
            )
        return anchors + [c for c in certificates if c is not anchors[0]]

    # --- renewal -----------------------------------------------------------------------------------

    def renewal_due(self, certificate, renew_before_days=None):
        """(due, days left): due when fewer than renew_before_days remain (default a third of the lifetime)."""
        end, start = x509.not_after(certificate), x509.not_before(certificate)
        left = (end - _now()).total_seconds() / 86400
        window = renew_before_days if renew_before_days is not None else (end - start).total_seconds() / 86400 / 3
        return left < window, left

    def renew(self, force=False, renew_before_days=None):
        if self.revoked():  # decommissioned: a timer left behind has nothing to do, and that is no failure
            return (
                "not renewed: the credential was revoked at %s (`trustpoint-agent uninstall-timer` ends the daily "
                "renewal)" % self.revoked()
            )
        current = self.credential()
        if current is None:
            raise AgentError("nothing to renew: the device is not onboarded (run `trustpoint-agent aoki` or `onboard`)")
        old_key, certificate, chain, state = current
        due, left = self.renewal_due(certificate, renew_before_days)
        if not force and not due:
            return "not due: the credential is valid for %.1f more days" % left
        if left < 0:
            raise AgentError(
                "the credential expired %.1f days ago and cannot renew itself; onboard again (aoki, or a new token)"
                % -left
            )
        anchors, leaves = self.tls_trust()
        key = keys.generate_private_key(self.key_type)
        cmp = None
        if state.get("protocol") == "est":
            pem = {files.CERT: self.state.file(files.CERT), files.KEY: self.state.file(files.KEY)}
            client = Https(anchors, leaves, pem[files.CERT], pem[files.KEY], self.timeout)
            est = EstClient(state["est_url"], client.send, self.retries)
            csr = build_csr(key, certificate.subject, x509.subject_alt_names(certificate))
            new_certificate = est.enroll(csr, reenroll=True)
            new_chain = self._est_chain(est, new_certificate)
        else:
            client = Https(anchors, leaves, timeout=self.timeout)
            cmp = CmpClient(state.get("cmp_url") or state["server"] + CMP_URL, client.transport, self.retries)
            signer = SignatureCredential(old_key, certificate, chain[:-1])
            try:
                enrollment = cmp.update_key(key, signer, chain[-1:], implicit_confirm=False)
            except ConfirmationUnknown as exc:
                enrollment = self._confirmed_meanwhile(cmp, key, exc, chain[-1:])
            new_certificate, new_chain = enrollment.certificate, enrollment.chain
        truststore = x509.load_certificates(self.state.read(files.TLS_TRUSTSTORE))
        self._install(key, new_certificate, new_chain, truststore, dict(state, renewed_at=_stamp(_now())))
        if cmp is not None:
            self._use_once(cmp, key, new_certificate, new_chain)
        until = _stamp(x509.not_after(new_certificate))
        return "renewed: %s, valid until %s" % (x509.serial_hex(new_certificate), until)

    # --- revocation --------------------------------------------------------------------------------

    def revoke(self, reason="cessationOfOperation"):
        """Revoke the installed credential (a CMP rr signed with it, over the pinned TLS; also for a device that
        onboarded over EST) and delete its key, certificate and chain. state.json keeps when and what was revoked,
        so that `aoki` does not onboard the device again unless told (--force). Sent again after a lost answer,
        the rr is answered certRevoked, which counts as done. A device that holds no credential (never onboarded,
        or its files wiped) has nothing to revoke, and is recorded as decommissioned all the same."""
        state = self.state.state()
        if state.get("revoked_at"):
            left = self.state.remove((files.KEY, files.CERT, files.CHAIN))  # what an interrupted revoke left
            serial = state.get("revoked_serial_number")
            if serial:
                done = "already revoked: %s at %s" % (serial, state["revoked_at"])
            else:
                done = "already decommissioned at %s (it held no credential)" % state["revoked_at"]
            return done + ("\ndeleted %s" % ", ".join(map(self.state.file, left)) if left else "")
        current = self.credential()
        if current is None:
            # Its zero-touch service may still be trying (the server was away), or start at the next boot: it must
            # not onboard a device the operator decommissioned.
            self._record_revocation(state, None, reason)
            log.info("decommissioned without a credential to revoke")
            return (
                "decommissioned: the device holds no credential in %s, nothing was revoked; aoki will not onboard it "
                "(--force does)" % self.state.path
            )
        key, certificate, chain, state = current
        anchors, leaves = self.tls_trust()
        client = Https(anchors, leaves, timeout=self.timeout)
        cmp = CmpClient(state.get("cmp_url") or state["server"] + CMP_URL, client.transport, self.retries)
        cmp.revoke(certificate, SignatureCredential(key, certificate, chain[:-1]), chain[-1:], reason)
        serial = x509.serial_hex(certificate)
        # state.json first: after a crash in between, `credential` ignores the files and `revoke` deletes them.
        self._record_revocation(state, serial, reason)
        self.state.remove((files.KEY, files.CERT, files.CHAIN))
        log.info("revoked %s (%s) and deleted its key", serial, reason)
        return "revoked: %s (%s)" % (serial, reason)

    def _record_revocation(self, state, serial, reason):
        """state.json says the device is decommissioned: when, which credential (None: it held none) and why."""
        revoked = dict(state, revoked_at=_stamp(_now()), revoked_serial_number=serial, revocation_reason=reason)
        self.state.install({files.STATE: (json.dumps(revoked, indent=2, sort_keys=True) + "\n").encode()})

    def revoked(self):
        """When the last credential was revoked (state.json), or None."""
        return self.state.state().get("revoked_at")

    # --- protocols ---------------------------------------------------------------------------------

    def _est_enroll(self, client, url, key):
        est = EstClient(url.rstrip("/"), client.send, self.retries)
        subject = x509.common_name(aoki.idevid_serial(self.factory.certificate) or "Trustpoint Domain Credential")
        certificate = est.enroll(build_csr(key, subject))
        return certificate, self._est_chain(est, certificate)

    def _est_chain(self, est, certificate):
        """The chain of certificate from /cacerts (over the pinned TLS connection), to its root."""
        ca_certificates = est.ca_certificates()
        try:
            path = x509.verify_chain(certificate, ca_certificates, trust_anchors(ca_certificates))
        except InvalidInput as exc:
            raise AgentError("the issued certificate does not chain to the domain's CAs: %s" % exc) from exc
        return path[1:]

    def _cmp_enroll(self, client, url, key, credential, probe_url):
        """An ir; the chain must end in a root of caPubs, which the answer's protection authenticates.
        probe_url: where to ask whether a certificate whose certConf got no answer was confirmed."""
        cmp = CmpClient(url, client.transport, self.retries)
        subject = x509.common_name("Trustpoint Domain Credential")
        try:
            enrollment = cmp.initialize(key, subject, credential, trusted=[], implicit_confirm=False)
        except ConfirmationUnknown as exc:
            probe = CmpClient(probe_url, client.transport, self.retries)
            enrollment = self._confirmed_meanwhile(probe, key, exc, exc.enrollment.ca_certificates)
        roots = [x509.certificate_der(c) for c in enrollment.ca_certificates]
        if not enrollment.chain or x509.certificate_der(enrollment.chain[-1]) not in roots:
            raise AgentError("the issued certificate does not chain to a root the server's protected answer names")
        return enrollment.certificate, enrollment.chain

    def _confirmed_meanwhile(self, cmp, key, lost, trusted):
        """The answer to the certConf was lost: use the new certificate once (a genm signed with it). The
        server answers only if it has confirmed the certificate; otherwise the onboarding starts over."""
        enrollment = lost.enrollment
        try:
            _sign_genm(cmp, key, enrollment.certificate, enrollment.chain, trusted)
        except TrustpointError as exc:
            raise TransportError("%s; the server did not confirm the certificate: retry (%s)" % (lost, exc)) from exc
        log.info("the server had confirmed the certificate; its answer to the certConf was lost")
        return enrollment

    def _use_once(self, cmp, key, certificate, chain):
        """Sign one request (a genm) with the credential just installed: the server learns that the device holds
        it and ends what it kept for a retry of a lost answer (the token's secret, the certificate it renewed).
        A failure only leaves that to the server's retry window."""
        try:
            _sign_genm(cmp, key, certificate, chain, chain[-1:])
        except TrustpointError as exc:
            log.warning("the server did not learn that the new credential arrived (%s); it ends the old one later", exc)

    def _install(self, key, certificate, chain, tls_truststore, state, more=None):
        contents = {
            files.KEY: keys.private_key_to_pem(key),
            files.CERT: x509.certificates_to_pem(certificate).encode(),
            files.CHAIN: x509.certificates_to_pem(chain).encode(),
            files.TLS_TRUSTSTORE: x509.certificates_to_pem(tls_truststore).encode(),
        }
        contents.update(more or {})
        contents[files.STATE] = (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()
        self.state.install(contents)
        summary = x509.summary(certificate)
        log.info("installed %s (%s) until %s", summary["serial_number"], summary["subject"], summary["not_after"])
        return "onboarded: %s, valid until %s" % (summary["subject"], summary["not_after"])

    # --- status ------------------------------------------------------------------------------------

    def status(self, renew_before_days=None, settle_seconds=STATUS_SETTLE_SECONDS):
        """A dict that says what the device holds (for `status`).

        status takes no lock (an aoki round holds it for minutes), so it reads again while another command is
        moving files in (a new key beside the old certificate read as "not for its key"), until a read began and
        ended on the same files with no move under way."""
        deadline = time.monotonic() + settle_seconds
        while True:
            before = self.state.version()
            report = self._status(renew_before_days)
            if before[-1] is None and self.state.version() == before:
                return report
            if time.monotonic() >= deadline:
                report["problem"] = (
                    "another trustpoint-agent command kept changing the credential in %s; run status again"
                    % self.state.path
                )
                return report
            time.sleep(0.05)

    def _status(self, renew_before_days):
        report = {"state_dir": self.state.path, "onboarded": False}
        try:
            current = self.credential()
        except AgentError as exc:
            report["problem"] = str(exc)
            return report
        if current is None:
            return report
        _key, certificate, _chain, state = current
        due, left = self.renewal_due(certificate, renew_before_days)
        valid = self.valid_credential() is not None
        report.update(
            onboarded=valid,
            method=state.get("method"),
            server=state.get("server"),
            protocol=state.get("protocol"),
            certificate=x509.summary(certificate),
            days_left=round(left, 1),
            renewal_due=due,
            onboarded_at=state.get("onboarded_at"),
            renewed_at=state.get("renewed_at"),
            owner_reference=state.get("owner_reference"),
        )
        if not valid:
            report["problem"] = "the certificate is expired or does not chain to its root"
        return report


def _sign_genm(cmp, key, certificate, chain, trusted):
    """A genm (CA certificates) signed with certificate's key: answered only while the server accepts it."""
    cmp.general_message("getcacerts", SignatureCredential(key, certificate, chain[:-1]), trusted, ID_IT_CA_CERTS)
