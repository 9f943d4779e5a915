# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""REST management API under /api/v1 (bearer token): domains and devices."""

from __future__ import annotations

import hashlib
import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select
from trustpoint_core.keys import DEFAULT_KEY_TYPE

from ..errors import ApiError
from ..services import devices, pki, trust
from ..storage.db import begin_write, session
from ..storage.models import ApiToken, Device, DevIdRegistration, Domain, Truststore

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
    names = [name for name in request.args.getlist("name") if name]
    if names:
        # Repeatable (?name=a&name=b): a playbook reads its whole batch of devices in one request.
        query = query.where(Device.name.in_(names))
    if request.args.get("domain"):
        query = query.where(Device.domain_id == pki.get_domain(session(), request.args["domain"]).id)
    return jsonify([devices.device_json(d) for d in session().scalars(query)])


@bp.post("/devices")
def create_device():
    data = _body()
    _only(data, ("name", "domain", "onboarding_method", "serial_number"))
    missing = [f for f in ("name", "domain", "onboarding_method") if f not in data]
    if missing:
        raise ApiError(400, "field(s) required: %s" % ", ".join(missing))
    if not isinstance(data["domain"], str):
        raise ApiError(400, "field 'domain' must be a domain name")
    db = session()
    begin_write(db)
    domain = pki.get_domain(db, data["domain"])
    device, secrets = devices.create_device(
        db, _vault(), data["name"], domain, data["onboarding_method"], data.get("serial_number")
    )
    db.commit()
    log.info("registered device %s (id %d) in domain %s", device.name, device.id, domain.name)
    return jsonify(dict({"device": devices.device_json(device)}, **secrets)), 201


@bp.get("/devices/<int:device_id>")
def get_device(device_id):
    return jsonify(devices.device_json(devices.get_device(session(), device_id)))


@bp.post("/devices/<int:device_id>/secret")
def issue_secret(device_id):
    db = session()
    begin_write(db)
    device = devices.get_device(db, device_id)
    secrets = devices.issue_secret(_vault(), device)
    if not secrets:
        raise ApiError(
            409, "device %s onboards with %s, which uses no secret" % (device.name, device.onboarding_method)
        )
    db.commit()
    log.info("issued a new one-time secret for device %s (id %d)", device.name, device.id)
    return jsonify(dict({"device": devices.device_json(device)}, **secrets))


@bp.delete("/devices/<int:device_id>")
def delete_device(device_id):
    db = session()
    begin_write(db)
    device = devices.get_device(db, device_id)
    devices.delete_device(db, device)
    db.commit()
    log.info("deleted device %d; its certificates are revoked", device_id)
    return "", 204


# --- truststores ---------------------------------------------------------------------------------


@bp.get("/truststores")
def list_truststores():
    return jsonify([trust.truststore_json(t) for t in session().scalars(select(Truststore).order_by(Truststore.name))])


@bp.post("/truststores")
def create_truststore():
    data = _body()
    _only(data, ("name", "usage", "certificates"))
    missing = [f for f in ("name", "usage", "certificates") if f not in data]
    if missing:
        raise ApiError(400, "field(s) required: %s" % ", ".join(missing))
    truststore = Truststore(
        name=trust.check_name("truststore", data["name"]),
        usage=trust.check_usage(data["usage"]),
        certificates_pem=trust.parse_certificates(data["certificates"]),
    )
    db = session()
    begin_write(db)
    if db.scalar(select(Truststore).where(Truststore.name == truststore.name)) is not None:
        raise ApiError(409, "truststore %r already exists" % truststore.name)
    db.add(truststore)
    db.commit()
    log.info("created truststore %s (%s)", truststore.name, truststore.usage)
    return jsonify(trust.truststore_json(truststore)), 201


@bp.get("/truststores/<name>")
def get_truststore(name):
    return jsonify(trust.truststore_json(trust.get_truststore(session(), name)))


@bp.patch("/truststores/<name>")
def update_truststore(name):
    data = _body()
    _only(data, ("usage", "certificates"))
    db = session()
    begin_write(db)
    truststore = trust.get_truststore(db, name)
    if "usage" in data:
        truststore.usage = trust.check_usage(data["usage"])
    if "certificates" in data:
        truststore.certificates_pem = trust.parse_certificates(data["certificates"])
    db.commit()
    return jsonify(trust.truststore_json(truststore))


@bp.delete("/truststores/<name>")
def delete_truststore(name):
    db = session()
    begin_write(db)
    trust.delete_truststore(db, trust.get_truststore(db, name))
    db.commit()
    return "", 204


# --- DevID registrations -------------------------------------------------------------------------

_REGISTRATION_FIELDS = ("name", "domain", "truststore", "pattern", "auto_create_devices")


def _apply_registration(db, registration, data):
    if "domain" in data:
        if not isinstance(data["domain"], str):
            raise ApiError(400, "domain must be a domain name")
        registration.domain = pki.get_domain(db, data["domain"])
    if "truststore" in data:
        registration.truststore = trust.idevid_truststore(db, data["truststore"])
    if "pattern" in data:
        registration.pattern = trust.check_pattern(data["pattern"])
    if "auto_create_devices" in data:
        if not isinstance(data["auto_create_devices"], bool):
            raise ApiError(400, "auto_create_devices must be true or false")
        registration.auto_create_devices = data["auto_create_devices"]


@bp.get("/devid-registrations")
def list_registrations():
    query = select(DevIdRegistration).order_by(DevIdRegistration.name)
    return jsonify([trust.registration_json(r) for r in session().scalars(query)])


@bp.post("/devid-registrations")
def create_registration():
    data = _body()
    _only(data, _REGISTRATION_FIELDS)
    missing = [f for f in ("name", "domain", "truststore", "pattern") if f not in data]
    if missing:
        raise ApiError(400, "field(s) required: %s" % ", ".join(missing))
    db = session()
    begin_write(db)
    name = trust.check_name("DevID registration", data["name"])
    if db.scalar(select(DevIdRegistration).where(DevIdRegistration.name == name)) is not None:
        raise ApiError(409, "DevID registration %r already exists" % name)
    registration = DevIdRegistration(name=name, auto_create_devices=False)
    _apply_registration(db, registration, data)
    db.add(registration)
    db.commit()
    log.info("created DevID registration %s", name)
    return jsonify(trust.registration_json(registration)), 201


@bp.get("/devid-registrations/<name>")
def get_registration(name):
    return jsonify(trust.registration_json(trust.get_registration(session(), name)))


@bp.patch("/devid-registrations/<name>")
def update_registration(name):
    data = _body()
    _only(data, _REGISTRATION_FIELDS[1:])
    db = session()
    begin_write(db)
    registration = trust.get_registration(db, name)
    _apply_registration(db, registration, data)
    db.commit()
    return jsonify(trust.registration_json(registration))


@bp.delete("/devid-registrations/<name>")
def delete_registration(name):
    db = session()
    begin_write(db)
    db.delete(trust.get_registration(db, name))
    db.commit()
    return "", 204
