# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Domains, their CA chains and the certificates they issue."""

from __future__ import annotations

import functools
import re
import threading
from typing import ClassVar

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import object_session
from trustpoint_core import keys, x509
from trustpoint_core.profiles import get_profile

from ..errors import ApiError
from ..runtime.vault import Vault
from ..storage import sql
from ..storage.db import adopt, begin_write, contains, show_written
from ..storage.models import CertificateAuthority, Device, DevIdRegistration, Domain, IssuedCertificate, utcnow
from . import names
from .enrolling import EnrollingCertificate, Row

DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
DEFAULT_VALIDITY_DAYS = get_profile("domain_credential").validity_days
MAX_VALIDITY_DAYS = 3650
CA_KEY_PURPOSE = CertificateAuthority.__encrypted__["private_key_encrypted"]


def check_validity_days(value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VALIDITY_DAYS:
        raise ApiError(400, "validity_days must be an integer from 1 to %d" % MAX_VALIDITY_DAYS)
    return value


def create_domain(
    db,
    vault,
    name,
    key_type=keys.DEFAULT_KEY_TYPE,
    validity_days=DEFAULT_VALIDITY_DAYS,
    allowed_names=None,
    policy=None,
):
    """Create a domain with a new root and issuing CA (policy: cmp_policy() of the request). The caller commits."""
    if not isinstance(name, str) or not DOMAIN_NAME.fullmatch(name):
        raise ApiError(400, "domain name must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    if key_type not in keys.KEY_TYPES:
        raise ApiError(400, "key_type must be one of %s" % ", ".join(keys.KEY_TYPES))
    check_validity_days(validity_days)
    allowed_names = names.check_allowed_names(allowed_names)
    if db.scalar(select(Domain).where(Domain.name == name)) is not None:
        raise ApiError(409, "domain %r already exists" % name)
    # Key generation (seconds for RSA-4096) before the write lock; the name is checked again under it.
    chain = x509.CaChain.create(name, key_type)
    begin_write(db)
    if db.scalar(select(Domain).where(Domain.name == name)) is not None:
        raise ApiError(409, "domain %r already exists" % name)
    domain = Domain(
        name=name, key_type=key_type, validity_days=validity_days, allowed_names=allowed_names, **(policy or {})
    )
    for role, cert, key in (
        ("root", chain.root_cert, chain.root_key),
        ("issuing", chain.issuing_cert, chain.issuing_key),
    ):
        domain.cas.append(
            CertificateAuthority(
                role=role,
                certificate_der=x509.certificate_der(cert),
                private_key_encrypted=vault.encrypt(keys.private_key_to_pem(key), CA_KEY_PURPOSE),
            )
        )
    db.add(domain)
    return domain


def domains_query(search=None):
    """Domains by name, optionally those whose name contains search."""
    query = select(Domain).order_by(Domain.name)
    if search:
        query = query.where(contains(Domain.name, search))
    return query


def get_domain(db, name):
    domain = db.scalar(select(Domain).where(Domain.name == name))
    if domain is None:
        raise ApiError(404, "domain %r does not exist" % name)
    return domain


def delete_domain(db, domain):
    """Delete a domain, its CAs and its certificate records; refused while devices or DevID
    registrations belong to it (the registration's foreign key would fail at the commit)."""
    count = len(domain.devices)
    if count:
        raise ApiError(409, "domain %r still has %d device(s); delete them first" % (domain.name, count))
    registrations = db.scalars(
        select(DevIdRegistration.name).where(DevIdRegistration.domain_id == domain.id).order_by(DevIdRegistration.name)
    ).all()
    if registrations:
        raise ApiError(
            409,
            "domain %r is used by DevID registration(s) %s; delete them first"
            % (domain.name, ", ".join(registrations)),
        )
    db.delete(domain)


class Signer:
    """A certificate and its key encrypted at rest (an issuing CA's, a DevOwnerID's), decrypted once per
    process. purpose is the vault's associated data of the key."""

    _cache: ClassVar[dict] = {}
    _lock = threading.Lock()

    def __init__(self, ca_row, vault, purpose=CA_KEY_PURPOSE):
        self.ca_row = ca_row
        cache_key = (purpose, ca_row.id, ca_row.certificate_der)
        with self._lock:
            cached = self._cache.get(cache_key)
        if cached is None:
            cached = (
                ca_certificate(ca_row.certificate_der),
                keys.load_private_key(vault.decrypt(ca_row.private_key_encrypted, purpose)),
            )
            with self._lock:
                self._cache[cache_key] = cached
        self.certificate, self.private_key = cached


@functools.lru_cache(maxsize=256)
def ca_certificate(der):
    """A CA certificate loaded once per process: keyed by its DER, so a renewed CA is another entry."""
    return x509.load_certificate(der)


def ca_chain(domain):
    """The domain's CA certificates, issuing CA first, then the root."""
    return [ca_certificate(domain.ca(role).certificate_der) for role in ("issuing", "root")]


def issue_for_device(
    db,
    vault: Vault,
    settings,
    device: Device,
    domain,
    profile,
    public_key,
    requested_subject=None,
    requested_sans=(),
    requested_not_after=None,
):
    """Sign a certificate of profile for device's public_key with the names names.decide() allows; returns
    (certificate, signer, names.Names). Record it with record_certificate().

    domain is the device's, given apart: a device about to be created is not in the session yet. A domain
    credential lives for the domain's validity_days. Raises names.NameRefused for names the device may not have
    and InvalidInput when the request does not fit the profile.
    """
    decided = names.decide(db, device, domain, profile, requested_subject, requested_sans)
    signer = Signer(domain.ca("issuing"), vault)
    base = settings.crl_base_url
    cert = x509.issue_certificate(
        signer.certificate,
        signer.private_key,
        public_key,
        decided.subject,
        profile,
        validity_days=domain.validity_days if profile.domain_credential else None,
        requested_not_after=requested_not_after,
        subject_alt_names=decided.sans,
        crl_url=base.rstrip("/") + "/crl/%d" % signer.ca_row.id if base else None,
    )
    return cert, signer, decided


_CERTIFICATES = IssuedCertificate.__table__
_CAS = CertificateAuthority.__table__
# The statuses of a certificate that is not revoked.
LIVE = ("active", "awaiting_confirmation")
# Every column but the id, which the INSERT returns.
_INSERT = sql.insert(
    _CERTIFICATES, [column.key for column in _CERTIFICATES.c if column.key != "id"], returning=[_CERTIFICATES.c.id]
)


def record_certificate(db, signer, device, cert, profile, status, issued_with=None, replaces=None, now=None):
    """Record an issued certificate (one INSERT, issue 16); issued_with: the credential that authenticated the
    request, replaces: the certificate it renews. Returns the record: the session's object of the new row, or for a
    plain device (services/enrolling.py) a plain EnrollingCertificate. The caller holds the write lock and commits."""
    values = {
        "ca_id": signer.ca_row.id,
        "device_id": device.id,
        "device_name": device.name,
        "profile": profile,
        "serial_number": x509.serial_hex(cert),
        "subject": x509.name_to_string(cert.subject),
        "not_before": x509.not_before(cert),
        "not_after": x509.not_after(cert),
        "fingerprint_sha256": x509.fingerprint(cert),
        "certificate_der": x509.certificate_der(cert),
        "status": status,
        "revoked_at": None,
        "revocation_reason": None,
        "created_at": now or utcnow(),
        "issued_with_id": issued_with.id if issued_with is not None else None,
        "replaces_id": replaces.id if replaces is not None else None,
        "superseded_at": None,
        "first_used_at": None,
    }
    record_id = sql.one(db, _INSERT, **values).id
    if isinstance(device, Row):  # the enrollment protocols' plain device: a plain record (services/enrolling.py)
        return EnrollingCertificate(dict(values, id=record_id))
    return adopt(db, IssuedCertificate(id=record_id, **values))


def revocation(*criteria):
    """The UPDATE that revokes the live certificates matching criteria (conditions on the issued_certificate table,
    with bindparams for revoke_where's params), for revoke_where as a sql.Statement. Build it once, at import: a
    statement object caches its compiled form (issue 16)."""
    return (
        _CERTIFICATES.update()
        # Equalities, not IN: an IN list is expanded into the SQL text at every execution (30 us of 64, issue 16).
        .where(or_(*(_CERTIFICATES.c.status == status for status in LIVE)), *criteria)
        .values(
            status="revoked",
            revoked_at=bindparam("p_revoked_at", type_=_CERTIFICATES.c.revoked_at.type),
            revocation_reason=bindparam("p_reason"),
        )
        .returning(_CERTIFICATES.c.id, _CERTIFICATES.c.ca_id)
    )


REVOKE_ONE = sql.Statement(revocation(_CERTIFICATES.c.id == bindparam("p_id")))
# Ids per statement of revoke_ids(): far below the bound parameters SQLite and PostgreSQL take.
IDS_PER_STATEMENT = 500
# A fixed list of IDS_PER_STATEMENT parameters, so that the statement is compiled once (a shorter list repeats its
# last id; an IN list whose length varies would be rendered anew at every execution).
_ID_PARAMS = tuple("p_id_%d" % number for number in range(IDS_PER_STATEMENT))
REVOKE_IDS = sql.Statement(revocation(_CERTIFICATES.c.id.in_([bindparam(name) for name in _ID_PARAMS])))


def revoke(record, reason):
    """Revoke a certificate; the CA's next CRL lists it (services/crl.py issues CRLs)."""
    if record.status != "revoked":
        revoke_where(object_session(record), reason, REVOKE_ONE, p_id=record.id)


def revoke_where(db, reason, statement, **params):
    """Revoke with reason what statement (a revocation()) matches with params, in one UPDATE; their CAs' cached
    CRLs are dropped. The session's objects of these rows show it. Returns the ids revoked. The caller holds the
    write lock and commits."""
    now = utcnow()
    db.flush()  # pending changes of the session first: the statement sees the rows as the code before it left them
    rows = sql.rows(db, statement, p_revoked_at=now, p_reason=reason, **params)
    if not rows:
        return []
    ca_ids = sorted({ca_id for _id, ca_id in rows})
    db.connection().execute(_CAS.update().where(_CAS.c.id.in_(ca_ids)).values(crl_der=None))
    for ca_id in ca_ids:
        show_written(db, CertificateAuthority, ca_id, {"crl_der": None})
    revoked = {"status": "revoked", "revoked_at": now, "revocation_reason": reason}
    for record_id, _ca_id in rows:
        show_written(db, IssuedCertificate, record_id, revoked)
    return [record_id for record_id, _ca_id in rows]


def revoke_ids(db, reason, ids):
    """Revoke the live certificates among ids (revoke_where, a statement per 500). Returns the ids revoked."""
    ids = sorted(ids)
    revoked = []
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        chunk = ids[start : start + IDS_PER_STATEMENT]
        chunk += chunk[-1:] * (IDS_PER_STATEMENT - len(chunk))
        revoked += revoke_where(db, reason, REVOKE_IDS, **dict(zip(_ID_PARAMS, chunk)))
    return revoked


# What an ir signed with a certificate this PKI issued gets (docs/server.md, "CMP policy").
IR_WITH_CREDENTIAL = ("refuse", "certify")
CMP_POLICY_FIELDS = ("cmp_central_keygen", "cmp_ir_with_credential")


def cmp_policy(data):
    """The CMP policy fields of data (API: create or PATCH a domain), checked: {column: value}; ApiError 400."""
    policy = {}
    if "cmp_central_keygen" in data:
        if not isinstance(data["cmp_central_keygen"], bool):
            raise ApiError(400, "cmp_central_keygen must be true or false")
        policy["cmp_central_keygen"] = data["cmp_central_keygen"]
    if "cmp_ir_with_credential" in data:
        if data["cmp_ir_with_credential"] not in IR_WITH_CREDENTIAL:
            raise ApiError(400, "cmp_ir_with_credential must be one of %s" % ", ".join(IR_WITH_CREDENTIAL))
        policy["cmp_ir_with_credential"] = data["cmp_ir_with_credential"]
    return policy


def domain_json(domain):
    issuing, root = ca_chain(domain)
    return {
        "name": domain.name,
        "key_type": domain.key_type,
        "validity_days": domain.validity_days,
        "allowed_names": domain.allowed_names or [],
        "cmp_central_keygen": domain.cmp_central_keygen,
        "cmp_ir_with_credential": domain.cmp_ir_with_credential,
        "created_at": domain.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device_count": len(domain.devices),
        "issuing_ca": x509.summary(issuing),
        "root_ca": x509.summary(root),
        "ca_chain": x509.certificates_to_pem([issuing, root]),
    }
