# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Failed authentications cost the attacker, not the server (issue 11, services/auth_limits.py).

Per source address and per device a budget of failed authentications per minute; a device's one-time
secret locked after N failed attempts until an operator unlocks it or issues a new one; EST passwords
checked with a fast keyed hash, unknown and spent users costing what a device does. Loopback only: the
"other sources" are other addresses of 127.0.0.0/8.
"""

from __future__ import annotations

import http.client
import json
import ssl
import statistics
import time
import urllib.parse

import pytest
from aoki_helpers import Aoki
from cmp_helpers import (
    CMP_CONTENT_TYPE,
    assert_cmp_ok,
    assert_rejected,
    cmp_ir,
    cmp_url,
    error_of,
    mac_protected,
    new_private_key,
    subject_name,
)
from conftest import Server, free_port
from conftest import http as http_call
from est_helpers import Csr, curl, est_url, issued_certificate, password_device
from trustpoint_core.cmp_message import CmpMessage, cert_req_body
from trustpoint_core.cmp_protection import PasswordBasedMac


@pytest.fixture
def limited(tmp_path, request):
    """A server with one worker per listener (budgets are per process) and the limits of the test's param."""
    instance = Server(tmp_path / "data", free_port(), ["--workers", "1", *request.param])
    yield instance
    instance.stop()


def post_from(server, source, url, der):
    """POST a CMP message from a given loopback source address; the decoded answer."""
    connection = http.client.HTTPConnection("127.0.0.1", server.plain_port, timeout=20, source_address=(source, 0))
    try:
        connection.request("POST", urllib.parse.urlsplit(url).path, der, {"Content-Type": CMP_CONTENT_TYPE})
        response = connection.getresponse()
        assert response.status == 200, response.status
        return CmpMessage.decode(response.read())
    finally:
        connection.close()


def wrong_mac_ir(device, iterations=500):
    """An ir for device protected with a wrong secret."""
    body = cert_req_body("ir", new_private_key(), subject_name())
    protector = PasswordBasedMac(b"not-the-secret", iterations=iterations, kid=str(device["id"]).encode())
    return mac_protected(body, device["id"], b"not-the-secret", protector=protector)[1]


def aoki_init(server, cert, key):
    """(status, headers, body) of GET /aoki/init/ with this IDevID as TLS client certificate."""
    context = ssl._create_unverified_context()  # noqa: S323 (AOKI trusts the server only after the answer)
    context.load_cert_chain(str(cert), str(key))
    return http_call("GET", server.url + "/aoki/init/", context=context)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


# --- per source ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limited", [("--auth-failure-budget", "3", "--auth-lockout", "0")], indirect=True)
def test_a_source_over_its_budget_is_refused_before_any_check(limited, workdir):
    """Three failed authentications from one address (EST passwords, an API token, in any mix) use its
    budget: the next CMP or EST attempt, right or wrong, is refused at once (systemUnavail, 429 with
    Retry-After) and so is a wrong API token, while another address still gets its answer."""
    server = limited
    domain = server.create_domain()["name"]
    device, _password = password_device(server, domain)
    csr = Csr(workdir, "est", "/CN=x")
    url = est_url(server, "simpleenroll", domain)
    for _attempt in range(2):
        answer = curl(server, url, workdir, data=csr.b64, user=device["name"] + ":wrong")
        assert answer.status == 401, answer
    assert server.api("GET", "/domains", token="tp_not-a-token")[0] == 401
    # The budget is used: EST, the API and CMP refuse this address without looking.
    answer = curl(server, url, workdir, data=csr.b64, user=device["name"] + ":wrong")
    assert answer.status == 429, answer
    assert 1 <= int(answer.headers["retry-after"]) <= 60, answer
    assert "too many failed authentications" in answer.text
    assert answer.headers["content-type"] == "text/plain; charset=utf-8", answer  # EST clients read no JSON
    status, body = server.api("GET", "/domains", token="tp_not-a-token")
    assert status == 429 and "too many failed authentications" in body["error"], body
    # Budgets are per worker process: the plain-HTTP listener's worker counts its own. Three MACs with
    # unknown references there, and a device's right secret is refused without its MAC being checked.
    cmp_device, secret = server.create_device(domain)
    url = cmp_url(server, domain, "initialization")
    for attempt in range(3):
        unknown = dict(cmp_device, id=cmp_device["id"] + 100000 + attempt)
        assert error_of(post_from(server, "127.0.0.1", url, wrong_mac_ir(unknown)))[0] == ("badMessageCheck",)
    returncode, output = cmp_ir(url, cmp_device["id"], secret, workdir, "-unprotected_errors")
    assert_rejected(returncode, output, "systemUnavail")
    assert "too many failed authentications from this address" in output
    # Another source address has its own budget, and the device's right secret works from there.
    body = cert_req_body("ir", new_private_key(), subject_name())
    answer = post_from(server, "127.0.0.2", url, mac_protected(body, cmp_device["id"], secret.encode())[1])
    assert answer.body_type == "ip"
    # An API token costs nothing to check: the right one is served even from an address over its budget.
    assert server.api("GET", "/domains")[0] == 200


@pytest.mark.parametrize("limited", [("--auth-failure-budget", "60", "--auth-lockout", "0")], indirect=True)
def test_the_budget_refills_over_time(limited, workdir):
    """60 per minute is one per second: after a second's wait a used-up source may fail once more. (Failing
    until the first 429, however long that takes on a loaded machine: the budget refills meanwhile.)"""
    server = limited
    deadline = time.monotonic() + 60
    while server.api("GET", "/domains", token="tp_wrong")[0] != 429:
        assert time.monotonic() < deadline, "the source's budget was never used up"
    time.sleep(1.2)
    assert server.api("GET", "/domains", token="tp_wrong")[0] == 401


@pytest.mark.parametrize("limited", [("--auth-failure-budget", "2", "--auth-lockout", "0")], indirect=True)
def test_aoki_init_counts_refused_idevids_against_the_source(limited, workdir):
    """/aoki/init/ with IDevIDs no registration admits (403) uses the source's budget like any other failed
    authentication: then even an admitted IDevID is refused with 429 before anything looks at it."""
    server = limited
    aoki = Aoki(server, workdir, devices=3, pattern="AOKI-0001")
    admitted, admitted_key, _serial = aoki.device(1)
    other, other_key, _serial = aoki.device(3)
    for _attempt in range(2):
        status, _headers, body = aoki_init(server, other, other_key)
        assert status == 403, body
    status, headers, body = aoki_init(server, admitted, admitted_key)
    assert status == 429 and "too many failed authentications" in json.loads(body)["error"], body
    assert 1 <= int(headers["Retry-After"]) <= 60, headers
    assert headers["Content-Type"] == "application/json", headers
    assert aoki.devices_on_server() == []


# --- per device ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limited", [("--auth-failure-budget", "2", "--auth-lockout", "0")], indirect=True)
def test_a_device_over_its_budget_is_refused_like_a_wrong_secret(limited, workdir):
    """Wrong MACs for one device from several addresses use the device's budget: its right secret is then
    refused too, with the same answer as a wrong one (nothing tells that the reference exists)."""
    server = limited
    domain = server.create_domain()["name"]
    device, secret = server.create_device(domain)
    url = cmp_url(server, domain, "initialization")
    for source in ("127.0.0.2", "127.0.0.3"):
        assert error_of(post_from(server, source, url, wrong_mac_ir(device)))[0] == ("badMessageCheck",)
    body = cert_req_body("ir", new_private_key(), subject_name())
    right = mac_protected(body, device["id"], secret.encode())[1]
    refused, text = error_of(post_from(server, "127.0.0.4", url, right))
    unknown = dict(device, id=device["id"] + 100000)
    assert (refused, text) == error_of(post_from(server, "127.0.0.5", url, wrong_mac_ir(unknown)))
    assert server.device(device["id"])["status"] == "pending"


# --- lockout ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limited", [("--auth-failure-budget", "0", "--auth-lockout", "3")], indirect=True)
def test_a_cmp_secret_is_locked_after_n_failures_until_unlocked(limited, workdir):
    """Three wrong shared secrets lock the device's secret: the API says so, the right secret is refused
    (as a wrong one is), and after POST /devices/<id>/unlock it works."""
    server = limited
    domain = server.create_domain()["name"]
    device, secret = server.create_device(domain)
    # Errors to a request whose secret was not verified are unprotected: -unprotected_errors shows them.
    url = cmp_url(server, domain, "initialization")
    for attempt in range(3):
        returncode, output = cmp_ir(url, device["id"], "wrong-%d" % attempt, workdir, "-unprotected_errors")
        assert_rejected(returncode, output, "badMessageCheck")
    wait_for(lambda: server.device(device["id"])["secret_locked"])
    state = server.device(device["id"])
    assert state["failed_authentications"] == 3 and state["secret_locked_at"], state
    returncode, output = cmp_ir(url, device["id"], secret, workdir, "-unprotected_errors")
    assert_rejected(returncode, output, "badMessageCheck")
    assert "locked" in server.log()

    status, body = server.api("POST", "/devices/%d/unlock" % device["id"])
    assert status == 200 and body["secret_locked"] is False and body["failed_authentications"] == 0, body
    returncode, output = cmp_ir(url, device["id"], secret, workdir, "-unprotected_errors")
    assert_cmp_ok(returncode, output)
    assert server.device(device["id"])["status"] == "onboarded"


@pytest.mark.parametrize("limited", [("--auth-failure-budget", "0", "--auth-lockout", "3")], indirect=True)
def test_an_est_password_is_locked_and_a_new_one_unlocks(limited, workdir):
    """Three wrong EST passwords lock the device's password; a new password (POST /devices/<id>/secret)
    starts over unlocked and onboards the device."""
    server = limited
    domain = server.create_domain()["name"]
    device, password = password_device(server, domain)
    csr = Csr(workdir, "est", "/CN=x")
    url = est_url(server, "simpleenroll", domain)
    for _attempt in range(3):
        assert curl(server, url, workdir, data=csr.b64, user=device["name"] + ":wrong").status == 401
    wait_for(lambda: server.device(device["id"])["secret_locked"])
    answer = curl(server, url, workdir, data=csr.b64, user="%s:%s" % (device["name"], password))
    assert answer.status == 401 and "wrong username or password" in answer.text, answer

    status, body = server.api("POST", "/devices/%d/secret" % device["id"])
    assert status == 200 and body["device"]["secret_locked"] is False, body
    answer = curl(server, url, workdir, data=csr.b64, user="%s:%s" % (device["name"], body["password"]))
    issued_certificate(answer, workdir / "cert.pem")


def test_unlock_of_an_unknown_device_is_404(server):
    status, body = server.api("POST", "/devices/999999999/unlock")
    assert status == 404 and "does not exist" in body["error"], body


# --- EST passwords: a fast keyed hash, the same cost for everyone ------------------------------------------


def test_unknown_spent_and_pending_users_cost_the_same(server, workdir):
    """A wrong password for a pending device takes as long as one for an unknown or spent user: no
    enumeration by timing (scrypt made a pending device's check ~76 ms longer). Medians of interleaved
    attempts; the bound is loose for a loaded machine."""
    domain = server.create_domain()["name"]
    pending, _password = password_device(server, domain)
    spent, password = password_device(server, domain)
    csr = Csr(workdir, "est", "/CN=x")
    url = est_url(server, "simpleenroll", domain)
    answer = curl(server, url, workdir, data=csr.b64, user="%s:%s" % (spent["name"], password))
    issued_certificate(answer, workdir / "spent.pem")
    users = {"pending": pending["name"], "spent": spent["name"], "unknown": "no-such-device-" + pending["name"]}
    times = {kind: [] for kind in users}
    for _round in range(12):
        for kind, name in users.items():
            started = time.perf_counter()
            answer = curl(server, url, workdir, data=csr.b64, user=name + ":wrong-password")
            times[kind].append(time.perf_counter() - started)
            assert answer.status == 401, answer
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    assert medians["pending"] < 2 * min(medians["unknown"], medians["spent"]), medians
