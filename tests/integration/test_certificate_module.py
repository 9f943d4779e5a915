# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""trustpoint.pki.certificate as Ansible runs it, against a real server: a device without onboarding gets an
application certificate from its request, or a PKCS#12 with a key the server makes; check mode, idempotency,
renewal and revocation."""

from __future__ import annotations

import os
import stat

import pytest
from cmp_helpers import unique
from conftest import openssl
from test_modules import run_tasks


@pytest.fixture
def none_device(server):
    domain = server.create_domain()["name"]
    device = {"name": unique("plc"), "domain": domain, "onboarding_method": "none"}
    # The names it gets besides its own (services/names.py).
    device["allowed_names"] = ["DNS:{device}.example", "URI:urn:plant:{device}"]
    status, body = server.api("POST", "/devices", device)
    assert status == 201, body
    return body["device"]


def task(server, name, **arguments):
    base = {"server_url": server.url, "ca_path": str(server.ca_file), "api_token": server.token}
    return {"name": name, "trustpoint.pki.certificate": dict(base, **arguments)}


def certificates(server, device):
    status, body = server.api("GET", "/devices/%d/certificates" % device["id"])
    assert status == 200, body
    return body


def make_csr(workdir, subject, san=None, stem="tls"):
    key = workdir / ("%s.key" % stem)
    if not key.exists():
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    csr = workdir / ("%s.csr" % stem)
    extra = ["-addext", "subjectAltName=" + san] if san else []
    openssl("req", "-new", "-key", str(key), "-subj", subject, *extra, "-out", str(csr))
    return csr


def test_from_a_request_check_real_idempotent_renew_revoke(server, none_device, tmp_path):
    csr = make_csr(tmp_path, "/CN=%s" % none_device["name"], "DNS:%s.example" % none_device["name"])
    arguments = dict(
        device=none_device["name"],
        profile="tls_server",
        csr_path=str(csr),
        certificate_path=str(tmp_path / "tls.pem"),
        chain_path=str(tmp_path / "chain.pem"),
    )
    issue = task(server, "issue", **arguments)
    checked = run_tasks(tmp_path, [issue], check=True, diff=True)["issue"]
    assert checked["changed"] and checked["action"] == "issue" and not (tmp_path / "tls.pem").exists()
    assert certificates(server, none_device) == []

    done = run_tasks(tmp_path, [issue])["issue"]
    assert done["changed"] and done["action"] == "issue"
    assert done["certificate"]["subject_alt_names"] == ["DNS:%s.example" % none_device["name"]]
    assert stat.S_IMODE(os.stat(tmp_path / "tls.pem").st_mode) == 0o644
    verify = openssl("verify", "-CAfile", str(tmp_path / "chain.pem"), str(tmp_path / "tls.pem"))
    assert verify.stdout.strip().endswith("OK")
    for check in (True, False):
        again = run_tasks(tmp_path, [issue], check=check)["issue"]
        assert not again["changed"] and again["action"] == "none", again

    # Renewal: inside the window, a new certificate for the same request supersedes the old one.
    renew = task(server, "renew", renew_before_days=3650, **arguments)
    renewed = run_tasks(tmp_path, [renew], diff=True)["renew"]
    assert (
        renewed["action"] == "renew"
        and renewed["diff"]["before"]["serial_number"] != renewed["certificate"]["serial_number"]
    )
    listed = {c["serial_number"]: c for c in certificates(server, none_device)}
    # Superseded: it stays valid for a renewal sent again (a lost answer) until its grace period ends.
    old = listed[renewed["diff"]["before"]["serial_number"]]
    assert old["status"] == "active" and old["superseded_at"] and old["renews_until"]
    assert listed[renewed["certificate"]["serial_number"]]["status"] == "active"

    # A new request (another key) is a renewal too; the file keeps up.
    (tmp_path / "tls.key").unlink()
    make_csr(tmp_path, "/CN=%s" % none_device["name"], "DNS:%s.example" % none_device["name"])
    rekeyed = run_tasks(tmp_path, [issue])["issue"]
    assert rekeyed["action"] == "renew" and "another key" in rekeyed["reason"]

    absent = task(server, "revoke", device=none_device["name"], profile="tls_server",
                  certificate_path=str(tmp_path / "tls.pem"), state="absent")  # fmt: skip
    checked = run_tasks(tmp_path, [absent], check=True)["revoke"]
    assert checked["changed"] and checked["action"] == "revoke" and (tmp_path / "tls.pem").exists()
    revoked = run_tasks(tmp_path, [absent])["revoke"]
    assert revoked["action"] == "revoke" and not (tmp_path / "tls.pem").exists()
    assert all(c["status"] == "revoked" for c in certificates(server, none_device))
    assert not run_tasks(tmp_path, [absent])["revoke"]["changed"]


def test_server_side_key_as_a_protected_pkcs12(server, none_device, tmp_path):
    p12 = tmp_path / "opcua.p12"
    issue = task(
        server,
        "opcua",
        device=none_device["name"],
        profile="opc_ua",
        key_type="rsa-2048",
        subject_alt_names=["URI:urn:plant:%s" % none_device["name"]],
        pkcs12_path=str(p12),
        pkcs12_passphrase="p12 passphrase",
    )
    done = run_tasks(tmp_path, [issue])["opcua"]
    assert done["changed"] and done["action"] == "issue" and "p12 passphrase" not in str(done)
    assert stat.S_IMODE(os.stat(p12).st_mode) == 0o600
    key = openssl("pkcs12", "-in", str(p12), "-passin", "pass:p12 passphrase", "-nocerts", "-nodes").stdout
    assert "PRIVATE KEY" in key
    assert not run_tasks(tmp_path, [issue])["opcua"]["changed"]
    # Other names than the file's certificate: renewed with them.
    issue["trustpoint.pki.certificate"]["subject_alt_names"].append("DNS:%s" % none_device["name"])
    changed = run_tasks(tmp_path, [issue])["opcua"]
    assert changed["action"] == "renew" and len(changed["certificate"]["subject_alt_names"]) == 2


def test_idempotent_when_the_server_changes_the_names_and_refused_names_fail_in_check_mode(
    server, none_device, tmp_path
):
    """The names policy drops O and OU and gives a tls_server certificate without a SAN its host-name CN as DNS
    name: the module compares with what the server would issue, not with the request, so it does not renew on
    every run. A name the device may not have fails before anything is issued."""
    csr = make_csr(tmp_path, "/CN=%s.example/O=Plant 1/OU=Line 7" % none_device["name"])
    issue = task(server, "issue", device=none_device["name"], profile="tls_server", csr_path=str(csr),
                 certificate_path=str(tmp_path / "tls.pem"))  # fmt: skip
    done = run_tasks(tmp_path, [issue])["issue"]
    assert done["certificate"]["subject"] == "CN=%s.example" % none_device["name"]
    assert done["certificate"]["subject_alt_names"] == ["DNS:%s.example" % none_device["name"]]
    for check in (True, False):
        again = run_tasks(tmp_path, [issue], check=check)["issue"]
        assert not again["changed"] and again["action"] == "none", again

    other = task(server, "other", device=none_device["name"], profile="tls_client", key_type="ecdsa-p256",
                 subject_alt_names=["DNS:elsewhere.example"], pkcs12_path=str(tmp_path / "other.p12"),
                 pkcs12_passphrase="p12 passphrase")  # fmt: skip
    for check in (True, False):
        failed = run_tasks(tmp_path, [other], check=check, expect_failure=True)["other"]
        assert "may not have DNS:elsewhere.example" in failed["msg"], failed
    assert not (tmp_path / "other.p12").exists() and len(certificates(server, none_device)) == 1


BAD_ARGUMENTS = [
    ({"device": "no-such-device", "csr_content": "x", "certificate_path": "/tmp/x.pem"}, "not registered"),
    ({"csr_content": "not a request", "certificate_path": "/tmp/x.pem"}, "not a PKCS#10 request"),
    ({"key_type": "ecdsa-p256", "pkcs12_path": "/tmp/x.p12", "pkcs12_passphrase": "short"}, "at least 8"),
    ({"key_type": "ecdsa-p256", "pkcs12_passphrase": "long enough"}, "missing parameter(s) required by 'key_type'"),
    ({"csr_content": "x"}, "certificate_path says where"),
    ({"csr_content": "x", "certificate_path": "/nonexistent/dir/x.pem"}, "does not exist"),
    ({"profile": "domain_credential", "key_type": "ecdsa-p256", "pkcs12_path": "/tmp/tp-x.p12",
      "pkcs12_passphrase": "long enough"}, "no domain credential"),
]  # fmt: skip


def test_bad_arguments_fail_with_a_message_and_change_nothing(server, none_device, tmp_path):
    tasks = [task(server, "bad %d" % i, **dict({"device": none_device["name"]}, **arguments))
             for i, (arguments, _message) in enumerate(BAD_ARGUMENTS)]  # fmt: skip
    results = run_tasks(tmp_path, tasks, expect_failure=True)
    for i, (_arguments, message) in enumerate(BAD_ARGUMENTS):
        result = results["bad %d" % i]
        assert result.get("failed") and message in result["msg"], (message, result)
    assert certificates(server, none_device) == []
    assert not os.path.exists("/tmp/tp-x.p12")
