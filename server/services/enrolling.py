# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""What an enrollment reads of the device that authenticates with its secret (CMP shared secret, EST password) and
of the domain the URL names, and the certificate it records for that device: plain objects from statements on the
driver's cursor (storage/sql.py), not ORM objects.

Loading a device with its domain and the domain's CAs through the ORM cost 0.3 ms of CPU, a tenth of an enrollment
(issue 16); two statements and these objects cost a tenth of that. They carry their table's columns under the ORM
models' attribute names, and the relationships the enrollment services follow (a device's domain and credential, a
domain's CAs), so the services take them as they take ORM objects. They are not in the database session: what the
services write of them goes through statements, and the services set it on them too (storage/db.py show_written's
row). Operators, the API and the pages keep the ORM.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select

from ..storage import sql
from ..storage.db import MAX_ID
from ..storage.models import CertificateAuthority, Device, Domain, IssuedCertificate

_DEVICES = Device.__table__
_DOMAINS = Domain.__table__
_CAS = CertificateAuthority.__table__
_CERTIFICATES = IssuedCertificate.__table__


class Row:
    """A row's columns as attributes."""

    def __init__(self, values):
        self.__dict__.update(values)

    def __repr__(self):
        return "<%s %s>" % (type(self).__name__, self.__dict__.get("id"))


class EnrollingDevice(Row):
    """A device row, with domain (EnrollingDomain) and credential (None, or its id and first_used_at)."""


class EnrollingCertificate(Row):
    """An issued_certificate row the enrollment just inserted (services/pki.py record_certificate): an ORM object
    of it, adopted by the session, cost 0.1-0.2 ms of CPU per enrollment (its instrumented attributes, the
    session's flush and close going through it; issue 16)."""


class EnrollingDomain(Row):
    """A domain row, with cas: its CAs (id, domain_id, role, certificate_der and private_key_encrypted) by id."""

    def ca(self, role):
        return next(ca for ca in self.cas if ca.role == role)


_CREDENTIAL_USED = _CERTIFICATES.c.first_used_at.label("credential_first_used_at")
_DEVICE = select(_DEVICES, _CREDENTIAL_USED).select_from(
    _DEVICES.outerjoin(_CERTIFICATES, _CERTIFICATES.c.id == _DEVICES.c.credential_id)
)
_DEVICE_BY_ID = sql.Statement(_DEVICE.where(_DEVICES.c.id == bindparam("p_id")))
_DEVICE_BY_NAME = sql.Statement(_DEVICE.where(_DEVICES.c.name == bindparam("p_name")))
# Not the CAs' CRLs (megabytes, perhaps; services/crl.py reads them).
_CA_COLUMNS = ("id", "domain_id", "role", "certificate_der", "private_key_encrypted")
_DOMAIN = (
    select(_DOMAINS, *(_CAS.c[name].label("ca_" + name) for name in _CA_COLUMNS))
    .select_from(_DOMAINS.join(_CAS, _CAS.c.domain_id == _DOMAINS.c.id))
    .order_by(_CAS.c.id)
)
_DOMAIN_BY_ID = sql.Statement(_DOMAIN.where(_DOMAINS.c.id == bindparam("p_id")))
_DOMAIN_BY_NAME = sql.Statement(_DOMAIN.where(_DOMAINS.c.name == bindparam("p_name")))
_DOMAIN_KEYS = tuple(column.key for column in _DOMAINS.c)


def _domain(rows):
    if not rows:
        return None
    first = rows[0]._asdict()
    domain = EnrollingDomain({key: first[key] for key in _DOMAIN_KEYS})
    domain.cas = [Row({name: getattr(row, "ca_" + name) for name in _CA_COLUMNS}) for row in rows]
    return domain


def domain_named(db, name):
    """The domain called name with its CAs, or None."""
    return _domain(sql.rows(db, _DOMAIN_BY_NAME, p_name=name))


def _device(db, row, domain):
    if row is None:
        return None
    values = row._asdict()
    used = values.pop("credential_first_used_at")
    device = EnrollingDevice(values)
    device.credential = None
    if device.credential_id is not None:
        device.credential = Row({"id": device.credential_id, "first_used_at": used})
    if domain is None or domain.id != device.domain_id:
        domain = _domain(sql.rows(db, _DOMAIN_BY_ID, p_id=device.domain_id))
    device.domain = domain
    return device


def device(db, device_id):
    """The device with id device_id (an int from a request), with its domain, or None."""
    if not 0 < device_id <= MAX_ID:
        return None
    return _device(db, sql.first(db, _DEVICE_BY_ID, p_id=device_id), None)


def device_named(db, name, domain=None):
    """The device called name, or None; domain: the request's, taken as the device's when it is (no statement)."""
    return _device(db, sql.first(db, _DEVICE_BY_NAME, p_name=name), domain)
