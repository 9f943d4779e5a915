# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Truststores and DevID registrations: which IDevIDs the server admits, and into which domain."""

from __future__ import annotations

import re

from sqlalchemy import select
from trustpoint_core import x509
from trustpoint_core.errors import InvalidInput

from ..errors import ApiError
from ..storage.models import DevIdRegistration, Truststore

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


def get_truststore(db, name):
    truststore = db.scalar(select(Truststore).where(Truststore.name == name))
    if truststore is None:
        raise ApiError(404, "truststore %r does not exist" % name)
    return truststore


def delete_truststore(db, truststore):
    users = db.scalars(select(DevIdRegistration.name).where(DevIdRegistration.truststore_id == truststore.id)).all()
    if users:
        raise ApiError(409, "truststore %r is used by DevID registration(s) %s" % (truststore.name, ", ".join(users)))
    db.delete(truststore)


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


def check_pattern(pattern):
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise ApiError(400, "pattern must be a regular expression of 1-%d characters" % MAX_PATTERN)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ApiError(400, "pattern is not a valid regular expression: %s" % exc) from exc
    return pattern


def idevid_truststore(db, name):
    truststore = get_truststore(db, name) if isinstance(name, str) else None
    if truststore is None:
        raise ApiError(400, "truststore must be the name of a truststore")
    if truststore.usage != "idevid":
        raise ApiError(
            400, "truststore %r has usage %s; a DevID registration needs one of usage idevid" % (name, truststore.usage)
        )
    return truststore


def get_registration(db, name):
    registration = db.scalar(select(DevIdRegistration).where(DevIdRegistration.name == name))
    if registration is None:
        raise ApiError(404, "DevID registration %r does not exist" % name)
    return registration


def registration_json(registration):
    return {
        "name": registration.name,
        "domain": registration.domain.name,
        "truststore": registration.truststore.name,
        "pattern": registration.pattern,
        "auto_create_devices": registration.auto_create_devices,
        "created_at": registration.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
