# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers of the CMP server interop matrix and negative tests.

Test PKIs for IDevIDs, the `openssl cmp` command lines of each operation, the REST set-up of
truststores and DevID registrations, and read-only looks into the server's database to prove that a
rejected request changed nothing.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import http, openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_alt_modules import rfc2986, rfc5280
from trustpoint_core.cmp_message import STATUS_REJECTION, CmpMessage, Header, encode_message, error_content
from trustpoint_core.cmp_protection import PasswordBasedMac, SignatureProtection

CMP_CONTENT_TYPE = "application/pkixcmp"
DOMAIN_SUBJECT = "/CN=Trustpoint Domain Credential"
OPERATIONS = (
    "initialization",
    "certification",
    "keyupdate",
    "pkcs10",
    "revocation",
    "getcacerts",
    "getrootupdate",
    "getcertreqtemplate",
    "getcrls",
)
# openssl -revreason code -> the reason name the server records and its CRL states.
REASONS = {
    -1: "unspecified",
    0: "unspecified",
    1: "keyCompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
}


# --- keys and certificates -------------------------------------------------------------------------


def new_private_key(kind="ec"):
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(kind)


def _hash_for(key):
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


class Credential:
    """A certificate, its private key and the certificates between it and its root (issuer first)."""

    def __init__(self, certificate, key, chain=()):
        self.certificate = certificate
        self.key = key
        self.chain = list(chain)

    def write(self, directory, stem):
        """(cert, key, chain) PEM files in directory; chain is empty when the issuer is the root."""
        cert_path = write_pem(directory / ("%s.pem" % stem), [self.certificate])
        key_path = write_key(directory / ("%s.key" % stem), self.key)
        chain_path = write_pem(directory / ("%s-chain.pem" % stem), self.chain)
        return cert_path, key_path, chain_path


def _name(common_name=None, serial_number=None, organization="Test Manufacturer"):
    attributes = []
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    if serial_number:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def make_ca(common_name, issuer=None, key_kind="ec", serial_number=None):
    """A CA certificate (critical BasicConstraints, SKI, AKI), self-signed or below issuer; serial_number: a
    subject serialNumber (a CA posing as an IDevID)."""
    key = new_private_key(key_kind)
    subject = _name(common_name, serial_number)
    now = datetime.datetime.now(datetime.timezone.utc)
    signer_key = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    )
    certificate = builder.sign(signer_key, _hash_for(signer_key))
    return Credential(certificate, key, _chain_below_root(issuer))


def _chain_below_root(issuer):
    """The chain of a certificate issued by issuer: issuer first, up to but without the root."""
    if issuer is None:
        return []
    own = issuer.certificate
    return ([] if own.issuer == own.subject else [own]) + issuer.chain


def make_end_entity(
    issuer,
    common_name="Test Device",
    serial_number=None,
    san_uris=(),
    key_kind="ec",
    days=365,
    more_serial_numbers=(),
):
    """An end-entity certificate (an IDevID when issuer is a manufacturer CA), valid for days (negative:
    expired). Its chain lists the intermediates up to, not including, the root. more_serial_numbers
    adds serialNumber attributes after the first (a malformed IDevID)."""
    key = new_private_key(key_kind)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_after = now + datetime.timedelta(days=days)
    subject = _name(common_name, serial_number)
    if more_serial_numbers:
        extra = [x509.NameAttribute(NameOID.SERIAL_NUMBER, value) for value in more_serial_numbers]
        subject = x509.Name(list(subject) + extra)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now - datetime.timedelta(hours=1), not_after - datetime.timedelta(days=30)))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, True, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if san_uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in san_uris]), critical=False
        )
    certificate = builder.sign(issuer.key, _hash_for(issuer.key))
    return Credential(certificate, key, _chain_below_root(issuer))


# A subjectAltName extension value whose iPAddress has 3 bytes (an address has 4 or 16).
SAN_WITH_3_BYTE_IP = bytes.fromhex("30058703010203")


def malformed_csr(problem, common_name="malformed.example"):
    """A validly signed CSR (cryptography object) whose extensions are malformed: "duplicate-san" (the
    subjectAltName extension twice) or "san-ip-3-bytes"."""
    key = new_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if problem == "san-ip-3-bytes":
        san = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, SAN_WITH_3_BYTE_IP)
        return builder.add_extension(san, critical=False).sign(key, hashes.SHA256())
    assert problem == "duplicate-san", problem
    # cryptography refuses to build a duplicate extension: add the second one to the DER and sign again.
    csr = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), critical=False)
    csr = csr.sign(key, hashes.SHA256())
    request = decoder.decode(csr.public_bytes(serialization.Encoding.DER), asn1Spec=rfc2986.CertificationRequest())[0]
    info = request["certificationRequestInfo"]
    extensions = decoder.decode(bytes(info["attributes"][0]["values"][0]), asn1Spec=rfc5280.Extensions())[0]
    extensions.append(extensions[0])
    info["attributes"][0]["values"][0] = univ.Any(encoder.encode(extensions))
    request["signature"] = univ.BitString.fromOctetString(key.sign(encoder.encode(info), ec.ECDSA(hashes.SHA256())))
    return x509.load_der_x509_csr(encoder.encode(request))


UNREADABLE_CSRS = ("unknown-key-algorithm", "unsupported-curve", "integer-cn")


def unreadable_csr(problem, common_name="unreadable.example"):
    """A signed CSR (cryptography object, parsed lazily) whose key or subject cryptography cannot read:
    "unknown-key-algorithm" (OID 1.2.3.4), "unsupported-curve" (secp112r1) or "integer-cn" (a commonName
    encoded as an INTEGER)."""
    key = new_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    request = decoder.decode(csr.public_bytes(serialization.Encoding.DER), asn1Spec=rfc2986.CertificationRequest())[0]
    info = request["certificationRequestInfo"]
    algorithm = info["subjectPKInfo"]["algorithm"]
    if problem == "unknown-key-algorithm":
        algorithm["algorithm"] = univ.ObjectIdentifier("1.2.3.4")
    elif problem == "unsupported-curve":
        algorithm["parameters"] = univ.Any(encoder.encode(univ.ObjectIdentifier("1.3.132.0.6")))
    else:
        assert problem == "integer-cn", problem
        info["subject"]["rdnSequence"][0][0]["value"] = univ.Any(encoder.encode(univ.Integer(7)))
    request["signature"] = univ.BitString.fromOctetString(key.sign(encoder.encode(info), ec.ECDSA(hashes.SHA256())))
    return x509.load_der_x509_csr(encoder.encode(request))


def with_malformed_san(key, common_name="malformed"):
    """A self-signed end-entity certificate of key whose subjectAltName has a 3-byte iPAddress."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, SAN_WITH_3_BYTE_IP), False)
    )
    return builder.sign(key, _hash_for(key))


def write_pem(path, certificates):
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


def write_key(path, key):
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def load_pem(path):
    return x509.load_pem_x509_certificates(path.read_bytes())


def load_key(path):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def serial_hex(certificate):
    return format(certificate.serial_number, "x")


def common_name_of(certificate):
    return certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def extension(certificate, oid):
    try:
        return certificate.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def crl_url_of(certificate):
    """The URL of the certificate's (single) CRL distribution point."""
    points = extension(certificate, ExtensionOID.CRL_DISTRIBUTION_POINTS)
    assert points is not None, "the certificate names no CRL distribution point"
    [point] = points.value
    [name] = point.full_name
    return name.value


# --- the server: URLs, API set-up, database --------------------------------------------------------


def cmp_url(server, domain, operation, profile=None):
    """The URL of a CMP operation of domain (and profile); operation None: the label-only URL, where one-URL
    clients send every message (dispatched by the body)."""
    label = domain + ("~" + profile if profile else "")
    if operation is None:
        return "%s/.well-known/cmp/p/%s" % (server.cmp_url, label)
    return "%s/.well-known/cmp/p/%s/%s" % (server.cmp_url, label, operation)


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def domain_chain(server, domain):
    """(issuing CA, root CA) of a domain, from the REST API."""
    status, body = server.api("GET", "/domains/%s" % domain)
    assert status == 200, body
    issuing, root = x509.load_pem_x509_certificates(body["ca_chain"].encode())
    return issuing, root


def create_truststore(server, certificates, usage="idevid"):
    name = unique("ts")
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates).decode()
    status, body = server.api("POST", "/truststores", {"name": name, "usage": usage, "certificates": pem})
    assert status == 201, body
    return name


def create_registration(server, domain, truststore, pattern, auto_create=True):
    name = unique("reg")
    payload = {
        "name": name,
        "domain": domain,
        "truststore": truststore,
        "pattern": pattern,
        "auto_create_devices": auto_create,
    }
    status, body = server.api("POST", "/devid-registrations", payload)
    assert status == 201, body
    return name


def register_device(server, domain, method="cmp_idevid", serial_number=None):
    payload = {"name": unique("dev"), "domain": domain, "onboarding_method": method}
    if serial_number is not None:
        payload["serial_number"] = serial_number
    status, body = server.api("POST", "/devices", payload)
    assert status == 201, body
    return body["device"], body.get("shared_secret")


def query(server, sql, parameters=()):
    """Rows of a read-only query on the server's SQLite database."""
    db = sqlite3.connect("file:%s?mode=ro" % (server.data_dir / "trustpoint.db"), uri=True)
    try:
        return db.execute(sql, parameters).fetchall()
    finally:
        db.close()


def execute(server, sql, parameters=()):
    """A write to the running server's SQLite database, as time passing (or a concurrent request) would make."""
    db = sqlite3.connect(str(server.data_dir / "trustpoint.db"), timeout=15)
    try:
        with db:
            db.execute(sql, parameters)
    finally:
        db.close()


def end_retry_window(server, device_id):
    """The window in which the device's used one-time secret (or password) still works is over."""
    execute(server, "UPDATE device SET secret_retry_until = '2000-01-01 00:00:00' WHERE id = ?", (device_id,))


def end_renewal_grace(server, certificate):
    """The grace period in which a renewed certificate still renews is over (its successor was never used)."""
    execute(
        server,
        "UPDATE issued_certificate SET superseded_at = '2000-01-01 00:00:00' WHERE fingerprint_sha256 = ?",
        (certificate.fingerprint(hashes.SHA256()).hex(),),
    )


def while_writes_wait(server, send, *changes):
    """Run send() (one request to the server) while a concurrent writer holds the database's write lock.

    The test takes the flock of server/storage/db.py's SqliteWriteLock, so the request, once past its checks,
    waits at begin_write (seen in /proc/locks); then the changes ((sql, parameters) pairs) commit as a
    concurrent request's writes would, and the lock is released. Returns send()'s result.
    """
    outcome = []

    def run():
        try:
            outcome.append(send())
        except BaseException as exc:  # re-raised in the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=run)
    fd = os.open(server.data_dir / "trustpoint.db.writelock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiter = re.compile(r"-> FLOCK\s+ADVISORY\s+WRITE\s+\d+\s+[0-9a-f]+:[0-9a-f]+:%d\s" % os.fstat(fd).st_ino)
        thread.start()
        deadline = time.monotonic() + 30
        while not waiter.search(Path("/proc/locks").read_text()):
            assert thread.is_alive(), "the request ended without waiting for the write lock: %r" % outcome
            assert time.monotonic() < deadline, "the request did not reach the write lock"
            time.sleep(0.02)
        db = sqlite3.connect(str(server.data_dir / "trustpoint.db"), timeout=15)
        try:
            with db:
                for sql, parameters in changes:
                    db.execute(sql, parameters)
        finally:
            db.close()
    finally:
        os.close(fd)
    thread.join(60)
    assert outcome, "the request did not end"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def revoke_directly(certificate, reason="keyCompromise"):
    """The write of a concurrent revocation of certificate, for while_writes_wait()."""
    return (
        "UPDATE issued_certificate SET status = 'revoked', revocation_reason = ?, revoked_at = CURRENT_TIMESTAMP"
        " WHERE fingerprint_sha256 = ?",
        (reason, certificate.fingerprint(hashes.SHA256()).hex()),
    )


def register_directly(domain_name, name, method, idevid_fingerprint=None):
    """The write of a concurrent registration of a device, for while_writes_wait()."""
    return (
        "INSERT INTO device (name, domain_id, onboarding_method, status, idevid_fingerprint, created_at)"
        " VALUES (?, (SELECT id FROM domain WHERE name = ?), ?, 'pending', ?, CURRENT_TIMESTAMP)",
        (name, domain_name, method, idevid_fingerprint),
    )


def certificates_of(server, device_id):
    """(serial, profile, status, revocation reason) of every certificate issued to a device."""
    return query(
        server,
        "SELECT serial_number, profile, status, revocation_reason FROM issued_certificate"
        " WHERE device_id = ? ORDER BY id",
        (device_id,),
    )


def certificate_status(server, certificate):
    """(status, revocation reason) of the record of an issued certificate."""
    rows = query(
        server,
        "SELECT status, revocation_reason FROM issued_certificate WHERE fingerprint_sha256 = ?",
        (certificate.fingerprint(hashes.SHA256()).hex(),),
    )
    assert len(rows) == 1, rows
    return rows[0]


def totals(server):
    """How many devices, certificate records and CMP transactions the server holds."""
    return tuple(
        query(server, "SELECT COUNT(*) FROM %s" % table)[0][0]  # noqa: S608 (fixed table names)
        for table in ("device", "issued_certificate", "cmp_transaction")
    )


def snapshot(server, *device_ids):
    """Everything a rejected request must leave unchanged: the devices as the API shows them, their
    certificate records and the server-wide counts. (A failed authentication is counted against the
    device's secret, by a background writer: test_auth_limits.py checks that count.)"""
    uncounted = ("failed_authentications", "secret_locked_at")
    return (
        [{k: v for k, v in server.device(device_id).items() if k not in uncounted} for device_id in device_ids],
        [certificates_of(server, device_id) for device_id in device_ids],
        totals(server),
    )


# --- openssl cmp -----------------------------------------------------------------------------------


def run_cmp(*args, cwd=None):
    """`openssl cmp` with args; (returncode, combined output)."""
    result = openssl("cmp", *[str(a) for a in args], check=False, cwd=str(cwd) if cwd else None)
    return result.returncode, result.stdout + result.stderr


def assert_cmp_ok(returncode, output):
    assert returncode == 0, output


def assert_rejected(returncode, output, fail_info):
    """The client failed and printed exactly this PKIFailureInfo from the server."""
    assert returncode != 0, output
    found = re.findall(r"PKIFailureInfo: ([^;]*);", output)
    assert found, output
    assert [f.strip() for f in found[0].split(",")] == [fail_info], output


def new_key_file(path, kind="ec"):
    return write_key(path, new_private_key(kind))


# The names the interop and negative tests ask for in application certificates: their domains allow them to
# every device (test_issuance_policy.py checks the names policy itself).
TEST_APP_NAMES = [
    "DNS:*.example",
    "IP:127.0.0.1",
    "IP:192.0.2.0/24",
    "URI:urn:example:*",
    "CN:x",
    "CN:pss",
    "CN:not a host name",
]


class PkiDomain:
    """A fresh domain and its CA certificates, written to files for openssl; its devices may have the
    TEST_APP_NAMES unless allowed_names says otherwise. label_only: url() names no operation (a one-URL client)."""

    def __init__(self, server, workdir, label_only=False, **fields):
        self.server = server
        self.workdir = workdir
        fields.setdefault("allowed_names", TEST_APP_NAMES)
        self.label_only = label_only
        self.name = server.create_domain(**fields)["name"]
        self.issuing, self.root = domain_chain(server, self.name)
        self.root_path = write_pem(workdir / ("%s-root.pem" % self.name), [self.root])
        self.issuing_path = write_pem(workdir / ("%s-issuing.pem" % self.name), [self.issuing])

    def url(self, operation, profile=None):
        return cmp_url(self.server, self.name, None if self.label_only else operation, profile)


class Enrolled:
    """A certificate the server issued to a device, with its key, as files and as objects."""

    def __init__(self, device, cert_path, key_path, chain_path):
        self.device = device
        self.cert_path = cert_path
        self.key_path = key_path
        self.chain_path = chain_path

    @property
    def certificate(self):
        return load_pem(self.cert_path)[0]

    @property
    def id(self):
        return self.device["id"]

    def credential(self):
        return load_credential(self.cert_path, self.key_path, self.chain_path)

    def signer_args(self, domain):
        """openssl options: sign with this certificate, trust the domain root for responses."""
        return signer_args(self.cert_path, self.key_path, domain.root_path, self.chain_path)


def enroll_with_secret(server, domain, stem="cred", implicit=True, device=None, secret=None, key_kind="ec"):
    """Onboard a device (a new one unless given) of a PkiDomain with `openssl cmp -cmd ir` and its
    shared secret; returns an Enrolled."""
    if device is None:
        device, secret = server.create_device(domain.name)
    workdir = domain.workdir
    key = new_key_file(workdir / ("%s.key" % stem), key_kind)
    cert = workdir / ("%s.pem" % stem)
    chain = workdir / ("%s-chain.pem" % stem)
    args = ["-cmd", "ir", "-server", domain.url("initialization"), "-ref", device["id"]]
    args += ["-secret", "pass:" + secret, "-subject", DOMAIN_SUBJECT, "-newkey", key]
    args += ["-certout", cert, "-chainout", chain]
    if implicit:
        args.append("-implicit_confirm")
    assert_cmp_ok(*run_cmp(*args, cwd=workdir))
    return Enrolled(device, cert, key, chain)


@pytest.fixture
def domain(server, workdir):
    """A PkiDomain of the session server, its files in the test's workdir (the CMP conformance, negative and
    matrix tests assign this fixture; the matrix's own `domain` runs it at two URLs)."""
    return PkiDomain(server, workdir)


@pytest.fixture
def onboarded(server, domain):
    """A device of the domain holding a domain credential (ir with its shared secret)."""
    return enroll_with_secret(server, domain)


def legacy_url(server, domain):
    """The initialization URL of the user docs' recipe (the upstream path) for domain (a name)."""
    return "%s/.well-known/cmp/initialization/%s/" % (server.cmp_url, domain)


def openssl_key_file(path, key_type="ecdsa-p256"):
    """Generate a device key with the openssl CLI, as a device would."""
    if key_type.startswith("ecdsa-"):
        curve = {"ecdsa-p256": "P-256", "ecdsa-p384": "P-384"}[key_type]
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:" + curve, "-out", str(path))
    else:
        bits = key_type.split("-")[1]
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + bits, "-out", str(path))
    return path


def cmp_ir(url, ref, secret, workdir, *extra, key=None):
    """Run the user docs' `openssl cmp -cmd ir` recipe unchanged (plus extra options) at url.

    Returns (returncode, combined output); cert.pem and chain.pem land in workdir (key.pem too, unless key is given).
    """
    key = key or openssl_key_file(workdir / "key.pem")
    for name in ("cert.pem", "chain.pem"):
        if (workdir / name).exists():
            (workdir / name).unlink()
    return run_cmp(
        "-cmd", "ir", "-server", url, "-ref", ref, "-secret", "pass:" + secret, "-subject", DOMAIN_SUBJECT,
        "-newkey", key, "-certout", workdir / "cert.pem", "-chainout", workdir / "chain.pem", *extra, cwd=workdir,
    )  # fmt: skip


def enroll_application(domain, signer, profile, stem, subject="/CN=app.example", sans=None, key_kind="ec"):
    """An application certificate of profile for signer's device (cr, implicit confirm); an Enrolled."""
    workdir = domain.workdir
    key = new_key_file(workdir / ("%s.key" % stem), key_kind)
    cert = workdir / ("%s.pem" % stem)
    chain = workdir / ("%s-chain.pem" % stem)
    args = ["-cmd", "cr", "-server", domain.url("certification", profile), *signer.signer_args(domain)]
    args += ["-subject", subject, "-newkey", key, "-certout", cert, "-chainout", chain, "-implicit_confirm"]
    if sans:
        args += ["-sans", sans]
    assert_cmp_ok(*run_cmp(*args, cwd=workdir))
    return Enrolled(signer.device, cert, key, chain)


def signer_args(cert, key, root, chain=None):
    """Signature protection with cert/key; responses verified against the domain root."""
    args = ["-cert", cert, "-key", key, "-trusted", root]
    if chain is not None and chain.stat().st_size:
        args += ["-extracerts", chain]
    return args


def confirm_args(mode):
    return ["-implicit_confirm"] if mode == "implicit" else []


def assert_confirm_exchange(output, mode, response="IP"):
    """The transcript shows the confirmation the mode asked for."""
    assert "received %s" % response in output, output
    if mode == "implicit":
        assert "CERTCONF" not in output, output
    else:
        assert "sending CERTCONF" in output and "received PKICONF" in output, output


def openssl_verify(root_path, cert_path, untrusted=None, crl=None, purpose=None):
    args = ["verify", "-no-CApath", "-no-CAstore", "-x509_strict", "-CAfile", str(root_path)]
    if untrusted is not None:
        args += ["-untrusted", str(untrusted)]
    if purpose is not None:
        args += ["-purpose", purpose]
    if crl is not None:
        args += ["-crl_check", "-CRLfile", str(crl)]
    return openssl(*args, str(cert_path), check=False)


def fetch_crl(certificate):
    """The DER CRL at the certificate's distribution point."""
    status, headers, body = http("GET", crl_url_of(certificate))
    assert status == 200, (status, body[:200])
    assert headers.get("Content-Type") == "application/pkix-crl"
    return x509.load_der_x509_crl(body)


# --- messages built with the core ------------------------------------------------------------------


def post_cmp(url, der, content_type=CMP_CONTENT_TYPE):
    """POST bytes; the answer must be a PKIMessage with HTTP 200 and the exact Content-Type."""
    status, headers, body = http("POST", url, der, {"Content-Type": content_type})
    assert status == 200, (status, body[:300])
    assert headers.get("Content-Type") == CMP_CONTENT_TYPE
    return CmpMessage.decode(body)


def error_of(message):
    """The failInfo names and text of an error message."""
    assert message.body_type == "error", message.body_type
    status, fail_info, text = error_content(message)
    assert status == STATUS_REJECTION
    return fail_info, text


def subject_name(text="Trustpoint Domain Credential"):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def header_for(sender=None, **fields):
    fields.setdefault("transaction_id", uuid.uuid4().bytes)
    return Header(sender=sender if sender is not None else subject_name(), **fields)


def mac_protected(body, device_id, secret, header=None, protector=None):
    header = header or header_for()
    protector = protector or PasswordBasedMac(secret, kid=str(device_id).encode())
    return header, encode_message(header, body, protector)


def signed(body, credential, header=None, protector=None):
    """A request signed with credential (a Credential); extraCerts = its certificate and chain."""
    protector = protector or SignatureProtection(credential.key, credential.certificate, credential.chain)
    header = header or header_for(sender=credential.certificate.subject)
    der = encode_message(header, body, protector, extra_certs=[_der(c) for c in protector.extra_certificates])
    return header, der


def unprotected(body, header=None):
    header = header or header_for()
    return header, encode_message(header, body)


def _der(certificate):
    return certificate.public_bytes(serialization.Encoding.DER)


def load_credential(cert_path, key_path, chain_path=None):
    chain = load_pem(chain_path) if chain_path is not None and chain_path.stat().st_size else []
    return Credential(load_pem(cert_path)[0], load_key(key_path), chain)


# --- IDevIDs -------------------------------------------------------------------------------------------


def new_serial():
    """A device serial number no other test uses."""
    return "SN-" + uuid.uuid4().hex[:12].upper()


def admit_manufacturer(server, domain, pattern, auto_create=True, manufacturer=None, trusted=None):
    """Trust a manufacturer CA for IDevIDs and register pattern for domain (a PkiDomain).

    trusted: the certificates of the truststore (default: the manufacturer CA). Returns the manufacturer.
    """
    manufacturer = manufacturer or make_ca(unique("Manufacturer Root"))
    truststore = create_truststore(server, trusted or [manufacturer.certificate])
    create_registration(server, domain.name, truststore, pattern, auto_create=auto_create)
    return manufacturer


def idevid_args(idevid, workdir, domain, stem="idevid"):
    """openssl options: sign with an IDevID (and send its chain), trust the domain root."""
    cert, key, chain = idevid.write(workdir, stem)
    return signer_args(cert, key, domain.root_path, chain)


def admitted_idevid(server, domain, method="cmp_idevid", key_kind="ec"):
    """An IDevID that a registration of domain admits, and the device registered for it with method.

    The IDevID carries its serial number in the subject and a SAN URI; the registration matches the
    serial number and creates no devices. Returns (IDevID, device record).
    """
    serial = new_serial()
    manufacturer = admit_manufacturer(server, domain, re.escape(serial), auto_create=False)
    idevid = make_end_entity(
        manufacturer, "sensor-%s" % serial.lower(), serial, ["urn:example:idevid:%s" % serial], key_kind=key_kind
    )
    device, _secret = register_device(server, domain.name, method, serial)
    return idevid, device
