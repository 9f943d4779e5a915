# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""AOKI zero-touch onboarding over HTTP, in upstream Trustpoint's wire format.

    GET  /aoki/init/    (also /aoki/init)   TLS client authentication with the IDevID; the answer is the
                        aoki-init JSON, signed by the DevOwnerID (AOKI-Signature, AOKI-Signature-Algorithm)
    POST /.well-known/cmp/p/.aoki/initialization    AOKI over CMP: an ir signed with the IDevID, answered
                        with an ip protected by the DevOwnerID's key (also on the plain-HTTP listener)

Status codes of /aoki/init/ are upstream's: 401 without a client certificate, 403 for an IDevID no DevID
registration admits, 422 when no DevOwnerID names it, 500 without a TLS certificate; errors carry no
signature headers; 429 with Retry-After for a source over its budget of failed authentications (400 and
403 count as failures). services/aoki.py decides; this module only speaks HTTP.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from trustpoint_core import aoki as aoki_format
from trustpoint_core.cmp_protection import SignatureProtection
from trustpoint_core.errors import CmpFailure

from ..errors import ApiError, json_error
from ..services import aoki, owner
from ..services.pki import ca_chain
from ..storage.db import session
from .cmp import serve
from .cmp_responder import CmpResponder
from .wire import client_certificate, client_chain, https_base_url

log = logging.getLogger(__name__)
bp = Blueprint("aoki", __name__)


@bp.get("/aoki/init/", strict_slashes=False)
def init():
    services = current_app.extensions["trustpoint"]
    # A source over its budget of failed authentications gets no IDevID looked at (services/auth_limits.py).
    gate = services.auth_limits.gate(request.remote_addr)
    over_budget = gate.refusal()
    if over_budget is not None:
        raise ApiError.too_many_requests(*over_budget)
    idevid = client_certificate(request)
    try:
        body, signature, algorithm = aoki.init_answer(
            session(), services.vault, services.settings, idevid, client_chain(request), https_base_url()
        )
    except aoki.AokiRefusal as exc:
        if exc.status in (400, 403):  # an IDevID that cannot be read or that no registration admits
            gate.failed()
        log.info("AOKI init refused (%d): %s", exc.status, exc.message)
        return json_error(exc.status, exc.message)
    log.info("AOKI init answered for IDevID %s", aoki_format.cert_reference(idevid))
    headers = {aoki_format.SIGNATURE_HEADER: signature, aoki_format.ALGORITHM_HEADER: algorithm}
    return Response(body, 200, content_type=aoki_format.CONTENT_TYPE, headers=headers)


@bp.post("/.well-known/cmp/p/.aoki/initialization/", strict_slashes=False)
def cmp_initialization():
    return serve(AokiCmpResponder, None, None, "initialization")


class AokiCmpResponder(CmpResponder):
    """AOKI over CMP: an ir (and its certConf) signed with an IDevID that a DevID registration admits, for
    a device of method aoki (created in the registration's domain when new); every answer is protected
    with the key of the DevOwnerID that owns the IDevID, with extraCerts [DevOwnerID, its chain, issuing
    CA, root] and the domain's root in caPubs: the device trusts the owner, and through it the domain."""

    IDEVID_METHODS = aoki.METHODS

    def _authenticate_secret(self):
        raise CmpFailure("AOKI only supported with signature-based protection", "wrongIntegrity")

    def _resolve_domain(self, requester):
        self.idevid = requester.certificate if requester.kind == "idevid" else None
        if requester.kind == "credential":
            raise CmpFailure("AOKI onboards with the IDevID's signature, not an issued certificate", "notAuthorized")
        super()._resolve_domain(requester)
        if self.protector is None:
            raise CmpFailure(aoki.NO_OWNER, "notAuthorized")

    def _sign_with(self, domain):
        """Protect with the DevOwnerID that owns the requester's IDevID; none: the answer stays unprotected."""
        idevid = getattr(self, "idevid", None)
        if idevid is None:
            return
        issuing, root = ca_chain(domain)
        credential = owner.owner_for(self.db, idevid, issuing)
        if credential is None:
            return
        key, certificate, chain = owner.signer(credential, self.vault)
        self.protector = SignatureProtection(key, certificate, [*chain, issuing, root])

    def _ca_pubs(self, requester, root):
        return [root]  # under the owner's signature, which the device trusts
