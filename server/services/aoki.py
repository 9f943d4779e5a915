# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""AOKI's rules: which IDevID gets an aoki-init answer, what the signed answer says, and what it creates.

An IDevID is admitted like on every other path (a DevID registration: truststore and pattern, see
identity.py); its device is found or created in the registration's domain with onboarding method aoki;
the DevOwnerID that names it (owner.py) signs the answer. Nothing is written before every check passed.
"""

from __future__ import annotations

from sqlalchemy import select
from trustpoint_core import aoki
from trustpoint_core.errors import InvalidInput

from ..runtime.tls import served_chain
from ..storage.db import begin_write
from ..storage.models import Device
from . import identity, owner
from .pki import ca_chain

METHOD = "aoki"
# The devices AOKI serves: those it created, and those an operator registered for it.
METHODS = (METHOD,)
NO_OWNER = "No DevOwnerID present for this IDevID."  # upstream's text (422)


class AokiRefusal(Exception):
    """No aoki-init answer: HTTP status (upstream's: 401, 403, 422, 500) and a message saying why."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def tls_truststore(settings):
    """What tls-truststore carries: the chain the server presents, its anchor first (upstream devices pin
    only the first certificate) and the leaf last (the spec: the device may check it is the server's)."""
    return aoki.anchor_first(served_chain(settings.tls_cert_file))


def enrollment_protocols(base_url, domain):
    """(protocol, absolute URL) pairs of aoki-init's enrollment-info: EST first (upstream devices take the
    first EST entry and use an https:// URL as it is), then AOKI over CMP, which answers signed by the
    DevOwnerID and so needs no other trust anchor."""
    base = base_url.rstrip("/")
    return [
        ("EST", "%s/.well-known/est/%s/domain_credential/" % (base, domain.name)),
        ("CMP", base + aoki.CMP_PATH),
    ]


def admit(db, idevid, intermediates, domain=None):
    """(registration, device, new) for an AOKI request signed or presented with idevid: the DevID
    registration that admits it for its device (the one the device belongs to, identity.idevid_device) and
    the device (new ones not yet added, bound to the registration). Raises NotAuthenticated."""
    admissions = identity.admit_idevid(db, idevid, intermediates, domain)
    device, new, registration, _bind = identity.idevid_device(db, admissions, idevid, METHODS)
    return registration, device, new


def init_answer(db, vault, settings, idevid, intermediates, base_url):
    """(body, AOKI-Signature, AOKI-Signature-Algorithm) of the aoki-init answer for idevid; AokiRefusal
    with upstream's status codes otherwise. Registers the device when it is new."""
    truststore = tls_truststore(settings)
    if not truststore:
        raise AokiRefusal(500, "the server has no TLS certificate to put in tls-truststore")
    if idevid is None:
        raise AokiRefusal(401, "present the device's IDevID as TLS client certificate")
    try:
        registration, device, new = admit(db, idevid, intermediates)
    except identity.NotAuthenticated as exc:
        raise AokiRefusal(403, "the IDevID is not accepted: %s" % exc.reason) from exc
    except InvalidInput as exc:
        raise AokiRefusal(400, "the IDevID cannot be read: %s" % exc) from exc
    domain = registration.domain
    credential = owner.owner_for(db, idevid, ca_chain(domain)[0])
    if credential is None:
        raise AokiRefusal(422, NO_OWNER)
    key, certificate, _chain = owner.signer(credential, vault)
    body = aoki.init_body(certificate, truststore, enrollment_protocols(base_url, domain))
    signature, algorithm = aoki.sign(key, body)
    if new:
        register(db, device)
    return body, signature, algorithm


def register(db, device):
    """Add a device AOKI created, under the write lock. A concurrent request may have registered the same
    IDevID (fine) or taken the name chosen for it (AokiRefusal 503: the device asks again)."""
    begin_write(db)
    if identity.registered_meanwhile(db, device) is None:
        db.add(device)
        db.commit()
        return
    db.rollback()
    if db.scalar(select(Device.id).where(Device.idevid_fingerprint == device.idevid_fingerprint)) is None:
        raise AokiRefusal(503, "a concurrent request took the name chosen for this device; ask again")
