# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Who a request comes from: a device's domain credential, or an IDevID admitted by a DevID registration."""

from __future__ import annotations

import datetime
import logging
import re
import secrets

from cryptography import x509 as cx509
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID
from sqlalchemy import or_, select
from trustpoint_core import x509
from trustpoint_core.errors import excerpt

from ..storage.models import Device, DevIdRegistration, IssuedCertificate
from . import trust

log = logging.getLogger(__name__)

# IDevIDs may chain through a manufacturer's intermediate CAs; more is a misconfiguration.
MAX_CHAIN_DEPTH = 4


class Requester:
    """Who sent the request, as far as authentication tells.

    kind: "secret" (CMP MAC with a device's shared secret), "password" (EST HTTP Basic), "credential"
    (a certificate this server issued), "idevid" (another certificate: an IDevID candidate) or "anonymous".
    """

    def __init__(self, kind, device=None, record=None, certificate=None, intermediates=()):
        self.kind = kind
        self.device = device
        self.record = record
        self.certificate = certificate
        self.intermediates = list(intermediates)
        self.new_device = False
        self.registration = None  # an admitted IDevID's DevID registration
        self.matched = ()  # and the identifiers its pattern matched

    @property
    def identity(self):
        """What a certConf of the same transaction must come from."""
        if self.kind == "secret":
            return "secret:%d" % self.device.id
        if self.certificate is not None:
            return "cert:" + x509.fingerprint(self.certificate)
        return "anonymous"


class NotAuthenticated(Exception):
    """The presented certificate identifies no device. reason says why; code is for the protocol."""

    def __init__(self, reason, code="notAuthorized"):
        super().__init__(reason)
        self.reason = reason
        self.code = code


def issued_credential(db, certificate, now=None):
    """The record of a certificate this server issued, if it is usable for authentication now."""
    record = db.scalar(
        select(IssuedCertificate).where(IssuedCertificate.fingerprint_sha256 == x509.fingerprint(certificate))
    )
    if record is None:
        return None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if record.status == "revoked":
        raise NotAuthenticated("certificate %s is revoked" % record.serial_number, "certRevoked")
    if record.status != "active":
        raise NotAuthenticated("certificate %s was never confirmed" % record.serial_number)
    if not record.not_before <= now <= record.not_after:
        raise NotAuthenticated("certificate %s is not valid now" % record.serial_number, "signerNotTrusted")
    if record.device_id is None:
        raise NotAuthenticated("certificate %s belongs to a deleted device" % record.serial_number)
    return record


def idevid_identifiers(certificate):
    """(subject serialNumber or None, SAN URIs): what DevID registration patterns are matched against.

    A subject with several serialNumber attributes is refused (NotAuthenticated): which one names the
    device would be ambiguous, and a pattern matching one must not admit a device named by another. A
    malformed SAN raises InvalidInput.
    """
    serials = [attribute.value for attribute in certificate.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)]
    if len(serials) > 1:
        raise NotAuthenticated(
            "the IDevID's subject has %d serialNumber attributes; an IDevID names its device with one" % len(serials)
        )
    uris = [
        name.value for name in x509.subject_alt_names(certificate) if isinstance(name, cx509.UniformResourceIdentifier)
    ]
    return (serials[0] if serials else None), uris


def verify_against(certificate, intermediates, anchors, now=None):
    """Path validation (RFC 5280, via cryptography) of a client certificate to one of anchors.

    CA certificates follow the Web PKI rules (critical BasicConstraints, keyCertSign...); the end entity
    may carry any extensions: IEEE 802.1AR IDevIDs often have no SAN or EKU, which the Web PKI's client
    profile would demand.
    """
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store(anchors))
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
    )
    if now is not None:
        builder = builder.time(now)
    verifier = builder.build_client_verifier()
    verifier.verify(certificate, list(intermediates))


# IDevID identifiers are bounded before anything looks at them (X.520 caps serialNumber at 64 characters;
# device URIs are short).
MAX_IDENTIFIER = 256
# How many registrations or identifiers a refusal names; it says how many more there were.
_MAX_REASONS = 3


def admit_idevid(db, certificate, intermediates, domain=None):
    """(registration, matched): the DevID registration that admits certificate as an IDevID (in domain,
    when given), and the identifiers its pattern fully matched.

    A registration admits it when the certificate chains to the registration's truststore and its pattern
    fully matches the subject serialNumber or a SAN URI. The chain is verified first: a pattern only ever
    sees an identifier a trusted manufacturer certified, and RE2 matches it in linear time (trust.py). A
    stored pattern this version cannot use admits nothing (logged; the API shows pattern_error). Raises
    NotAuthenticated otherwise, InvalidInput for a malformed certificate.
    """
    serial, uris = idevid_identifiers(certificate)
    identifiers = ([serial] if serial is not None else []) + uris
    if not identifiers:
        raise NotAuthenticated("the IDevID has neither a subject serialNumber nor a SAN URI")
    if any(len(value) > MAX_IDENTIFIER for value in identifiers):
        raise NotAuthenticated("the IDevID's serialNumber or a SAN URI is longer than %d characters" % MAX_IDENTIFIER)
    query = select(DevIdRegistration).order_by(DevIdRegistration.id)
    if domain is not None:
        query = query.where(DevIdRegistration.domain_id == domain.id)
    verified = {}  # truststore id -> None when the chain verifies, else why not
    reasons = []
    trusted = False
    for registration in db.scalars(query):
        if registration.truststore_id not in verified:
            anchors = x509.load_certificates(registration.truststore.certificates_pem)
            try:
                verify_against(certificate, intermediates, anchors)
                verified[registration.truststore_id] = None
            except verification.VerificationError as exc:
                verified[registration.truststore_id] = str(exc)
        if verified[registration.truststore_id] is not None:
            reasons.append("%s: %s" % (registration.name, verified[registration.truststore_id]))
            continue
        trusted = True
        try:
            pattern = trust.compiled_pattern(registration.pattern)
        except trust.PatternError as exc:
            log.warning("DevID registration %s admits nothing until its pattern is changed: %s", registration.name, exc)
            continue
        matched = [value for value in identifiers if pattern.fullmatch(value)]
        if matched:
            return registration, matched
    where = " of domain %s" % domain.name if domain is not None else ""
    if reasons and not trusted:
        more = " and %d more" % (len(reasons) - _MAX_REASONS) if len(reasons) > _MAX_REASONS else ""
        raise NotAuthenticated(
            "the IDevID does not verify against the truststore of any DevID registration%s: %s%s"
            % (where, "; ".join(reasons[:_MAX_REASONS]), more)
        )
    shown = ", ".join(excerpt(value) for value in identifiers[:_MAX_REASONS])
    more = " and %d more" % (len(identifiers) - _MAX_REASONS) if len(identifiers) > _MAX_REASONS else ""
    raise NotAuthenticated("no DevID registration%s matches the IDevID (%s%s)" % (where, shown, more))


def idevid_device(db, registration, matched, certificate, method):
    """(device, new) for an IDevID admitted by registration (matched: the identifiers its pattern
    matched): the registered device, or a new one (not yet added).

    method: the onboarding method of the path (a new device gets it), or a tuple of the methods the path
    serves, the first for new devices (EST and CMP IDevID paths also serve AOKI's devices).

    The device is found by the IDevID's fingerprint, then by its serialNumber within the registration's
    domain, and only when the pattern matched that serialNumber: a manufacturer trusted for some serial
    numbers must not reach the device of another. Without one, auto_create_devices decides; a new device
    is returned unsaved so that a request that fails later leaves nothing behind.
    """
    methods = (method,) if isinstance(method, str) else tuple(method)
    fingerprint = x509.fingerprint(certificate)
    serial, _uris = idevid_identifiers(certificate)
    if serial not in matched:
        serial = None
    device = db.scalar(select(Device).where(Device.idevid_fingerprint == fingerprint))
    if device is None and serial is not None:
        device = db.scalar(
            select(Device).where(Device.domain_id == registration.domain_id, Device.serial_number == serial)
        )
    if device is not None:
        if device.domain_id != registration.domain_id:
            raise NotAuthenticated(
                "device %s belongs to another domain than DevID registration %s" % (device.name, registration.name)
            )
        if device.onboarding_method not in methods:
            raise NotAuthenticated(
                "device %s onboards with %s, not %s" % (device.name, device.onboarding_method, " or ".join(methods))
            )
        return device, False
    if not registration.auto_create_devices:
        raise NotAuthenticated(
            "the IDevID is admitted by DevID registration %s, but no device is registered for "
            "it and the registration does not create devices" % registration.name
        )
    return Device(
        name=_device_name(db, certificate, [serial] if serial is not None else []),
        domain_id=registration.domain_id,
        onboarding_method=methods[0],
        status="pending",
        serial_number=serial,
        idevid_fingerprint=fingerprint,
    ), True


def registered_meanwhile(db, device):
    """The name of a device that a concurrent request registered for the IDevID of device (new, not yet
    added) or that took its name, or None. Called under the write lock, before device is added."""
    same = or_(Device.idevid_fingerprint == device.idevid_fingerprint, Device.name == device.name)
    return db.scalar(select(Device.name).where(same))


def _device_name(db, certificate, serials):
    """A free device name from the IDevID: its common name or serial number, made valid and unique."""
    common_names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    base = re.sub(r"[^A-Za-z0-9._:-]", "-", (common_names or serials or ["device"])[0]).strip("-.:_")[:100]
    base = base or "device"
    name = base
    while db.scalar(select(Device).where(Device.name == name)) is not None:
        name = "%s-%s" % (base, secrets.token_hex(3))
    return name
