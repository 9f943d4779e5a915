# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""A data directory written by release 0.1.0 (before schema migrations) keeps working after an upgrade.

tests/fixtures/release-0.1.0 (data.zip: its data directory) was made by that release's own code (make.sh
says how): two domains, devices onboarded, pending (with their one-time secret and password) and revoked, a
truststore and a DevID registration. After `init` migrates it, every record reads back as before and every
secret still works: the pending devices onboard with theirs, an onboarded device renews with its
credential, the revocation stays on the CRL.
"""

from __future__ import annotations

import json
import zipfile
from urllib.parse import urlsplit

import pytest
from cmp_helpers import assert_cmp_ok, crl_url_of, load_pem, new_key_file, run_cmp
from conftest import FIXTURES, Server, free_port
from cryptography import x509
from est_helpers import Csr, curl, issued_certificate

RELEASE = FIXTURES / "release-0.1.0"
# What a device or domain looked like to the 0.1.0 API: later versions may add fields, never drop these.
DEVICE_FIELDS = ("id", "name", "domain", "onboarding_method", "serial_number", "status", "created_at", "onboarded_at")
CREDENTIAL_FIELDS = ("serial_number", "subject", "not_before", "not_after", "fingerprint_sha256", "status")


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("upgrade")
    with zipfile.ZipFile(RELEASE / "data.zip") as archive:
        archive.extractall(directory)
    data = directory / "data"
    data.chmod(0o700)
    for path in data.iterdir():
        path.chmod(0o600)
    server = Server(data, free_port())
    yield server, directory
    server.stop()


def before(name):
    return json.loads((RELEASE / "devices" / name).read_text())


def test_devices_and_domains_read_back_as_before(upgraded):
    server, _directory = upgraded
    status, devices = server.api("GET", "/devices")
    assert status == 200, devices
    now = {device["name"]: device for device in devices}
    for old in before("devices-before.json"):
        new = now[old["name"]]
        assert {k: new[k] for k in DEVICE_FIELDS} == {k: old[k] for k in DEVICE_FIELDS}
        if old["credential"] is None:
            assert new["credential"] is None
        else:
            assert {k: new["credential"][k] for k in CREDENTIAL_FIELDS} == {
                k: old["credential"][k] for k in CREDENTIAL_FIELDS
            }
    status, domains = server.api("GET", "/domains")
    assert status == 200
    now = {domain["name"]: domain for domain in domains}
    for old in before("domains-before.json"):
        new = now[old["name"]]
        for field in ("key_type", "validity_days", "created_at", "issuing_ca", "root_ca", "ca_chain"):
            assert new[field] == old[field], field
    assert server.api("GET", "/truststores/vendor")[0] == 200
    status, registration = server.api("GET", "/devid-registrations/vendor-plant1")
    assert status == 200 and registration["pattern"] == "VX-[0-9]+" and registration["auto_create_devices"]


def test_a_pending_device_onboards_with_its_shared_secret(upgraded, workdir):
    """The secret was encrypted with the vault by 0.1.0; the CA key too: both still work."""
    server, _directory = upgraded
    pending = before("pending-cmp.json")
    key = new_key_file(workdir / "key.pem")
    returncode, output = run_cmp(
        "-cmd", "ir", "-server", server.cmp_url + "/.well-known/cmp/initialization/plant1/",
        "-ref", pending["device"]["id"], "-secret", "pass:" + pending["shared_secret"],
        "-subject", "/CN=x", "-newkey", key, "-certout", workdir / "cert.pem",
        "-cacertsout", workdir / "root.pem", "-chainout", workdir / "chain.pem",
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    assert server.device(pending["device"]["id"])["status"] == "onboarded"


def test_a_pending_est_device_onboards_with_its_password(upgraded, workdir):
    server, _directory = upgraded
    pending = before("pending-est.json")
    csr = Csr(workdir, "est", "/CN=ignored")
    answer = curl(
        server,
        server.url + "/.well-known/est/plant2/simpleenroll",
        workdir,
        data=csr.b64,
        user="%s:%s" % (pending["device"]["name"], pending["password"]),
    )
    issued_certificate(answer, workdir / "est.pem")
    assert server.device(pending["device"]["id"])["status"] == "onboarded"


def test_an_onboarded_device_renews_with_its_credential(upgraded, workdir):
    """The 0.1.0 certificate record still authenticates a key update signed with it."""
    server, _directory = upgraded
    devices = RELEASE / "devices"
    old = load_pem(devices / "onboarded-1.pem")[0]
    returncode, output = run_cmp(
        "-cmd", "kur", "-server", server.cmp_url + "/.well-known/cmp/p/plant1/keyupdate",
        "-cert", devices / "onboarded-1.pem", "-key", devices / "onboarded-1.key",
        "-extracerts", devices / "onboarded-1-chain.pem", "-trusted", devices / "onboarded-1-root.pem",
        "-newkey", new_key_file(workdir / "new.pem"), "-certout", workdir / "renewed.pem",
    )  # fmt: skip
    assert_cmp_ok(returncode, output)
    renewed = load_pem(workdir / "renewed.pem")[0]
    assert renewed.subject == old.subject and renewed.serial_number != old.serial_number


def test_the_revocation_stays_on_the_crl(upgraded, workdir):
    server, _directory = upgraded
    revoked = load_pem(RELEASE / "devices" / "revoked-1.pem")[0]
    # The distribution point 0.1.0 wrote into the certificate, at this server's address.
    path = urlsplit(crl_url_of(revoked)).path
    answer = curl(server, server.cmp_url + path, workdir)
    assert answer.status == 200, answer
    crl = x509.load_der_x509_crl(answer.body)
    entry = crl.get_revoked_certificate_by_serial_number(revoked.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
