# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""REST management API under /api/v1 (bearer token): domains and devices."""

from __future__ import annotations

import hashlib
import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select
from trustpoint_core.keys import DEFAULT_KEY_TYPE

from . import devices, pki
from .db import begin_write, session
from .errors import ApiError
from .models import ApiToken, Device, Domain

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api/v1")


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


@bp.before_request
def _authenticate():
    scheme, _sep, token = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="trustpoint"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing API token: send 'Authorization: Bearer <token>'", challenge)
    # Looked up by its hash: the table never holds a usable token, and the lookup time does
    # not depend on how much of a guessed token is right.
    if session().scalar(select(ApiToken).where(ApiToken.token_sha256 == token_hash(token.strip()))) is None:
        raise ApiError(401, "invalid API token", challenge)


def _body():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "expected a JSON object with Content-Type: application/json")
    return data


def _only(data, allowed):
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(400, "unknown field(s): %s; allowed: %s" % (", ".join(unknown), ", ".join(sorted(allowed))))


def _vault():
    return current_app.extensions["trustpoint"].vault


# --- domains -------------------------------------------------------------------------------------


@bp.get("/domains")
def list_domains():
    return jsonify([pki.domain_json(d) for d in session().scalars(select(Domain).order_by(Domain.name))])


@bp.post("/domains")
def create_domain():
    data = _body()
    _only(data, ("name", "key_type", "validity_days"))
    if "name" not in data:
        raise ApiError(400, "field 'name' is required")
    db = session()
    domain = pki.create_domain(
        db,
        _vault(),
        data["name"],
        data.get("key_type", DEFAULT_KEY_TYPE),
        data.get("validity_days", pki.DEFAULT_VALIDITY_DAYS),
    )
    db.commit()
    log.info("created domain %s (%s)", domain.name, domain.key_type)
    return jsonify(pki.domain_json(domain)), 201


@bp.get("/domains/<name>")
def get_domain(name):
    return jsonify(pki.domain_json(pki.get_domain(session(), name)))


@bp.patch("/domains/<name>")
def update_domain(name):
    data = _body()
    _only(data, ("validity_days",))
    db = session()
    begin_write(db)
    domain = pki.get_domain(db, name)
    if "validity_days" in data:
        domain.validity_days = pki.check_validity_days(data["validity_days"])
    db.commit()
    return jsonify(pki.domain_json(domain))


@bp.delete("/domains/<name>")
def delete_domain(name):
    db = session()
    begin_write(db)
    pki.delete_domain(db, pki.get_domain(db, name))
    db.commit()
    log.info("deleted domain %s", name)
    return "", 204


# --- devices -------------------------------------------------------------------------------------


@bp.get("/devices")
def list_devices():
    query = select(Device).order_by(Device.id)
    if request.args.get("name"):
        query = query.where(Device.name == request.args["name"])
    if request.args.get("domain"):
        query = query.where(Device.domain_id == pki.get_domain(session(), request.args["domain"]).id)
    return jsonify([devices.device_json(d) for d in session().scalars(query)])


@bp.post("/devices")
def create_device():
    data = _body()
    _only(data, ("name", "domain", "onboarding_method"))
    missing = [f for f in ("name", "domain", "onboarding_method") if f not in data]
    if missing:
        raise ApiError(400, "field(s) required: %s" % ", ".join(missing))
    db = session()
    begin_write(db)
    domain = pki.get_domain(db, data["domain"]) if isinstance(data["domain"], str) else None
    if domain is None:
        raise ApiError(400, "field 'domain' must be a domain name")
    device, secret = devices.create_device(db, _vault(), data["name"], domain, data["onboarding_method"])
    db.commit()
    log.info("registered device %s (id %d) in domain %s", device.name, device.id, domain.name)
    return jsonify({"device": devices.device_json(device), "shared_secret": secret}), 201


@bp.get("/devices/<int:device_id>")
def get_device(device_id):
    return jsonify(devices.device_json(devices.get_device(session(), device_id)))


@bp.post("/devices/<int:device_id>/shared-secret")
def regenerate_secret(device_id):
    db = session()
    begin_write(db)
    device = devices.get_device(db, device_id)
    if device.onboarding_method != "cmp_shared_secret":
        raise ApiError(
            409,
            "device %s onboards with %s, which uses no shared secret" % (device.name, device.onboarding_method),
        )
    secret = devices.regenerate_secret(db, _vault(), device)
    db.commit()
    log.info("issued a new shared secret for device %s (id %d)", device.name, device.id)
    return jsonify({"device": devices.device_json(device), "shared_secret": secret})


@bp.delete("/devices/<int:device_id>")
def delete_device(device_id):
    db = session()
    begin_write(db)
    device = devices.get_device(db, device_id)
    devices.delete_device(db, device)
    db.commit()
    log.info("deleted device %d; its certificates are revoked", device_id)
    return "", 204
