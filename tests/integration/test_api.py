# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The REST management API (/api/v1) against a real `trustpoint-server` process.

Every error answer is checked for the same shape: JSON `{"error": <message>, "status": <code>}`,
Content-Type application/json, no Python traceback. Where a secret's handling matters (shared
secrets, the admin token), the tests look at what the server leaves behind: the database files,
the data directory's modes and the server log.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sqlite3
import stat
import subprocess
import threading
import uuid

import pytest
from cmp_helpers import cmp_ir, create_registration, create_truststore, legacy_url, make_ca
from conftest import BIN, http
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from trustpoint_core import keys

LOG_FILE = "server.log"  # written by the test fixture, not by the server


# --- helpers ---------------------------------------------------------------------------------------


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def call(server, method, path, body=None, headers=None, token=None):
    """(status, headers, raw body) of an API call with the admin token (or `token`, "" for none).

    body: a dict/list is sent as JSON, bytes as they are.
    """
    headers = dict(headers or {})
    token = server.token if token is None else token
    if token:
        headers.setdefault("Authorization", "Bearer " + token)
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    return http(method, server.url + "/api/v1" + path, body, headers)


def assert_error(answer, status, *fragments):
    """The answer is a JSON error with this status whose message mentions every fragment."""
    code, headers, data = answer
    assert code == status, (code, data[:500])
    assert headers.get("Content-Type", "").split(";")[0] == "application/json", headers.get("Content-Type")
    assert b"Traceback" not in data and b'File "' not in data, data
    body = json.loads(data)
    assert set(body) == {"error", "status"}, body
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"].strip(), body
    for fragment in fragments:
        assert fragment.lower() in body["error"].lower(), (fragment, body["error"])
    return body["error"]


def ok(answer, status=200):
    code, _headers, data = answer
    assert code == status, (code, data[:500])
    return json.loads(data) if data else None


def pem_certificates(text):
    return x509.load_pem_x509_certificates(text.encode())


def data_files(server):
    """Every file of the server's data directory except the fixture's log."""
    return sorted(p for p in server.data_dir.iterdir() if p.is_file() and p.name != LOG_FILE)


def database_rows(server, query, params=()):
    db = sqlite3.connect("file:%s?mode=ro" % (server.data_dir / "trustpoint.db"), uri=True)
    try:
        return db.execute(query, params).fetchall()
    finally:
        db.close()


# --- authentication ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Bearer wrong-token", "Token {token}", "Bearer {token}x"],
    ids=["absent", "empty", "scheme-only", "blank-token", "basic", "wrong", "other-scheme", "token-plus-one"],
)
@pytest.mark.parametrize(("method", "path"), [("GET", "/domains"), ("POST", "/devices"), ("GET", "/devices/1")])
def test_unauthenticated_requests_are_401(server, authorization, method, path):
    """Without the admin token (or with a wrong one) every endpoint answers 401 with a Bearer challenge."""
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(token=server.token)
    answer = call(server, method, path, body={} if method == "POST" else None, headers=headers, token="")
    assert_error(answer, 401, "token")
    assert answer[1].get("WWW-Authenticate", "").startswith("Bearer"), answer[1]


def test_bearer_scheme_is_case_insensitive(server):
    """RFC 7235: the auth scheme is case-insensitive."""
    ok(call(server, "GET", "/domains", headers={"Authorization": "bearer " + server.token}, token=""))


# --- domains -----------------------------------------------------------------------------------------


def test_create_domain_defaults(server):
    """A domain created with a name only gets an ECDSA P-256 root and issuing CA, the root self-signed,
    and the summaries describe the certificates of ca_chain."""
    name = unique("dom")
    domain = ok(call(server, "POST", "/domains", {"name": name}), 201)
    assert domain["name"] == name
    assert domain["key_type"] == "ecdsa-p256"
    assert isinstance(domain["validity_days"], int) and domain["validity_days"] > 0
    assert domain["device_count"] == 0
    issuing, root = pem_certificates(domain["ca_chain"])
    assert root.subject == root.issuer and issuing.issuer == root.subject
    issuing.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert keys.key_type_of(root.public_key()) == keys.key_type_of(issuing.public_key()) == "ecdsa-p256"
    assert domain["root_ca"]["fingerprint_sha256"] == root.fingerprint(hashes.SHA256()).hex()
    assert domain["issuing_ca"]["fingerprint_sha256"] == issuing.fingerprint(hashes.SHA256()).hex()
    assert domain["issuing_ca"]["serial_number"] == format(issuing.serial_number, "x")
    assert ok(call(server, "GET", "/domains/" + name)) == domain


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096"])
def test_create_domain_each_key_type(server, key_type):
    """Each key type gives a CA chain of that type; validity_days is stored as given."""
    payload = {"name": unique("kt"), "key_type": key_type, "validity_days": 30}
    domain = ok(call(server, "POST", "/domains", payload), 201)
    assert domain["key_type"] == key_type
    assert domain["validity_days"] == 30
    issuing, root = pem_certificates(domain["ca_chain"])
    assert keys.key_type_of(root.public_key()) == keys.key_type_of(issuing.public_key()) == key_type
    issuing.verify_directly_issued_by(root)


def test_duplicate_domain_is_409(server):
    """Creating a domain twice is a conflict; the first domain is unchanged."""
    first = server.create_domain()
    assert_error(call(server, "POST", "/domains", {"name": first["name"], "key_type": "rsa-2048"}), 409, "exists")
    assert ok(call(server, "GET", "/domains/" + first["name"])) == first


def test_concurrent_duplicate_domain(server):
    """Racing creations of one domain: exactly one 201, the others 409 (never a 500)."""
    name = unique("race")
    answers = []

    def create():
        answers.append(call(server, "POST", "/domains", {"name": name}))

    threads = [threading.Thread(target=create) for _index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(answer[0] for answer in answers)
    assert codes == [201, 409, 409, 409, 409, 409], [a[2][:200] for a in answers]
    for answer in answers:
        if answer[0] == 409:
            assert_error(answer, 409, "exists")


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"name": 5}, "name"),
        ({"name": "-leading-dash"}, "name"),
        ({"name": "with space"}, "name"),
        ({"name": "slash/inside"}, "name"),
        ({"name": "dot.inside"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "ümlaut"}, "name"),
        ({"name": "{new}", "key_type": "dsa-1024"}, "key_type"),
        ({"name": "{new}", "key_type": "RSA-2048"}, "key_type"),
        ({"name": "{new}", "key_type": ""}, "key_type"),
        ({"name": "{new}", "key_type": None}, "key_type"),
        ({"name": "{new}", "key_type": ["rsa-2048"]}, "key_type"),
        ({"name": "{new}", "validity_days": 0}, "validity_days"),
        ({"name": "{new}", "validity_days": -1}, "validity_days"),
        ({"name": "{new}", "validity_days": 3651}, "validity_days"),
        ({"name": "{new}", "validity_days": "30"}, "validity_days"),
        ({"name": "{new}", "validity_days": 1.5}, "validity_days"),
        ({"name": "{new}", "validity_days": True}, "validity_days"),
        ({"name": "{new}", "validity_days": None}, "validity_days"),
        ({"name": "{new}", "colour": "blue"}, "colour"),
    ],
)
def test_invalid_domain_is_400(server, payload, fragment):
    """Invalid names, key types, validity periods and unknown fields are 400 naming the field, and
    nothing is created."""
    new = unique("inv")
    payload = {k: (v.format(new=new) if isinstance(v, str) else v) for k, v in payload.items()}
    assert_error(call(server, "POST", "/domains", payload), 400, fragment)
    names = [d["name"] for d in ok(call(server, "GET", "/domains"))]
    assert new not in names
    if isinstance(payload.get("name"), str):
        assert payload["name"] not in names


def test_domain_name_with_trailing_newline_is_400(server):
    """A name is checked whole: "name\\n" is not a valid domain name (nor a URL path segment)."""
    name = unique("nl") + "\n"
    answer = call(server, "POST", "/domains", {"name": name})
    names = [d["name"] for d in ok(call(server, "GET", "/domains"))]
    assert name not in names, "domain %r was created (HTTP %d)" % (name, answer[0])
    assert_error(answer, 400, "name")


def test_list_get_patch_delete_domain(server):
    """The domain life cycle: listed (sorted by name), read, validity changed, deleted (204, then 404)."""
    a = server.create_domain(unique("lc-a"))
    b = server.create_domain(unique("lc-b"))
    names = [d["name"] for d in ok(call(server, "GET", "/domains"))]
    assert names == sorted(names)
    assert a["name"] in names and b["name"] in names
    assert ok(call(server, "GET", "/domains/" + a["name"])) == a

    patched = ok(call(server, "PATCH", "/domains/" + a["name"], {"validity_days": 42}))
    assert patched["validity_days"] == 42
    assert {k: v for k, v in patched.items() if k != "validity_days"} == {
        k: v for k, v in a.items() if k != "validity_days"
    }
    assert ok(call(server, "GET", "/domains/" + a["name"]))["validity_days"] == 42
    assert ok(call(server, "PATCH", "/domains/" + a["name"], {}))["validity_days"] == 42

    status, _headers, data = call(server, "DELETE", "/domains/" + a["name"])
    assert (status, data) == (204, b"")
    assert_error(call(server, "GET", "/domains/" + a["name"]), 404, a["name"])
    assert_error(call(server, "DELETE", "/domains/" + a["name"]), 404, a["name"])
    assert a["name"] not in [d["name"] for d in ok(call(server, "GET", "/domains"))]
    assert ok(call(server, "GET", "/domains/" + b["name"])) == b


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"validity_days": 0}, "validity_days"),
        ({"validity_days": "10"}, "validity_days"),
        ({"key_type": "rsa-2048"}, "key_type"),
        ({"name": "renamed"}, "name"),
    ],
)
def test_invalid_patch_is_400(server, payload, fragment):
    """PATCH accepts only a valid validity_days; anything else is 400 and changes nothing."""
    domain = server.create_domain()
    assert_error(call(server, "PATCH", "/domains/" + domain["name"], payload), 400, fragment)
    assert ok(call(server, "GET", "/domains/" + domain["name"])) == domain


def test_patched_validity_applies_to_new_credentials(server, workdir):
    """After PATCH validity_days=10, a credential issued over CMP is valid for 10 days."""
    domain = server.create_domain()["name"]
    ok(call(server, "PATCH", "/domains/" + domain, {"validity_days": 10}))
    device, secret = server.create_device(domain)
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir, "-implicit_confirm")
    assert returncode == 0, output
    cert = x509.load_pem_x509_certificate((workdir / "cert.pem").read_bytes())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=10) <= lifetime <= datetime.timedelta(days=10, hours=1), lifetime


@pytest.mark.parametrize(("method", "body"), [("GET", None), ("PATCH", {"validity_days": 5}), ("DELETE", None)])
def test_unknown_domain_is_404(server, method, body):
    """Reading, changing or deleting a domain that does not exist is 404 naming it."""
    name = unique("missing")
    assert_error(call(server, method, "/domains/" + name, body), 404, name)


def test_domain_with_devices_cannot_be_deleted(server):
    """Deleting a domain that still has devices is 409; once they are deleted, it succeeds."""
    domain = server.create_domain()["name"]
    device, _secret = server.create_device(domain)
    assert ok(call(server, "GET", "/domains/" + domain))["device_count"] == 1
    assert_error(call(server, "DELETE", "/domains/" + domain), 409, "device")
    assert ok(call(server, "GET", "/devices/%d" % device["id"]))["domain"] == domain
    assert call(server, "DELETE", "/devices/%d" % device["id"])[0] == 204
    assert call(server, "DELETE", "/domains/" + domain)[0] == 204
    assert_error(call(server, "GET", "/domains/" + domain), 404)


def test_domain_with_devid_registrations_cannot_be_deleted(server):
    """Deleting a domain that DevID registrations name is 409 listing them; once they are deleted, it
    succeeds."""
    domain = server.create_domain()["name"]
    truststore = create_truststore(server, [make_ca(unique("Manufacturer")).certificate])
    registrations = sorted(create_registration(server, domain, truststore, "SN-.*") for _index in range(2))
    message = "domain %r is used by DevID registration(s) %s; delete them first" % (domain, ", ".join(registrations))
    assert_error(call(server, "DELETE", "/domains/" + domain), 409, message)
    for name in registrations:
        assert call(server, "DELETE", "/devid-registrations/" + name)[0] == 204
    assert call(server, "DELETE", "/domains/" + domain)[0] == 204


@pytest.mark.parametrize("certificates", ["hello", "", "MIIB"])
def test_truststore_without_pem_certificate_is_400(server, certificates):
    """Truststore certificates that are text without a PEM block: 400 that asks for a PEM certificate
    (not a DER parser's complaint), and no truststore."""
    name = unique("ts")
    payload = {"name": name, "usage": "idevid", "certificates": certificates}
    message = assert_error(call(server, "POST", "/truststores", payload), 400, "at least one PEM certificate")
    assert "asn1" not in message.lower(), message
    assert_error(call(server, "GET", "/truststores/" + name), 404)


# --- devices -----------------------------------------------------------------------------------------


def test_create_device_returns_secret_only_once(server):
    """Creation returns the device (numeric id, pending, no credential) and a shared secret; reading or
    listing the device never shows the secret again."""
    domain = server.create_domain()["name"]
    name = unique("dev")
    created = ok(
        call(server, "POST", "/devices", {"name": name, "domain": domain, "onboarding_method": "cmp_shared_secret"}),
        201,
    )
    assert set(created) == {"device", "shared_secret"}
    device, secret = created["device"], created["shared_secret"]
    assert isinstance(device["id"], int) and not isinstance(device["id"], bool)
    assert device["name"] == name and device["domain"] == domain
    assert device["onboarding_method"] == "cmp_shared_secret"
    assert device["status"] == "pending" and device["credential"] is None and device["onboarded_at"] is None
    assert isinstance(secret, str) and len(secret) >= 16
    for path in ("/devices/%d" % device["id"], "/devices", "/devices?name=" + name, "/domains/" + domain):
        _status, _headers, data = call(server, "GET", path)
        assert secret.encode() not in data, path
        assert b'"shared_secret"' not in data, path
    assert ok(call(server, "GET", "/devices/%d" % device["id"])) == device
    assert ok(call(server, "GET", "/domains/" + domain))["device_count"] == 1


def test_each_device_gets_its_own_secret(server):
    """Two devices never share a secret."""
    domain = server.create_domain()["name"]
    _a, secret_a = server.create_device(domain)
    _b, secret_b = server.create_device(domain)
    assert secret_a != secret_b


def test_duplicate_device_is_409(server):
    """Device names are unique across domains."""
    domain = server.create_domain()["name"]
    other = server.create_domain()["name"]
    device, _secret = server.create_device(domain)
    payload = {"name": device["name"], "domain": other, "onboarding_method": "cmp_shared_secret"}
    assert_error(call(server, "POST", "/devices", payload), 409, "exists")
    assert ok(call(server, "GET", "/devices?name=" + device["name"])) == [device]


def test_list_devices_with_filters(server):
    """?domain= and ?name= filter the list (and combine); an unknown domain filter is 404."""
    domain_a = server.create_domain()["name"]
    domain_b = server.create_domain()["name"]
    a1, _unused = server.create_device(domain_a)
    a2, _unused = server.create_device(domain_a)
    b1, _unused = server.create_device(domain_b)
    everything = ok(call(server, "GET", "/devices"))
    ids = [d["id"] for d in everything]
    assert {a1["id"], a2["id"], b1["id"]} <= set(ids)
    assert ids == sorted(ids)
    assert ok(call(server, "GET", "/devices?domain=" + domain_a)) == [a1, a2]
    assert ok(call(server, "GET", "/devices?domain=" + domain_b)) == [b1]
    assert ok(call(server, "GET", "/devices?name=" + a2["name"])) == [a2]
    assert ok(call(server, "GET", "/devices?name=%s&domain=%s" % (a2["name"], domain_a))) == [a2]
    assert ok(call(server, "GET", "/devices?name=%s&domain=%s" % (a2["name"], domain_b))) == []
    assert ok(call(server, "GET", "/devices?name=" + unique("nobody"))) == []
    missing = unique("nodomain")
    assert_error(call(server, "GET", "/devices?domain=" + missing), 404, missing)


@pytest.mark.parametrize(
    "path",
    [
        "/devices/987654321",
        "/devices/0",
        "/devices/abc",
        "/devices/-1",
        "/devices/9223372036854775808",  # 2**63: beyond a database integer
        "/devices/99999999999999999999",
    ],
)
def test_unknown_device_is_404(server, path):
    """A device id that does not exist (or is not a number, or no database integer) is a JSON 404."""
    assert_error(call(server, "GET", path), 404)
    assert_error(call(server, "DELETE", path), 404)
    assert_error(call(server, "POST", path + "/secret"), 404)
    if path[len("/devices/") :].isdigit():
        assert_error(call(server, "GET", path), 404, "device %s does not exist" % path[len("/devices/") :])


@pytest.mark.parametrize("ca_id", ["987654321", "0", "9223372036854775808", "99999999999999999999"])
def test_unknown_crl_is_404(server, ca_id):
    """A CRL of a CA id that does not exist (or is no database integer) is a JSON 404, over HTTPS and on
    the plain listener, where CRLs are served without authentication."""
    for base in (server.url, server.cmp_url):
        assert_error(http("GET", "%s/crl/%s" % (base, ca_id)), 404)


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"domain": "{domain}", "onboarding_method": "cmp_shared_secret"}, 400, "name"),
        ({"name": "{name}", "onboarding_method": "cmp_shared_secret"}, 400, "domain"),
        ({"name": "{name}", "domain": "{domain}"}, 400, "onboarding_method"),
        ({"name": "", "domain": "{domain}", "onboarding_method": "cmp_shared_secret"}, 400, "name"),
        ({"name": "-dash", "domain": "{domain}", "onboarding_method": "cmp_shared_secret"}, 400, "name"),
        ({"name": "a b", "domain": "{domain}", "onboarding_method": "cmp_shared_secret"}, 400, "name"),
        ({"name": "x" * 129, "domain": "{domain}", "onboarding_method": "cmp_shared_secret"}, 400, "name"),
        ({"name": 7, "domain": "{domain}", "onboarding_method": "cmp_shared_secret"}, 400, "name"),
        ({"name": "{name}", "domain": "{domain}", "onboarding_method": "est"}, 400, "onboarding_method"),
        ({"name": "{name}", "domain": "{domain}", "onboarding_method": ""}, 400, "onboarding_method"),
        ({"name": "{name}", "domain": "{domain}", "onboarding_method": None}, 400, "onboarding_method"),
        ({"name": "{name}", "domain": "{domain}", "onboarding_method": ["cmp_shared_secret"]}, 400, "onboarding"),
        ({"name": "{name}", "domain": "no-such-domain-zz", "onboarding_method": "cmp_shared_secret"}, 404, "domain"),
        ({"name": "{name}", "domain": 5, "onboarding_method": "cmp_shared_secret"}, 400, "domain"),
        ({"name": "{name}", "domain": None, "onboarding_method": "cmp_shared_secret"}, 400, "domain"),
        ({"name": "{name}", "domain": "{domain}", "onboarding_method": "cmp_shared_secret", "x": 1}, 400, "unknown"),
        ({"name": "{name}:1", "domain": "{domain}", "onboarding_method": "est_password"}, 400, "cannot contain ':'"),
    ],
)
def test_invalid_device_is_4xx(server, payload, status, fragment):
    """Invalid or missing name, domain and onboarding method, and unknown fields: a JSON 4xx naming the
    field, and no device is created."""
    domain = server.create_domain()["name"]
    name = unique("inv")
    payload = {k: (v.format(domain=domain, name=name) if isinstance(v, str) else v) for k, v in payload.items()}
    assert_error(call(server, "POST", "/devices", payload), status, fragment)
    assert ok(call(server, "GET", "/devices?domain=" + domain)) == []


def test_device_name_with_trailing_newline_is_400(server):
    """A device name is checked whole: "name\\n" is refused."""
    domain = server.create_domain()["name"]
    payload = {"name": unique("nl") + "\n", "domain": domain, "onboarding_method": "cmp_shared_secret"}
    answer = call(server, "POST", "/devices", payload)
    assert ok(call(server, "GET", "/devices?domain=" + domain)) == [], "created (HTTP %d)" % answer[0]
    assert_error(answer, 400, "name")


def test_regenerated_secret_replaces_the_old_one(server, workdir):
    """A regenerated secret is new and shown once; the old secret stops working for CMP (badMessageCheck)
    and the new one onboards the device."""
    domain = server.create_domain()["name"]
    device, old = server.create_device(domain)
    answer = ok(call(server, "POST", "/devices/%d/secret" % device["id"]))
    new = answer["shared_secret"]
    assert isinstance(new, str) and len(new) >= 16 and new != old
    assert answer["device"] == server.device(device["id"])

    returncode, output = cmp_ir(
        legacy_url(server, domain), device["id"], old, workdir, "-implicit_confirm", "-unprotected_errors"
    )
    assert returncode != 0
    assert re.search(r"PKIFailureInfo: [^;]*\bbadMessageCheck\b", output), output
    assert server.device(device["id"])["status"] == "pending"

    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], new, workdir, "-implicit_confirm")
    assert returncode == 0, output
    record = server.device(device["id"])
    assert record["status"] == "onboarded"
    cert = x509.load_pem_x509_certificate((workdir / "cert.pem").read_bytes())
    assert record["credential"]["serial_number"] == format(cert.serial_number, "x")


def test_regenerated_secret_reonboards_and_supersedes(server, workdir):
    """After onboarding, a regenerated secret enrolls the device again: the new certificate becomes the
    credential and the previous one is revoked as superseded."""
    domain = server.create_domain()["name"]
    device, secret = server.create_device(domain)
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir, "-implicit_confirm")
    assert returncode == 0, output
    first = server.device(device["id"])["credential"]
    new = ok(call(server, "POST", "/devices/%d/secret" % device["id"]))["shared_secret"]
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], new, workdir, "-implicit_confirm")
    assert returncode == 0, output
    second = server.device(device["id"])["credential"]
    assert second["serial_number"] != first["serial_number"]
    query = "SELECT serial_number, status, revocation_reason FROM issued_certificate WHERE device_id = ?"
    rows = {serial: (status, reason) for serial, status, reason in database_rows(server, query, (device["id"],))}
    assert rows == {first["serial_number"]: ("revoked", "superseded"), second["serial_number"]: ("active", None)}


def test_delete_device_keeps_and_revokes_its_certificates(server, workdir):
    """Deleting an onboarded device: 204, the device is gone, its certificate stays in the database,
    revoked (cessationOfOperation); the domain's device count drops."""
    domain = server.create_domain()["name"]
    device, secret = server.create_device(domain)
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], secret, workdir, "-implicit_confirm")
    assert returncode == 0, output
    serial = server.device(device["id"])["credential"]["serial_number"]

    status, _headers, data = call(server, "DELETE", "/devices/%d" % device["id"])
    assert (status, data) == (204, b"")
    assert_error(call(server, "GET", "/devices/%d" % device["id"]), 404)
    assert ok(call(server, "GET", "/domains/" + domain))["device_count"] == 0
    rows = database_rows(
        server,
        "SELECT device_id, device_name, status, revocation_reason, revoked_at FROM issued_certificate "
        "WHERE serial_number = ?",
        (serial,),
    )
    assert len(rows) == 1
    device_id, device_name, cert_status, reason, revoked_at = rows[0]
    assert device_id is None
    assert device_name == device["name"]
    assert (cert_status, reason) == ("revoked", "cessationOfOperation")
    assert revoked_at is not None


def test_deleted_device_id_is_never_reused(server):
    """The id of a deleted device (its CMP reference) is never given to a later device, even when it
    was the highest id (SQLite reuses that one without AUTOINCREMENT)."""
    domain = server.create_domain()["name"]
    device, _secret = server.create_device(domain)
    assert call(server, "DELETE", "/devices/%d" % device["id"])[0] == 204
    later, _secret = server.create_device(domain)
    assert later["id"] > device["id"]
    assert_error(call(server, "GET", "/devices/%d" % device["id"]), 404)


def test_deleted_device_cannot_enroll(server, workdir):
    """A pending device's secret stops working once the device is deleted."""
    domain = server.create_domain()["name"]
    device, secret = server.create_device(domain)
    assert call(server, "DELETE", "/devices/%d" % device["id"])[0] == 204
    returncode, output = cmp_ir(
        legacy_url(server, domain), device["id"], secret, workdir, "-implicit_confirm", "-unprotected_errors"
    )
    assert returncode != 0
    assert re.search(r"PKIFailureInfo: [^;]*\bbadMessageCheck\b", output), output


# --- request format ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"name=x", "application/x-www-form-urlencoded"),
        (b'{"name": "x"}', "text/plain"),
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b"null", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
    ],
)
@pytest.mark.parametrize(("method", "path"), [("POST", "/domains"), ("POST", "/devices"), ("PATCH", "/domains/{d}")])
def test_non_json_body_is_400(server, body, content_type, method, path):
    """A body that is not a JSON object (or is not declared as JSON) is 400 with a message saying so."""
    domain = server.create_domain()["name"]
    answer = call(server, method, path.format(d=domain), body, {"Content-Type": content_type})
    assert_error(answer, 400, "json")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/domains"),
        ("DELETE", "/domains"),
        ("PUT", "/domains/{d}"),
        ("POST", "/domains/{d}"),
        ("PUT", "/devices"),
        ("DELETE", "/devices"),
        ("PUT", "/devices/1"),
        ("GET", "/devices/1/secret"),
    ],
)
def test_method_not_allowed_is_405(server, method, path):
    """A method an endpoint does not serve is a JSON 405 with an Allow header."""
    domain = server.create_domain()["name"]
    answer = call(server, method, path.format(d=domain), {} if method in ("PUT", "POST", "PATCH") else None)
    assert_error(answer, 405)
    assert answer[1].get("Allow"), answer[1]
    assert method not in [m.strip() for m in answer[1]["Allow"].split(",")]


@pytest.mark.parametrize("path", ["/nothing", "/domains/x/y", "/devices/1/nothing", ""])
def test_unknown_api_path_is_404(server, path):
    """Unknown paths under /api/v1 are JSON 404s."""
    assert_error(call(server, "GET", path), 404)


# --- secrets at rest and in logs ---------------------------------------------------------------------


def test_fresh_data_directory_modes(tmp_path):
    """`trustpoint-server init` makes the data directory 0700 and every file in it 0600, whatever the
    caller's umask."""
    data_dir = tmp_path / "data"
    subprocess.run(
        [str(BIN / "trustpoint-server"), "init", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    files = sorted(p.name for p in data_dir.iterdir())
    assert "admin-token" in files and "trustpoint.db" in files, files
    for path in data_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path.name, oct(path.stat().st_mode))


def test_running_server_files_are_private(server):
    """The files the running server has written (database, its WAL and shared-memory files, vault key,
    admin token) are 0600."""
    server.create_device(server.create_domain()["name"])
    files = data_files(server)
    assert {"admin-token", "trustpoint.db", "vault.key"} <= {p.name for p in files}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path.name, oct(path.stat().st_mode))


def test_secrets_are_not_stored_in_plaintext(server):
    """Neither a device's shared secret (first or regenerated), nor the admin token, nor a CA private key
    appears in clear in any file of the data directory other than admin-token itself."""
    domain = server.create_domain(key_type="rsa-2048")["name"]
    device, secret = server.create_device(domain)
    regenerated = ok(call(server, "POST", "/devices/%d/secret" % device["id"]))["shared_secret"]
    for path in data_files(server):
        data = path.read_bytes()
        for value in (secret, regenerated):
            assert value.encode() not in data, path.name
        if path.name != "tls-key.pem":  # the TLS server key: in clear (0600) by design
            assert b"PRIVATE KEY" not in data, path.name
        if path.name != "admin-token":
            assert server.token.encode() not in data, path.name


def test_secrets_never_reach_the_log(server, workdir):
    """After creation, a regeneration, a failed and a successful enrollment, the server log contains
    neither the secrets nor the admin token."""
    domain = server.create_domain()["name"]
    device, first = server.create_device(domain)
    second = ok(call(server, "POST", "/devices/%d/secret" % device["id"]))["shared_secret"]
    returncode, _output = cmp_ir(
        legacy_url(server, domain), device["id"], first, workdir, "-implicit_confirm", "-unprotected_errors"
    )
    assert returncode != 0
    returncode, output = cmp_ir(legacy_url(server, domain), device["id"], second, workdir, "-implicit_confirm")
    assert returncode == 0, output
    log = server.log()
    assert "device %d" % device["id"] in log or device["name"] in log  # the log did record these events
    for value in (first, second, server.token):
        assert value not in log
