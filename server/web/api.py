# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""REST management API under /api/v1 (bearer token): domains, devices, their certificates and credential
downloads, truststores, DevID registrations, DevOwnerID credentials and AOKI's state.

Lists take ?search=... (and per resource filters) and, optionally, ?page=N&per_page=M: the answer is then that
page, with the total count in X-Total-Count.
"""

from __future__ import annotations

import base64
import hashlib
import logging

from flask import Blueprint, current_app, g, jsonify, request, url_for
from sqlalchemy import select
from trustpoint_core import keys, x509
from trustpoint_core.errors import InvalidInput
from trustpoint_core.keys import DEFAULT_KEY_TYPE

from ..errors import ApiError
from ..protocols.wire import https_base_url
from ..runtime import mdns
from ..services import agent, aoki, auth_limits, certificates, devices, downloads, help, names, owner, pki, trust
from ..storage.db import begin_write, paginate, session
from ..storage.models import ApiToken, OwnerCredential

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
    api_token = session().scalar(select(ApiToken).where(ApiToken.token_sha256 == token_hash(token.strip())))
    if api_token is None:
        # The check is cheap, so a valid token is served whatever the source's budget; guesses are throttled.
        gate = current_app.extensions["trustpoint"].auth_limits.gate(request.remote_addr)
        refusal = gate.refusal()
        if refusal is not None:
            raise ApiError.too_many_requests(*refusal)
        gate.failed()
        raise ApiError(401, "invalid API token", challenge)
    g.api_token_name = api_token.name


def _body():
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser goes: no object of this API is
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "expected a JSON object with Content-Type: application/json")
    return data


def _only(data, allowed):
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(400, "unknown field(s): %s; allowed: %s" % (", ".join(unknown), ", ".join(sorted(allowed))))


def _vault():
    return current_app.extensions["trustpoint"].vault


def _listing(query, to_json):
    """The rows of query as JSON: all of them, or with ?page/?per_page one page and X-Total-Count."""
    if "page" not in request.args and "per_page" not in request.args:
        return jsonify([to_json(row) for row in session().scalars(query)])
    try:
        number, size = int(request.args.get("page", 1)), int(request.args.get("per_page", 25))
    except ValueError:
        raise ApiError(400, "page and per_page must be whole numbers") from None
    page = paginate(session(), query, number, size)
    response = jsonify([to_json(row) for row in page.items])
    response.headers["X-Total-Count"] = str(page.total)
    return response


def _settings():
    return current_app.extensions["trustpoint"].settings


def _shown_once(device, secrets):
    """The answer that carries a fresh secret: shown this once (an agent device's as token and command)."""
    shown = agent.shown_once(device, secrets, _settings(), https_base_url())
    return dict({"device": devices.device_json(device)}, **shown)


# --- domains -------------------------------------------------------------------------------------


@bp.get("/domains")
def list_domains():
    return _listing(pki.domains_query(request.args.get("search")), pki.domain_json)


@bp.post("/domains")
def create_domain():
    data = _body()
    _only(data, ("name", "key_type", "validity_days", "allowed_names", *pki.CMP_POLICY_FIELDS))
    if "name" not in data:
        raise ApiError(400, "field 'name' is required")
    db = session()
    domain = pki.create_domain(
        db,
        _vault(),
        data["name"],
        data.get("key_type", DEFAULT_KEY_TYPE),
        data.get("validity_days", pki.DEFAULT_VALIDITY_DAYS),
        data.get("allowed_names"),
        pki.cmp_policy(data),
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
    _only(data, ("validity_days", "allowed_names", *pki.CMP_POLICY_FIELDS))
    db = session()
    begin_write(db)
    domain = pki.get_domain(db, name)
    if "validity_days" in data:
        domain.validity_days = pki.check_validity_days(data["validity_days"])
    if "allowed_names" in data:
        domain.allowed_names = names.check_allowed_names(data["allowed_names"])
    for field, value in pki.cmp_policy(data).items():
        setattr(domain, field, value)
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
    args = request.args
    domain = pki.get_domain(session(), args["domain"]) if args.get("domain") else None
    query = devices.devices_query(args.get("search"), domain, args.get("status"), args.get("onboarding_method"))
    names = [name for name in args.getlist("name") if name]
    if names:
        # Repeatable (?name=a&name=b): a playbook reads its whole batch of devices in one request.
        query = query.where(devices.Device.name.in_(names))
    return _listing(query, devices.device_json)


@bp.post("/devices")
def create_device():
    data = _body()
    _only(data, ("name", "domain", "onboarding_method", "serial_number", "allowed_names", "devid_registration"))
    missing = [f for f in ("name", "domain", "onboarding_method") if f not in data]
    if missing:
        raise ApiError(400, "field(s) required: %s" % ", ".join(missing))
    if not isinstance(data["domain"], str):
        raise ApiError(400, "field 'domain' must be a domain name")
    db = session()
    begin_write(db)
    domain = pki.get_domain(db, data["domain"])
    device, secrets = devices.create_device(
        db,
        _vault(),
        data["name"],
        domain,
        data["onboarding_method"],
        data.get("serial_number"),
        data.get("allowed_names"),
        data.get("devid_registration"),
    )
    db.commit()
    log.info("registered device %s (id %d) in domain %s", device.name, device.id, domain.name)
    return jsonify(_shown_once(device, secrets)), 201


@bp.get("/devices/<int:device_id>")
def get_device(device_id):
    return jsonify(devices.device_json(devices.get_device(session(), device_id)))


@bp.get("/devices/<int:device_id>/help")
def device_help(device_id):
    """The commands of the device's help page ("Help - issue new credentials"), with placeholders for its
    one-time secret (POST /devices/<id>/secret issues one). ?server=host:port as the devices reach the server,
    ?profile= the application certificate profile."""
    device = devices.get_device(session(), device_id)
    settings = current_app.extensions["trustpoint"].settings
    urls, _host = help.urls_for(request.args.get("server", ""), request.host, settings.plain_port)
    profile = request.args.get("profile", "tls_client")
    sections = help.onboarding_sections(device, urls) + help.application_sections(device, urls, profile)
    return jsonify([help.section_json(section) for section in sections])


@bp.patch("/devices/<int:device_id>")
def update_device(device_id):
    data = _body()
    _only(data, ("allowed_names", "devid_registration"))
    db = session()
    begin_write(db)
    device = devices.get_device(db, device_id)
    if "allowed_names" in data:
        devices.set_allowed_names(device, data["allowed_names"])
    if "devid_registration" in data:
        if data["devid_registration"] is None:
            device.devid_registration = None
        else:
            devices.bind_registration(db, device, data["devid_registration"])
    db.commit()
    log.info("changed device %s (id %d): %s", device.name, device.id, ", ".join(sorted(data)))
    return jsonify(devices.device_json(device))


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
    return jsonify(_shown_once(device, secrets))


@bp.post("/devices/<int:device_id>/unlock")
def unlock_device(device_id):
    """Let a device's secret be tried again after too many failed attempts (services/auth_limits.py)."""
    db = session()
    begin_write(db)
    device = devices.get_device(db, device_id)
    was_locked = device.secret_locked_at is not None
    auth_limits.unlock(device)
    db.commit()
    if was_locked:
        log.info("unlocked the secret of device %s (id %d)", device.name, device.id)
    return jsonify(devices.device_json(device))


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
    return _listing(
        trust.truststores_query(request.args.get("search"), request.args.get("usage")), trust.truststore_json
    )


@bp.post("/truststores")
def create_truststore():
    data = _body()
    _only(data, ("name", "usage", "certificates"))
    missing = [f for f in ("name", "usage", "certificates") if f not in data]
    if missing:
        raise ApiError(400, "field(s) required: %s" % ", ".join(missing))
    db = session()
    truststore = trust.create_truststore(db, data["name"], data["usage"], data["certificates"])
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
    truststore = trust.update_truststore(trust.get_truststore(db, name), data)
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


@bp.get("/devid-registrations")
def list_registrations():
    domain = pki.get_domain(session(), request.args["domain"]) if request.args.get("domain") else None
    return _listing(trust.registrations_query(request.args.get("search"), domain), trust.registration_json)


@bp.post("/devid-registrations")
def create_registration():
    data = _body()
    _only(data, trust.REGISTRATION_FIELDS)
    db = session()
    registration = trust.create_registration(db, data)
    db.commit()
    log.info("created DevID registration %s", registration.name)
    return jsonify(trust.registration_json(registration)), 201


@bp.get("/devid-registrations/<name>")
def get_registration(name):
    return jsonify(trust.registration_json(trust.get_registration(session(), name)))


@bp.patch("/devid-registrations/<name>")
def update_registration(name):
    data = _body()
    _only(data, trust.REGISTRATION_FIELDS[1:])
    db = session()
    begin_write(db)
    registration = trust.apply_registration(db, trust.get_registration(db, name), data)
    db.commit()
    return jsonify(trust.registration_json(registration))


@bp.delete("/devid-registrations/<name>")
def delete_registration(name):
    db = session()
    begin_write(db)
    trust.delete_registration(db, trust.get_registration(db, name))
    db.commit()
    return "", 204


# --- certificates of a device --------------------------------------------------------------------

_ISSUE_FIELDS = ("profile", "csr", "key_type", "pkcs12_password", "subject", "subject_alt_names", "replaces")


@bp.get("/devices/<int:device_id>/certificates")
def list_certificates(device_id):
    db = session()
    # The operator sees what the windows ended revoked, not at the next CRL request.
    certificates.sweep(db, _settings(), force=True)
    device = devices.get_device(db, device_id)
    args = request.args
    query = certificates.certificates_query(device, args.get("search"), args.get("status"), args.get("profile"))
    return _listing(query, lambda row: certificates.certificate_json(row, _settings()))


@bp.post("/devices/<int:device_id>/certificates")
def issue_certificate(device_id):
    """Issue a certificate for the key of a CSR, or for a key generated here and answered as a PKCS#12
    protected with pkcs12_password. replaces: serial number of an active certificate this one renews."""
    data = _body()
    _only(data, _ISSUE_FIELDS)
    if "profile" not in data:
        raise ApiError(400, "field 'profile' is required")
    if ("csr" in data) == ("key_type" in data):
        raise ApiError(400, "give either 'csr' (the device's request) or 'key_type' (the server makes the key)")
    if "key_type" in data:
        try:
            keys.check_password(data.get("pkcs12_password"), "pkcs12_password")
        except InvalidInput as exc:
            raise ApiError(400, "%s (it protects the PKCS#12 with the generated key)" % exc) from exc
    elif "pkcs12_password" in data:
        raise ApiError(400, "pkcs12_password goes with key_type: with a CSR the key stays on the device")
    db = session()
    device = devices.get_device(db, device_id)
    replaces = certificates.get_certificate(db, device, data["replaces"]) if data.get("replaces") else None
    record, certificate, private_key = certificates.issue(
        db,
        _vault(),
        _settings(),
        device,
        data["profile"],
        csr=data.get("csr"),
        key_type=data.get("key_type"),
        subject=data.get("subject"),
        subject_alt_names=data.get("subject_alt_names"),
        replaces=replaces,
    )
    db.commit()
    log.info(
        "issued %s %s to device %s (id %d) through the API (%s)%s",
        record.profile,
        record.serial_number,
        device.name,
        device.id,
        g.api_token_name,
        ", renewing %s" % replaces.serial_number if replaces is not None else "",
    )
    answer = {
        "certificate": certificates.certificate_json(record),
        "chain": x509.certificates_to_pem(pki.ca_chain(device.domain)),
    }
    if private_key is not None:
        bundle = keys.pkcs12_bundle(
            "%s-%s" % (device.name, record.profile), private_key, certificate, pki.ca_chain(device.domain),
            data["pkcs12_password"],
        )  # fmt: skip
        answer["pkcs12"] = base64.b64encode(bundle).decode()
    return jsonify(answer), 201


@bp.post("/devices/<int:device_id>/names")
def certificate_names(device_id):
    """The subject and subject alternative names a certificate issued with this body (as for POST
    .../certificates: profile, csr, subject, subject_alt_names) would carry, and what the server changes of the
    request; 400 with the reason when a name is refused. Issues nothing."""
    data = _body()
    _only(data, ("profile", "csr", "subject", "subject_alt_names"))
    if "profile" not in data:
        raise ApiError(400, "field 'profile' is required")
    db = session()
    decided = certificates.names_for(
        db,
        devices.get_device(db, device_id),
        data["profile"],
        csr=data.get("csr"),
        subject=data.get("subject"),
        subject_alt_names=data.get("subject_alt_names"),
    )
    return jsonify(
        {
            "subject": x509.name_to_string(decided.subject),
            "subject_alt_names": [x509.general_name_to_string(n) for n in decided.sans],
            "changes": decided.changes,
        }
    )


@bp.get("/devices/<int:device_id>/certificates/<serial>")
def get_certificate(device_id, serial):
    db = session()
    certificates.sweep(db, _settings(), force=True)
    record = certificates.get_certificate(db, devices.get_device(db, device_id), serial)
    return jsonify(certificates.certificate_json(record, _settings()))


@bp.post("/devices/<int:device_id>/certificates/<serial>/revoke")
def revoke_certificate(device_id, serial):
    data = _body() if request.content_length else {}
    _only(data, ("reason",))
    reason = data.get("reason", "unspecified")
    db = session()
    begin_write(db)
    device = devices.get_device(db, device_id)
    revoked = certificates.revoke_for_operator(db, device, serial, reason)
    db.commit()
    record = revoked[0]
    log.info(
        "revoked %s of device %s (id %d) through the API: %s%s",
        record.serial_number,
        device.name,
        device.id,
        reason,
        ", taking %s with it" % ", ".join(r.serial_number for r in revoked[1:]) if revoked[1:] else "",
    )
    # also_revoked: what went with it (what a keyCompromise took, the certificate it renewed in its grace period).
    return jsonify(
        dict(certificates.certificate_json(record, _settings()), also_revoked=[r.serial_number for r in revoked[1:]])
    )


# --- credential downloads (one-time password, in the device's browser) -----------------------------


@bp.get("/devices/<int:device_id>/downloads")
def list_downloads(device_id):
    db = session()
    return jsonify([downloads.download_json(d) for d in downloads.downloads_of(db, devices.get_device(db, device_id))])


@bp.post("/devices/<int:device_id>/downloads")
def create_download(device_id):
    """Order a credential for download in the device's browser: answers the one-time password, once."""
    data = _body()
    _only(data, ("profile", "key_type", "subject", "subject_alt_names"))
    if "profile" not in data:
        raise ApiError(400, "field 'profile' is required")
    db = session()
    device = devices.get_device(db, device_id)
    download, otp = downloads.create_download(
        db,
        device,
        data["profile"],
        data.get("key_type"),
        data.get("subject"),
        data.get("subject_alt_names"),
        created_by="api:%s" % g.api_token_name,
    )
    db.commit()
    log.info("ordered a %s download for device %s (id %d) through the API", download.profile, device.name, device.id)
    return jsonify(
        {"download": downloads.download_json(download), "otp": otp, "url": url_for("browser.enter_otp", _external=True)}
    ), 201


@bp.delete("/devices/<int:device_id>/downloads/<int:download_id>")
def cancel_download(device_id, download_id):
    db = session()
    begin_write(db)
    download = downloads.get_download(db, devices.get_device(db, device_id), download_id)
    downloads.cancel(download)
    db.commit()
    return jsonify(downloads.download_json(download))


# --- DevOwnerID credentials (AOKI) ----------------------------------------------------------------

_OWNER_FIELDS = ("name", "certificate", "private_key", "chain")


@bp.get("/owner-credentials")
def list_owner_credentials():
    query = select(OwnerCredential).order_by(OwnerCredential.name)
    return jsonify([owner.owner_json(c) for c in session().scalars(query)])


@bp.post("/owner-credentials")
def create_owner_credential():
    data = _body()
    _only(data, _OWNER_FIELDS)
    missing = [f for f in ("name", "certificate", "private_key") if f not in data]
    if missing:
        raise ApiError(400, "field(s) required: %s" % ", ".join(missing))
    db = session()
    begin_write(db)
    credential = owner.create(db, _vault(), data["name"], data["certificate"], data["private_key"], data.get("chain"))
    db.commit()
    log.info("created owner credential %s (%d device references)", credential.name, len(credential.references))
    return jsonify(owner.owner_json(credential)), 201


@bp.get("/owner-credentials/<name>")
def get_owner_credential(name):
    return jsonify(owner.owner_json(owner.get(session(), name)))


@bp.put("/owner-credentials/<name>")
def replace_owner_credential(name):
    """Replace the DevOwnerID of a credential (a new certificate and key, e.g. for more devices)."""
    data = _body()
    _only(data, _OWNER_FIELDS[1:])
    missing = [f for f in ("certificate", "private_key") if f not in data]
    if missing:
        raise ApiError(400, "field(s) required: %s" % ", ".join(missing))
    checked = owner.check_devownerid(data["certificate"], data["private_key"], data.get("chain"))
    db = session()
    begin_write(db)
    credential = owner.get(db, name)
    credential.references = []
    db.flush()  # the old references go before the new ones (unique per credential)
    owner.apply(credential, _vault(), *checked)
    db.commit()
    log.info("replaced the DevOwnerID of owner credential %s", name)
    return jsonify(owner.owner_json(credential))


@bp.delete("/owner-credentials/<name>")
def delete_owner_credential(name):
    db = session()
    begin_write(db)
    db.delete(owner.get(db, name))
    db.commit()
    log.info("deleted owner credential %s", name)
    return "", 204


@bp.get("/aoki")
def aoki_status():
    """Whether the server advertises AOKI over mDNS, and what devices need to onboard with it."""
    settings = _settings()
    truststore = aoki.tls_truststore(settings)
    db = session()
    return jsonify(
        {
            "mdns": mdns.status(settings),
            "owner_credentials": len(db.scalars(select(OwnerCredential.id)).all()),
            "init_path": "/aoki/init/",
            "cmp_path": "/.well-known/cmp/p/.aoki/initialization",
            "tls_truststore_fingerprints_sha256": [x509.fingerprint(c) for c in truststore],
            "agent_wheels": [name for name, _digest, _size in agent.wheels(settings)],
        }
    )
