# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The service's tables: domains and their CAs, devices, issued certificates, CMP transactions, operators and
credential downloads."""

from __future__ import annotations

import datetime
from typing import Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from . import triggers


def _partial(name, columns, column):
    """An index of the rows whose column is not NULL (SQLite and PostgreSQL)."""
    where = text("%s IS NOT NULL" % column)
    return Index(name, *columns, sqlite_where=where, postgresql_where=where)


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes in Python, naive UTC in the database (SQLite and PostgreSQL alike)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=datetime.timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map = {datetime.datetime: UtcDateTime}  # noqa: RUF012 (SQLAlchemy reads it)


class Domain(Base):
    """A PKI domain: devices onboard into it and receive credentials from its issuing CA."""

    __tablename__ = "domain"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_type: Mapped[str] = mapped_column(String(16))
    # Lifetime of the domain credentials (LDevIDs) it issues.
    validity_days: Mapped[int]
    # Names every device of the domain may have in application certificates besides its own (services/names.py).
    allowed_names: Mapped[Optional[list]] = mapped_column(JSON, nullable=True)
    # CMP policy (docs/server.md): whether the server generates keys for requests without one (RFC 9483
    # 4.1.6), and what an ir signed with a certificate this PKI issued gets: "refuse" or "certify" (as a cr).
    cmp_central_keygen: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    cmp_ir_with_credential: Mapped[str] = mapped_column(String(16), default="refuse", server_default="refuse")
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)

    cas: Mapped[list[CertificateAuthority]] = relationship(
        back_populates="domain", cascade="all, delete-orphan", order_by="CertificateAuthority.id"
    )
    devices: Mapped[list[Device]] = relationship(back_populates="domain")

    def ca(self, role):
        return next(ca for ca in self.cas if ca.role == role)


class CertificateAuthority(Base):
    """A CA certificate and its private key, encrypted at rest (see runtime/vault.py)."""

    __tablename__ = "certificate_authority"
    # Columns encrypted with the vault, and the purpose each is bound to (runtime/rotation.py re-encrypts them).
    __encrypted__ = {"private_key_encrypted": "ca-key"}  # noqa: RUF012 (read by runtime/rotation.py)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Indexed, like every column the enrollment paths look rows up by (migration 16_hot_path_indexes).
    domain_id: Mapped[int] = mapped_column(ForeignKey("domain.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # "root" or "issuing"
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # The last CRL issued, its number, and when the next one is due (see services/crl.py).
    crl_number: Mapped[int] = mapped_column(default=0)
    crl_der: Mapped[Optional[bytes]] = mapped_column(LargeBinary, nullable=True)
    crl_next_update: Mapped[Optional[datetime.datetime]] = mapped_column(nullable=True)

    domain: Mapped[Domain] = relationship(back_populates="cas")


class Device(Base):
    """A device registered for onboarding. Its id is the CMP reference (senderKID)."""

    __tablename__ = "device"
    # AUTOINCREMENT: SQLite would otherwise give the id of the last deleted device to the next one, and
    # a stale CMP reference (senderKID) or API id would name another device. PostgreSQL never reuses ids.
    __table_args__ = (
        # An IDevID's device by its serialNumber within the registration's domain (services/identity.py).
        Index("ix_device_domain_id_serial_number", "domain_id", "serial_number"),
        # Used secrets whose retry window is over (services/certificates.py sweep()).
        Index("ix_device_secret_retry_until", "secret_retry_until"),
        # The foreign keys' own lookups (migration 16d): deleting a certificate (a domain's, with its CAs) looks for
        # the device holding it as credential, and deleting a DevID registration for the devices it admitted. Without
        # them each deleted row read the whole table: 15 ms per certificate at 100,000 devices, minutes for a domain
        # of thousands of certificates under the write lock. Partial: a device without a credential or a
        # registration writes no page of them.
        _partial("ix_device_credential_id", ("credential_id",), "credential_id"),
        _partial("ix_device_devid_registration_id", ("devid_registration_id",), "devid_registration_id"),
        {"sqlite_autoincrement": True},
    )
    __encrypted__ = {"secret_encrypted": "device-secret"}  # noqa: RUF012 (read by runtime/rotation.py)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domain.id"))
    onboarding_method: Mapped[str] = mapped_column(String(32))
    # pending | onboarded; no_onboarding for onboarding_method "none" (application certificates only)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # Subject serialNumber of the device's IDevID, when it onboards with one.
    serial_number: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    idevid_fingerprint: Mapped[Optional[str]] = mapped_column(String(64), nullable=True, index=True)
    # One-time secret for CMP PBM, encrypted at rest; cleared once the device is onboarded.
    secret_encrypted: Mapped[Optional[bytes]] = mapped_column(LargeBinary, nullable=True)
    # One-time EST password, hashed (see devices.hash_password); cleared once the device is onboarded.
    password_hash: Mapped[Optional[str]] = mapped_column(String(256), nullable=True)
    # Failed attempts against the secret or password since it was issued or unlocked; at the lockout it is
    # locked until an operator unlocks it (services/auth_limits.py).
    failed_authentications: Mapped[int] = mapped_column(default=0, server_default="0")
    secret_locked_at: Mapped[Optional[datetime.datetime]] = mapped_column(nullable=True)
    # Set when the secret or password was used: it still works until then, and only while the credential it
    # obtained was never used, so that a device whose answer was lost can onboard again (services/devices.py).
    secret_retry_until: Mapped[Optional[datetime.datetime]] = mapped_column(nullable=True)
    # The DevID registration that admitted (or created) the device: no other one admits an IDevID for it.
    devid_registration_id: Mapped[Optional[int]] = mapped_column(ForeignKey("devid_registration.id"), nullable=True)
    # Names the device may have in application certificates besides its own (services/names.py).
    allowed_names: Mapped[Optional[list]] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    onboarded_at: Mapped[Optional[datetime.datetime]] = mapped_column(nullable=True)
    credential_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("issued_certificate.id", use_alter=True, ondelete="SET NULL"), nullable=True
    )

    domain: Mapped[Domain] = relationship(back_populates="devices")
    credential: Mapped[Optional[IssuedCertificate]] = relationship(foreign_keys=[credential_id])
    devid_registration: Mapped[Optional[DevIdRegistration]] = relationship()


class IssuedCertificate(Base):
    """Every certificate the service issued, kept after its device is deleted (serials stay unique)."""

    __tablename__ = "issued_certificate"
    __table_args__ = (
        UniqueConstraint("ca_id", "serial_number"),
        # A CA's revoked certificates (its CRL), without reading the CA's other certificates.
        Index("ix_issued_certificate_ca_id_status", "ca_id", "status"),
        # A device's certificates (listing, the daily limit), the sweeps of services/certificates.py, and the
        # certificates a credential obtained or replaced.
        # (It serves every lookup by device_id alone too: no index of its own, one B-tree page less per write.)
        Index("ix_issued_certificate_device_created", "device_id", "created_at"),
        Index("ix_issued_certificate_status_created", "status", "created_at"),
        # Partial (rows where the column is set): a new certificate is not superseded, and an onboarding renews
        # nothing and was obtained with no credential, so that its INSERT writes none of these three (issue 16: each
        # index page an enrollment changes is a WAL frame, and a page every other worker reads again). A lookup by
        # value (=, <) implies IS NOT NULL: SQLite and PostgreSQL still use them.
        _partial("ix_issued_certificate_status_superseded", ("status", "superseded_at"), "superseded_at"),
        _partial("ix_issued_certificate_issued_with", ("issued_with_id",), "issued_with_id"),
        _partial("ix_issued_certificate_replaces", ("replaces_id",), "replaces_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ca_id: Mapped[int] = mapped_column(ForeignKey("certificate_authority.id", ondelete="CASCADE"))
    # A device's certificates: every enrollment supersedes the earlier ones, rr and the API look them up.
    device_id: Mapped[Optional[int]] = mapped_column(ForeignKey("device.id", ondelete="SET NULL"), nullable=True)
    device_name: Mapped[str] = mapped_column(String(128))
    profile: Mapped[str] = mapped_column(String(64))
    serial_number: Mapped[str] = mapped_column(String(64))  # lowercase hex
    subject: Mapped[str] = mapped_column(String(1024))
    not_before: Mapped[datetime.datetime]
    not_after: Mapped[datetime.datetime]
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    # awaiting_confirmation (CMP certConf pending) | active | revoked
    status: Mapped[str] = mapped_column(String(24))
    revoked_at: Mapped[Optional[datetime.datetime]] = mapped_column(nullable=True)
    revocation_reason: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    # The certificate whose holder obtained this one (None: a secret, a password or an IDevID did): revoked
    # for keyCompromise, it takes this one with it.
    issued_with_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("issued_certificate.id", ondelete="SET NULL"), nullable=True
    )
    # The certificate this one renews (kur, simplereenroll).
    replaces_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("issued_certificate.id", ondelete="SET NULL"), nullable=True
    )
    # When a renewal of this certificate became active: it then renews, and nothing else, until its successor
    # is used or the grace period ends (services/certificates.py).
    superseded_at: Mapped[Optional[datetime.datetime]] = mapped_column(nullable=True)
    # When the certificate first authenticated a request.
    first_used_at: Mapped[Optional[datetime.datetime]] = mapped_column(nullable=True)

    ca: Mapped[CertificateAuthority] = relationship()
    device: Mapped[Optional[Device]] = relationship(foreign_keys=[device_id])
    replaces: Mapped[Optional[IssuedCertificate]] = relationship(
        foreign_keys=[replaces_id], remote_side="IssuedCertificate.id"
    )
    issued_with: Mapped[Optional[IssuedCertificate]] = relationship(
        foreign_keys=[issued_with_id], remote_side="IssuedCertificate.id"
    )


class CmpTransaction(Base):
    """A CMP transaction: its ID is never accepted twice, and certConf must match it."""

    __tablename__ = "cmp_transaction"
    # The transaction of a certificate (the unconfirmed ones of a requester, their expiry).
    __table_args__ = (Index("ix_cmp_transaction_certificate", "certificate_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    transaction_id: Mapped[bytes] = mapped_column(LargeBinary(64), unique=True)
    # Indexed for deleting a device (its transactions go with it; the foreign key check looks them up).
    device_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("device.id", ondelete="CASCADE"), nullable=True, index=True
    )
    certificate_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("issued_certificate.id", ondelete="SET NULL"), nullable=True
    )
    # The senderNonce of our response: a certConf must carry it as recipNonce.
    response_nonce: Mapped[bytes] = mapped_column(LargeBinary(64))
    # The request's senderNonce: the certConf must bring a fresh one (None for transactions before 0.2).
    request_nonce: Mapped[Optional[bytes]] = mapped_column(LargeBinary(128), nullable=True)
    # Who sent the request ("secret:<device id>" or "cert:<SHA-256 of the signer>"): certConf must too.
    requester: Mapped[str] = mapped_column(String(80))
    cert_req_id: Mapped[int] = mapped_column(default=0)
    state: Mapped[str] = mapped_column(String(16))  # waiting | confirmed | rejected | superseded | expired
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)

    certificate: Mapped[Optional[IssuedCertificate]] = relationship(foreign_keys=[certificate_id])


class Truststore(Base):
    """Certificates trusted for one purpose: IDevID issuers, TLS anchors, DevOwnerID issuers."""

    __tablename__ = "truststore"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    usage: Mapped[str] = mapped_column(String(16))  # idevid | tls | devownerid
    certificates_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)


class TlsBundleGeneration(Base):
    """One row: a number the database's triggers change with every change of the TLS client CA bundle (the
    domain CAs' certificates, the idevid and tls truststores). See storage/triggers.py."""

    __tablename__ = triggers.TABLE

    id: Mapped[int] = mapped_column(primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class DevIdRegistration(Base):
    """Admits devices by their IDevID: issued under truststore, serialNumber or a SAN URI fully matching pattern."""

    __tablename__ = "devid_registration"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domain.id"))
    truststore_id: Mapped[int] = mapped_column(ForeignKey("truststore.id"))
    pattern: Mapped[str] = mapped_column(String(512))
    auto_create_devices: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)

    domain: Mapped[Domain] = relationship()
    truststore: Mapped[Truststore] = relationship()


class OwnerCredential(Base):
    """A DevOwnerID (AOKI): the owner certificate devices check, its issuer chain, and its private key
    encrypted at rest like the CA keys (see runtime/vault.py)."""

    __tablename__ = "owner_credential"
    __encrypted__ = {"private_key_encrypted": "owner-key"}  # noqa: RUF012 (read by runtime/rotation.py)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    certificate_der: Mapped[bytes] = mapped_column(LargeBinary)
    # The DevOwnerID's issuer chain (PEM, may be empty): AOKI over CMP sends it after the DevOwnerID.
    chain_pem: Mapped[str] = mapped_column(Text, default="")
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)

    references: Mapped[list[OwnerReference]] = relationship(
        back_populates="credential", cascade="all, delete-orphan", order_by="OwnerReference.id"
    )


class OwnerReference(Base):
    """One dev-owner: SAN URI of a DevOwnerID, indexed: how the server finds the owner of an IDevID."""

    __tablename__ = "owner_reference"
    __table_args__ = (UniqueConstraint("credential_id", "reference"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    credential_id: Mapped[int] = mapped_column(ForeignKey("owner_credential.id", ondelete="CASCADE"))
    reference: Mapped[str] = mapped_column(String(512), index=True)

    credential: Mapped[OwnerCredential] = relationship(back_populates="references")


class ApiToken(Base):
    """A bearer token of the management API, stored as its SHA-256 hash."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)


class Operator(Base):
    """A person who signs in to the web pages. The password is an Argon2id hash (services/operators.py)."""

    __tablename__ = "operator"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    # Part of every session cookie of the operator: a new value (sign-out, new password) ends them all.
    session_token: Mapped[str] = mapped_column(String(64))
    # Failed sign-ins in a row; from a threshold on, the next attempt must wait until blocked_until.
    failed_sign_ins: Mapped[int] = mapped_column(default=0)
    blocked_until: Mapped[Optional[datetime.datetime]] = mapped_column(nullable=True)
    last_sign_in_at: Mapped[Optional[datetime.datetime]] = mapped_column(nullable=True)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)


class CredentialDownload(Base):
    """A credential an operator ordered for download in the device's browser (services/downloads.py).

    The one-time password (OTP) unlocks it: handle finds the row, otp_sha256 checks the rest. Once unlocked,
    a download token (its hash here) lets one download happen within minutes; the key is generated for that
    download and never stored.
    """

    __tablename__ = "credential_download"
    # The foreign keys' lookups when a device or a certificate is deleted (migration 16d).
    __table_args__ = (
        Index("ix_credential_download_device_id", "device_id"),
        _partial("ix_credential_download_certificate", ("certificate_id",), "certificate_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    handle: Mapped[str] = mapped_column(String(16), unique=True)
    otp_sha256: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[int] = mapped_column(ForeignKey("device.id", ondelete="CASCADE"))
    profile: Mapped[str] = mapped_column(String(64))
    key_type: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(1024))  # RFC 4514
    subject_alt_names: Mapped[str] = mapped_column(Text)  # JSON list of "DNS:name" strings
    attempts_left: Mapped[int]
    expires_at: Mapped[datetime.datetime]  # of the OTP
    token_sha256: Mapped[Optional[str]] = mapped_column(String(64), unique=True, nullable=True)
    token_expires_at: Mapped[Optional[datetime.datetime]] = mapped_column(nullable=True)
    # pending (OTP not entered) | unlocked (token issued) | downloaded | void (3 wrong OTPs, or cancelled)
    state: Mapped[str] = mapped_column(String(16))
    certificate_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("issued_certificate.id", ondelete="SET NULL"), nullable=True
    )
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)

    device: Mapped[Device] = relationship()
    certificate: Mapped[Optional[IssuedCertificate]] = relationship()


class ReadinessProbe(Base):
    """The row /readyz writes: a readiness check is a real write transaction (services/health.py)."""

    __tablename__ = "readiness_probe"

    id: Mapped[int] = mapped_column(primary_key=True)
    checked_at: Mapped[datetime.datetime]


event.listen(Base.metadata, "after_create", triggers.after_create)
