# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The modules as Ansible runs them (ansible-playbook, local connection) against a real server.

Each case follows the collection convention: check mode, real run, then both again for idempotency.
"""

from __future__ import annotations

import http.server
import json
import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from cmp_helpers import cmp_url, end_retry_window, error_of, mac_protected, new_private_key, post_cmp, subject_name
from conftest import REPO, openssl
from est_helpers import Csr, curl, est_url, issued_certificate
from trustpoint_core.cmp_message import cert_req_body
from trustpoint_core.cmp_protection import PasswordBasedMac

PLAYBOOK = sys.executable.replace("/python", "/ansible-playbook")


def run_tasks(workdir, tasks, check=False, diff=False, expect_failure=False, env=None):
    """Run tasks on localhost with ansible-playbook; return each task's registered result by name.

    Failures do not stop the play (ignore_errors): the caller asserts on them. env: variables set for the
    ansible-playbook process (and so its modules); a None value removes the variable.
    """
    out = Path(workdir) / ("results-%s.json" % uuid.uuid4().hex[:8])
    play_tasks = []
    for index, task in enumerate(tasks):
        play_tasks.append(dict(task, register="result_%d" % index, ignore_errors=True))
    collected = "{" + ", ".join('"%s": result_%d' % (task["name"], i) for i, task in enumerate(tasks)) + "}"
    # Read by callback_plugins/save_results.py: a debug task runs in the controller, no module.
    play_tasks.append(
        {"name": "Save the results", "ansible.builtin.debug": {"msg": "{{ %s | to_json }}" % collected}, "diff": False}
    )
    path = Path(workdir) / ("play-%s.yml" % uuid.uuid4().hex[:8])
    path.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": play_tasks}]))
    command = [PLAYBOOK, "-i", "localhost,", "-c", "local", str(path)]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    environment = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_CALLBACK_PLUGINS=str(Path(__file__).parent / "callback_plugins"),
        TRUSTPOINT_TEST_RESULTS=str(out),
    )
    for key, value in (env or {}).items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    run = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=workdir, check=False)
    if not out.exists():
        raise AssertionError("ansible-playbook failed (%d):\n%s\n%s" % (run.returncode, run.stdout, run.stderr))
    results = json.loads(out.read_text())
    failed = {name: res.get("msg") for name, res in results.items() if res.get("failed")}
    if expect_failure:
        assert failed, "expected a failure, got %s" % results
    else:
        assert not failed, "tasks failed: %s" % failed
    return results


@pytest.fixture
def connection(server):
    return {"server_url": server.url, "ca_path": str(server.ca_file), "api_token": server.token}


def test_domain_module_check_create_idempotent(server, workdir, connection):
    """The domain module predicts, creates, then changes nothing; a key type change is refused."""
    name = "mod-" + uuid.uuid4().hex[:8]
    task = {"name": "domain", "trustpoint.pki.domain": dict(connection, name=name, key_type="ecdsa-p384")}

    predicted = run_tasks(workdir, [task], check=True, diff=True)["domain"]
    assert predicted["changed"] and predicted["diff"]["before"] == {}
    assert server.api("GET", "/domains/" + name)[0] == 404, "check mode must not create the domain"

    created = run_tasks(workdir, [task])["domain"]
    assert created["changed"]
    assert created["domain"]["key_type"] == "ecdsa-p384"
    assert "BEGIN CERTIFICATE" in created["domain"]["ca_chain"]

    assert not run_tasks(workdir, [task], check=True)["domain"]["changed"]
    assert not run_tasks(workdir, [task])["domain"]["changed"]

    patch = {"name": "domain", "trustpoint.pki.domain": dict(connection, name=name, validity_days=30)}
    assert run_tasks(workdir, [patch], diff=True)["domain"]["diff"]["after"]["validity_days"] == 30
    assert not run_tasks(workdir, [patch])["domain"]["changed"]

    # The CMP policy (issue 15): predicted in check mode, set, then unchanged.
    policy = dict(connection, name=name, cmp_central_keygen=False, cmp_ir_with_credential="certify")
    policy_task = {"name": "domain", "trustpoint.pki.domain": policy}
    predicted = run_tasks(workdir, [policy_task], check=True, diff=True)["domain"]
    assert predicted["changed"] and predicted["diff"]["after"]["cmp_ir_with_credential"] == "certify"
    assert server.api("GET", "/domains/" + name)[1]["cmp_central_keygen"] is True
    assert run_tasks(workdir, [policy_task])["domain"]["changed"]
    assert server.api("GET", "/domains/" + name)[1]["cmp_ir_with_credential"] == "certify"
    assert not run_tasks(workdir, [policy_task])["domain"]["changed"]

    other_key = {"name": "domain", "trustpoint.pki.domain": dict(connection, name=name, key_type="rsa-2048")}
    refused = run_tasks(workdir, [other_key], expect_failure=True)["domain"]
    assert "cannot change" in refused["msg"]

    absent = {"name": "domain", "trustpoint.pki.domain": dict(connection, name=name, state="absent")}
    assert run_tasks(workdir, [absent], check=True)["domain"]["changed"]
    assert run_tasks(workdir, [absent])["domain"]["changed"]
    assert not run_tasks(workdir, [absent])["domain"]["changed"]


def test_device_module_secret_only_at_creation(server, workdir, connection):
    """The device module returns the secret when it creates or regenerates, never otherwise."""
    domain = server.create_domain()["name"]
    name = "moddev-" + uuid.uuid4().hex[:8]
    task = {"name": "device", "trustpoint.pki.device": dict(connection, name=name, domain=domain)}

    predicted = run_tasks(workdir, [task], check=True)["device"]
    assert predicted["changed"] and "shared_secret" not in predicted

    created = run_tasks(workdir, [task])["device"]
    assert created["changed"] and created["shared_secret"]
    assert created["device"]["status"] == "pending" and created["device"]["id"] > 0

    again = run_tasks(workdir, [task])["device"]
    assert not again["changed"] and "shared_secret" not in again

    renew = dict(task, **{"trustpoint.pki.device": dict(task["trustpoint.pki.device"], regenerate_secret=True)})
    renewed = run_tasks(workdir, [renew])["device"]
    assert renewed["changed"] and renewed["shared_secret"] not in ("", created["shared_secret"])

    moved = {"name": "device", "trustpoint.pki.device": dict(connection, name=name, domain="elsewhere")}
    assert "delete it" in run_tasks(workdir, [moved], expect_failure=True)["device"]["msg"]

    absent = {"name": "device", "trustpoint.pki.device": dict(connection, name=name, state="absent")}
    assert run_tasks(workdir, [absent])["device"]["changed"]
    assert not run_tasks(workdir, [absent])["device"]["changed"]


def test_device_module_unlocks_a_locked_secret(server, workdir, connection):
    """Wrong MACs up to the server's lockout (20) lock a device's secret; unlock=true lifts it (check mode
    predicts it), and changes nothing when nothing is locked."""
    domain = server.create_domain()["name"]
    device, _secret = server.create_device(domain)
    url = cmp_url(server, domain, "initialization")
    for _attempt in range(20):
        body = cert_req_body("ir", new_private_key(), subject_name())
        protector = PasswordBasedMac(b"wrong", kid=b"%d" % device["id"])
        _header, der = mac_protected(body, device["id"], b"wrong", protector=protector)
        assert error_of(post_cmp(url, der))[0] == ("badMessageCheck",)
    deadline = time.monotonic() + 10
    while not server.device(device["id"])["secret_locked"]:
        assert time.monotonic() < deadline, server.device(device["id"])
        time.sleep(0.1)

    task = {
        "name": "device",
        "trustpoint.pki.device": dict(connection, name=device["name"], domain=domain, unlock=True),
    }
    predicted = run_tasks(workdir, [task], check=True, diff=True)["device"]
    assert predicted["changed"] and predicted["diff"]["after"]["secret_locked"] is False
    assert server.device(device["id"])["secret_locked"]
    unlocked = run_tasks(workdir, [task])["device"]
    assert unlocked["changed"] and unlocked["device"]["secret_locked"] is False
    assert unlocked["device"]["failed_authentications"] == 0 and "shared_secret" not in unlocked
    assert not run_tasks(workdir, [task])["device"]["changed"]


def test_api_modules_fail_clearly(server, workdir):
    """A wrong token or an unreachable server is a failed task with an actionable message."""
    bad_token = {
        "name": "domain",
        "trustpoint.pki.domain": {
            "server_url": server.url,
            "ca_path": str(server.ca_file),
            "api_token": "nope",
            "name": "x",
        },
    }
    assert "invalid API token" in run_tasks(workdir, [bad_token], expect_failure=True)["domain"]["msg"]
    unreachable = {
        "name": "domain",
        "trustpoint.pki.domain": {"server_url": "http://127.0.0.1:9", "api_token": "not-a-valid-token", "name": "x"},
    }
    assert "cannot reach" in run_tasks(workdir, [unreachable], expect_failure=True)["domain"]["msg"]


def _enroll_task(server, domain, workdir, backend, **extra):
    args = dict(
        server_url=server.url,
        ca_path=str(server.ca_file),
        domain=domain["name"],
        key_path=str(workdir / "dc.key"),
        certificate_path=str(workdir / "dc.pem"),
        chain_path=str(workdir / "chain.pem"),
        ca_certificates=domain["ca_chain"],
        backend=backend,
    )
    args.update(extra)
    return {"name": "enroll", "trustpoint.pki.enroll": args}


@pytest.mark.parametrize("backend", ["python", "openssl"])
def test_enroll_module_lifecycle(server, workdir, backend):
    """enroll: check mode needs no secret; enrolls once; idempotent; fixes the key mode; keeps files on failure."""
    domain = server.create_domain()
    device, secret = server.create_device(domain["name"])

    check = run_tasks(workdir, [_enroll_task(server, domain, workdir, backend)], check=True, diff=True)["enroll"]
    assert check["changed"] and check["backend"] == backend
    assert not (workdir / "dc.key").exists()
    # The diff of a check run has the shape of a real run's, with what only the server knows left open.
    assert check["diff"]["before"] == {}
    assert check["diff"]["after"]["serial_number"] == "(new certificate)"
    assert check["diff"]["after"]["key_mode"] == "0600"

    no_secret = run_tasks(workdir, [_enroll_task(server, domain, workdir, backend)], expect_failure=True)["enroll"]
    assert "shared_secret" in no_secret["msg"] and "regenerate_secret" in no_secret["msg"]

    task = _enroll_task(
        server, domain, workdir, backend, device_id=device["id"], shared_secret=secret, key_type="rsa-2048"
    )
    enrolled = run_tasks(workdir, [task], diff=True)["enroll"]
    assert enrolled["changed"]
    assert stat.S_IMODE((workdir / "dc.key").stat().st_mode) == 0o600
    assert secret not in json.dumps(enrolled), "the secret must not be returned"
    openssl("verify", "-CAfile", str(workdir / "chain.pem"), str(workdir / "dc.pem"))
    assert server.device(device["id"])["status"] == "onboarded"
    assert server.device(device["id"])["credential"]["serial_number"] == enrolled["certificate"]["serial_number"]

    assert not run_tasks(workdir, [task], check=True)["enroll"]["changed"]
    assert not run_tasks(workdir, [task])["enroll"]["changed"]

    os.chmod(workdir / "dc.key", 0o644)
    predicted = run_tasks(workdir, [task], check=True, diff=True)["enroll"]
    assert predicted["changed"]
    assert predicted["diff"]["before"]["key_mode"] == "0644" and predicted["diff"]["after"]["key_mode"] == "0600"
    assert stat.S_IMODE((workdir / "dc.key").stat().st_mode) == 0o644, "check mode changes nothing"
    tightened = run_tasks(workdir, [task], diff=True)["enroll"]
    assert tightened["changed"], "a key readable by others is tightened"
    assert tightened["diff"]["before"] != tightened["diff"]["after"]
    assert stat.S_IMODE((workdir / "dc.key").stat().st_mode) == 0o600

    # A credential from another domain's CA needs replacing; with a spent secret (its retry window over) the
    # run fails and leaves the existing files as they were.
    end_retry_window(server, device["id"])
    other = server.create_domain()
    before = {name: (workdir / name).read_bytes() for name in ("dc.key", "dc.pem", "chain.pem")}
    moved = _enroll_task(server, other, workdir, backend, device_id=device["id"], shared_secret=secret)
    assert run_tasks(workdir, [moved], check=True)["enroll"]["changed"]
    failed = run_tasks(workdir, [moved], expect_failure=True)["enroll"]
    assert "badMessageCheck" in failed["msg"]
    assert not failed["changed"], "a failed run that changed no file claims no change"
    assert {name: (workdir / name).read_bytes() for name in before} == before
    assert not [p for p in workdir.iterdir() if p.name.startswith(".trustpoint-")], "temporary files remain"


def test_enroll_renewal_window(server, workdir):
    """A credential inside renew_before_days counts as needing enrollment."""
    domain = server.create_domain(validity_days=10)
    device, secret = server.create_device(domain["name"])
    task = _enroll_task(server, domain, workdir, "python", device_id=device["id"], shared_secret=secret)
    run_tasks(workdir, [task])
    inside = _enroll_task(server, domain, workdir, "python", renew_before_days=20)
    result = run_tasks(workdir, [inside], check=True)["enroll"]
    assert result["changed"] and "renewal window" in result["reason"]


class _NotTrustpoint(http.server.BaseHTTPRequestHandler):
    """Answers every request with an HTML page and the server's status, as a proxy or login portal does."""

    status = 200

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html>login portal</html>"
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def not_trustpoint():
    """An HTTP server that is not Trustpoint; set .status to choose its answer's status."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTrustpoint)
    httpd.status = 200
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_api_modules_refuse_an_answer_that_is_not_the_servers(workdir, not_trustpoint):
    """A 2xx without JSON is not the server's answer (the modules used to crash on it), and a 404 page
    that is not the server's JSON error does not mean that a resource is absent."""
    connection = {"server_url": "http://127.0.0.1:%d" % not_trustpoint.server_port, "api_token": "not-a-valid-token"}
    tasks = [
        {"name": "domain", "trustpoint.pki.domain": dict(connection, name="x")},
        {"name": "device", "trustpoint.pki.device": dict(connection, name="x", domain="d")},
        {"name": "info", "trustpoint.pki.device_info": dict(connection)},
    ]
    results = run_tasks(workdir, tasks, expect_failure=True)
    for name, result in results.items():
        assert result.get("failed"), name
        assert "probably is not a Trustpoint server" in result["msg"], (name, result["msg"])
        assert "Traceback" not in result.get("module_stderr", "")

    not_trustpoint.status = 404
    absent = {"name": "domain", "trustpoint.pki.domain": dict(connection, name="x", state="absent")}
    failed = run_tasks(workdir, [absent], expect_failure=True)["domain"]
    assert "404" in failed["msg"] and not failed["changed"]


def test_enroll_rejects_unusable_parameters(server, workdir):
    """ca_certificates and subject that cannot be used, and IDevID files that cannot be read, fail with a
    message naming them, before any server is contacted and without touching a file."""
    domain = server.create_domain()
    device, secret = server.create_device(domain["name"])
    for backend in ("python", "openssl"):
        not_pem = _enroll_task(
            server, domain, workdir, backend, ca_certificates="not a pem", device_id=device["id"], shared_secret=secret
        )
        failed = run_tasks(workdir, [not_pem], expect_failure=True)["enroll"]
        assert "ca_certificates cannot be used" in failed["msg"] and not failed["changed"], failed["msg"]
        broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        not_der = _enroll_task(server, domain, workdir, backend, ca_certificates=broken)
        assert "ca_certificates cannot be used" in run_tasks(workdir, [not_der], expect_failure=True)["enroll"]["msg"]

        garbage = _enroll_task(
            server, domain, workdir, backend, subject="garbage", device_id=device["id"], shared_secret=secret
        )
        message = run_tasks(workdir, [garbage], expect_failure=True)["enroll"]["msg"]
        assert "'garbage'" in message and "/CN=name" in message and not message.rstrip().endswith(":"), message

        for method in ("cmp_idevid", "est_idevid"):
            idevid = _enroll_task(
                server,
                domain,
                workdir,
                backend,
                method=method,
                idevid_certificate_path=str(workdir / "missing-idevid.pem"),
                idevid_key_path=str(workdir / "missing-idevid.key"),
            )
            message = run_tasks(workdir, [idevid], expect_failure=True)["enroll"]["msg"]
            assert "cannot read idevid_certificate_path" in message and "missing-idevid.pem" in message, message
    assert not list(workdir.glob("dc.*")) and not list(workdir.glob(".trustpoint-*"))
    assert server.device(device["id"])["status"] == "pending"
    # The secret is unspent: the device still onboards with it.
    task = _enroll_task(server, domain, workdir, "python", device_id=device["id"], shared_secret=secret)
    assert run_tasks(workdir, [task])["enroll"]["action"] == "enroll"


def test_device_module_refuses_a_colon_in_an_est_password_name(server, workdir, connection):
    """An est_password device's name is its HTTP Basic user-id, which cannot contain ':'."""
    domain = server.create_domain()["name"]
    name = "line1:press-" + uuid.uuid4().hex[:6]
    task = {
        "name": "device",
        "trustpoint.pki.device": dict(connection, name=name, domain=domain, onboarding_method="est_password"),
    }
    failed = run_tasks(workdir, [task], expect_failure=True)["device"]
    assert "':'" in failed["msg"] and not failed["changed"]
    assert server.api("GET", "/devices?name=" + name)[1] == []


def test_connection_options_from_the_environment(server, workdir):
    """With no connection option in the task, the TRUSTPOINT_* variables reach the server; without
    TRUSTPOINT_CA_PATH the server's certificate (from its own TLS CA) does not verify, unless
    TRUSTPOINT_VALIDATE_CERTS=false."""
    name = "envdom-" + uuid.uuid4().hex[:8]
    environment = {
        "TRUSTPOINT_URL": server.url,
        "TRUSTPOINT_API_TOKEN": server.token,
        "TRUSTPOINT_VALIDATE_CERTS": "true",
        "TRUSTPOINT_CA_PATH": str(server.ca_file),
    }
    tasks = [
        {"name": "create", "trustpoint.pki.domain": {"name": name}},
        {"name": "read", "trustpoint.pki.domain": {"name": name}},
    ]
    results = run_tasks(workdir, tasks, env=environment)
    assert results["create"]["changed"] and results["create"]["domain"]["name"] == name
    assert not results["read"]["changed"] and results["read"]["domain"]["name"] == name
    status, domain = server.api("GET", "/domains/" + name)
    assert status == 200 and domain["name"] == name

    other = "envdom-" + uuid.uuid4().hex[:8]
    unverified = dict(environment, TRUSTPOINT_CA_PATH=None)
    task = {"name": "create", "trustpoint.pki.domain": {"name": other}}
    failed = run_tasks(workdir, [task], expect_failure=True, env=unverified)["create"]
    assert "certificate verify failed" in failed["msg"].lower(), failed
    assert not failed.get("changed")
    assert server.api("GET", "/domains/" + other)[0] == 404
    # TRUSTPOINT_VALIDATE_CERTS is read too: false lets the same task through without a trust anchor.
    unchecked = dict(unverified, TRUSTPOINT_VALIDATE_CERTS="false")
    read = {"name": "read", "trustpoint.pki.domain": {"name": name}}
    assert not run_tasks(workdir, [read], env=unchecked)["read"]["changed"]


def test_device_module_est_password_only_at_creation(server, workdir, connection):
    """An est_password device's password is returned by the run that creates it (and onboards it over EST
    simpleenroll with HTTP Basic), never by check mode or by a run that changes nothing."""
    domain = server.create_domain()["name"]
    name = "modest-" + uuid.uuid4().hex[:8]
    task = {
        "name": "device",
        "trustpoint.pki.device": dict(connection, name=name, domain=domain, onboarding_method="est_password"),
    }

    predicted = run_tasks(workdir, [task], check=True)["device"]
    assert predicted["changed"] and "password" not in predicted and "shared_secret" not in predicted
    assert server.api("GET", "/devices?name=" + name)[1] == [], "check mode must not create the device"

    created = run_tasks(workdir, [task])["device"]
    assert created["changed"] and isinstance(created.get("password"), str) and created["password"]
    assert created["device"]["onboarding_method"] == "est_password"

    again = run_tasks(workdir, [task])["device"]
    assert not again["changed"] and "password" not in again
    assert "password" not in run_tasks(workdir, [task], check=True)["device"]

    csr = Csr(workdir, "estpw", "/CN=%s" % name)
    url = est_url(server, "simpleenroll", domain)
    wrong = curl(server, url, workdir, data=csr.b64, user="%s:%s" % (name, created["password"] + "x"))
    assert wrong.status == 401, wrong
    answer = curl(server, url, workdir, data=csr.b64, user="%s:%s" % (name, created["password"]))
    issued_certificate(answer, workdir / "estpw.pem")
    assert server.device(created["device"]["id"])["status"] == "onboarded"


def test_api_modules_name_the_unreadable_ca_file_and_the_missing_token(server, workdir):
    """An unreadable ca_path is reported as such (not as an unreachable server); a TLS failure and a missing token
    say what to set."""
    missing = workdir / "nowhere" / "tls-ca.pem"
    task = {"name": "domain", "trustpoint.pki.domain": {"server_url": server.url, "ca_path": str(missing),
                                                        "api_token": server.token, "name": "x"}}  # fmt: skip
    message = run_tasks(workdir, [task], expect_failure=True)["domain"]["msg"]
    assert "cannot read the CA file %s given as ca_path" % missing in message and "trustpoint_ca_path" in message
    assert "cannot reach" not in message

    untrusted = {"name": "domain", "trustpoint.pki.domain": {"server_url": server.url, "api_token": server.token,
                                                             "name": "x"}}  # fmt: skip
    message = run_tasks(workdir, [untrusted], expect_failure=True, env={"TRUSTPOINT_CA_PATH": None})["domain"]["msg"]
    assert "does not verify" in message and "set ca_path" in message and "tls-ca.pem" in message

    no_token = {"name": "domain", "trustpoint.pki.domain": {"server_url": server.url, "ca_path": str(server.ca_file),
                                                            "name": "x"}}  # fmt: skip
    message = run_tasks(workdir, [no_token], expect_failure=True, env={"TRUSTPOINT_API_TOKEN": None})["domain"]["msg"]
    assert "TRUSTPOINT_API_TOKEN" in message and "trustpoint_api_token" in message


def test_device_batch_reads_checks_then_registers(server, workdir, connection):
    """device_batch: check mode reads and registers nothing; every conflict is reported before anything is
    registered; a real run registers all and returns their secrets once; an unknown domain names the others."""
    domain = server.create_domain()["name"]
    names = ["batch-%s-%d" % (uuid.uuid4().hex[:6], i) for i in range(3)]
    devices = [{"name": names[0]}, {"name": names[1], "onboarding_method": "est_password"},
               {"name": names[2], "onboarding_method": "cmp_idevid", "serial_number": "SN-" + names[2]}]  # fmt: skip
    task = {"name": "batch", "trustpoint.pki.device_batch": dict(connection, domain=domain, devices=devices)}

    read = run_tasks(workdir, [task], check=True)["batch"]
    assert read["changed"] and "BEGIN CERTIFICATE" in read["domain"]["ca_chain"]
    assert all("shared_secret" not in r and "password" not in r for r in read["devices"].values())
    assert server.api("GET", "/devices?domain=" + domain)[1] == []

    existing, _secret = server.create_device(domain, name="batch-x-" + uuid.uuid4().hex[:6], method="cmp_idevid")
    conflicting = dict(task, **{"trustpoint.pki.device_batch": dict(
        connection, domain=domain, devices=[*devices, {"name": existing["name"]}])})  # fmt: skip
    message = run_tasks(workdir, [conflicting], expect_failure=True)["batch"]["msg"]
    assert "exists with onboarding_method cmp_idevid" in message
    assert [d["name"] for d in server.api("GET", "/devices?domain=" + domain)[1]] == [existing["name"]]

    registered = run_tasks(workdir, [task])["batch"]
    assert registered["changed"]
    assert registered["devices"][names[0]]["shared_secret"] and registered["devices"][names[1]]["password"]
    assert "shared_secret" not in registered["devices"][names[2]]
    again = run_tasks(workdir, [task])["batch"]
    assert not again["changed"] and all("shared_secret" not in r for r in again["devices"].values())

    regenerate = dict(task, **{"trustpoint.pki.device_batch": dict(
        connection, domain=domain, devices=[{"name": names[0], "regenerate_secret": True}])})  # fmt: skip
    renewed = run_tasks(workdir, [regenerate])["batch"]["devices"][names[0]]
    assert renewed["shared_secret"] != registered["devices"][names[0]]["shared_secret"]

    typo = dict(task, **{"trustpoint.pki.device_batch": dict(connection, domain=domain + "x", devices=devices)})
    message = run_tasks(workdir, [typo], expect_failure=True)["batch"]["msg"]
    assert "domain %sx does not exist" % domain in message and domain in message.split("existing domains:")[1]


def test_enroll_writes_the_trust_anchor_and_keeps_what_the_server_counts(server, workdir):
    """ca_content lands in ca_path (0644, a symlink there replaced, not followed) with create_directories;
    onboard=false reports instead of onboarding; expected_fingerprint of another certificate onboards again."""
    domain = server.create_domain()
    device, secret = server.create_device(domain["name"])
    base = workdir / "new" / "dir"
    target = workdir / "elsewhere.pem"
    target.write_text("do not touch\n")
    ca_path = base / "tls-ca.pem"
    args = dict(ca_path=str(ca_path), ca_content=server.ca_file.read_text(), create_directories=True,
                key_path=str(base / "dc.key"), certificate_path=str(base / "dc.pem"),
                chain_path=str(base / "chain.pem"))  # fmt: skip
    probe = _enroll_task(server, domain, workdir, "python", onboard=False, **args)
    predicted = run_tasks(workdir, [probe], check=True)["enroll"]
    assert predicted["changed"] and predicted["needs_onboarding"] and not base.exists()

    reported = run_tasks(workdir, [probe])["enroll"]
    assert reported["needs_onboarding"] and reported["action"] == "none" and not (base / "dc.key").exists()
    assert ca_path.read_bytes().strip() == server.ca_file.read_bytes().strip()
    assert stat.S_IMODE(ca_path.stat().st_mode) == 0o644 and stat.S_IMODE(base.stat().st_mode) == 0o755
    ca_path.unlink()
    ca_path.symlink_to(target)

    enroll = _enroll_task(server, domain, workdir, "python", device_id=device["id"], shared_secret=secret, **args)
    first = run_tasks(workdir, [enroll])["enroll"]
    assert first["action"] == "enroll" and not ca_path.is_symlink() and target.read_text() == "do not touch\n"
    fingerprint = first["certificate"]["fingerprint_sha256"]

    same = run_tasks(workdir, [dict(probe, **{"trustpoint.pki.enroll": dict(
        probe["trustpoint.pki.enroll"], expected_fingerprint=fingerprint)})])["enroll"]  # fmt: skip
    assert not same["changed"] and not same["needs_onboarding"]
    other = run_tasks(workdir, [dict(probe, **{"trustpoint.pki.enroll": dict(
        probe["trustpoint.pki.enroll"], expected_fingerprint="00" * 32)})])["enroll"]  # fmt: skip
    assert other["needs_onboarding"] and "the server holds another certificate" in other["reason"]
