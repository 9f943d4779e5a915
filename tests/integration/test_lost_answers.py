# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""No lost message strands a device (issue 11): a proxy loses each answer of each exchange in turn, and
trustpoint.pki.enroll still ends with a valid credential that the server holds as the device's, with no
operator action in between (python and openssl backends, CMP and EST).

A lost answer means the server did the work: an ip/kup whose certificate is issued (and, implicitly
confirmed, active), a pkiConf whose certConf committed, an rp whose certificate is revoked, an EST answer whose
certificate is active. The module sends again; the server lets it finish (docs/onboarding.md, "Lost answers").
"""

from __future__ import annotations

import uuid

import pytest
from cmp_helpers import certificates_of
from conftest import openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from drop_proxy import DroppingProxy
from test_modules import run_tasks

BACKENDS = ["python", "openssl"]
# flow -> (how many answers a run has, the method the device onboards with)
FLOWS = {
    "cmp-onboard": (2, "cmp_shared_secret"),  # ip, pkiConf
    "cmp-onboard-implicit": (1, "cmp_shared_secret"),  # ip
    "cmp-renew": (2, "cmp_shared_secret"),  # kup, pkiConf
    "cmp-revoke": (1, "cmp_shared_secret"),  # rp
    "est-onboard": (2, "est_password"),  # simpleenroll, cacerts
    "est-renew": (2, "est_password"),  # simplereenroll, cacerts
}


@pytest.fixture(scope="module")
def proxies(server):
    """Proxies in front of the plain-HTTP (CMP) and the HTTPS (EST) listener."""
    with DroppingProxy(("127.0.0.1", server.plain_port)) as cmp, DroppingProxy(("127.0.0.1", server.port)) as est:
        yield {"cmp": cmp, "est": est}


def _task(server, domain, workdir, backend, url, **extra):
    args = dict(
        server_url=url,
        ca_path=str(server.ca_file),
        domain=domain["name"],
        backend=backend,
        key_path=str(workdir / "dc.key"),
        certificate_path=str(workdir / "dc.pem"),
        chain_path=str(workdir / "chain.pem"),
        ca_certificates=domain["ca_chain"],
        renew_before_days=1,
    )
    args.update(extra)
    return {"name": "enroll", "trustpoint.pki.enroll": args}


def _register(server, domain, method):
    name = "lost-" + uuid.uuid4().hex[:8]
    status, body = server.api("POST", "/devices", {"name": name, "domain": domain["name"], "onboarding_method": method})
    assert status == 201, body
    device = body["device"]
    if method == "est_password":
        return device, {"method": method, "username": name, "password": body["password"]}
    return device, {"method": method, "device_id": device["id"], "shared_secret": body["shared_secret"]}


def _fingerprint(path):
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


def _assert_holds_its_credential(server, device, workdir):
    """The files are a valid credential, and the server holds exactly it as the device's active credential."""
    openssl("verify", "-no-CApath", "-no-CAstore", "-CAfile", str(workdir / "chain.pem"), str(workdir / "dc.pem"))
    key = openssl("pkey", "-in", str(workdir / "dc.key"), "-pubout").stdout
    assert key == openssl("x509", "-in", str(workdir / "dc.pem"), "-noout", "-pubkey").stdout
    record = server.device(device["id"])
    assert record["status"] == "onboarded", record
    assert record["credential"]["fingerprint_sha256"] == _fingerprint(workdir / "dc.pem"), record
    assert record["credential"]["status"] == "active"


@pytest.mark.parametrize("flow", list(FLOWS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_lost_answer_is_recovered_by_the_module(server, proxies, tmp_path, backend, flow):
    answers, method = FLOWS[flow]
    domain = server.create_domain(validity_days=1 if flow.endswith("renew") else 30)
    proxy = proxies["est" if flow.startswith("est") else "cmp"]
    url = proxy.url("https" if flow.startswith("est") else "http")
    direct = server.url if flow.startswith("est") else server.cmp_url
    for lost in range(1, answers + 1):
        workdir = tmp_path / ("lost-%d" % lost)
        workdir.mkdir()
        device, secret = _register(server, domain, method)
        extra = {"implicit_confirm": flow == "cmp-onboard-implicit"}
        if flow in ("cmp-renew", "cmp-revoke", "est-renew"):
            # The device holds a credential (onboarded without the proxy); the renewal or revocation loses.
            run_tasks(workdir, [_task(server, domain, workdir, backend, direct, **dict(secret, **extra))])
            before = _fingerprint(workdir / "dc.pem")
            secret = {"method": method}
        task = _task(server, domain, workdir, backend, url, **dict(secret, **extra))
        if flow == "cmp-revoke":
            task["trustpoint.pki.enroll"]["state"] = "absent"

        proxy.reset(drop={lost})
        result = run_tasks(workdir, [task])["enroll"]
        assert proxy.dropped == [lost], "the proxy lost no answer (%d connections)" % proxy.connections
        assert proxy.connections > answers, "the module did not send again"
        if flow == "cmp-revoke":
            assert result["action"] == "revoke" and result["changed"]
            assert not any((workdir / name).exists() for name in ("dc.key", "dc.pem", "chain.pem"))
            rows = {row[0]: row for row in certificates_of(server, device["id"])}
            assert rows[result["certificate"]["serial_number"]][2] == "revoked"
            assert server.device(device["id"])["status"] == "pending"
            continue
        assert result["action"] == ("renew" if flow.endswith("renew") else "enroll"), result
        _assert_holds_its_credential(server, device, workdir)
        if flow.endswith("renew"):
            assert _fingerprint(workdir / "dc.pem") != before
        # Nothing left to do, and nothing the device never received stays active besides its credential.
        proxy.reset()
        again = dict(task, **{"trustpoint.pki.enroll": dict(task["trustpoint.pki.enroll"], renew_before_days=0)})
        assert not run_tasks(workdir, [again])["enroll"]["changed"]
        live = [row for row in certificates_of(server, device["id"]) if row[2] in ("active", "awaiting_confirmation")]
        serials = {row[0] for row in live}
        current = server.device(device["id"])["credential"]["serial_number"]
        assert current in serials
        # A renewed credential may still renew during its grace period; nothing else is live.
        assert len(serials - {current}) <= (1 if flow.endswith("renew") else 0), live
