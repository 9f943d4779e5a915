# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Credentials downloaded in the device's browser with a one-time password (OTP).

1. An operator orders a credential for a device (profile, key type, subject, names): create_download() checks
   everything and returns the OTP, shown once. Nothing is signed and no key exists yet.
2. On the device, someone opens /browser/ and types the OTP: unlock() allows MAX_ATTEMPTS tries, then the
   order is void. The right OTP within OTP_VALIDITY gives a download token valid for TOKEN_VALIDITY.
3. With the token, a password and a format, download() generates the key, has the certificate issued and
   answers the file (PKCS#12, or a zip or tar.gz of PEM files with the key encrypted under the password). The
   token works once. The key exists only in that request's memory: the server never stores it.

If the answer is lost on its way (the browser closed), the certificate exists but the key is gone: the
operator revokes it on the device's page and orders a new download.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import io
import json
import secrets
import tarfile
import time
import zipfile

from sqlalchemy import select
from trustpoint_core import keys, x509
from trustpoint_core.errors import InvalidInput

from ..errors import ApiError
from ..storage.db import begin_write
from ..storage.models import CredentialDownload, utcnow
from . import certificates, names, pki

MAX_ATTEMPTS = 3
OTP_VALIDITY = datetime.timedelta(hours=24)
TOKEN_VALIDITY = datetime.timedelta(minutes=3)
# OTPs are typed on devices: groups of letters and digits that cannot be mistaken for each other.
ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
GROUP = 5
GROUPS = 4  # the first group finds the order (its handle), the other three (~74 bits) are the secret
FORMATS = {
    "pkcs12": ("application/x-pkcs12", "p12"),
    "pem_zip": ("application/zip", "zip"),
    "pem_tar_gz": ("application/gzip", "tar.gz"),
}
FORMAT_LABELS = {"pkcs12": "PKCS#12 (.p12)", "pem_zip": "PEM files in a zip", "pem_tar_gz": "PEM files in a tar.gz"}


class DownloadRefused(Exception):
    """An OTP or download token not accepted; message says why, for the person at the device."""

    def __init__(self, message, status=403):
        super().__init__(message)
        self.message = message
        self.status = status


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _random_group():
    return "".join(secrets.choice(ALPHABET) for _position in range(GROUP))


def normalise_otp(text):
    """The OTP as typed (any case, spaces or dashes) in its canonical form, or None when it cannot be one."""
    if not isinstance(text, str) or len(text) > 100:
        return None
    compact = "".join(char for char in text.upper() if char not in " -\t")
    if len(compact) != GROUP * GROUPS or any(char not in ALPHABET for char in compact):
        return None
    return compact


def format_otp(compact):
    return "-".join(compact[i : i + GROUP] for i in range(0, len(compact), GROUP))


def create_download(db, device, profile_name, key_type=None, subject=None, subject_alt_names=None, created_by="-"):
    """Order a credential for download in device's browser. Returns (download, OTP); the OTP is shown only now.

    Every field is checked now (as the issuance will check it), so that the person at the device does not find
    out later. The caller commits.
    """
    key_type = key_type or device.domain.key_type
    try:
        if key_type not in keys.KEY_TYPES:
            raise InvalidInput("key_type must be one of %s" % ", ".join(keys.KEY_TYPES))
        profile = certificates.operator_profile(device, profile_name)
        if key_type not in profile.key_types:
            raise InvalidInput("profile %s does not certify %s keys" % (profile.name, key_type))
        requested_sans = certificates.parse_subject_alt_names(subject_alt_names)
        requested = certificates.parse_subject(subject)
        # The names the issuance will give (it decides again: the allow-lists may change meanwhile).
        decided = names.decide(db, device, device.domain, profile, requested, requested_sans)
    except names.NameRefused as exc:
        raise ApiError(400, exc.message) from exc
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from exc
    begin_write(db)
    handle = _random_group()
    while db.scalar(select(CredentialDownload.id).where(CredentialDownload.handle == handle)) is not None:
        handle = _random_group()
    secret = "".join(_random_group() for _group in range(GROUPS - 1))
    download = CredentialDownload(
        handle=handle,
        otp_sha256=_digest(secret),
        device=device,
        profile=profile.name,
        key_type=key_type,
        subject=x509.name_to_string(decided.subject),
        subject_alt_names=json.dumps([x509.general_name_to_string(n) for n in decided.sans]),
        attempts_left=MAX_ATTEMPTS,
        expires_at=utcnow() + OTP_VALIDITY,
        state="pending",
        created_by=created_by[:80],
    )
    db.add(download)
    return download, format_otp(handle + secret)


def _pending(db, handle, now):
    download = db.scalar(select(CredentialDownload).where(CredentialDownload.handle == handle))
    if download is None or download.state != "pending" or download.expires_at <= now:
        return None
    return download


def unlock(db, otp, now=None):
    """(download, token) for the right OTP; DownloadRefused otherwise, counting the attempt. Commits."""
    now = now or utcnow()
    compact = normalise_otp(otp)
    unknown = DownloadRefused(
        "this one-time password is not valid: it is mistyped, used, expired or void; check it, or ask the "
        "operator for a new one"
    )
    if compact is None:
        raise unknown
    handle, secret = compact[:GROUP], compact[GROUP:]
    begin_write(db)
    download = _pending(db, handle, now)
    if download is None:
        raise unknown
    if not hmac.compare_digest(download.otp_sha256, _digest(secret)):
        download.attempts_left -= 1
        if download.attempts_left <= 0:
            download.state = "void"
            db.commit()
            raise DownloadRefused(
                "wrong one-time password; after %d wrong attempts it is void: ask the operator for a new one"
                % MAX_ATTEMPTS
            )
        db.commit()
        raise DownloadRefused(
            "wrong one-time password; %d attempt%s left"
            % (download.attempts_left, "" if download.attempts_left == 1 else "s")
        )
    token = secrets.token_urlsafe(32)
    download.state = "unlocked"
    download.token_sha256 = _digest(token)
    download.token_expires_at = now + TOKEN_VALIDITY
    db.commit()
    return download, token


def _unlocked(db, token, now):
    if not isinstance(token, str) or not token or len(token) > 100:
        return None
    download = db.scalar(select(CredentialDownload).where(CredentialDownload.token_sha256 == _digest(token)))
    if download is None or download.state != "unlocked" or download.token_expires_at <= now:
        return None
    return download


TOKEN_REFUSED = (
    "this download link is used up or expired (it works once, for %d minutes after the one-time password); "
    "ask the operator for a new one-time password" % (TOKEN_VALIDITY.total_seconds() // 60)
)


def for_token(db, token, now=None):
    """The unlocked download of token, or DownloadRefused."""
    download = _unlocked(db, token, now or utcnow())
    if download is None:
        raise DownloadRefused(TOKEN_REFUSED, 410)
    return download


def download(db, vault, settings, token, password, file_format, now=None):
    """(file name, content type, bytes) of the credential, for an unlocked token, once. Commits.

    The key is generated and the certificate issued for this request; the token is spent in the same
    transaction that records the certificate."""
    now = now or utcnow()
    order = for_token(db, token, now)
    if file_format not in FORMATS:
        raise DownloadRefused("choose a format: %s" % ", ".join(FORMAT_LABELS.values()), 400)
    try:
        keys.check_password(password)
    except InvalidInput as exc:
        raise DownloadRefused(str(exc), 400) from exc
    device = order.device
    try:
        private_key = keys.generate_private_key(order.key_type)
        prepared = certificates.prepare(
            db,
            vault,
            settings,
            device,
            order.profile,
            private_key.public_key(),
            x509.parse_name(order.subject),
            [x509.parse_general_name(n) for n in json.loads(order.subject_alt_names)],
        )
    except InvalidInput as exc:  # the device or its domain changed since the order
        raise DownloadRefused("the credential cannot be issued any more: %s" % exc, 409) from exc
    chain = pki.ca_chain(device.domain)
    name = "trustpoint-%s-%s" % (device.name, order.profile)
    body = _bundle(file_format, name, private_key, prepared.certificate, chain, password)
    begin_write(db)
    db.refresh(order)
    if order.state != "unlocked" or order.token_expires_at <= now:
        raise DownloadRefused(TOKEN_REFUSED, 410)
    record = certificates.record(db, prepared, settings)
    order.state = "downloaded"
    order.certificate = record
    order.token_sha256 = None
    db.commit()
    content_type, extension = FORMATS[file_format]
    return "%s.%s" % (name, extension), content_type, body


def _bundle(file_format, name, private_key, certificate, chain, password):
    if file_format == "pkcs12":
        return keys.pkcs12_bundle(name, private_key, certificate, chain, password)
    files = [
        ("private_key.pem", keys.encrypted_private_key_pem(private_key, password)),
        ("certificate.pem", x509.certificates_to_pem([certificate]).encode()),
        ("certificate_chain.pem", x509.certificates_to_pem(chain).encode()),
    ]
    buffer = io.BytesIO()
    if file_format == "pem_zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for filename, data in files:
                info = zipfile.ZipInfo("%s/%s" % (name, filename), time.gmtime()[:6])
                info.external_attr = 0o600 << 16
                archive.writestr(info, data)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for filename, data in files:
                info = tarfile.TarInfo("%s/%s" % (name, filename))
                info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def downloads_of(db, device):
    query = select(CredentialDownload).where(CredentialDownload.device_id == device.id)
    return db.scalars(query.order_by(CredentialDownload.id.desc())).all()


def get_download(db, device, download_id):
    download = db.get(CredentialDownload, download_id) if 0 < download_id < 2**63 else None
    if download is None or download.device_id != device.id:
        raise ApiError(404, "device %s has no credential download %s" % (device.name, download_id))
    return download


def cancel(download):
    """Void a download that was not downloaded yet. The caller holds the write lock and commits."""
    if download.state in ("pending", "unlocked"):
        download.state = "void"
        download.token_sha256 = None


def state_of(download, now=None):
    """The state as a person sees it: expired when the OTP or token ran out unused."""
    now = now or utcnow()
    if download.state == "pending" and download.expires_at <= now:
        return "expired"
    if download.state == "unlocked" and download.token_expires_at <= now:
        return "expired"
    return download.state


def download_json(download):
    return {
        "id": download.id,
        "device": download.device.name,
        "profile": download.profile,
        "key_type": download.key_type,
        "subject": download.subject,
        "subject_alt_names": json.loads(download.subject_alt_names),
        "state": state_of(download),
        "attempts_left": download.attempts_left,
        "expires_at": download.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "created_by": download.created_by,
        "created_at": download.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "certificate_serial_number": download.certificate.serial_number if download.certificate else None,
    }
