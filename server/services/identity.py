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
from sqlalchemy import and_, bindparam, or_, select
from trustpoint_core import x509
from trustpoint_core.errors import excerpt

from ..storage import sql
from ..storage.db import show_written
from ..storage.models import Device, DevIdRegistration, IssuedCertificate
from . import certificates, trust

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
        self.admissions = []  # an IDevID's Admissions (the DevID registrations that admit it)
        self.registration = None  # the one that admits it for device
        self.bind = False  # True: device is to be bound to registration when the request commits

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


def issued_credential(db, certificate, settings, now=None):
    """The record of a certificate this server issued, if it is usable for authentication now.

    A superseded certificate (a renewal of it is active) is returned within its grace period: callers allow
    it to renew, nothing else (certificates.renewal_only)."""
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
    if not certificates.is_usable(record, settings, now):
        raise NotAuthenticated(
            "certificate %s was renewed and its grace period is over; use its successor" % record.serial_number,
            "certRevoked",
        )
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


class Admission:
    """A DevID registration that admits an IDevID, and the identifiers its pattern fully matched."""

    def __init__(self, registration, matched):
        self.registration = registration
        self.matched = matched


def admit_idevid(db, certificate, intermediates, domain=None):
    """The Admissions of certificate as an IDevID (in domain, when given): every DevID registration whose
    truststore it chains to and whose pattern fully matches its subject serialNumber or a SAN URI.

    The chain is verified first: a pattern only ever sees an identifier a trusted manufacturer certified, and
    RE2 matches it in linear time (trust.py). A stored pattern this version cannot use admits nothing (logged;
    the API shows pattern_error). Raises NotAuthenticated when nothing admits it, or for a CA certificate;
    InvalidInput for a malformed certificate.
    """
    constraints = x509.extension_value(certificate, cx509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise NotAuthenticated("the IDevID is a CA certificate; an IDevID is a device's end-entity certificate")
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
    admissions = []
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
            admissions.append(Admission(registration, matched))
    if admissions:
        return admissions
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


def idevid_device(db, admissions, certificate, method):
    """(device, new, registration, bind) for an IDevID admitted by admissions: the registered device, or a new
    one (not yet added), the registration that admits it for that device, and whether the device is to be
    bound to it when the request commits.

    method: the onboarding method of the path (a new device gets it), or a tuple of the methods the path
    serves, the first for new devices (EST and CMP IDevID paths also serve AOKI's devices).

    The device is found by the IDevID's fingerprint, then by its serialNumber within the domain of an admitting
    registration whose pattern matched that serialNumber: a manufacturer trusted for some serial numbers must
    not reach the device of another. A device belongs to the registration that admitted or created it: an
    IDevID admitted only by others is refused, and an unbound device that several registrations admit is
    refused until the operator binds it. Without a device, the first admitting registration that creates devices
    does; a new device is returned unsaved so that a request that fails later leaves nothing behind.
    """
    methods = (method,) if isinstance(method, str) else tuple(method)
    fingerprint = x509.fingerprint(certificate)
    serial, _uris = idevid_identifiers(certificate)
    device = db.scalar(select(Device).where(Device.idevid_fingerprint == fingerprint))
    if device is None and serial is not None:
        domains = sorted({a.registration.domain_id for a in admissions if serial in a.matched})
        if domains:
            device = db.scalar(
                select(Device).where(Device.domain_id.in_(domains), Device.serial_number == serial).order_by(Device.id)
            )
    if device is not None:
        registration, bind = _registration_of(db, device, admissions)
        if device.onboarding_method not in methods:
            raise NotAuthenticated(
                "device %s onboards with %s, not %s" % (device.name, device.onboarding_method, " or ".join(methods))
            )
        return device, False, registration, bind
    creators = [a for a in admissions if a.registration.auto_create_devices]
    if not creators:
        raise NotAuthenticated(
            "the IDevID is admitted by DevID registration(s) %s, but no device is registered for it and the "
            "registration does not create devices" % ", ".join(a.registration.name for a in admissions)
        )
    admission = creators[0]
    registration = admission.registration
    serial = serial if serial in admission.matched else None
    return (
        Device(
            name=_device_name(db, certificate, [serial] if serial is not None else []),
            domain_id=registration.domain_id,
            onboarding_method=methods[0],
            status="pending",
            serial_number=serial,
            idevid_fingerprint=fingerprint,
            devid_registration_id=registration.id,
        ),
        True,
        registration,
        False,
    )


def _registration_of(db, device, admissions):
    """(registration, bind) that admits the IDevID for device, or NotAuthenticated."""
    if device.devid_registration_id is not None:
        for admission in admissions:
            if admission.registration.id == device.devid_registration_id:
                return admission.registration, False
        raise NotAuthenticated(
            "device %s belongs to DevID registration %s, which does not admit this IDevID (admitted by %s)"
            % (
                device.name,
                device.devid_registration.name,
                ", ".join(a.registration.name for a in admissions),
            )
        )
    # Unbound (registered by serial number, or created before devices were bound). Whichever manufacturer came
    # first must not take it: every registration of its domain whose pattern matches its serial number could
    # claim it, so with several the operator decides.
    admitting = [a.registration for a in admissions if a.registration.domain_id == device.domain_id]
    if not admitting:
        raise NotAuthenticated(
            "device %s belongs to another domain than DevID registration(s) %s"
            % (device.name, ", ".join(a.registration.name for a in admissions))
        )
    claimants = admitting
    if device.serial_number is not None:
        registrations = db.scalars(
            select(DevIdRegistration)
            .where(DevIdRegistration.domain_id == device.domain_id)
            .order_by(DevIdRegistration.id)
        )
        claimants = [r for r in registrations if trust.pattern_matches(r.pattern, device.serial_number)] or admitting
    if len(claimants) == 1 and claimants[0] not in admitting:
        raise NotAuthenticated(
            "device %s (serial number %s) belongs to DevID registration %s, whose pattern matches its serial number "
            "and which does not admit this IDevID" % (device.name, device.serial_number, claimants[0].name)
        )
    if len(claimants) > 1:
        raise NotAuthenticated(
            "device %s (serial number %s) may belong to several DevID registrations (%s); bind it to one: PATCH "
            '/api/v1/devices/%d {"devid_registration": ...}'
            % (device.name, device.serial_number, ", ".join(r.name for r in claimants), device.id)
        )
    return claimants[0], True


def registered_meanwhile(db, device):
    """The name of a device that a concurrent request registered for the IDevID of device (new, not yet
    added), that took its name, or its serial number in its domain, or None. Called under the write lock,
    before device is added."""
    same = or_(Device.idevid_fingerprint == device.idevid_fingerprint, Device.name == device.name)
    if device.serial_number is not None:
        same = or_(same, and_(Device.domain_id == device.domain_id, Device.serial_number == device.serial_number))
    return db.scalar(select(Device.name).where(same))


_BOUND = sql.Statement(
    select(Device.__table__.c.devid_registration_id).where(Device.__table__.c.id == bindparam("p_id"))
)


def bound_meanwhile(db, device, registration):
    """Under the write lock: the name of the registration a concurrent request (or the operator) bound device to
    other than registration, or None. An unbound device stays free to bind. One SELECT of the column (issue 16);
    device shows what it read."""
    (bound,) = sql.one(db, _BOUND, p_id=device.id)
    if bound != device.devid_registration_id:
        db.expire(device, ["devid_registration"])
    show_written(db, Device, device.id, {"devid_registration_id": bound})
    if bound in (None, registration.id):
        return None
    return device.devid_registration.name


def _device_name(db, certificate, serials):
    """A free device name from the IDevID: its common name or serial number, made valid and unique."""
    common_names = [a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    base = re.sub(r"[^A-Za-z0-9._:-]", "-", (common_names or serials or ["device"])[0]).strip("-.:_")[:57]
    base = base or "device"
    name = base
    while db.scalar(select(Device).where(Device.name == name)) is not None:
        name = "%s-%s" % (base, secrets.token_hex(3))
    return name
