# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Certificate revocation lists, one per CA: issued when a revocation invalidated the last one or it is due."""

from __future__ import annotations

import datetime
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_der_x509_crl
from sqlalchemy import select
from trustpoint_core import x509

from ..runtime import on_loop
from ..storage.db import begin_write
from ..storage.models import IssuedCertificate, utcnow
from . import certificates
from .pki import Signer

# A CRL is reissued after every revocation, and at the latest when it is this old.
NEXT_UPDATE_HOURS = 24


def crl_path(ca_id):
    return "/crl/%d" % ca_id


def invalidate(ca_row):
    """A revocation happened: the next request for the CA's CRL issues a new one."""
    ca_row.crl_der = None


def current_crl(db, vault, ca_row, settings):
    """The CA's CRL (DER), issued anew when a revocation invalidated it or it is due. Certificates whose
    confirmation window or renewal grace period ended are revoked first (certificates.sweep)."""
    now = utcnow()
    certificates.sweep(db, settings, now)
    if (
        ca_row.crl_der is not None
        and ca_row.crl_next_update
        and now < ca_row.crl_next_update - datetime.timedelta(hours=1)
    ):
        return ca_row.crl_der
    # Signing a CRL of many revocations takes long: a CMP request (genm) on a worker's loop moves to a thread first
    # (runtime/on_loop.py). The sweep before has committed what it changed, and does nothing when run again.
    on_loop.long_work_ahead()
    begin_write(db)
    db.refresh(ca_row)
    signer = Signer(ca_row, vault)
    revoked = db.execute(
        select(IssuedCertificate.serial_number, IssuedCertificate.revoked_at, IssuedCertificate.revocation_reason)
        .where(IssuedCertificate.ca_id == ca_row.id, IssuedCertificate.status == "revoked")
        .order_by(IssuedCertificate.id)
    ).all()
    ca_row.crl_number += 1
    crl = x509.build_crl(
        signer.certificate,
        signer.private_key,
        [(int(serial, 16), when, reason) for serial, when, reason in revoked],
        ca_row.crl_number,
        NEXT_UPDATE_HOURS,
        now,
    )
    ca_row.crl_der = crl.public_bytes(Encoding.DER)
    ca_row.crl_next_update = now + datetime.timedelta(hours=NEXT_UPDATE_HOURS)
    db.commit()
    return ca_row.crl_der


def ca_of_source(domain, uris=(), issuers=()):
    """The CA of domain whose CRL a client names by distribution point URI (any host: the path /crl/<id>
    decides) or by issuer name; None when no CA of the domain matches."""
    for ca_row in domain.cas:
        path = crl_path(ca_row.id)
        if any(urlsplit(uri).path.rstrip("/") == path for uri in uris):
            return ca_row
        if issuers and x509.load_certificate(ca_row.certificate_der).subject in issuers:
            return ca_row
    return None


def newer_than(crl_der, this_update):
    """True when the CRL was issued after this_update (None: the client holds none)."""
    if this_update is None:
        return True
    return load_der_x509_crl(crl_der).last_update_utc > this_update
