# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the pages do, through the REST API too (one service layer under both), and the pages' own defences:
sessions, CSRF, sign-in limits, HTTPS only."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
from cmp_helpers import fetch_crl, unique
from conftest import BIN, Server, free_port, http, openssl
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from page_client import PageClient, alert
from test_api import assert_error, call, database_rows, ok


@pytest.fixture(scope="module")
def domain(server):
    return server.create_domain()["name"]


def none_device(server, domain):
    # The names its certificates here carry besides its own (services/names.py).
    allowed = ["CN:app", "CN:Line 7", "DNS:a.example", "URI:urn:plant:x"]
    status, body = server.api(
        "POST",
        "/devices",
        {"name": unique("none"), "domain": domain, "onboarding_method": "none", "allowed_names": allowed},
    )
    assert status == 201, body
    return body["device"]


def csr_pem(workdir, subject="/CN=app", san=None):
    key = workdir / ("%s.key" % unique("k"))
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    extra = ["-addext", "subjectAltName=" + san] if san else []
    return openssl("req", "-new", "-key", str(key), "-subj", subject, *extra).stdout


def issued_count(server):
    return database_rows(server, "SELECT count(*) FROM issued_certificate")[0][0]


def test_devices_without_onboarding(server, domain):
    device = none_device(server, domain)
    assert device["status"] == "no_onboarding" and device["credential"] is None
    assert_error(call(server, "POST", "/devices/%d/secret" % device["id"]), 409, "uses no secret")
    listed = ok(call(server, "GET", "/devices?domain=%s&onboarding_method=none" % domain))
    assert device["id"] in [d["id"] for d in listed]
    assert_error(call(server, "GET", "/devices?status=sleeping"), 400, "status must be one of")


def test_certificates_from_a_request_listed_renewed_revoked(server, domain, tmp_path):
    device = none_device(server, domain)
    path = "/devices/%d/certificates" % device["id"]
    first = ok(
        call(server, "POST", path, {"profile": "tls_server", "csr": csr_pem(tmp_path, san="DNS:a.example")}), 201
    )
    record = first["certificate"]
    assert record["profile"] == "tls_server" and record["subject_alt_names"] == ["DNS:a.example"]
    issued = x509.load_pem_x509_certificate(record["certificate"].encode())
    issuing, _root = x509.load_pem_x509_certificates(first["chain"].encode())
    issued.verify_directly_issued_by(issuing)
    assert ok(call(server, "GET", "%s/%s" % (path, record["serial_number"].upper())))["id"] == record["id"]
    second = ok(
        call(
            server,
            "POST",
            path,
            {
                "profile": "tls_server",
                "csr": csr_pem(tmp_path, san="DNS:a.example"),
                "replaces": record["serial_number"],
            },
        ),
        201,
    )["certificate"]
    # The first is superseded: it renews again (a renewal whose answer was lost) until its grace period ends.
    listed = {c["serial_number"]: c for c in ok(call(server, "GET", path))}
    assert (
        listed[record["serial_number"]]["superseded_at"]
        and listed[second["serial_number"]]["replaces"] == (record["serial_number"])
    )
    assert [c["serial_number"] for c in ok(call(server, "GET", path + "?status=active"))] == [
        second["serial_number"],
        record["serial_number"],
    ]

    # Revoked, the renewal takes the certificate it renewed with it.
    revoked = ok(call(server, "POST", "%s/%s/revoke" % (path, second["serial_number"]), {"reason": "keyCompromise"}))
    assert revoked["status"] == "revoked" and revoked["revocation_reason"] == "keyCompromise"
    assert revoked["also_revoked"] == [record["serial_number"]]
    assert ok(call(server, "GET", path + "?status=active")) == []
    certificate = x509.load_pem_x509_certificate(second["certificate"].encode())
    assert fetch_crl(certificate).get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
    assert_error(call(server, "POST", "%s/%s/revoke" % (path, second["serial_number"]), {}), 409, "already revoked")


def test_a_server_generated_key_comes_as_a_protected_pkcs12(server, domain):
    device = none_device(server, domain)
    answer = ok(
        call(
            server,
            "POST",
            "/devices/%d/certificates" % device["id"],
            {"profile": "opc_ua", "key_type": "ecdsa-p384", "pkcs12_password": "twelve chars",
             "subject_alt_names": ["URI:urn:plant:x"]},
        ),
        201,
    )  # fmt: skip
    key, certificate, chain = pkcs12.load_key_and_certificates(base64.b64decode(answer["pkcs12"]), b"twelve chars")
    assert key.curve.name == "secp384r1" and len(chain) == 2
    assert certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    # The server keeps no copy of the key: its private value is nowhere in the database's files.
    secret = key.private_numbers().private_value.to_bytes(48, "big")
    stored = b"".join(p.read_bytes() for p in server.data_dir.glob("trustpoint.db*"))
    assert len(stored) > 10000 and secret not in stored


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"profile": "tls_client"}, 400, "either 'csr'"),
        ({"profile": "tls_client", "csr": "x", "key_type": "ecdsa-p256"}, 400, "either 'csr'"),
        ({"profile": "tls_client", "csr": "not a CSR"}, 400, "PKCS#10"),
        ({"profile": "tls_client", "key_type": "ecdsa-p256", "pkcs12_password": "short"}, 400, "pkcs12_password"),
        ({"profile": "tls_client", "key_type": "ecdsa-p256"}, 400, "pkcs12_password"),
        ({"profile": "tls_client", "key_type": "dsa", "pkcs12_password": "long enough"}, 400, "key_type must be"),
        ({"profile": "tls_server", "key_type": "ecdsa-p256", "pkcs12_password": "long enough",
          "subject": "/CN=Line 7"}, 400, "needs a subject alternative name"),
        ({"profile": "tls_server", "key_type": "ecdsa-p256", "pkcs12_password": "long enough",
          "subject_alt_names": ["DNS:b.example"]}, 400, "may not have DNS:b.example"),
        ({"profile": "domain_credential", "key_type": "ecdsa-p256", "pkcs12_password": "long enough"}, 400,
         "no domain credential"),
        ({"profile": "tls_client", "key_type": "ecdsa-p256", "pkcs12_password": "long enough",
          "subject_alt_names": "DNS:x"}, 400, "must be a list"),
        ({"profile": "tls_client", "key_type": "ecdsa-p256", "pkcs12_password": "long enough",
          "subject_alt_names": ["DNS:a b"]}, 400, "space or a control character"),
        ({"profile": "tls_client", "key_type": "ecdsa-p256", "pkcs12_password": "long enough",
          "replaces": "abcdef"}, 404, "no certificate with serial number"),
        ({"profile": "tls_client", "csr": "x", "extra": 1}, 400, "unknown field"),
        # a JSON value that is no string (was a 500 with a traceback in the log)
        ({"profile": "tls_client", "csr": 1}, 400, "as a string"),
        ({"profile": "tls_client", "csr": ["x"]}, 400, "as a string"),
    ],
)  # fmt: skip
def test_bad_requests_say_what_is_wrong_and_issue_nothing(server, domain, body, status, message):
    device = none_device(server, domain)
    before = issued_count(server)
    assert_error(call(server, "POST", "/devices/%d/certificates" % device["id"], body), status, message)
    assert issued_count(server) == before


def test_the_names_a_certificate_would_get(server, domain, tmp_path):
    """POST /devices/<id>/names: what the names policy makes of a request, without issuing (the certificate
    module compares with it)."""
    device = none_device(server, domain)
    path = "/devices/%d/names" % device["id"]
    before = issued_count(server)
    answer = ok(call(server, "POST", path, {"profile": "tls_server", "csr": csr_pem(tmp_path, "/CN=app/O=Plant 1")}))
    assert answer["subject"] == "CN=app" and answer["subject_alt_names"] == ["DNS:app"]
    assert len(answer["changes"]) == 2, answer  # O dropped, the CN as DNS name added
    same = ok(call(server, "POST", path, {"profile": "opc_ua", "subject_alt_names": ["URI:urn:plant:x"]}))
    assert same == {"subject": "CN=%s" % device["name"], "subject_alt_names": ["URI:urn:plant:x"], "changes": []}
    assert_error(
        call(server, "POST", path, {"profile": "tls_client", "subject": "/CN=other"}), 400, "may not have CN:other"
    )
    assert_error(call(server, "POST", path, {"profile": "opc_ua"}), 400, "UniformResourceIdentifier")
    assert_error(call(server, "POST", path, {"csr": "x"}), 400, "'profile' is required")
    assert issued_count(server) == before


def test_a_request_with_a_bad_signature_is_refused(server, domain, tmp_path):
    """The CSR's signature is its proof of possession: a request whose key did not sign it gets nothing."""
    device = none_device(server, domain)
    good = x509.load_pem_x509_csr(csr_pem(tmp_path).encode())
    der = bytearray(good.public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # flip a bit of the signature
    forged = base64.b64encode(bytes(der)).decode()
    before = issued_count(server)
    assert_error(
        call(server, "POST", "/devices/%d/certificates" % device["id"], {"profile": "tls_client", "csr": forged}),
        400,
        "signature",
    )
    assert issued_count(server) == before


def test_downloads_through_the_api(server, domain):
    device = none_device(server, domain)
    path = "/devices/%d/downloads" % device["id"]
    answer = ok(call(server, "POST", path, {"profile": "tls_client"}), 201)
    assert answer["url"] == server.url + "/browser/" and len(answer["otp"]) == 23
    assert answer["download"]["state"] == "pending" and answer["download"]["subject"] == "CN=%s" % device["name"]
    # The OTP is stored as a hash only.
    rows = database_rows(server, "SELECT otp_sha256 FROM credential_download WHERE id = ?", (answer["download"]["id"],))
    assert answer["otp"].replace("-", "")[5:] not in rows[0][0]
    cancelled = ok(call(server, "DELETE", "%s/%d" % (path, answer["download"]["id"])))
    assert cancelled["state"] == "void"
    assert [d["state"] for d in ok(call(server, "GET", path))] == ["void"]
    assert_error(call(server, "POST", path, {"profile": "domain_credential"}), 400, "no domain credential")


def test_search_and_paging(server):
    prefix = unique("page")
    domain = server.create_domain(prefix)["name"]
    names = sorted("%s-%02d" % (prefix, i) for i in range(7))
    for name in names:
        assert server.api("POST", "/devices", {"name": name, "domain": domain, "onboarding_method": "none"})[0] == 201
    code, headers, data = call(server, "GET", "/devices?search=%s&page=2&per_page=3" % prefix.upper())
    assert code == 200 and headers["X-Total-Count"] == "7"
    assert [d["name"] for d in json.loads(data)] == names[3:6]
    assert len(ok(call(server, "GET", "/devices?search=%s" % prefix))) == 7  # no paging asked: all of them
    assert ok(call(server, "GET", "/devices?search=%25")) is not None  # LIKE wildcards are text
    assert [d["name"] for d in ok(call(server, "GET", "/domains?search=%s" % prefix))] == [domain]
    assert_error(call(server, "GET", "/devices?page=x"), 400, "whole numbers")


# --- the pages' defences -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator(server):
    client = PageClient(server)
    status, _headers, _text = client.sign_in("admin", (server.data_dir / "operator-password").read_text().strip())
    assert status == 302
    return client


def test_the_pages_show_a_superseded_certificate(server, domain, operator, tmp_path):
    device = none_device(server, domain)
    path = "/devices/%d/certificates" % device["id"]
    first = ok(call(server, "POST", path, {"profile": "tls_client", "csr": csr_pem(tmp_path)}), 201)["certificate"]
    fields = {"profile": "tls_client", "csr": csr_pem(tmp_path), "replaces": first["serial_number"]}
    ok(call(server, "POST", path, fields), 201)
    status, _headers, text = operator.get("/ui/devices/%d/certificates/%s" % (device["id"], first["serial_number"]))
    assert status == 200 and "it renews again (nothing else) until its successor is used" in text, text[-2000:]
    status, _headers, text = operator.get("/ui/devices/%d" % device["id"])
    assert status == 200 and "(superseded)" in text


def test_pages_need_a_session_and_sign_out_ends_it(server, operator):
    assert PageClient(server).get("/ui/devices")[0] == 302
    second = PageClient(server)
    assert second.sign_in("admin", (server.data_dir / "operator-password").read_text().strip())[0] == 302
    assert second.get("/ui/devices")[0] == 200
    cookies = list(second.jar)
    assert [c.name for c in cookies] == ["__Host-trustpoint"] and cookies[0].secure
    status, headers, _text = second.post_form("/ui/sign-out", {}, form_page="/ui/devices")
    assert status == 302 and headers["Location"].endswith("/ui/sign-in")
    # Signing out ends every session of the operator: the first client's cookie is void too.
    status, headers, _text = operator.get("/ui/devices")
    assert status == 302 and "/ui/sign-in" in headers["Location"]
    assert operator.sign_in("admin", (server.data_dir / "operator-password").read_text().strip())[0] == 302


def test_forms_without_a_valid_csrf_token_or_referer_are_refused(server, operator):
    name = unique("csrf")
    fields = {"name": name, "domain": "x", "onboarding_method": "none"}
    status, _headers, text = operator.post_form("/ui/devices/new", fields, with_token=False)
    assert status == 400 and "CSRF token is missing" in alert(text)
    fields["csrf_token"] = "forged"
    status, _headers, text = operator.request("POST", "/ui/devices/new", fields)
    assert status == 400 and "CSRF token is invalid" in alert(text)
    fields["csrf_token"] = operator.csrf_token("/ui/devices/new")
    status, _headers, text = operator.request("POST", "/ui/devices/new", fields, referer=False)
    assert status == 400 and "referrer" in alert(text).lower()
    assert server.api("GET", "/devices?name=" + name)[1] == []


def test_sign_in_redirects_only_within_the_site(server):
    client = PageClient(server)
    password = (server.data_dir / "operator-password").read_text().strip()
    for target, expected in (("/ui/domains", "/ui/domains"), ("https://evil.example/", "/ui/devices"),
                             ("//evil.example/ui/", "/ui/devices")):  # fmt: skip
        fields = {"username": "admin", "password": password, "csrf_token": client.csrf_token("/ui/sign-in")}
        status, headers, _text = client.request("POST", "/ui/sign-in?next=" + target, fields)
        assert status == 302 and headers["Location"] == expected, headers["Location"]


def test_pages_are_https_only_and_send_security_headers(server):
    status, headers, body = http("GET", server.cmp_url + "/ui/sign-in")
    assert status == 403 and b"not served over plain HTTP" in body
    status, headers, _body = http("GET", server.url + "/ui/sign-in")
    assert status == 200
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    assert "__Host-trustpoint=" in headers["Set-Cookie"] and "Secure" in headers["Set-Cookie"]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Lax" in headers["Set-Cookie"]


def test_sign_in_attempts_are_limited(tmp_path):
    """A burst of wrong passwords from one address gets 429 (per worker process), and the account itself answers
    only after a delay, even to the right password; `operator password` lifts it. Its own server: the limit
    would lock the session server's other tests out."""
    own = Server(tmp_path / "data", free_port(), extra_args=("--workers", "1"))
    try:
        password = (own.data_dir / "operator-password").read_text().strip()
        client = PageClient(own)
        statuses = []
        for _attempt in range(12):
            fields = {"username": "admin", "password": "wrong password", "csrf_token": client.csrf_token("/ui/sign-in")}
            statuses.append(client.request("POST", "/ui/sign-in", fields)[0])
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429], statuses
        new_password = "a new long password"
        subprocess.run(
            [str(BIN / "trustpoint-server"), "operator", "password", "admin", "--password-stdin",
             "--data-dir", str(own.data_dir)],
            input=new_password + "\n", text=True, check=True, capture_output=True,
        )  # fmt: skip
        listed = subprocess.run(
            [str(BIN / "trustpoint-server"), "operator", "list", "--data-dir", str(own.data_dir)],
            text=True, check=True, capture_output=True,
        ).stdout  # fmt: skip
        assert listed.startswith("admin\tlast sign-in never")
        assert password != new_password
    finally:
        own.stop()


def test_the_help_commands_through_the_api(server, domain):
    device, _secret = server.create_device(domain)
    sections = ok(call(server, "GET", "/devices/%d/help?server=tp.example:8443&profile=opc_ua" % device["id"]))
    by_key = {s["key"]: s for s in sections}
    assert sorted(by_key) == ["ansible", "app-ansible", "app-cmp", "app-csr", "app-est", "openssl"]
    assert "-ref %d -secret pass:SHARED_SECRET" % device["id"] in by_key["openssl"]["text"]
    assert "https://tp.example:8443/.well-known/est/%s/opc_ua/simpleenroll" % domain in by_key["app-est"]["text"]
    assert by_key["ansible"]["language"] == "yaml"
    # A server address that is not one falls back to the request's host.
    sections = ok(call(server, "GET", "/devices/%d/help?server=a%%20b;rm" % device["id"]))
    assert server.url in {s["key"]: s for s in sections}["app-est"]["text"]
    assert_error(call(server, "GET", "/devices/999999999/help"), 404, "does not exist")
    assert_error(call(server, "GET", "/devices/%d/help" % device["id"], token=""), 401, "missing API token")


@pytest.mark.parametrize("path", ["/domains", "/devices/1/certificates/ab/revoke"])
def test_json_nested_past_the_parser_is_400(server, path):
    """A body nested 10,000 deep raised RecursionError in the JSON parser: a 500 with a traceback in the log."""
    nested = '{"a":' * 10000 + "1" + "}" * 10000
    answer = http("POST", server.url + "/api/v1" + path, nested.encode(),
                  {"Authorization": "Bearer " + server.token, "Content-Type": "application/json"},
                  context=server.tls)  # fmt: skip
    assert answer[0] == 400, answer
    assert b"JSON object" in answer[2]
