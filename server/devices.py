# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Device registration and the one-time secrets devices onboard with."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import delete, select, update
from trustpoint_core import x509

from .errors import ApiError
from .models import CmpTransaction, Device, IssuedCertificate, utcnow
from .pki import revoke

DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ONBOARDING_METHODS = ("cmp_shared_secret",)
SECRET_PURPOSE = "device-secret"  # noqa: S105 (associated data of the encryption)


def new_secret():
    # 192 bits, URL-safe: it survives shells, `-secret pass:` and YAML unquoted.
    return secrets.token_urlsafe(24)


def create_device(db, vault, name, domain, onboarding_method):
    """Register a device. Returns (device, secret); the secret is shown only now. The caller commits."""
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise ApiError(
            400,
            "device name must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
        )
    if onboarding_method not in ONBOARDING_METHODS:
        raise ApiError(400, "onboarding_method must be one of %s" % ", ".join(ONBOARDING_METHODS))
    if db.scalar(select(Device).where(Device.name == name)) is not None:
        raise ApiError(409, "device %r already exists" % name)
    secret = new_secret()
    device = Device(
        name=name,
        domain=domain,
        onboarding_method=onboarding_method,
        status="pending",
        secret_encrypted=vault.encrypt(secret.encode(), SECRET_PURPOSE),
    )
    db.add(device)
    return device, secret


def get_device(db, device_id):
    device = db.get(Device, device_id)
    if device is None:
        raise ApiError(404, "device %s does not exist" % device_id)
    return device


def regenerate_secret(db, vault, device):
    """Give the device a fresh secret (e.g. the first was lost, or the device is re-onboarded)."""
    secret = new_secret()
    device.secret_encrypted = vault.encrypt(secret.encode(), SECRET_PURPOSE)
    return secret


def device_secret(vault, device):
    """The device's secret as bytes, or None once it has been used up."""
    if device.secret_encrypted is None:
        return None
    return vault.decrypt(device.secret_encrypted, SECRET_PURPOSE)


def mark_onboarded(device, record):
    """The device holds a confirmed domain credential: its one-time secret is spent."""
    device.status = "onboarded"
    device.onboarded_at = utcnow()
    device.credential = record
    device.secret_encrypted = None


def delete_device(db, device):
    """Delete a device; its certificates stay on record, revoked (cessationOfOperation)."""
    for record in db.scalars(select(IssuedCertificate).where(IssuedCertificate.device_id == device.id)):
        revoke(record, "cessationOfOperation")
    db.flush()
    db.execute(update(IssuedCertificate).where(IssuedCertificate.device_id == device.id).values(device_id=None))
    db.execute(delete(CmpTransaction).where(CmpTransaction.device_id == device.id))
    device.credential = None
    db.flush()
    db.delete(device)


def device_json(device):
    credential = None
    if device.credential is not None:
        record = device.credential
        credential = {
            "serial_number": record.serial_number,
            "subject": record.subject,
            "not_before": record.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "not_after": record.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fingerprint_sha256": record.fingerprint_sha256,
            "status": record.status,
            "certificate": x509.certificates_to_pem(x509.load_certificate(record.certificate_der)),
        }
    return {
        "id": device.id,
        "name": device.name,
        "domain": device.domain.name,
        "onboarding_method": device.onboarding_method,
        "status": device.status,
        "created_at": device.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "onboarded_at": device.onboarded_at.strftime("%Y-%m-%dT%H:%M:%SZ") if device.onboarded_at else None,
        "credential": credential,
    }
