# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CRLs over HTTP, in DER at the URL issued certificates name (services/crl.py issues them)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app

from ..services.crl import current_crl
from ..storage.db import get_by_id, session
from ..storage.models import CertificateAuthority

bp = Blueprint("crl", __name__)


@bp.get("/crl/<int:ca_id>")
def get_crl(ca_id):
    """No authentication: CRLs are signed, public documents (RFC 5280)."""
    db = session()
    ca_row = get_by_id(db, CertificateAuthority, ca_id)
    if ca_row is None:
        abort(404, "no CA %d" % ca_id)
    services = current_app.extensions["trustpoint"]
    der = current_crl(db, services.vault, ca_row, services.settings)
    return Response(der, 200, content_type="application/pkix-crl", headers={"Cache-Control": "max-age=300"})
