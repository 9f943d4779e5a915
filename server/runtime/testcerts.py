# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""`trustpoint-server aoki gen-test-certs DIR --devices N`: a manufacturer and an owner PKI for AOKI demos
and tests, in the layout of upstream Trustpoint's `aoki_gen_test_certs`.

    idevid_ca.pem / _pk.pem     the manufacturer's IDevID CA (self-signed)
    idevid_<n>.pem / _pk.pem    IDevID n: subject CN=AOKI device <n>, serialNumber=AOKI-<n>; SAN urn:uuid
    ownerid_ca.pem / _pk.pem    the owner's CA: devices get it as their owner trust anchor
    owner_id.pem / _pk.pem      the DevOwnerID, issued by the owner CA: a CA without pathLen (the spec's
                                SHOULD, for ownership transfer) naming every IDevID (dev-owner:cert: and
                                dev-owner:uri:), valid until 9999-12-31 (the spec's recommendation)
    devices.json                serial number, UUID and file names of each device

Private keys are written 0600; existing files are never overwritten.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid

from cryptography import x509 as cx509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from trustpoint_core import aoki, keys, x509

CA_DAYS = 7300
# IEEE 802.1AR and the AOKI spec: IDevIDs and DevOwnerIDs without a well-defined end of life.
NEVER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)
MAX_DEVICES = 1000  # every IDevID adds two SAN URIs to the DevOwnerID
KEY_TYPES = (*keys.KEY_TYPES, "ed25519")


def _name(common_name, **extra):
    attributes = [cx509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if "serial" in extra:
        attributes.append(cx509.NameAttribute(NameOID.SERIAL_NUMBER, extra["serial"]))
    if "pseudonym" in extra:
        attributes.append(cx509.NameAttribute(NameOID.PSEUDONYM, extra["pseudonym"]))
    attributes.append(cx509.NameAttribute(NameOID.ORGANIZATION_NAME, extra.get("organization", "Trustpoint")))
    return cx509.Name(attributes)


def _key(key_type):
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return keys.generate_private_key(key_type)


def _sign(builder, issuer_key):
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else keys.hash_for(issuer_key)
    return builder.sign(issuer_key, algorithm)


def _certificate(subject, public_key, issuer_cert, issuer_key, not_after, ca, san=None, now=None):
    now = now or x509.now_utc()
    issuer_name = issuer_cert.subject if issuer_cert is not None else subject
    issuer_public = issuer_cert.public_key() if issuer_cert is not None else public_key
    builder = (
        cx509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(cx509.random_serial_number())
        .not_valid_before(now - x509.BACKDATE)
        .not_valid_after(not_after)
        .add_extension(cx509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            cx509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(cx509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(cx509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
    )
    if san:
        builder = builder.add_extension(cx509.SubjectAlternativeName(san), critical=False)
    return builder


def _write(directory, name, data, private=False):
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data if isinstance(data, bytes) else data.encode())
    return path


def _pair(directory, stem, certificate, key):
    _write(directory, stem + ".pem", x509.certificates_to_pem(certificate))
    _write(directory, stem + "_pk.pem", keys.private_key_to_pem(key), private=True)


def generate(directory, devices, key_type="ecdsa-p256", owner_key_type=None, serial_prefix="AOKI-"):
    """Write the test set to directory (created 0700); returns the devices.json content.

    Raises ValueError when an argument is wrong or a file it would write exists already.
    """
    if not 1 <= devices <= MAX_DEVICES:
        raise ValueError("--devices must be 1 to %d" % MAX_DEVICES)
    for kind in (key_type, owner_key_type or key_type):
        if kind not in KEY_TYPES:
            raise ValueError("unknown key type %r; use one of %s" % (kind, ", ".join(KEY_TYPES)))
    width = max(4, len(str(devices)))
    stems = ["idevid_ca", "ownerid_ca", "owner_id"] + ["idevid_%0*d" % (width, n) for n in range(1, devices + 1)]
    os.makedirs(directory, mode=0o700, exist_ok=True)
    taken = [
        stem + suffix
        for stem in stems
        for suffix in (".pem", "_pk.pem")
        if os.path.lexists(os.path.join(directory, stem + suffix))
    ]
    if taken or os.path.lexists(os.path.join(directory, "devices.json")):
        first = (taken or ["devices.json"])[0]
        raise ValueError("%s already holds a test set (%s); use an empty directory" % (directory, first))

    now = x509.now_utc()
    ca_end = now + datetime.timedelta(days=CA_DAYS)
    idevid_ca_key = _key(key_type)
    idevid_ca = _sign(
        _certificate(
            _name("IDevID Test Root CA", organization="Trustpoint Test Manufacturer"),
            idevid_ca_key.public_key(),
            None,
            None,
            ca_end,
            True,
            now=now,
        ),
        idevid_ca_key,
    )
    owner_ca_key = _key(owner_key_type or key_type)
    owner_ca = _sign(
        _certificate(_name("Owner Test Root CA"), owner_ca_key.public_key(), None, None, ca_end, True, now=now),
        owner_ca_key,
    )
    records, references, idevids = [], [], []
    for n in range(1, devices + 1):
        stem = "idevid_%0*d" % (width, n)
        serial = "%s%0*d" % (serial_prefix, width, n)
        device_uuid = str(uuid.uuid4())
        key = _key(key_type)
        certificate = _sign(
            _certificate(
                _name("AOKI device %d" % n, serial=serial),
                key.public_key(),
                idevid_ca,
                idevid_ca_key,
                NEVER,
                False,
                [cx509.UniformResourceIdentifier("urn:uuid:" + device_uuid)],
                now=now,
            ),
            idevid_ca_key,
        )
        idevids.append((stem, certificate, key))
        references += [aoki.cert_reference(certificate), *aoki.uri_references(certificate)]
        records.append(
            {
                "serial_number": serial,
                "uuid": device_uuid,
                "certificate": stem + ".pem",
                "private_key": stem + "_pk.pem",
            }
        )
    owner_key = _key(owner_key_type or key_type)
    owner_id = _sign(
        _certificate(
            _name("DevOwnerID Test", pseudonym="DevOwnerID"),
            owner_key.public_key(),
            owner_ca,
            owner_ca_key,
            NEVER,
            True,
            [cx509.UniformResourceIdentifier(r) for r in references],
            now=now,
        ),
        owner_ca_key,
    )

    _pair(directory, "idevid_ca", idevid_ca, idevid_ca_key)
    _pair(directory, "ownerid_ca", owner_ca, owner_ca_key)
    _pair(directory, "owner_id", owner_id, owner_key)
    for stem, certificate, key in idevids:
        _pair(directory, stem, certificate, key)
    manifest = {
        "idevid_ca": "idevid_ca.pem",
        "owner_ca": "ownerid_ca.pem",
        "owner_id": "owner_id.pem",
        "owner_id_key": "owner_id_pk.pem",
        "devices": records,
    }
    _write(directory, "devices.json", json.dumps(manifest, indent=2) + "\n")
    return manifest
