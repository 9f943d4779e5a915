# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""DevOwnerID credentials (AOKI): the owner certificates the server proves its ownership of devices with.

A DevOwnerID names the IDevIDs it owns in dev-owner: SAN URIs (core aoki.py). Its key signs AOKI
answers, so it is kept like a CA key: encrypted with the vault, never returned by the API.
"""

from __future__ import annotations

from cryptography import x509 as cx509
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import select
from trustpoint_core import aoki, keys, x509
from trustpoint_core.errors import InvalidInput

from ..errors import ApiError
from ..storage.models import OwnerCredential, OwnerReference
from .pki import Signer
from .trust import check_name

KEY_PURPOSE = OwnerCredential.__encrypted__["private_key_encrypted"]
MAX_REFERENCE = 512
MIN_RSA_BITS = 2048


def _certificates(field, pem, required):
    if pem is None and not required:
        return []
    if not isinstance(pem, str):
        raise ApiError(400, "%s must be a string of PEM certificates" % field)
    try:
        certificates = x509.load_certificates(pem)
    except InvalidInput as exc:
        raise ApiError(400, "%s: %s" % (field, exc)) from exc
    if required and len(certificates) != 1:
        raise ApiError(400, "%s must hold exactly one PEM certificate, not %d" % (field, len(certificates)))
    return certificates


def _private_key(pem, certificate):
    if not isinstance(pem, str) or "-----BEGIN" not in pem:
        raise ApiError(400, "private_key must be the DevOwnerID's private key in PEM (unencrypted)")
    try:
        key = keys.load_private_key(pem.encode())
    except InvalidInput as exc:
        raise ApiError(400, "private_key: %s" % exc) from exc
    try:
        aoki.signature_algorithm(key)
    except InvalidInput as exc:
        raise ApiError(400, "private_key: %s" % exc) from exc
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise ApiError(400, "private_key: an RSA DevOwnerID key needs at least %d bits" % MIN_RSA_BITS)
    if not keys.same_public_key(key, certificate.public_key()):
        raise ApiError(400, "private_key is not the key of the certificate")
    return key


def check_devownerid(certificate_pem, private_key_pem, chain_pem=None):
    """(certificate, key, chain, references) of a DevOwnerID to store; ApiError(400) saying what is wrong.

    The AOKI spec's MUSTs, and what devices check: BasicConstraints present and critical, a KeyUsage (if
    any) that allows digitalSignature, valid now, at least one dev-owner: SAN URI, the key that fits the
    certificate; chain, when given, is its issuer chain (each certificate issued by the next).
    """
    (certificate,) = _certificates("certificate", certificate_pem, True)
    key = _private_key(private_key_pem, certificate)
    chain = _certificates("chain", chain_pem, False)
    try:
        constraints = certificate.extensions.get_extension_for_class(cx509.BasicConstraints)
        usage = x509.extension_value(certificate, cx509.KeyUsage)
        references = aoki.owner_references(certificate)
    except cx509.ExtensionNotFound:
        raise ApiError(400, "a DevOwnerID must carry a critical BasicConstraints extension (AOKI spec)") from None
    except InvalidInput as exc:
        raise ApiError(400, "certificate: %s" % exc) from exc
    if not constraints.critical:
        raise ApiError(400, "a DevOwnerID's BasicConstraints extension must be critical (AOKI spec)")
    if usage is not None and not usage.digital_signature:
        raise ApiError(400, "the DevOwnerID's KeyUsage must allow digitalSignature: it signs AOKI answers")
    if not references:
        raise ApiError(
            400,
            "the certificate names no device: a DevOwnerID carries SAN URIs dev-owner:cert:<serial>_<sha256>, "
            "dev-owner:uri:<IDevID URI> or dev-owner:ca:<sha256 of an issuing CA>",
        )
    too_long = [r for r in references if len(r) > MAX_REFERENCE]
    if too_long:
        raise ApiError(400, "a dev-owner: SAN URI is longer than %d characters" % MAX_REFERENCE)
    now = x509.now_utc()
    if not x509.not_before(certificate) <= now <= x509.not_after(certificate):
        raise ApiError(
            400,
            "the DevOwnerID is not valid now (%s to %s)"
            % (x509.summary(certificate)["not_before"], x509.summary(certificate)["not_after"]),
        )
    for child, parent in zip([certificate, *chain], chain):
        if not x509.is_issued_by(child, parent):
            raise ApiError(
                400,
                "chain: %s is not issued by %s"
                % (x509.name_to_string(child.subject), x509.name_to_string(parent.subject)),
            )
    return certificate, key, chain, sorted(set(references))


def apply(credential, vault, certificate, key, chain, references):
    """Store a checked DevOwnerID (check_devownerid) in credential, its key encrypted."""
    credential.certificate_der = x509.certificate_der(certificate)
    credential.chain_pem = x509.certificates_to_pem(chain) if chain else ""
    credential.private_key_encrypted = vault.encrypt(keys.private_key_to_pem(key), KEY_PURPOSE)
    credential.references = [OwnerReference(reference=reference) for reference in references]


def create(db, vault, name, certificate_pem, private_key_pem, chain_pem=None):
    """A new DevOwnerID credential (added, not committed). Call under the write lock."""
    name = check_name("owner credential", name)
    checked = check_devownerid(certificate_pem, private_key_pem, chain_pem)
    if db.scalar(select(OwnerCredential).where(OwnerCredential.name == name)) is not None:
        raise ApiError(409, "owner credential %r already exists" % name)
    credential = OwnerCredential(name=name)
    apply(credential, vault, *checked)
    db.add(credential)
    return credential


def get(db, name):
    credential = db.scalar(select(OwnerCredential).where(OwnerCredential.name == name))
    if credential is None:
        raise ApiError(404, "owner credential %r does not exist" % name)
    return credential


def owner_for(db, idevid, issuing_ca=None):
    """The DevOwnerID credential that owns idevid: one naming the IDevID itself (dev-owner:cert:, then
    dev-owner:uri:), else one naming issuing_ca (dev-owner:ca:, a domain-wide owner); the newest when several
    do. None when no credential owns it."""
    wanted = aoki.idevid_references(idevid)
    if issuing_ca is not None:
        wanted.append(aoki.ca_reference(issuing_ca))
    rows = db.execute(
        select(OwnerReference.reference, OwnerReference.credential_id).where(OwnerReference.reference.in_(wanted))
    ).all()
    if not rows:
        return None
    rank = {reference: position for position, reference in enumerate(wanted)}
    _reference, credential_id = min(rows, key=lambda row: (rank[row[0]], -row[1]))
    return db.get(OwnerCredential, credential_id)


def signer(credential, vault):
    """(private key, certificate, chain) of a credential; the key is decrypted once per process."""
    cached = Signer(credential, vault, KEY_PURPOSE)
    chain = x509.load_certificates(credential.chain_pem) if credential.chain_pem else []
    return cached.private_key, cached.certificate, chain


def owner_json(credential):
    certificate = x509.load_certificate(credential.certificate_der)
    return {
        "name": credential.name,
        "certificate": x509.certificates_to_pem(certificate),
        "chain": credential.chain_pem,
        "references": [r.reference for r in credential.references],
        "key_type": _key_type(certificate.public_key()),
        "signature_algorithm": aoki.signature_algorithm(certificate.public_key()),
        "summary": x509.summary(certificate),
        "created_at": credential.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _key_type(public_key):
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    try:
        return keys.key_type_of(public_key)
    except InvalidInput:
        return type(public_key).__name__
