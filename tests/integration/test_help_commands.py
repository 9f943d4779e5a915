# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
""" "Help - issue new credentials": every command block the page shows, run for real with bash, OpenSSL and curl
against a real server, for each onboarding method; then the application-certificate blocks on the onboarded
device, and the Ansible tasks with ansible-playbook."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from cmp_helpers import create_registration, create_truststore, make_ca, make_end_entity, unique, write_key, write_pem
from conftest import openssl
from page_client import PageClient, code_blocks
from test_modules import run_tasks

SECRET_METHODS = ("cmp_shared_secret", "est_password")


@pytest.fixture(scope="module")
def operator(server):
    client = PageClient(server)
    status, _headers, text = client.sign_in("admin", (server.data_dir / "operator-password").read_text().strip())
    assert status == 302, text[:500]
    return client


@pytest.fixture(scope="module")
def domain(server):
    return server.create_domain()["name"]


@pytest.fixture(scope="module")
def manufacturer(server, domain):
    """An IDevID CA that a DevID registration of domain trusts for serial numbers SN-<digits>."""
    ca = make_ca("Help Test Manufacturer CA")
    create_registration(server, domain, create_truststore(server, [ca.certificate]), "SN-[0-9]+", auto_create=False)
    return ca


def run_block(text, workdir, env=None):
    run = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", text],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert run.returncode == 0, "the help page's commands failed:\n%s\n--- output:\n%s%s" % (
        text,
        run.stdout,
        run.stderr,
    )
    return run.stdout


def help_page(operator, device_id, method, profile="tls_client"):
    """The command blocks of the device's help page; for a secret method with a freshly issued secret."""
    path = "/ui/devices/%d/help?profile=%s" % (device_id, profile)
    if method in SECRET_METHODS:
        status, _headers, text = operator.post_form(path, {})
    else:
        status, _headers, text = operator.get(path)
    assert status == 200, text[:500]
    return code_blocks(text)


@pytest.mark.parametrize("method", ["cmp_shared_secret", "est_password", "cmp_idevid", "est_idevid"])
def test_the_shown_commands_onboard_the_device_and_get_application_certificates(
    server, operator, domain, manufacturer, method, tmp_path
):
    serial = "SN-%d" % (abs(hash(tmp_path)) % 10**9)
    payload = {"name": unique("help"), "domain": domain, "onboarding_method": method}
    if method.endswith("idevid"):
        payload["serial_number"] = serial
        idevid = make_end_entity(manufacturer, "help device", serial_number=serial)
        write_pem(tmp_path / "idevid.pem", [idevid.certificate])
        write_key(tmp_path / "idevid.key", idevid.key)
    status, body = server.api("POST", "/devices", payload)
    assert status == 201, body
    device = body["device"]
    (tmp_path / "tls-ca.pem").write_bytes(server.ca_file.read_bytes())

    blocks = help_page(operator, device["id"], method, "tls_server")
    assert sorted(blocks) == ["ansible", "app-ansible", "app-cmp", "app-csr", "app-est", "openssl"]
    output = run_block(blocks["openssl"], tmp_path)
    assert "cert.pem: OK" in output
    onboarded = server.device(device["id"])
    assert onboarded["status"] == "onboarded"
    assert onboarded["credential"]["fingerprint_sha256"] == fingerprint(tmp_path / "cert.pem")

    # With the domain credential: application certificates over CMP and EST, as the page shows them.
    assert "tls_server.pem: OK" in run_block(blocks["app-cmp"], tmp_path)
    cmp_certificate = fingerprint(tmp_path / "tls_server.pem")
    assert "tls_server.pem: OK" in run_block(blocks["app-est"], tmp_path)
    assert fingerprint(tmp_path / "tls_server.pem") != cmp_certificate
    listed = server.api("GET", "/devices/%d/certificates?profile=tls_server" % device["id"])[1]
    assert len(listed) == 2 and {c["status"] for c in listed} == {"active"}


def fingerprint(path):
    out = openssl("x509", "-in", str(path), "-noout", "-fingerprint", "-sha256").stdout
    return out.strip().partition("=")[2].replace(":", "").lower()


@pytest.mark.parametrize("profile", ["tls_client", "tls_server", "opc_ua"])
def test_a_device_without_onboarding_gets_certificates_from_its_request(server, operator, domain, profile, tmp_path):
    """The page's request-and-API recipe, for each application profile."""
    status, body = server.api(
        "POST", "/devices", {"name": unique("none"), "domain": domain, "onboarding_method": "none"}
    )
    assert status == 201 and body["device"]["status"] == "no_onboarding"
    device = body["device"]
    blocks = help_page(operator, device["id"], "none", profile)
    assert sorted(blocks) == ["app-ansible", "app-csr"]  # no onboarding, no domain credential to sign with
    (tmp_path / "tls-ca.pem").write_bytes(server.ca_file.read_bytes())
    env = {"PATH": "/usr/bin:/bin", "TOKEN": server.token}
    assert "subject=CN = %s" % device["name"] in run_block(blocks["app-csr"], tmp_path, env)
    listed = server.api("GET", "/devices/%d/certificates" % device["id"])[1]
    assert [(c["profile"], c["status"]) for c in listed] == [(profile, "active")]
    assert listed[0]["fingerprint_sha256"] == fingerprint(tmp_path / ("%s.pem" % profile))


def test_the_shown_ansible_tasks_run(server, operator, domain, tmp_path):
    """The help page's trustpoint.pki.enroll task (credential paths moved into the test's directory) onboards
    the device, and its trustpoint.pki.certificate task issues from a request, with ansible-playbook."""
    device, _secret = server.create_device(domain)
    blocks = help_page(operator, device["id"], "cmp_shared_secret", "tls_server")
    enroll = yaml.safe_load(blocks["ansible"])[0]
    arguments = enroll["trustpoint.pki.enroll"]
    assert arguments["device_id"] == device["id"] and enroll["no_log"] is True
    assert arguments["ca_path"] == "/etc/trustpoint/tls-ca.pem"  # as web.md says
    arguments["ca_path"] = str(server.ca_file)
    for option in ("key_path", "certificate_path", "chain_path"):
        arguments[option] = str(tmp_path / arguments[option].rsplit("/", 1)[1])
    certificate = yaml.safe_load(blocks["app-ansible"])[0]
    issue = certificate["trustpoint.pki.certificate"]
    assert issue["ca_path"] == "tls-ca.pem"  # as web.md says
    issue.update(ca_path=str(server.ca_file), api_token=server.token)
    for option in ("csr_path", "certificate_path"):
        issue[option] = str(tmp_path / issue[option])
    key = tmp_path / "app.key"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=%s" % device["name"], "-out", issue["csr_path"])
    certificate.pop("delegate_to")
    results = run_tasks(tmp_path, [enroll, certificate])
    assert results[enroll["name"]]["changed"] and server.device(device["id"])["status"] == "onboarded"
    assert results[certificate["name"]]["action"] == "issue"
    assert results[certificate["name"]]["certificate"]["subject_alt_names"] == ["DNS:%s" % device["name"]]
