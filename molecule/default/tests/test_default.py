# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every device holds its own domain credential, issued under the domain's root CA.

Runs through Molecule's testinfra verifier against the scenario inventory (real SSH, host keys
checked). Private keys are only read on the device; certificates are public and are checked with the
controller's openssl.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
import testinfra

testinfra_hosts = ["ansible://devices"]

CONF_DIR = "/etc/trustpoint"
KEY = f"{CONF_DIR}/domain_credential.key"
CERT = f"{CONF_DIR}/domain_credential.pem"
CHAIN = f"{CONF_DIR}/domain_chain.pem"
PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.S)


def openssl(*args: str) -> str:
    """Run openssl on the controller (public data only); fail the test with its message."""
    exe = shutil.which("openssl")
    assert exe, "openssl is not installed on the controller"
    proc = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr or proc.stdout}"
    return proc.stdout


def on_device(host, command: str) -> str:
    result = host.run(command)
    assert result.rc == 0, f"{command}: rc={result.rc} {result.stderr or result.stdout}"
    return result.stdout


def serial(host) -> str:
    return on_device(host, f"openssl x509 -noout -serial -in {CERT}").strip()


def test_connected_to_the_right_host(host):
    assert host.check_output("hostname") == host.backend.host


def test_private_key(host):
    key = host.file(KEY)
    assert key.is_file
    assert key.mode == 0o600
    assert key.user == "root"


def test_certificate_and_chain_exist(host):
    assert host.file(CERT).is_file
    assert host.file(CHAIN).is_file


def test_certificate_verifies_up_to_a_real_root(host, tmp_path):
    chain = PEM_CERT.findall(host.file(CHAIN).content_string)
    assert chain, f"{CHAIN} holds no PEM certificate"
    leaf = PEM_CERT.findall(host.file(CERT).content_string)
    assert len(leaf) >= 1, f"{CERT} holds no PEM certificate"

    root = tmp_path / "root.pem"
    root.write_text(chain[-1] + "\n")
    untrusted = tmp_path / "chain.pem"
    untrusted.write_text("\n".join(chain) + "\n")
    cert = tmp_path / "cert.pem"
    cert.write_text(leaf[0] + "\n")

    # The anchor is the chain's last certificate and must be a self-signed root, not an
    # intermediate trusted with -partial_chain.
    names = openssl("x509", "-noout", "-subject", "-issuer", "-nameopt", "RFC2253", "-in", str(root))
    subject, issuer = (line.split("=", 1)[1].strip() for line in names.splitlines()[:2])
    assert subject == issuer, f"last certificate of {CHAIN} is not a root: {subject} issued by {issuer}"
    openssl("verify", "-CAfile", str(root), str(root))  # its self-signature holds

    out = openssl("verify", "-CAfile", str(root), "-untrusted", str(untrusted), str(cert))
    assert out.strip().endswith(": OK")


def test_certificate_matches_the_key_generated_on_the_device(host):
    key_pub = on_device(host, f"openssl pkey -in {KEY} -pubout")
    cert_pub = on_device(host, f"openssl x509 -in {CERT} -pubkey -noout")
    assert key_pub.strip() == cert_pub.strip()


def test_certificate_not_about_to_expire(host):
    assert host.run(f"openssl x509 -checkend 86400 -noout -in {CERT}").rc == 0


def test_credential_lives_in_the_hosts_private_directory(host):
    assert host.run(f"mountpoint -q {CONF_DIR}").rc == 0, f"{CONF_DIR} is not the host's private mount"
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not ephemeral:
        pytest.skip("MOLECULE_EPHEMERAL_DIRECTORY not set (not run by Molecule)")
    backing = Path(ephemeral, host.backend.host + CONF_DIR, "domain_credential.pem")
    assert backing.is_file(), f"{CERT} of {host.backend.host} is not in its private directory {backing.parent}"
    assert backing.read_text() == host.file(CERT).content_string


def test_each_device_has_its_own_certificate(host):
    own_serial = serial(host)
    own_cert = host.file(CERT).content_string
    others = [
        h
        for h in testinfra.get_hosts(["ansible://devices"], ansible_inventory=host.backend.ansible_inventory)
        if h.backend.host != host.backend.host
    ]
    assert others, "expected more than one device"
    for other in others:
        assert serial(other) != own_serial, f"{other.backend.host} has the same serial {own_serial}"
        assert other.file(CERT).content_string != own_cert


def api(path: str):
    """GET path of the scenario's Trustpoint REST API (JSON)."""
    server = json.loads((Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "server.json").read_text())
    token = Path(server["token_file"]).read_text().strip()
    request = urllib.request.Request(  # noqa: S310 (test URL)
        server["api_url"] + "/api/v1" + path, headers={"Authorization": "Bearer " + token}
    )
    context = ssl.create_default_context(cafile=server["ca_file"])
    with urllib.request.urlopen(request, context=context, timeout=30) as response:  # noqa: S310 (test URL)
        return json.load(response)


def test_server_records_the_onboarding(host):
    """The server lists the host as onboarded, with the method of its inventory and the certificate it holds."""
    (device,) = api("/devices?name=" + host.backend.host)
    expected = host.ansible.get_variables().get("trustpoint_onboarding_method", "cmp_shared_secret")
    assert device["onboarding_method"] == expected
    assert device["status"] == "onboarded"
    assert device["credential"]["serial_number"] == serial(host).split("=", 1)[1].lower().lstrip("0")
    fingerprint = on_device(host, f"openssl x509 -noout -fingerprint -sha256 -in {CERT}").split("=", 1)[1]
    assert device["credential"]["fingerprint_sha256"] == fingerprint.strip().replace(":", "").lower()


def test_issued_by_the_servers_domain_ca(host, tmp_path):
    """The certificate verifies against the root of the device's domain as the server holds it (not only the
    chain file on the device), and the chain file holds the server's CA chain of that domain."""
    (device,) = api("/devices?name=" + host.backend.host)
    server_chain = PEM_CERT.findall(api("/domains/" + device["domain"])["ca_chain"])
    held = {"".join(pem.split()) for pem in PEM_CERT.findall(host.file(CHAIN).content_string)}
    assert held == {"".join(pem.split()) for pem in server_chain}
    root = tmp_path / "root.pem"
    root.write_text(server_chain[-1] + "\n")
    issuing = tmp_path / "issuing.pem"
    issuing.write_text("\n".join(server_chain[:-1]) + "\n")
    cert = tmp_path / "cert.pem"
    cert.write_text(PEM_CERT.findall(host.file(CERT).content_string)[0] + "\n")
    out = openssl("verify", "-CAfile", str(root), "-untrusted", str(issuing), str(cert))
    assert out.strip().endswith(": OK")
