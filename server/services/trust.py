# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Truststores and DevID registrations: which IDevIDs the server admits, and into which domain."""

from __future__ import annotations

import functools
import re

import re2
from sqlalchemy import select
from trustpoint_core import x509
from trustpoint_core.errors import InvalidInput

from ..errors import ApiError
from ..storage.db import begin_write, contains
from ..storage.models import Device, DevIdRegistration, Truststore
from . import pki

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
USAGES = ("idevid", "tls", "devownerid")
MAX_PATTERN = 512


def check_name(kind, name):
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ApiError(
            400, "%s name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit" % kind
        )
    return name


def parse_certificates(pem):
    """The certificates of a PEM bundle, normalised to PEM; 400 when there are none or one is unreadable."""
    if not isinstance(pem, str):
        raise ApiError(400, "certificates must be a string of PEM certificates")
    try:
        certificates = x509.load_certificates(pem.encode())
    except InvalidInput as exc:
        raise ApiError(400, "certificates: %s" % exc) from exc
    if not certificates or "-----BEGIN" not in pem:
        raise ApiError(400, "certificates must hold at least one PEM certificate")
    return x509.certificates_to_pem(certificates)


def check_usage(usage):
    if usage not in USAGES:
        raise ApiError(400, "usage must be one of %s" % ", ".join(USAGES))
    return usage


def truststores_query(search=None, usage=None):
    """Truststores by name, optionally those whose name contains search, of one usage."""
    query = select(Truststore).order_by(Truststore.name)
    if search:
        query = query.where(contains(Truststore.name, search))
    if usage:
        query = query.where(Truststore.usage == usage)
    return query


def create_truststore(db, name, usage, certificates):
    """Add a truststore after checking every field; 409 when the name is taken. The caller commits."""
    truststore = Truststore(
        name=check_name("truststore", name), usage=check_usage(usage), certificates_pem=parse_certificates(certificates)
    )
    begin_write(db)
    if db.scalar(select(Truststore).where(Truststore.name == truststore.name)) is not None:
        raise ApiError(409, "truststore %r already exists" % truststore.name)
    db.add(truststore)
    return truststore


def update_truststore(truststore, fields):
    """Set the usage and/or certificates that fields give, each checked. The caller holds the write lock and
    commits."""
    if "usage" in fields:
        truststore.usage = check_usage(fields["usage"])
    if "certificates" in fields:
        truststore.certificates_pem = parse_certificates(fields["certificates"])
    return truststore


def get_truststore(db, name):
    truststore = db.scalar(select(Truststore).where(Truststore.name == name))
    if truststore is None:
        raise ApiError(404, "truststore %r does not exist" % name)
    return truststore


def delete_truststore(db, truststore):
    users = truststore_users(db, truststore)
    if users:
        raise ApiError(409, "truststore %r is used by DevID registration(s) %s" % (truststore.name, ", ".join(users)))
    db.delete(truststore)


def truststore_users(db, truststore):
    """Names of the DevID registrations that use truststore."""
    query = select(DevIdRegistration.name).where(DevIdRegistration.truststore_id == truststore.id)
    return db.scalars(query.order_by(DevIdRegistration.name)).all()


def truststore_json(truststore):
    certificates = x509.load_certificates(truststore.certificates_pem.encode())
    return {
        "name": truststore.name,
        "usage": truststore.usage,
        "certificates": truststore.certificates_pem,
        "subjects": [x509.name_to_string(c.subject) for c in certificates],
        "fingerprints_sha256": [x509.fingerprint(c) for c in certificates],
        "created_at": truststore.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class PatternError(ValueError):
    """A pattern the linear-time engine does not take; the message says why."""


def compiled_pattern(pattern):
    """The DevID pattern compiled for RE2, which matches in time linear in the identifier's length: no
    pattern, however nested its quantifiers, can freeze a worker on a crafted serial number. RE2 has no
    backreferences and no lookaround; patterns with them are refused (PatternError)."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise PatternError("a pattern is a regular expression of 1-%d characters" % MAX_PATTERN)
    return _compile(pattern)


def pattern_matches(pattern, value):
    """Whether a stored DevID pattern fully matches value, in linear time; a pattern RE2 refuses matches nothing."""
    try:
        return compiled_pattern(pattern).fullmatch(value) is not None
    except PatternError:
        return False


@functools.lru_cache(maxsize=1024)
def _compile(pattern):
    options = re2.Options()
    options.log_errors = False  # the error comes back as PatternError, not as a line on stderr
    options.never_capture = True
    options.max_mem = 1 << 20  # a program larger than this is refused: patterns are short
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(
            "%s (patterns use RE2 syntax, matched in linear time: no backreferences, no lookaround)" % reason
        ) from None


def check_pattern(pattern):
    try:
        compiled_pattern(pattern)
    except PatternError as exc:
        raise ApiError(400, "pattern is not accepted: %s" % exc) from exc
    return pattern


def pattern_problem(pattern):
    """Why a stored pattern cannot be used (one an earlier version accepted), or None."""
    try:
        compiled_pattern(pattern)
    except PatternError as exc:
        return str(exc)
    return None


def idevid_truststore(db, name):
    truststore = get_truststore(db, name) if isinstance(name, str) else None
    if truststore is None:
        raise ApiError(400, "truststore must be the name of a truststore")
    if truststore.usage != "idevid":
        raise ApiError(
            400, "truststore %r has usage %s; a DevID registration needs one of usage idevid" % (name, truststore.usage)
        )
    return truststore


REGISTRATION_FIELDS = ("name", "domain", "truststore", "pattern", "auto_create_devices")


def registrations_query(search=None, domain=None):
    """DevID registrations by name; search matches the name or the pattern; domain: a Domain."""
    query = select(DevIdRegistration).order_by(DevIdRegistration.name)
    if search:
        query = query.where(contains(DevIdRegistration.name, search) | contains(DevIdRegistration.pattern, search))
    if domain is not None:
        query = query.where(DevIdRegistration.domain_id == domain.id)
    return query


def apply_registration(db, registration, fields):
    """Set the fields given (domain, truststore, pattern, auto_create_devices), each checked."""
    if "domain" in fields:
        if not isinstance(fields["domain"], str):
            raise ApiError(400, "domain must be a domain name")
        registration.domain = pki.get_domain(db, fields["domain"])
    if "truststore" in fields:
        registration.truststore = idevid_truststore(db, fields["truststore"])
    if "pattern" in fields:
        registration.pattern = check_pattern(fields["pattern"])
    if "auto_create_devices" in fields:
        if not isinstance(fields["auto_create_devices"], bool):
            raise ApiError(400, "auto_create_devices must be true or false")
        registration.auto_create_devices = fields["auto_create_devices"]
    return registration


def create_registration(db, fields):
    """Add a DevID registration from fields (name, domain, truststore, pattern required). The caller commits."""
    missing = [f for f in ("name", "domain", "truststore", "pattern") if f not in fields]
    if missing:
        raise ApiError(400, "field(s) required: %s" % ", ".join(missing))
    begin_write(db)
    name = check_name("DevID registration", fields["name"])
    if db.scalar(select(DevIdRegistration).where(DevIdRegistration.name == name)) is not None:
        raise ApiError(409, "DevID registration %r already exists" % name)
    registration = DevIdRegistration(name=name, auto_create_devices=False)
    apply_registration(db, registration, fields)
    db.add(registration)
    return registration


def get_registration(db, name):
    registration = db.scalar(select(DevIdRegistration).where(DevIdRegistration.name == name))
    if registration is None:
        raise ApiError(404, "DevID registration %r does not exist" % name)
    return registration


def delete_registration(db, registration):
    """Delete a DevID registration; refused while devices belong to it (their IDevIDs would then be admitted by
    whichever other registration matches)."""
    bound = db.scalars(
        select(Device.name).where(Device.devid_registration_id == registration.id).order_by(Device.name).limit(6)
    ).all()
    if bound:
        raise ApiError(
            409,
            "DevID registration %r admitted device(s) %s%s; delete them, or bind them to another registration "
            '(PATCH /api/v1/devices/<id> {"devid_registration": ...}), first'
            % (registration.name, ", ".join(bound[:5]), " and more" if len(bound) > 5 else ""),
        )
    db.delete(registration)


def registration_json(registration):
    return {
        "name": registration.name,
        "domain": registration.domain.name,
        "truststore": registration.truststore.name,
        "pattern": registration.pattern,
        # A pattern an earlier version accepted that this one cannot match with: it admits nothing until changed.
        "pattern_error": pattern_problem(registration.pattern),
        "auto_create_devices": registration.auto_create_devices,
        "created_at": registration.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
