# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""trustpoint.pki.enroll through its lifecycle against a real server: IDevID onboarding, renewal with a
new key (kur), revocation (rr), each with the python and the openssl backend."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import subprocess
import uuid

import pytest
from cmp_helpers import end_retry_window
from conftest import http, openssl, require_binary
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

    # The key lost before the credential was ever used (as when the answer is lost): the password onboards
    # again within its retry window. After the window it is spent.
    (workdir / "dc.key").unlink()
    assert run_tasks(workdir, [task])["enroll"]["action"] == "enroll"
    end_retry_window(server, created["device"]["id"])
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


def _credential(workdir):
    return {name: (workdir / name).read_bytes() for name in ("dc.key", "dc.pem", "chain.pem")}


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_absent_never_deletes_an_unrevoked_credential(server, workdir, backend):
    """state=absent with ca_certificates that cannot be parsed, or that the certificate does not chain to,
    fails and keeps the files: the credential is still active on the server and only they can revoke it."""
    domain = server.create_domain()
    device, secret = server.create_device(domain["name"])
    task = _task(server, domain, workdir, backend, device_id=device["id"], shared_secret=secret)
    serial = run_tasks(workdir, [task])["enroll"]["certificate"]["serial_number"]
    before = _credential(workdir)

    for anchors in ("not a pem", server.create_domain()["ca_chain"]):
        absent = _task(server, domain, workdir, backend, state="absent", ca_certificates=anchors)
        failed = run_tasks(workdir, [absent], expect_failure=True)["enroll"]
        assert not failed["changed"], failed
        assert "ca_certificates" in failed["msg"], failed["msg"]
        assert _credential(workdir) == before, "the files stay"
        credential = server.device(device["id"])["credential"]
        assert credential["serial_number"] == serial and credential["status"] == "active"

        # state=present does not re-enroll a valid credential because of a typo in ca_certificates either.
        if anchors == "not a pem":
            present = _task(server, domain, workdir, backend, ca_certificates=anchors)
            refused = run_tasks(workdir, [present], expect_failure=True)["enroll"]
            assert "ca_certificates cannot be used" in refused["msg"] and not refused["changed"]

    # Without the chain file the rr cannot be sent: the key and certificate stay, until the chain is back.
    chain = workdir / "chain.pem"
    chain.unlink()
    absent = _task(server, domain, workdir, backend, state="absent")
    failed = run_tasks(workdir, [absent], expect_failure=True)["enroll"]
    assert not failed["changed"] and "%s is missing" % chain in failed["msg"], failed
    for name in ("dc.key", "dc.pem"):
        assert (workdir / name).read_bytes() == before[name], "the key and certificate stay"
    assert server.device(device["id"])["credential"]["status"] == "active"
    chain.write_bytes(before["chain.pem"])

    # With the right CA chain it is revoked, then deleted.
    absent = _task(server, domain, workdir, backend, state="absent", ca_certificates=domain["ca_chain"])
    assert run_tasks(workdir, [absent])["enroll"]["action"] == "revoke"
    assert server.device(device["id"])["status"] == "pending"


def test_failed_install_restores_the_previous_files(server, workdir):
    """When moving the chain into place fails after the key and certificate were moved, they are restored:
    the run fails, claims no change and leaves no half-replaced credential or temporary file."""
    domain = server.create_domain()
    device, secret = server.create_device(domain["name"])
    (workdir / "dc.key").write_text("OLD KEY\n")
    (workdir / "dc.pem").write_text("OLD CERTIFICATE\n")
    chain_dir = workdir / "chain"
    chain_dir.mkdir()
    # An openssl that, once `openssl cmp` got the certificate, makes the chain's directory unwritable.
    bindir = workdir / "bin"
    bindir.mkdir()
    wrapper = bindir / "openssl"
    wrapper.write_text(
        '#!/bin/sh\n"%s" "$@"\nrc=$?\nif [ "$1" = cmp ]; then chattr +i "%s" 2>/dev/null || chmod 555 "%s"; fi\n'
        "exit $rc\n" % (require_binary("openssl"), chain_dir, chain_dir)
    )
    wrapper.chmod(0o755)
    task = _task(server, domain, workdir, "openssl", device_id=device["id"], shared_secret=secret)
    task["trustpoint.pki.enroll"]["chain_path"] = str(chain_dir / "chain.pem")
    task["environment"] = {"PATH": "%s:%s" % (bindir, os.environ["PATH"])}
    try:
        failed = run_tasks(workdir, [task], expect_failure=True)["enroll"]
    finally:
        subprocess.run(["chattr", "-i", str(chain_dir)], check=False, capture_output=True)
        chain_dir.chmod(0o755)
    assert "restored" in failed["msg"] and str(chain_dir / "chain.pem") in failed["msg"], failed["msg"]
    assert not failed["changed"]
    assert (workdir / "dc.key").read_text() == "OLD KEY\n"
    assert (workdir / "dc.pem").read_text() == "OLD CERTIFICATE\n"
    assert not (chain_dir / "chain.pem").exists()
    assert not [p.name for p in workdir.iterdir() if p.name.startswith(".trustpoint-")], "temporary files remain"


@contextlib.contextmanager
def read_only(directory):
    """directory cannot be written to, even by root (immutable) when the tests run as root."""
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(directory)], check=False).returncode != 0:
            pytest.skip("cannot make a directory immutable here (chattr +i)")
        try:
            yield
        finally:
            subprocess.run([chattr, "-i", str(directory)], check=True)
    else:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unwritable_directory_spends_no_secret_and_revokes_nothing(server, workdir, backend):
    """A credential directory the module cannot write to fails the run before the server is contacted: the
    one-time secret stays usable, and state=absent does not revoke a credential whose files it cannot delete."""
    domain = server.create_domain()
    device, secret = server.create_device(domain["name"])
    files = workdir / "credentials"
    files.mkdir()
    task = _task(server, domain, files, backend, device_id=device["id"], shared_secret=secret)
    with read_only(files):
        failed = run_tasks(workdir, [task], expect_failure=True)["enroll"]
    assert "cannot write to directory %s" % files in failed["msg"], failed["msg"]
    assert not failed["changed"]
    assert server.device(device["id"])["status"] == "pending"

    serial = run_tasks(workdir, [task])["enroll"]["certificate"]["serial_number"]  # the secret still works
    before = _credential(files)
    absent = _task(server, domain, files, backend, state="absent")
    with read_only(files):
        failed = run_tasks(workdir, [absent], expect_failure=True)["enroll"]
    assert "cannot write to directory" in failed["msg"] and not failed["changed"], failed["msg"]
    assert _credential(files) == before
    assert server.device(device["id"])["credential"]["serial_number"] == serial
    assert server.device(device["id"])["credential"]["status"] == "active"
