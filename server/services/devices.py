# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Device registration and the one-time secrets devices onboard with."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
import re
import secrets
import types

from sqlalchemy import and_, bindparam, case, delete, func, or_, select, update
from trustpoint_core import x509
from trustpoint_core.profiles import get_profile

from ..errors import ApiError
from ..runtime import on_loop
from ..storage import sql
from ..storage.db import contains, get_by_id, loaded, show_written
from ..storage.models import CmpTransaction, Device, DevIdRegistration, IssuedCertificate, utcnow
from . import auth_limits, trust
from .enrolling import EnrollingCertificate, Row
from .names import check_allowed_names
from .pki import revocation, revoke_where

# A device's name is the common name of its certificates: at most 64 characters (RFC 5280 ub-common-name).
MAX_NAME = 64
DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,%d}" % (MAX_NAME - 1))
# How a device obtains its domain credential, and the one-time secret each method hands out (if any).
SECRET_KINDS = {
    "cmp_shared_secret": "shared_secret",  # CMP ir protected by a MAC with the secret (PBM, PBMAC1)
    "cmp_idevid": None,  # CMP ir signed with the device's IDevID (DevID registrations)
    "est_password": "password",  # EST simpleenroll with HTTP Basic: username = device name
    "est_idevid": None,  # EST simpleenroll with the IDevID as TLS client certificate
    # No domain credential: the operator issues application certificates (API, pages, OTP download).
    "none": None,
    "aoki": None,  # zero-touch: the IDevID and the DevOwnerID that owns it (AOKI), then EST or CMP
    "agent": "onboarding_token",  # trustpoint-agent onboard: CMP ir with a MAC, the secret of a one-time token
}
# The kinds a CMP MAC (PBM, PBMAC1) proves: the server keeps them encrypted, not hashed.
MAC_SECRET_KINDS = ("shared_secret", "onboarding_token")
ONBOARDING_METHODS = tuple(SECRET_KINDS)
# The methods whose devices onboard with an IDevID (AOKI: over EST or CMP).
IDEVID_METHODS = ("cmp_idevid", "est_idevid", "aoki")
SECRET_PURPOSE = Device.__encrypted__["secret_encrypted"]
STATUSES = ("pending", "onboarded", "no_onboarding")
SERIAL_NUMBER = re.compile(r"[ -~]{1,128}")  # printable ASCII, as X.520 serialNumber
# Release 0.1.0 hashed EST passwords with scrypt (RFC 7914), ~76 ms of CPU per check; those still work.
LEGACY_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
# What an unknown user's password is checked against, so that it costs what a device's does.
_NO_PASSWORD = "hmac-sha256$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # noqa: S105


def new_secret():
    # 192 bits, URL-safe: it survives shells, `-secret pass:`, HTTP Basic and YAML unquoted.
    return secrets.token_urlsafe(24)


def hash_password(password):
    """A server-generated password (192 random bits, new_secret) as stored: HMAC-SHA256 keyed with a random
    salt. Nobody can guess such a password, so a slow KDF would only hand attackers CPU to burn."""
    salt = os.urandom(16)
    digest = hmac.new(salt, password.encode(), hashlib.sha256).digest()
    return "hmac-sha256$%s$%s" % (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def check_password(device, password, now=None):
    """True when password is the device's usable EST password (None: no such device, checked all the same so
    that an unknown name costs the time of a known one); constant-time comparison."""
    stored = device.password_hash if device is not None and device.password_hash else _NO_PASSWORD
    if not isinstance(password, str):
        password = ""
    scheme, salt, digest = stored.split("$")
    if scheme == "scrypt":
        on_loop.long_work_ahead()  # 76 ms of CPU
        computed = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=32, **LEGACY_SCRYPT)
    else:
        computed = hmac.new(base64.b64decode(salt), password.encode(), hashlib.sha256).digest()
    matches = hmac.compare_digest(computed, base64.b64decode(digest))
    return matches and stored is not _NO_PASSWORD and secret_usable(device, now)


def create_device(
    db, vault, name, domain, onboarding_method, serial_number=None, allowed_names=None, devid_registration=None
):
    """Register a device. Returns (device, secrets): {"shared_secret": ...} or {"password": ...} or {}.

    devid_registration: the name of the DevID registration whose IDevIDs alone onboard it (IDevID methods).
    The secret is shown only now. The caller holds the write lock and commits.
    """
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
        raise ApiError(
            400,
            "device name must be 1-%d letters, digits, '.', '_', ':' or '-', starting with a letter or digit "
            "(it is the common name of the device's certificates)" % MAX_NAME,
        )
    if onboarding_method not in ONBOARDING_METHODS:
        raise ApiError(400, "onboarding_method must be one of %s" % ", ".join(ONBOARDING_METHODS))
    if onboarding_method == "est_password" and ":" in name:
        # The name is the HTTP Basic user-id, which ends at the first ':' (RFC 7617 2): it could never log in.
        raise ApiError(
            400, "an est_password device's name is its HTTP Basic user-id, which cannot contain ':' (RFC 7617)"
        )
    if serial_number is not None and (not isinstance(serial_number, str) or not SERIAL_NUMBER.fullmatch(serial_number)):
        raise ApiError(400, "serial_number must be 1-128 printable ASCII characters")
    allowed_names = check_allowed_names(allowed_names)
    if db.scalar(select(Device).where(Device.name == name)) is not None:
        raise ApiError(409, "device %r already exists" % name)
    check_serial_free(db, domain, serial_number)
    device = Device(
        name=name,
        domain=domain,
        onboarding_method=onboarding_method,
        status="no_onboarding" if onboarding_method == "none" else "pending",
        serial_number=serial_number,
        allowed_names=allowed_names,
    )
    if devid_registration is not None:
        bind_registration(db, device, devid_registration)
    db.add(device)
    db.flush()  # the id: an onboarding token names it
    return device, issue_secret(vault, device)


def devices_query(search=None, domain=None, status=None, onboarding_method=None):
    """Devices by id; search matches the name or the IDevID serial number; domain is a Domain."""
    query = select(Device).order_by(Device.id)
    if search:
        query = query.where(or_(contains(Device.name, search), contains(Device.serial_number, search)))
    if domain is not None:
        query = query.where(Device.domain_id == domain.id)
    if status:
        if status not in STATUSES:
            raise ApiError(400, "status must be one of %s" % ", ".join(STATUSES))
        query = query.where(Device.status == status)
    if onboarding_method:
        if onboarding_method not in ONBOARDING_METHODS:
            raise ApiError(400, "onboarding_method must be one of %s" % ", ".join(ONBOARDING_METHODS))
        query = query.where(Device.onboarding_method == onboarding_method)
    return query


def check_serial_free(db, domain, serial_number):
    """409 when another device of domain has serial_number: an IDevID's serial number names one device."""
    if serial_number is None:
        return
    holder = db.scalar(select(Device.name).where(Device.domain_id == domain.id, Device.serial_number == serial_number))
    if holder is not None:
        raise ApiError(
            409, "device %s of domain %s already has serial number %r" % (holder, domain.name, serial_number)
        )


def bind_registration(db, device, name):
    """Bind device to the DevID registration called name: only IDevIDs it admits onboard the device."""
    if not isinstance(name, str):
        raise ApiError(400, "devid_registration must be the name of a DevID registration")
    registration = db.scalar(select(DevIdRegistration).where(DevIdRegistration.name == name))
    if registration is None:
        raise ApiError(400, "DevID registration %r does not exist" % name)
    if device.onboarding_method not in IDEVID_METHODS:
        raise ApiError(400, "device %s onboards with %s, without an IDevID" % (device.name, device.onboarding_method))
    domain_id = device.domain.id if device.domain is not None else device.domain_id
    if registration.domain_id != domain_id:
        raise ApiError(400, "DevID registration %s admits devices into domain %s" % (name, registration.domain.name))
    if device.serial_number is not None and not trust.pattern_matches(registration.pattern, device.serial_number):
        raise ApiError(
            400, "the pattern of DevID registration %s does not match serial number %r" % (name, device.serial_number)
        )
    device.devid_registration = registration


def set_allowed_names(device, allowed_names):
    device.allowed_names = check_allowed_names(allowed_names)


def get_device(db, device_id):
    device = get_by_id(db, Device, device_id)
    if device is None:
        raise ApiError(404, "device %s does not exist" % device_id)
    return device


def issue_secret(vault, device):
    """Give the device a fresh one-time secret of its method; {} for methods without one.

    Used at registration, and later when the first secret was lost or the device must onboard again.
    """
    kind = SECRET_KINDS[device.onboarding_method]
    if kind is None:
        return {}
    secret = new_secret()
    auth_limits.unlock(device)  # a new secret starts with no failures
    device.secret_retry_until = None
    if kind in MAC_SECRET_KINDS:
        device.secret_encrypted = vault.encrypt(secret.encode(), SECRET_PURPOSE)
    else:
        device.password_hash = hash_password(secret)
    return {kind: secret}


def uses_mac_secret(device):
    """Whether the device onboards with a CMP MAC over its one-time secret (shared secret, agent token)."""
    return SECRET_KINDS.get(device.onboarding_method) in MAC_SECRET_KINDS


def secret_usable(device, now=None):
    """Whether the device's one-time secret (or password) still authenticates: until it onboards the device,
    then within its retry window while the credential it obtained was never used (the device may not have
    received it)."""
    if device.secret_retry_until is None:
        return True
    now = now or utcnow()
    credential = device.credential
    return now < device.secret_retry_until and (credential is None or credential.first_used_at is None)


_DEVICES = Device.__table__
_CERTIFICATES = IssuedCertificate.__table__
_SECRET_STATE = sql.Statement(
    select(
        _DEVICES.c.secret_encrypted,
        _DEVICES.c.password_hash,
        _DEVICES.c.secret_retry_until,
        _DEVICES.c.credential_id,
        _CERTIFICATES.c.first_used_at,
    )
    .select_from(_DEVICES.outerjoin(_CERTIFICATES, _CERTIFICATES.c.id == _DEVICES.c.credential_id))
    .where(_DEVICES.c.id == bindparam("device_id"))
)


def refresh_secret(db, device):
    """Read the secret of device (services/enrolling.py) and its credential's use again (under the write lock,
    before relying on them): one SELECT of those columns, which device then shows."""
    row = sql.one(db, _SECRET_STATE, device_id=device.id)
    credential_id = row.credential_id
    credential = None if credential_id is None else Row({"id": credential_id, "first_used_at": row.first_used_at})
    values = {
        "secret_encrypted": row.secret_encrypted,
        "password_hash": row.password_hash,
        "secret_retry_until": row.secret_retry_until,
        "credential_id": credential_id,
    }
    loaded_device = loaded(db, Device, device.id)
    if loaded_device is not None and loaded_device.credential_id != credential_id:
        db.expire(loaded_device, ["credential"])
    show_written(db, Device, device.id, values, row=device)
    device.credential = credential
    if credential_id is not None:
        show_written(db, IssuedCertificate, credential_id, {"first_used_at": row.first_used_at})


# A one-time secret used up: what mark_onboarded, the first use of its credential and the sweep of ended retry
# windows write.
SECRET_SPENT = types.MappingProxyType({"secret_encrypted": None, "password_hash": None, "secret_retry_until": None})


def end_secret(device):
    """The device's one-time secret is spent (on the session's object; the caller holds the write lock)."""
    for name, value in SECRET_SPENT.items():
        setattr(device, name, value)


def device_secret(vault, device):
    """The device's CMP shared secret as bytes, or None when it is used up."""
    if device.secret_encrypted is None or not secret_usable(device):
        return None
    return vault.decrypt(device.secret_encrypted, SECRET_PURPOSE)


def _onboarding(secret_retry_until):
    """The UPDATE of mark_onboarded, with what it sets secret_retry_until to."""
    columns = _DEVICES.c
    values = dict(SECRET_SPENT) if secret_retry_until is None else {"secret_retry_until": secret_retry_until}
    return sql.Statement(
        _DEVICES.update()
        .where(columns.id == bindparam("p_id"))
        .values(
            status="onboarded",
            onboarded_at=bindparam("p_now", type_=columns.onboarded_at.type),
            credential_id=bindparam("p_credential"),
            **values,
        )
        .returning(columns.secret_encrypted, columns.password_hash, columns.secret_retry_until)
    )


# The secret is spent at once; or it stays usable until p_until, a window that starts at its first use (a retry
# keeps it), and a device without a secret gets none.
_ONBOARDED_SECRET_SPENT = _onboarding(None)
_ONBOARDED_SECRET_KEPT = _onboarding(
    case(
        (
            and_(_DEVICES.c.secret_encrypted.is_(None), _DEVICES.c.password_hash.is_(None)),
            _DEVICES.c.secret_retry_until,
        ),
        else_=func.coalesce(
            _DEVICES.c.secret_retry_until, bindparam("p_until", type_=_DEVICES.c.secret_retry_until.type)
        ),
    )
)


def mark_onboarded(db, device, record, settings, now, by_secret=False):
    """The device holds a confirmed domain credential. A one-time secret it was obtained with (by_secret) stays
    usable for settings.secret_retry_minutes (from its first use), while that credential is not used: the answer
    may have been lost. Obtained otherwise (a credential, an IDevID, an operator), the secret is spent now.

    One UPDATE (issue 16) that decides on the row as it is under the write lock, not as the session read it."""
    params = {"p_id": device.id, "p_now": now, "p_credential": record.id}
    if not by_secret or not settings.secret_retry_minutes:
        statement = _ONBOARDED_SECRET_SPENT
    else:
        statement = _ONBOARDED_SECRET_KEPT
        params["p_until"] = now + datetime.timedelta(minutes=settings.secret_retry_minutes)
    row = sql.one(db, statement, **params)
    written = {
        "status": "onboarded",
        "onboarded_at": now,
        "credential_id": record.id,
        "secret_encrypted": row.secret_encrypted,
        "password_hash": row.password_hash,
        "secret_retry_until": row.secret_retry_until,
    }
    plain = isinstance(record, EnrollingCertificate)  # an enrollment's plain record (services/enrolling.py)
    obj = show_written(db, Device, device.id, written if plain else dict(written, credential=record), row=device)
    if plain:
        # No object of the session: the session's device, if loaded, loads its credential when asked.
        if obj is not None:
            db.expire(obj, ["credential"])
        device.credential = record


_ACTIVATE = sql.Statement(_CERTIFICATES.update().where(_CERTIFICATES.c.id == bindparam("p_id")).values(status="active"))
# Renewals of the same certificate whose answer was lost (the device never had them), other than the one activated.
_REVOKE_SIBLINGS = sql.Statement(
    revocation(_CERTIFICATES.c.replaces_id == bindparam("p_replaces"), _CERTIFICATES.c.id != bindparam("p_id"))
)
_SUPERSEDE = sql.Statement(
    _CERTIFICATES.update()
    .where(
        _CERTIFICATES.c.id == bindparam("p_id"),
        _CERTIFICATES.c.status == "active",
        _CERTIFICATES.c.superseded_at.is_(None),
    )
    .values(superseded_at=bindparam("p_now", type_=_CERTIFICATES.c.superseded_at.type))
)
# The device's other certificates of the profile, except the one activated and the one it renews (p_keep).
_REVOKE_OTHERS = sql.Statement(
    revocation(
        _CERTIFICATES.c.device_id == bindparam("p_device"),
        _CERTIFICATES.c.profile == bindparam("p_profile"),
        _CERTIFICATES.c.id != bindparam("p_id"),
        _CERTIFICATES.c.id != bindparam("p_keep"),
    )
)


def activate(db, device, record, settings, now=None, by_secret=False):
    """record is issued and confirmed: it becomes active. What it renews is superseded (it may renew again
    until record is used, see services/certificates.py), and other renewals of that certificate are revoked;
    for a domain credential, every other domain credential of the device is revoked. by_secret: the device's
    one-time secret (or EST password) authenticated the request (see mark_onboarded). The caller commits.

    Only a record just issued or awaiting confirmation may become active: anything else (revoked in
    the meantime) would be resurrected, so that is refused as a bug of the caller.

    Core statements (issue 16), each revocation one UPDATE; the session's objects show what they wrote."""
    if record.status not in ("awaiting_confirmation", "active") or record.revoked_at is not None:
        raise RuntimeError("certificate %s is %s and cannot become active" % (record.serial_number, record.status))
    now = now or utcnow()
    db.flush()  # pending changes of the session first: the statements see the rows as the code before left them
    if record.status != "active":
        sql.write(db, _ACTIVATE, p_id=record.id)
        show_written(db, IssuedCertificate, record.id, {"status": "active"}, row=record)
    replaced_id = record.replaces_id
    if replaced_id is not None:
        revoke_where(db, "superseded", _REVOKE_SIBLINGS, p_replaces=replaced_id, p_id=record.id)
        if sql.write(db, _SUPERSEDE, p_id=replaced_id, p_now=now):
            show_written(db, IssuedCertificate, replaced_id, {"superseded_at": now})
    if get_profile(record.profile).domain_credential:
        keep = replaced_id if replaced_id is not None else record.id
        revoke_where(
            db, "superseded", _REVOKE_OTHERS, p_device=device.id, p_profile=record.profile, p_id=record.id, p_keep=keep
        )
        mark_onboarded(db, device, record, settings, now, by_secret)


_REVOKE_ALL = sql.Statement(revocation(_CERTIFICATES.c.device_id == bindparam("p_device")))


def delete_device(db, device):
    """Delete a device; its certificates stay on record, revoked (cessationOfOperation)."""
    revoke_where(db, "cessationOfOperation", _REVOKE_ALL, p_device=device.id)
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
        "serial_number": device.serial_number,
        "status": device.status,
        "devid_registration": device.devid_registration.name if device.devid_registration is not None else None,
        "allowed_names": device.allowed_names or [],
        "created_at": device.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "onboarded_at": device.onboarded_at.strftime("%Y-%m-%dT%H:%M:%SZ") if device.onboarded_at else None,
        "credential": credential,
        **auth_limits.lock_json(device),
    }
