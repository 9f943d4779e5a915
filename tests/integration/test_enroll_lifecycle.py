# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""trustpoint.pki.enroll through its lifecycle against a real server: IDevID onboarding, renewal with a
new key (kur), revocation (rr), each with the python and the openssl backend."""

from __future__ import annotations

import datetime
import uuid

import pytest
from conftest import http, openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_modules import run_tasks
from trustpoint_core.x509 import CaChain, certificates_to_pem, load_certificate

BACKENDS = ["python", "openssl"]


def make_idevid(workdir, vendor, serial):
    """An IDevID (key + certificate) of the vendor's issuing CA, written to workdir; returns the paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, "sensor"), x509.NameAttribute(NameOID.SERIAL_NUMBER, serial)]
            )
        )
        .issuer_name(vendor.issuing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(vendor.issuing_cert.public_key()), False)
        .sign(vendor.issuing_key, hashes.SHA256())
    )
    paths = {name: workdir / ("idevid-%s.pem" % name) for name in ("cert", "key", "chain")}
    paths["cert"].write_text(certificates_to_pem(certificate))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths["chain"].write_text(certificates_to_pem([vendor.issuing_cert]))
    return paths


@pytest.fixture(scope="module")
def vendor():
    return CaChain.create("Vendor IDevID", "ecdsa-p256")


def _files(workdir):
    return {
        "key_path": str(workdir / "dc.key"),
        "certificate_path": str(workdir / "dc.pem"),
        "chain_path": str(workdir / "chain.pem"),
    }


def _task(server, domain, workdir, backend, **extra):
    args = dict(server_url=server.cmp_url, domain=domain["name"], backend=backend, **_files(workdir))
    args.update(extra)
    return {"name": "enroll", "trustpoint.pki.enroll": args}


@pytest.mark.parametrize("backend", BACKENDS)
def test_idevid_onboarding_creates_the_device(server, workdir, vendor, backend):
    """An IDevID admitted by a DevID registration onboards; the server creates the device (cmp_idevid)."""
    domain = server.create_domain()
    serial = "SN-" + uuid.uuid4().hex[:10]
    store = "ts-" + uuid.uuid4().hex[:8]
    assert (
        server.api(
            "POST",
            "/truststores",
            {"name": store, "usage": "idevid", "certificates": certificates_to_pem(vendor.root_cert)},
        )[0]
        == 201
    )
    status, body = server.api(
        "POST",
        "/devid-registrations",
        {
            "name": "reg-" + uuid.uuid4().hex[:8],
            "domain": domain["name"],
            "truststore": store,
            "pattern": "SN-[0-9a-f]+",
            "auto_create_devices": True,
        },
    )
    assert status == 201, body
    idevid = make_idevid(workdir, vendor, serial)
    task = _task(
        server,
        domain,
        workdir,
        backend,
        method="cmp_idevid",
        idevid_certificate_path=str(idevid["cert"]),
        idevid_key_path=str(idevid["key"]),
        idevid_chain_path=str(idevid["chain"]),
        ca_certificates=domain["ca_chain"],
    )

    without_anchor = dict(task["trustpoint.pki.enroll"], ca_certificates=None)
    failed = run_tasks(workdir, [{"name": "enroll", "trustpoint.pki.enroll": without_anchor}], expect_failure=True)
    assert "ca_certificates" in failed["enroll"]["msg"]

    result = run_tasks(workdir, [task])["enroll"]
    assert result["changed"] and result["action"] == "enroll"
    openssl("verify", "-CAfile", str(workdir / "chain.pem"), str(workdir / "dc.pem"))
    status, found = server.api("GET", "/devices?domain=" + domain["name"])
    (device,) = found
    assert device["onboarding_method"] == "cmp_idevid" and device["serial_number"] == serial
    assert device["status"] == "onboarded"
    assert device["credential"]["serial_number"] == result["certificate"]["serial_number"]
    assert not run_tasks(workdir, [task])["enroll"]["changed"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_renewal_rotates_the_key_and_supersedes_the_old_certificate(server, workdir, backend):
    """Inside the renewal window the module renews with kur: new key, new certificate, old one revoked."""
    domain = server.create_domain(validity_days=20)
    device, secret = server.create_device(domain["name"])
    first = run_tasks(workdir, [_task(server, domain, workdir, backend, device_id=device["id"], shared_secret=secret)])[
        "enroll"
    ]
    old_key = (workdir / "dc.key").read_bytes()

    renew = _task(server, domain, workdir, backend, renew_before_days=30)
    predicted = run_tasks(workdir, [renew], check=True)["enroll"]
    assert predicted["changed"] and predicted["action"] == "renew"
    renewed = run_tasks(workdir, [renew])["enroll"]
    assert renewed["action"] == "renew"
    assert renewed["certificate"]["serial_number"] != first["certificate"]["serial_number"]
    assert (workdir / "dc.key").read_bytes() != old_key, "renewal rotates the key"
    openssl("verify", "-CAfile", str(workdir / "chain.pem"), str(workdir / "dc.pem"))
    record = server.device(device["id"])
    assert record["credential"]["serial_number"] == renewed["certificate"]["serial_number"]
    assert record["status"] == "onboarded"


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_absent_revokes_and_deletes(server, workdir, backend):
    """state=absent revokes the credential (rr) and removes the files; the CRL lists it; then nothing to do."""
    domain = server.create_domain()
    device, secret = server.create_device(domain["name"])
    enrolled = run_tasks(
        workdir, [_task(server, domain, workdir, backend, device_id=device["id"], shared_secret=secret)]
    )["enroll"]
    cdp = (
        load_certificate((workdir / "dc.pem").read_bytes())
        .extensions.get_extension_for_class(x509.CRLDistributionPoints)
        .value[0]
        .full_name[0]
        .value
    )

    absent = _task(server, domain, workdir, backend, state="absent")
    assert run_tasks(workdir, [absent], check=True)["enroll"]["action"] == "revoke"
    assert (workdir / "dc.key").exists(), "check mode deletes nothing"
    result = run_tasks(workdir, [absent])["enroll"]
    assert result["changed"] and result["action"] == "revoke"
    assert not any((workdir / name).exists() for name in ("dc.key", "dc.pem", "chain.pem"))
    assert server.device(device["id"])["status"] == "pending"

    status, _headers, der = http("GET", cdp.replace(cdp.split("/crl/")[0], server.cmp_url))
    assert status == 200
    serials = [format(entry.serial_number, "x") for entry in x509.load_der_x509_crl(der)]
    assert enrolled["certificate"]["serial_number"] in serials
    assert not run_tasks(workdir, [absent])["enroll"]["changed"]


def _est_task(server, domain, workdir, backend, **extra):
    """The module against the HTTPS endpoint (EST needs TLS), trusting the server's TLS CA."""
    return _task(server, domain, workdir, backend, server_url=server.url, ca_path=str(server.ca_file), **extra)


@pytest.mark.parametrize("backend", BACKENDS)
def test_est_password_onboarding_renewal_and_revocation(server, workdir, backend):
    """est_password: simpleenroll with the one-time password, renewal with simplereenroll (new key, same
    subject, no password), revocation with rr; the spent password cannot onboard again."""
    domain = server.create_domain(validity_days=20)
    name = "est-" + uuid.uuid4().hex[:8]
    status, created = server.api(
        "POST", "/devices", {"name": name, "domain": domain["name"], "onboarding_method": "est_password"}
    )
    assert status == 201 and created["password"]
    task = _est_task(
        server,
        domain,
        workdir,
        backend,
        method="est_password",
        username=name,
        password=created["password"],
        ca_certificates=domain["ca_chain"],
    )
    enrolled = run_tasks(workdir, [task])["enroll"]
    assert enrolled["action"] == "enroll" and enrolled["certificate"]["subject"] == "CN=" + name
    openssl("verify", "-CAfile", str(workdir / "chain.pem"), str(workdir / "dc.pem"))
    assert server.device(created["device"]["id"])["status"] == "onboarded"

    (workdir / "dc.key").unlink()
    spent = run_tasks(workdir, [task], expect_failure=True)["enroll"]
    assert "401" in spent["msg"] and "used up" in spent["msg"]

    run_tasks(workdir, [task.copy()], expect_failure=True)  # still no key: nothing changed on the server
    device_id = created["device"]["id"]
    status, renewed_secret = server.api("POST", "/devices/%d/secret" % device_id)
    task["trustpoint.pki.enroll"]["password"] = renewed_secret["password"]
    first = run_tasks(workdir, [task])["enroll"]

    renew = _est_task(server, domain, workdir, backend, method="est_password", renew_before_days=30)
    renewed = run_tasks(workdir, [renew])["enroll"]
    assert renewed["action"] == "renew"
    assert renewed["certificate"]["serial_number"] != first["certificate"]["serial_number"]
    assert renewed["certificate"]["subject"] == first["certificate"]["subject"]
    assert server.device(device_id)["credential"]["serial_number"] == renewed["certificate"]["serial_number"]

    absent = _est_task(server, domain, workdir, backend, method="est_password", state="absent")
    absent["trustpoint.pki.enroll"]["server_url"] = server.cmp_url
    assert run_tasks(workdir, [absent])["enroll"]["action"] == "revoke"
    assert server.device(device_id)["status"] == "pending"


@pytest.mark.parametrize("backend", BACKENDS)
def test_est_idevid_onboarding(server, workdir, vendor, backend):
    """est_idevid: the IDevID as TLS client certificate onboards a pre-registered device found by its serial."""
    domain = server.create_domain()
    serial = "EST-" + uuid.uuid4().hex[:10]
    store = "ts-" + uuid.uuid4().hex[:8]
    assert (
        server.api(
            "POST",
            "/truststores",
            {"name": store, "usage": "idevid", "certificates": certificates_to_pem(vendor.root_cert)},
        )[0]
        == 201
    )
    assert (
        server.api(
            "POST",
            "/devid-registrations",
            {
                "name": "reg-" + uuid.uuid4().hex[:8],
                "domain": domain["name"],
                "truststore": store,
                "pattern": "EST-[0-9a-f]+",
            },
        )[0]
        == 201
    )
    status, created = server.api(
        "POST",
        "/devices",
        {
            "name": "sensor-" + serial.lower(),
            "domain": domain["name"],
            "onboarding_method": "est_idevid",
            "serial_number": serial,
        },
    )
    assert status == 201 and "password" not in created
    idevid = make_idevid(workdir, vendor, serial)
    # TLS sends the leaf and the intermediate: give curl/Python the certificate file with its chain.
    full = workdir / "idevid-full.pem"
    full.write_text(idevid["cert"].read_text() + idevid["chain"].read_text())
    task = _est_task(
        server,
        domain,
        workdir,
        backend,
        method="est_idevid",
        idevid_certificate_path=str(full),
        idevid_key_path=str(idevid["key"]),
    )
    result = run_tasks(workdir, [task])["enroll"]
    assert result["action"] == "enroll"
    device = server.device(created["device"]["id"])
    assert device["status"] == "onboarded"
    assert device["credential"]["serial_number"] == result["certificate"]["serial_number"]
    assert not run_tasks(workdir, [task])["enroll"]["changed"]
