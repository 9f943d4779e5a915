# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Certificates of devices: listing, revocation, those an operator issues (API, pages, module, OTP download), and
the lifecycle that keeps every exchange safe to retry.

Devices request their own certificates over CMP and EST (protocols/). An operator may issue for any device
too: application certificates (tls_client, tls_server, opc_ua) for every device, including those that
onboard with no protocol at all (onboarding_method "none"), and the domain credential for a device that
onboards, which then counts as onboarded. The key comes from the device (a CSR) or is generated here for a
download (services/downloads.py) or a PKCS#12 answer; the server never stores it. Either way the names come
from services/names.py.

The lifecycle (issue 11):

- An unconfirmed CMP certificate (awaiting certConf) is revoked when a newer one of the same requester and
  profile is issued (at most one is outstanding) or when its confirmation window passes.
- A renewed certificate is superseded, not revoked at once: it may still renew (nothing else) until its
  successor is used or the renewal grace period passes, so that a device whose renewal answer was lost can
  renew again. Then it is revoked (superseded).
- A certificate revoked for keyCompromise takes with it every certificate obtained with it, and theirs. Any
  revoked certificate takes with it the one it renewed while that is still in its grace period.
- A device obtains at most max_certificates_per_day certificates in any 24 hours over CMP and EST.

sweep() applies the windows; it runs before a CRL is served (at most every SWEEP_INTERVAL per process) and
when an operator lists certificates.
"""

from __future__ import annotations

import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import object_session
from trustpoint_core import est, keys, x509
from trustpoint_core.errors import InvalidInput
from trustpoint_core.profiles import PROFILES, get_profile

from ..errors import ApiError
from ..storage import sql
from ..storage.db import begin_write, contains, show_written
from ..storage.models import CmpTransaction, Device, IssuedCertificate, utcnow
from . import devices, names, pki

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


UNCONFIRMED_REASON = "cessationOfOperation"
_LIVE = pki.LIVE
SWEEP_INTERVAL = datetime.timedelta(seconds=30)
_last_sweep = []  # when this process last looked (sweep())


def revoke_certificate(record, reason):
    """Revoke record with reason (checked), as a device (CMP rr) or an operator (API, pages) asks: for
    keyCompromise every certificate obtained with it goes too, and theirs; a certificate revoked for another
    reason before (superseded, say) whose key turns out compromised takes keyCompromise and its cascade as well:
    what was obtained with the key, a renewal among it, may be in other hands. What a revoked certificate renewed
    and that still lives in its grace period (superseded) goes too: it lived on only for a renewal sent again. A
    device whose domain credential is revoked must onboard again. Returns the records revoked, record first. The
    caller holds the write lock and commits."""
    check_revocation_reason(reason)
    db = object_session(record)
    revoked = []
    pending = [record]
    while pending:
        current = pending.pop()
        if current.status == "revoked":
            if reason != "keyCompromise" or current.revocation_reason == "keyCompromise":
                continue
            current.revocation_reason = reason
            current.ca.crl_der = None
        else:
            pki.revoke(current, reason)
        revoked.append(current)
        # Decided on the row under the write lock (the session's device may predate a concurrent enrollment).
        if current.device_id is not None and sql.write(
            db, _PENDING_AGAIN, p_device=current.device_id, p_credential=current.id
        ):
            show_written(db, Device, current.device_id, {"status": "pending"})
        predecessor = current.replaces
        while predecessor is not None and predecessor.status == "active" and predecessor.superseded_at is not None:
            pki.revoke(predecessor, "superseded")
            revoked.append(predecessor)
            predecessor = predecessor.replaces
        if reason == "keyCompromise":
            # Whoever held the key could have obtained these.
            pending += db.scalars(
                select(IssuedCertificate).where(
                    IssuedCertificate.issued_with_id == current.id,
                    (IssuedCertificate.status.in_(_LIVE)) | (IssuedCertificate.revocation_reason != "keyCompromise"),
                )
            ).all()
    return revoked


def revoke_for_operator(db, device, serial_number, reason):
    """An operator revokes the device's certificate (API, pages): 404 unknown, 409 already revoked (unless the
    key turns out compromised: keyCompromise may follow another reason), 400 for a reason not accepted. The
    caller holds the write lock and commits; returns the records revoked, the certificate first."""
    record = get_certificate(db, device, serial_number)
    if record.status == "revoked" and (reason != "keyCompromise" or record.revocation_reason == reason):
        raise ApiError(
            409,
            "certificate %s is already revoked (%s); only keyCompromise may still be given, for its key and what "
            "was obtained with it" % (record.serial_number, record.revocation_reason),
        )
    try:
        return revoke_certificate(record, reason)
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from exc


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


def prepare(db, vault, settings, device, profile_name, public_key, subject=None, subject_alt_names=()):
    """Check the request and sign the certificate (the expensive part, before the write lock).

    Raises InvalidInput when the profile, key type, subject or names (names.decide()) are not allowed."""
    profile = operator_profile(device, profile_name)
    key_type = keys.key_type_of(public_key)
    if key_type not in profile.key_types:
        raise InvalidInput("profile %s does not certify %s keys" % (profile.name, key_type))
    try:
        certificate, signer, _names = pki.issue_for_device(
            db, vault, settings, device, device.domain, profile, public_key, subject, subject_alt_names
        )
    except names.NameRefused as exc:
        raise InvalidInput(exc.message) from exc
    return Prepared(device, profile, certificate, signer)


def record(db, prepared, settings, replaces=None):
    """Record a prepared certificate as active; it supersedes replaces (a renewal) and, for a domain
    credential, the device's earlier ones. The caller holds the write lock (begin_write) and commits."""
    if replaces is not None:
        reread(db, replaces)
        if replaces.status != "active":
            raise ApiError(
                409,
                "certificate %s is %s: only an active certificate is renewed"
                % (replaces.serial_number, replaces.status),
            )
    row = pki.record_certificate(
        db, prepared.signer, prepared.device, prepared.certificate, prepared.profile.name, "active", replaces=replaces
    )
    devices.activate(db, prepared.device, row, settings)  # it flushes what is pending first
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


def _requested(csr, subject, subject_alt_names):
    """(public key of csr or None, subject, SANs) as asked: subject and subject_alt_names when given, else the
    request's (its signature verified)."""
    san_list = parse_subject_alt_names(subject_alt_names)
    requested = parse_subject(subject)
    if csr is None:
        return None, requested, san_list
    if not isinstance(csr, (str, bytes)):  # JSON: a number, list or object is no request (bytes: the pages)
        raise InvalidInput("csr must be a PKCS#10 request as a string (PEM or base64 DER), not %s" % type(csr).__name__)
    try:
        request = est.load_csr(csr.encode() if isinstance(csr, str) else csr)
    except InvalidInput as exc:
        raise InvalidInput("csr must be a PKCS#10 request, PEM or base64 DER, signed by its key: %s" % exc) from exc
    if requested is None:
        requested = request.subject
    if subject_alt_names is None:
        san_list = x509.subject_alt_names(request)
    return request.public_key(), requested, san_list


def names_for(db, device, profile_name, csr=None, subject=None, subject_alt_names=None):
    """The names (names.Names) a certificate of profile_name for device gets when it is issued with these
    arguments (as issue() takes them), without issuing it: for a client that compares what it holds with what it
    would get (trustpoint.pki.certificate). ApiError 400 says what is refused."""
    try:
        profile = operator_profile(device, profile_name)
        _key, requested, san_list = _requested(csr, subject, subject_alt_names)
        return names.decide(db, device, device.domain, profile, requested, san_list)
    except names.NameRefused as exc:
        raise ApiError(400, exc.message) from exc
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from exc


def issue(db, vault, settings, device, profile_name, csr=None, key_type=None, subject=None, subject_alt_names=None,
          replaces=None):  # fmt: skip
    """Issue a certificate for device: for the key of csr (PEM/DER/base64, its signature verified; its subject
    and SANs unless subject/subject_alt_names are given), or for a key of key_type generated here.

    Returns (record, certificate, private key or None). Every input is checked before anything is written;
    the caller commits.
    """
    try:
        if (csr is None) == (key_type is None):
            raise InvalidInput("give either a CSR or a key_type for a key the server generates")
        public_key, requested, san_list = _requested(csr, subject, subject_alt_names)
        private_key = None
        if csr is None:
            if key_type not in keys.KEY_TYPES:
                raise InvalidInput("key_type must be one of %s" % ", ".join(keys.KEY_TYPES))
            private_key = keys.generate_private_key(key_type)
            public_key = private_key.public_key()
        if replaces is not None:
            check_renewal(device, replaces, profile_name)
        prepared = prepare(db, vault, settings, device, profile_name, public_key, requested, san_list)
    except InvalidInput as exc:
        raise ApiError(400, str(exc)) from exc
    begin_write(db)
    if db.scalar(select(Device.id).where(Device.id == device.id)) is None:
        raise ApiError(404, "device %s was deleted meanwhile" % device.name)
    return record(db, prepared, settings, replaces), prepared.certificate, private_key


class LimitReached(Exception):
    """The device reached max_certificates_per_day; retry_after: seconds until it may obtain one again."""

    def __init__(self, message, retry_after):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


# --- limits ---------------------------------------------------------------------------------------------

_CERTIFICATES = IssuedCertificate.__table__
_TRANSACTIONS = CmpTransaction.__table__
_DEVICES = Device.__table__
# A device whose domain credential is revoked onboards again (unless it holds a newer one).
_PENDING_AGAIN = sql.Statement(
    _DEVICES.update()
    .where(_DEVICES.c.id == bindparam("p_device"), _DEVICES.c.credential_id == bindparam("p_credential"))
    .values(status="pending")
)
_DAY = datetime.timedelta(days=1)
# A Core statement built once: its compiled form is cached, and no ORM machinery runs (issue 16).
_DAILY_COUNT = sql.Statement(
    select(func.count(_CERTIFICATES.c.id), func.min(_CERTIFICATES.c.created_at)).where(
        _CERTIFICATES.c.device_id == bindparam("device_id"),
        _CERTIFICATES.c.created_at > bindparam("since", type_=_CERTIFICATES.c.created_at.type),
    )
)


def check_daily_limit(db, device, settings, now=None):
    """Raise LimitReached when device obtained max_certificates_per_day certificates in the last 24 hours.

    Called under the write lock (a concurrent request of the same device may have taken the last one), and before
    work that costs more than the count (server-side key generation)."""
    limit = settings.max_certificates_per_day
    if not limit or device.id is None:
        return
    now = now or utcnow()
    count, oldest = sql.one(db, _DAILY_COUNT, device_id=device.id, since=now - _DAY)
    if count >= limit:
        # The first of these falls out of the window at oldest + 24 h; created_at may be naive on SQLite reads.
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=datetime.timezone.utc)
        retry_after = max(1, int((oldest + _DAY - now).total_seconds()) + 1)
        raise LimitReached(
            "device %s obtained %d certificates in the last 24 hours, its limit (--max-certificates-per-day); "
            "it may obtain the next in %d seconds" % (device.name, count, retry_after),
            retry_after,
        )


# --- the lifecycle ----------------------------------------------------------------------------------------


def supersede_unconfirmed(db, device, profile_name, requester_identity):
    """Revoke the requester's certificates of profile that await confirmation, before it gets a new one: at most
    one is outstanding. Their transactions end, so a late certConf finds them revoked. The caller holds the write lock
    and commits."""
    if device.id is None:
        return
    ended = (
        db.connection()
        .execute(
            _TRANSACTIONS.update()
            .where(
                _TRANSACTIONS.c.requester == requester_identity,
                _TRANSACTIONS.c.state == "waiting",
                _TRANSACTIONS.c.certificate_id.in_(
                    select(_CERTIFICATES.c.id).where(
                        _CERTIFICATES.c.device_id == device.id,
                        _CERTIFICATES.c.status == "awaiting_confirmation",
                        _CERTIFICATES.c.profile == profile_name,
                    )
                ),
            )
            .values(state="superseded")
            .returning(_TRANSACTIONS.c.id, _TRANSACTIONS.c.certificate_id)
        )
        .all()
    )
    for transaction_id, _certificate_id in ended:
        show_written(db, CmpTransaction, transaction_id, {"state": "superseded"})
    pki.revoke_ids(db, "superseded", {certificate_id for _transaction, certificate_id in ended})


_RECORD_TRANSACTION = sql.insert(
    _TRANSACTIONS,
    ("transaction_id", "device_id", "certificate_id", "response_nonce", "request_nonce", "requester",
     "cert_req_id", "state", "created_at"),
)  # fmt: skip
_TRANSACTION_USED = sql.Statement(
    select(_TRANSACTIONS.c.id).where(_TRANSACTIONS.c.transaction_id == bindparam("transaction_id"))
)


# What a concurrent request may have changed of a certificate that authenticates or is renewed.
_STATE = ("status", "revocation_reason", "revoked_at", "superseded_at", "first_used_at")
_REREAD = sql.Statement(
    select(*(_CERTIFICATES.c[name] for name in _STATE)).where(_CERTIFICATES.c.id == bindparam("p_id"))
)


def reread(db, record):
    """Read record's state again (under the write lock, before relying on it): one SELECT of the columns a
    concurrent request may change, instead of a refresh of the whole object (issue 16); record shows them."""
    row = sql.one(db, _REREAD, p_id=record.id)
    show_written(db, IssuedCertificate, record.id, dict(zip(_STATE, row)))


def transaction_used(db, transaction_id):
    """Whether a CMP transaction with this transactionID exists (its ID is never accepted twice)."""
    return sql.first(db, _TRANSACTION_USED, transaction_id=transaction_id) is not None


def record_transaction(
    db, transaction_id, device, record, response_nonce, request_nonce, requester, cert_req_id, state
):
    """Record the CMP transaction that issued record (one INSERT): a raced transactionID fails here with the
    UNIQUE constraint's IntegrityError (transactionIdInUse). The caller holds the write lock and commits."""
    sql.write(
        db,
        _RECORD_TRANSACTION,
        transaction_id=transaction_id,
        device_id=device.id,
        certificate_id=record.id,
        response_nonce=response_nonce,
        request_nonce=request_nonce,
        requester=requester,
        cert_req_id=cert_req_id,
        state=state,
        created_at=utcnow(),
    )


def renewal_only(record, settings):
    """None when record may authenticate any request; else why it may only renew (a renewal superseded it and
    its successor was not used yet)."""
    if record.superseded_at is None:
        return None
    return "certificate %s was renewed; until its successor is used (at the latest until %s) it may only renew" % (
        record.serial_number,
        _iso_or_none(grace_end(record, settings)),
    )


def grace_end(record, settings):
    return record.superseded_at + datetime.timedelta(hours=settings.renewal_grace_hours)


def is_usable(record, settings, now=None):
    """False when record is superseded and its grace period is over (the sweep will revoke it)."""
    now = now or utcnow()
    return record.superseded_at is None or now < grace_end(record, settings)


_FIRST_USE = sql.Statement(
    _CERTIFICATES.update()
    .where(_CERTIFICATES.c.id == bindparam("p_id"), _CERTIFICATES.c.first_used_at.is_(None))
    .values(first_used_at=bindparam("p_now", type_=_CERTIFICATES.c.first_used_at.type))
)
# The device's one-time secret, kept for a retry of the credential's enrollment, as the credential's first use ends it.
_SECRET_ENDED_BY_USE = sql.Statement(
    _DEVICES.update()
    .where(
        _DEVICES.c.id == bindparam("p_device"),
        _DEVICES.c.credential_id == bindparam("p_credential"),
        _DEVICES.c.secret_retry_until.is_not(None),
    )
    .values(**devices.SECRET_SPENT)
)


def mark_used(record, now=None):
    """record (a credential) authenticated a request that is being committed: the device holds it. What it
    superseded, and the one-time secret it was obtained with, are no longer needed for a retry. The caller
    holds the write lock and commits."""
    if record.first_used_at is not None:
        return  # the first use did the rest
    now = now or utcnow()
    db = object_session(record)
    db.flush()  # pending changes first, as the statements below would otherwise overtake them
    if not sql.write(db, _FIRST_USE, p_id=record.id, p_now=now):
        return  # a concurrent request used it first (this session read it before) and did the rest
    show_written(db, IssuedCertificate, record.id, {"first_used_at": now})
    replaced = record.replaces
    if replaced is not None and replaced.status == "active" and replaced.superseded_at is not None:
        pki.revoke(replaced, "superseded")
    # The secret the credential was obtained with, as a concurrent request may have left it (the caller holds the
    # write lock): spent now, unless the device has a newer credential.
    if record.device_id is not None and sql.write(
        db, _SECRET_ENDED_BY_USE, p_device=record.device_id, p_credential=record.id
    ):
        show_written(db, Device, record.device_id, devices.SECRET_SPENT)


def confirm_by(record, settings):
    """When an unconfirmed record's confirmation window ends."""
    return record.created_at + datetime.timedelta(minutes=settings.confirm_window_minutes)


def expire_unconfirmed(db, record, transaction=None):
    """The confirmation window of record is over: revoke it and end its transaction."""
    pki.revoke(record, UNCONFIRMED_REASON)
    transactions = (
        [transaction]
        if transaction is not None
        else db.scalars(
            select(CmpTransaction).where(CmpTransaction.certificate_id == record.id, CmpTransaction.state == "waiting")
        )
    )
    for waiting in transactions:
        waiting.state = "expired"


def _overdue(db, settings, now):
    """(unconfirmed, superseded) certificate rows and devices whose retry windows are over."""
    confirm_cutoff = now - datetime.timedelta(minutes=settings.confirm_window_minutes)
    grace_cutoff = now - datetime.timedelta(hours=settings.renewal_grace_hours)
    unconfirmed = db.scalars(
        select(IssuedCertificate).where(
            IssuedCertificate.status == "awaiting_confirmation", IssuedCertificate.created_at < confirm_cutoff
        )
    ).all()
    superseded = db.scalars(
        select(IssuedCertificate).where(
            IssuedCertificate.superseded_at < grace_cutoff, IssuedCertificate.status == "active"
        )
    ).all()
    secrets = db.scalars(select(Device).where(Device.secret_retry_until < now)).all()
    return unconfirmed, superseded, secrets


def sweep(db, settings, now=None, force=False):
    """Revoke what the windows ended (unconfirmed certificates, superseded ones past their grace period) and
    drop one-time secrets past their retry window. Commits when it changed anything; returns True then.

    The first look is a read (indexed, about 1 ms of CPU on a million certificates): most calls find nothing and
    take no write lock. Unless forced (an operator's listing), a process looks at most every SWEEP_INTERVAL: CRL
    requests are unauthenticated, and the windows are minutes long."""
    now = now or utcnow()
    if not force:
        if _last_sweep and now - _last_sweep[0] < SWEEP_INTERVAL:
            return False
        _last_sweep[:] = [now]
    if not any(_overdue(db, settings, now)):
        return False
    begin_write(db)
    unconfirmed, superseded, secrets = _overdue(db, settings, now)
    # A statement per 500 certificates, not one per certificate (issue 16: revocations are Core UPDATEs).
    expired = pki.revoke_ids(db, UNCONFIRMED_REASON, [record.id for record in unconfirmed])
    for start in range(0, len(expired), pki.IDS_PER_STATEMENT):
        for waiting in db.scalars(
            select(CmpTransaction).where(
                CmpTransaction.certificate_id.in_(expired[start : start + pki.IDS_PER_STATEMENT]),
                CmpTransaction.state == "waiting",
            )
        ):
            waiting.state = "expired"
    pki.revoke_ids(db, "superseded", [record.id for record in superseded])
    for device in secrets:
        devices.end_secret(device)
    db.commit()
    return True


# --- what the API and pages show --------------------------------------------------------------------------


def _iso_or_none(value):
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def certificate_json(row, settings=None):
    """A certificate as the API shows it; with settings also when its confirmation window or renewal grace ends."""
    certificate = x509.load_certificate(row.certificate_der)
    info = {
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
        "created_at": _iso_or_none(row.created_at),
        "revoked_at": row.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ") if row.revoked_at else None,
        "revocation_reason": row.revocation_reason,
        "issued_with": row.issued_with.serial_number if row.issued_with is not None else None,
        "replaces": row.replaces.serial_number if row.replaces is not None else None,
        "superseded_at": _iso_or_none(row.superseded_at),
        "first_used_at": _iso_or_none(row.first_used_at),
        "certificate": x509.certificates_to_pem([certificate]),
    }
    if settings is not None:
        info["confirm_by"] = _iso_or_none(confirm_by(row, settings)) if row.status == "awaiting_confirmation" else None
        info["renews_until"] = (
            _iso_or_none(grace_end(row, settings)) if row.superseded_at and row.status == "active" else None
        )
    return info


def pending_update(db, record, settings):
    """The CMP transaction of a key update of record that awaits its certConf within its confirmation window, or
    None (found through the certificates that replace record, then their transactions: both indexed). One whose
    window is over no longer counts, whether or not a sweep has revoked its certificate yet: a device that lost
    the answer to its kur is not kept from revoking for longer than the window."""
    window_start = utcnow() - datetime.timedelta(minutes=settings.confirm_window_minutes)
    return db.scalar(
        select(CmpTransaction)
        .join(IssuedCertificate, CmpTransaction.certificate_id == IssuedCertificate.id)
        .where(
            IssuedCertificate.replaces_id == record.id,
            CmpTransaction.state == "waiting",
            IssuedCertificate.created_at > window_start,
        )
    )
