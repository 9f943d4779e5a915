# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Certificates of devices: listing, revocation, and those an operator issues (API, pages, module, OTP download).

Devices request their own certificates over CMP and EST (protocols/). An operator may issue for any device
too: application certificates (tls_client, tls_server, opc_ua) for every device, including those that
onboard with no protocol at all (onboarding_method "none"), and the domain credential for a device that
onboards, which then counts as onboarded. The key comes from the device (a CSR) or is generated here for a
download (services/downloads.py) or a PKCS#12 answer; the server never stores it.
"""

from __future__ import annotations

from sqlalchemy import select
from trustpoint_core import est, keys, x509
from trustpoint_core.errors import InvalidInput
from trustpoint_core.profiles import PROFILES, get_profile

from ..errors import ApiError
from ..storage.db import begin_write, contains
from ..storage.models import CmpTransaction, Device, IssuedCertificate
from . import devices, pki

# CRL reasons an operator or a device may give (RFC 5280 5.3.1). Revocation is permanent: no certificateHold,
# and removeFromCRL belongs in delta CRLs.
REVOCATION_REASONS = (
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
    "aACompromise",
)
STATUSES = ("awaiting_confirmation", "active", "revoked")


def check_revocation_reason(reason):
    """reason, or InvalidInput naming the ones accepted."""
    if reason not in REVOCATION_REASONS:
        raise InvalidInput(
            "revocation reason %s is not supported (revocations are permanent); use one of %s"
            % (reason, ", ".join(REVOCATION_REASONS))
        )
    return reason


def certificates_query(device=None, search=None, status=None, profile=None):
    """Issued certificates, newest first; search matches the subject, serial number or device name."""
    query = select(IssuedCertificate).order_by(IssuedCertificate.id.desc())
    if device is not None:
        query = query.where(IssuedCertificate.device_id == device.id)
    if search:
        query = query.where(
            contains(IssuedCertificate.subject, search)
            | contains(IssuedCertificate.serial_number, search.lower().replace(":", ""))
            | contains(IssuedCertificate.device_name, search)
        )
    if status:
        if status not in STATUSES:
            raise ApiError(400, "status must be one of %s" % ", ".join(STATUSES))
        query = query.where(IssuedCertificate.status == status)
    if profile:
        query = query.where(IssuedCertificate.profile == profile)
    return query


def get_certificate(db, device, serial_number):
    """The device's certificate with serial_number (hex, any case, colons allowed); 404 otherwise."""
    serial = ""
    if isinstance(serial_number, str):
        serial = serial_number.lower().replace(":", "").lstrip("0") or "0"
    record = db.scalar(
        select(IssuedCertificate).where(
            IssuedCertificate.device_id == device.id, IssuedCertificate.serial_number == serial
        )
    )
    if record is None:
        raise ApiError(404, "device %s has no certificate with serial number %s" % (device.name, serial_number))
    return record


def revoke_certificate(record, reason):
    """Revoke record with reason (checked). A device whose domain credential is revoked must onboard again.
    The caller holds the write lock and commits."""
    check_revocation_reason(reason)
    pki.revoke(record, reason)
    device = record.device
    if device is not None and device.credential_id == record.id:
        device.status = "pending"


def revoke_for_operator(db, device, serial_number, reason):
    """An operator revokes the device's certificate (API, pages): 404 unknown, 409 already revoked, 400 for a
    reason not accepted. The caller holds the write lock and commits; returns the record."""
    record = get_certificate(db, device, serial_number)
    if record.status == "revoked":
        raise ApiError(409, "certificate %s is already revoked (%s)" % (record.serial_number, record.revocation_reason))
    try:
        revoke_certificate(record, reason)
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from exc
    return record


def operator_profiles(device):
    """Names of the profiles an operator may issue for device: every application profile, and the domain
    credential for a device that onboards (not for onboarding_method "none")."""
    return [n for n, p in PROFILES.items() if device.onboarding_method != "none" or not p.domain_credential]


def operator_profile(device, name):
    """The profile name if an operator may issue it for device; InvalidInput otherwise."""
    if not isinstance(name, str) or name not in PROFILES:
        raise InvalidInput("profile must be one of %s" % ", ".join(PROFILES))
    if name not in operator_profiles(device):
        raise InvalidInput(
            "device %s has onboarding method none: it gets application certificates (%s), no domain credential"
            % (device.name, ", ".join(operator_profiles(device)))
        )
    return get_profile(name)


def parse_subject(text):
    """A subject from the API or a form (/CN=a/O=b or CN=a,O=b), None for an empty one."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str):
        raise InvalidInput("subject must be a string such as /CN=plc-7 or CN=plc-7")
    return x509.parse_name(text)


def parse_subject_alt_names(values):
    """cryptography GeneralNames of a list of DNS:/IP:/URI:/email: strings."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise InvalidInput('subject_alt_names must be a list such as ["DNS:plc-7.example", "IP:10.0.5.7"]')
    return [x509.parse_general_name(value) for value in values]


class Prepared:
    """A certificate signed for a device but not recorded yet (see prepare() and record())."""

    def __init__(self, device, profile, certificate, signer):
        self.device = device
        self.profile = profile
        self.certificate = certificate
        self.signer = signer


def prepare(vault, device, profile_name, public_key, subject=None, subject_alt_names=(), crl_base_url=None):
    """Check the request and sign the certificate (the expensive part, before the write lock).

    Raises InvalidInput when the profile, key type, subject or names are not allowed."""
    profile = operator_profile(device, profile_name)
    key_type = keys.key_type_of(public_key)
    if key_type not in profile.key_types:
        raise InvalidInput("profile %s does not certify %s keys" % (profile.name, key_type))
    certificate, signer = pki.issue_for_device(
        vault, device, device.domain, profile, public_key, subject, subject_alt_names, None, crl_base_url
    )
    return Prepared(device, profile, certificate, signer)


def record(db, prepared, replaces=None):
    """Record a prepared certificate as active; it supersedes replaces (a renewal) and, for a domain
    credential, the device's earlier ones. The caller holds the write lock (begin_write) and commits."""
    if replaces is not None:
        db.refresh(replaces)
        if replaces.status != "active":
            raise ApiError(
                409,
                "certificate %s is %s: only an active certificate is renewed"
                % (replaces.serial_number, replaces.status),
            )
    row = pki.record_certificate(
        db, prepared.signer, prepared.device, prepared.certificate, prepared.profile.name, "active"
    )
    db.flush()
    devices.activate(db, prepared.device, row, replaces)
    return row


def check_renewal(device, replaces, profile_name):
    """A renewal replaces an active certificate of the same device and profile."""
    if replaces.device_id != device.id:
        raise ApiError(400, "certificate %s belongs to another device" % replaces.serial_number)
    if replaces.profile != profile_name:
        raise ApiError(
            400,
            "certificate %s has profile %s; a renewal keeps the profile" % (replaces.serial_number, replaces.profile),
        )
    if replaces.status != "active":
        raise ApiError(
            409,
            "certificate %s is %s: only an active certificate is renewed" % (replaces.serial_number, replaces.status),
        )


def issue(db, vault, device, profile_name, csr=None, key_type=None, subject=None, subject_alt_names=None,
          crl_base_url=None, replaces=None):  # fmt: skip
    """Issue a certificate for device: for the key of csr (PEM/DER/base64, its signature verified; its subject
    and SANs unless subject/subject_alt_names are given), or for a key of key_type generated here.

    Returns (record, certificate, private key or None). Every input is checked before anything is written;
    the caller commits.
    """
    try:
        if (csr is None) == (key_type is None):
            raise InvalidInput("give either a CSR or a key_type for a key the server generates")
        names = parse_subject_alt_names(subject_alt_names)
        requested = parse_subject(subject)
        private_key = None
        if csr is not None:
            try:
                request = est.load_csr(csr.encode() if isinstance(csr, str) else csr)
            except InvalidInput as exc:
                raise InvalidInput(
                    "csr must be a PKCS#10 request, PEM or base64 DER, signed by its key: %s" % exc
                ) from exc
            public_key = request.public_key()
            if requested is None:
                requested = request.subject
            if subject_alt_names is None:
                names = x509.subject_alt_names(request)
        else:
            if key_type not in keys.KEY_TYPES:
                raise InvalidInput("key_type must be one of %s" % ", ".join(keys.KEY_TYPES))
            private_key = keys.generate_private_key(key_type)
            public_key = private_key.public_key()
        if replaces is not None:
            check_renewal(device, replaces, profile_name)
        prepared = prepare(vault, device, profile_name, public_key, requested, names, crl_base_url)
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from exc
    begin_write(db)
    if db.scalar(select(Device.id).where(Device.id == device.id)) is None:
        raise ApiError(404, "device %s was deleted meanwhile" % device.name)
    return record(db, prepared, replaces), prepared.certificate, private_key


def certificate_json(row):
    certificate = x509.load_certificate(row.certificate_der)
    return {
        "id": row.id,
        "device": row.device_name,
        "profile": row.profile,
        "serial_number": row.serial_number,
        "subject": row.subject,
        "subject_alt_names": [x509.general_name_to_string(n) for n in x509.subject_alt_names(certificate)],
        "not_before": row.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": row.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fingerprint_sha256": row.fingerprint_sha256,
        "status": row.status,
        "revoked_at": row.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ") if row.revoked_at else None,
        "revocation_reason": row.revocation_reason,
        "certificate": x509.certificates_to_pem([certificate]),
    }


def pending_update(db, record):
    """The CMP transaction of a key update of record that awaits its certConf, or None (found through the
    device's transactions: indexed)."""
    return db.scalar(
        select(CmpTransaction).where(
            CmpTransaction.device_id == record.device_id,
            CmpTransaction.state == "waiting",
            CmpTransaction.replaces_id == record.id,
        )
    )
