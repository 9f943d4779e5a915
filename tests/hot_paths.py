# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The enrollment paths driven once each, in-process, recording every SQL statement they send (issue 16).

tests/unit/test_query_plans.py checks the statements' plans on SQLite, tests/integration/test_postgresql.py
on PostgreSQL: none may scan a table that grows with the fleet. Paths: CMP ir (shared secret) + certConf,
cr, rr and kur (signed with the domain credential), ir signed with an IDevID, EST simpleenroll (password,
IDevID) and simplereenroll, the CRL, a device's deletion and a TLS handshake's check of the client CA bundle.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess

from conftest import BIN
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID
from sqlalchemy import event
from trustpoint_core import keys, profiles
from trustpoint_core import x509 as tp_x509
from trustpoint_core.cmp_message import (
    CmpMessage,
    Header,
    cert_conf_body,
    cert_hash,
    cert_req_body,
    cert_responses,
    encode_message,
    rr_body,
)
from trustpoint_core.cmp_protection import PasswordBasedMac, SignatureProtection
from trustpoint_server.app import create_app
from trustpoint_server.protocols import est
from trustpoint_server.runtime import tls
from trustpoint_server.services import devices, pki, trust
from trustpoint_server.settings import Settings
from trustpoint_server.storage.db import begin_write
from trustpoint_server.storage.models import Device

# The tables that grow with the fleet and its certificates. (domain, truststore, devid_registration and
# the like hold a row per configuration item: scanning them is fine.)
GROWING = ("issued_certificate", "device", "cmp_transaction", "certificate_authority", "credential_download")
CMP = "application/pkixcmp"
# Every path, by the name its statements are recorded under.
PATHS = (
    "CMP ir (shared secret)",
    "CMP certConf",
    "CMP cr (domain credential)",
    "CMP rr (domain credential)",
    "CMP kur (domain credential)",
    "CMP ir (IDevID)",
    "EST simpleenroll (password)",
    "EST simpleenroll (IDevID)",
    "EST simplereenroll",
    "CRL",
    "device deletion",
    "TLS handshake",
)


class Statements:
    """The SQL statements (with their parameters) the app sends while recording."""

    def __init__(self, engine):
        self.recording = None
        self.seen = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, _conn, _cursor, statement, parameters, _context, executemany):
        if self.recording is not None and not executemany:
            self.seen.append((self.recording, statement, parameters))


def make_app(data_dir, database_url=None):
    """The server's app on a data directory `trustpoint-server init` prepared (SQLite, or database_url),
    recording the statements it sends (app.statements)."""
    command = [str(BIN / "trustpoint-server"), "init", "--data-dir", str(data_dir)]
    if database_url:
        command += ["--database-url", database_url]
    subprocess.run(command, check=True, capture_output=True)
    app = create_app(Settings(data_dir=str(data_dir), database_url=database_url))
    app.statements = Statements(app.extensions["trustpoint"].engine)
    return app


@contextlib.contextmanager
def sqlite_app(data_dir):
    """make_app() on SQLite, its database file's path in app.database; the engine disposed of afterwards."""
    app = make_app(data_dir)
    app.database = str(data_dir / "trustpoint.db")
    try:
        yield app
    finally:
        app.extensions["trustpoint"].engine.dispose()


class Fleet:
    """A domain with a device of each onboarding method, and an IDevID manufacturer trusted for it."""

    def __init__(self, app):
        services = app.extensions["trustpoint"]
        with services.sessions() as db:
            domain = pki.create_domain(db, services.vault, "plant")
            db.commit()
            self.cmp_device, cmp_secrets = devices.create_device(
                db, services.vault, "plc-1", domain, "cmp_shared_secret"
            )
            self.est_device, est_secrets = devices.create_device(db, services.vault, "plc-2", domain, "est_password")
            db.commit()
            self.secret = cmp_secrets["shared_secret"]
            self.password = est_secrets["password"]
            self.manufacturer = tp_x509.CaChain.create("manufacturer", "ecdsa-p256")
            trust.create_truststore(
                db, "idevid-issuers", "idevid", tp_x509.certificates_to_pem(self.manufacturer.chain)
            )
            db.commit()
            registration = trust.create_registration(
                db, {"name": "plant-idevids", "domain": "plant", "truststore": "idevid-issuers", "pattern": "SN-.*"}
            )
            registration.auto_create_devices = True
            db.commit()
            self.issuing_ca_id = domain.ca("issuing").id
            self.chain = pki.ca_chain(domain)

    def idevid(self, serial):
        key = keys.generate_private_key("ecdsa-p256")
        subject = cx509.Name(
            [cx509.NameAttribute(NameOID.COMMON_NAME, serial), cx509.NameAttribute(NameOID.SERIAL_NUMBER, serial)]
        )
        certificate = tp_x509.issue_certificate(
            self.manufacturer.issuing_cert,
            self.manufacturer.issuing_key,
            key.public_key(),
            subject,
            profiles.get_profile("domain_credential"),
        )
        return key, certificate


def _header(sender, implicit):
    return Header(sender=sender, transaction_id=os.urandom(16), implicit_confirm=implicit)


def _post_cmp(client, path, der):
    response = client.post(path, data=der, content_type=CMP)
    assert response.status_code == 200
    return CmpMessage.decode(response.data)


def _issued(message, expected):
    assert message.body_type == expected, message.body_type
    responses, _ca_pubs = cert_responses(message)
    assert responses[0].certificate is not None, (responses[0].status, responses[0].text)
    return responses[0].certificate


def _signed(body, key, certificate, chain, implicit=True):
    protector = SignatureProtection(key, certificate, chain)
    header = _header(certificate.subject, implicit)
    extra = [c.public_bytes(Encoding.DER) for c in protector.extra_certificates]
    return encode_message(header, body, protector, extra_certs=extra)


def _csr(key, common_name):
    csr = (
        cx509.CertificateSigningRequestBuilder()
        .subject_name(cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(csr.public_bytes(Encoding.DER))


def _est_certificate(response):
    """The certificate of a simpleenroll answer (base64 PKCS#7 certs-only)."""
    assert response.status_code == 200, response.get_data(as_text=True)
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.data))[0]


def run_hot_paths(app, monkeypatch):
    """Drive every hot path once, recording its statements under a name."""
    fleet = Fleet(app)
    client = app.test_client()
    statements = app.statements
    path = "/.well-known/cmp/p/plant/%s"

    # CMP ir with the shared secret, explicit confirmation: ir, then certConf.
    statements.recording = "CMP ir (shared secret)"
    key = keys.generate_private_key("ecdsa-p256")
    subject = tp_x509.parse_name("/CN=plc-1")
    mac = PasswordBasedMac(fleet.secret.encode(), kid=str(fleet.cmp_device.id).encode())
    header = _header(subject, implicit=False)
    answer = _post_cmp(client, path % "initialization", encode_message(header, cert_req_body("ir", key, subject), mac))
    credential = _issued(answer, "ip")
    statements.recording = "CMP certConf"
    confirm = Header(sender=subject, transaction_id=header.transaction_id, recip_nonce=answer.sender_nonce)
    confirmed = _post_cmp(
        client, path % "initialization", encode_message(confirm, cert_conf_body(cert_hash(credential)), mac)
    )
    assert confirmed.body_type == "pkiconf"

    statements.recording = "CMP cr (domain credential)"
    app_key = keys.generate_private_key("ecdsa-p256")
    der = _signed(cert_req_body("cr", app_key, tp_x509.parse_name("/CN=plc-1")), key, credential, fleet.chain)
    application = _issued(_post_cmp(client, path % "certification", der), "cp")

    statements.recording = "CMP rr (domain credential)"
    der = _signed(rr_body(application, "keyCompromise"), key, credential, fleet.chain)
    assert _post_cmp(client, path % "revocation", der).body_type == "rp"

    statements.recording = "CMP kur (domain credential)"
    new_key = keys.generate_private_key("ecdsa-p256")
    body = cert_req_body("kur", new_key, subject, old_certificate=credential)
    _issued(_post_cmp(client, path % "keyupdate", _signed(body, key, credential, fleet.chain)), "kup")

    statements.recording = "CMP ir (IDevID)"
    idevid_key, idevid = fleet.idevid("SN-0001")
    ldevid_key = keys.generate_private_key("ecdsa-p256")
    der = _signed(cert_req_body("ir", ldevid_key, idevid.subject), idevid_key, idevid, fleet.manufacturer.chain[:1])
    _issued(_post_cmp(client, path % "initialization", der), "ip")

    est_path = "/.well-known/est/plant/%s"
    est_headers = {"Content-Type": "application/pkcs10"}
    statements.recording = "EST simpleenroll (password)"
    est_key = keys.generate_private_key("ecdsa-p256")
    response = client.post(
        est_path % "simpleenroll",
        data=_csr(est_key, "plc-2"),
        headers={
            **est_headers,
            "Authorization": "Basic " + base64.b64encode(b"plc-2:" + fleet.password.encode()).decode(),
        },
        base_url="https://localhost",
    )
    est_credential = _est_certificate(response)

    # The TLS client certificate is what the handshake verified; here the handler is handed it directly.
    statements.recording = "EST simpleenroll (IDevID)"
    idevid_key2, idevid2 = fleet.idevid("SN-0002")
    monkeypatch.setattr(est, "client_certificate", lambda _request: idevid2)
    monkeypatch.setattr(est, "client_chain", lambda _request: [fleet.manufacturer.issuing_cert])
    response = client.post(
        est_path % "simpleenroll", data=_csr(idevid_key2, "SN-0002"), headers=est_headers, base_url="https://localhost"
    )
    _est_certificate(response)

    statements.recording = "EST simplereenroll"
    monkeypatch.setattr(est, "client_certificate", lambda _request: est_credential)
    response = client.post(
        est_path % "simplereenroll", data=_csr(est_key, "plc-2"), headers=est_headers, base_url="https://localhost"
    )
    _est_certificate(response)

    statements.recording = "CRL"
    response = client.get("/crl/%d" % fleet.issuing_ca_id)
    assert response.status_code == 200
    assert cx509.load_der_x509_crl(response.data).get_revoked_certificate_by_serial_number(application.serial_number)

    statements.recording = "device deletion"
    services = app.extensions["trustpoint"]
    with services.sessions() as db:
        begin_write(db)
        devices.delete_device(db, db.get(Device, fleet.cmp_device.id))
        db.commit()
    statements.recording = None
    # Every new connection: ServerContexts.current() (runtime/tls.py) once it has a context. It reads the bundle's
    # generation through the driver, past the recorder, so that query is added as it runs; nothing else may be sent
    # (the bundle is read only when the generation moved).
    contexts = tls.ServerContexts(*tls.server_files(services.settings.data_dir))
    contexts.use_database(services.engine)
    contexts.current()
    statements.recording = "TLS handshake"
    assert contexts.current() is contexts.current()
    sent = [statement for name, statement, _parameters in statements.seen if name == "TLS handshake"]
    assert sent == [], "a handshake sent more than the generation's query: %r" % sent
    statements.seen.append(("TLS handshake", tls.GENERATION_SQL, ()))
    statements.recording = None
    # Each path ran and sent statements: a path that silently did nothing would prove nothing.
    assert sorted({name for name, _statement, _parameters in statements.seen}) == sorted(PATHS)
    return statements.seen
