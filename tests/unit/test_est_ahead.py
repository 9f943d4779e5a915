# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""EST answered ahead of Flask (issue 16): protocols/ahead.py AheadOfFlask with protocols/est.py's handler.

Every request goes to the app (the dispatcher first) and to the Flask app alone (the dispatcher's .flask); both
must answer alike: same status, headers (but Flask's "Vary: Cookie") and body. A before_request hook tells which of
the two answered. On the plain-HTTP app, EST goes to Flask, which refuses it (HTTPS only). The app runs in-process on
a `trustpoint-server init` data directory; HTTPS is the test client's https:// base URL.
"""

from __future__ import annotations

import base64
import datetime
import subprocess

import pytest
from conftest import BIN
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID
from trustpoint_server.app import create_app
from trustpoint_server.settings import Settings
from werkzeug.test import Client

HTTPS = "https://localhost"
PKCS10 = "application/pkcs10"

# (method, path, body, Content-Type, status): refusals and answers that change nothing.
REQUESTS = [
    ("GET", "/.well-known/est/ahead/cacerts", None, None, 200),
    ("GET", "/.well-known/est/ahead~tls_client/cacerts/", None, None, 200),
    ("GET", "/ahead/.well-known/est/cacerts", None, None, 200),  # strongSwan's prefixed form
    ("GET", "/.well-known/est/ahead/tls_server/csrattrs", None, None, 200),
    ("GET", "/.well-known/est/cacerts", None, None, 404),  # no default domain
    ("GET", "/.well-known/est/nosuchdomain/cacerts", None, None, 404),
    ("GET", "/.well-known/est/ahead/nosuchprofile/cacerts", None, None, 404),
    ("GET", "/.well-known/est/ahead/nosuchoperation", None, None, 404),
    ("GET", "/.well-known/est/ahead/simpleenroll", None, None, 405),  # Allow: POST
    ("POST", "/.well-known/est/ahead/cacerts", b"x", PKCS10, 405),
    ("POST", "/.well-known/est/ahead/simpleenroll", b"x", PKCS10, 401),  # no credentials: a Basic challenge
    ("POST", "/.well-known/est/ahead/simpleenroll", b"x", "text/plain", 415),
    ("OPTIONS", "/.well-known/est/ahead/cacerts", None, None, 200),  # Flask's automatic answer, through Flask
    ("HEAD", "/.well-known/est/ahead/cacerts", None, None, 200),  # through Flask, a GET without the body
    ("HEAD", "/.well-known/est/ahead/simpleenroll", None, None, 405),
]


def with_devices(data, domain, names, auth_failure_budget=0):
    """A `trustpoint-server init` data directory with domain and an est_password device of each name: (settings,
    the app that registered them, {name: password})."""
    subprocess.run([str(BIN / "trustpoint-server"), "init", "--data-dir", str(data)], check=True, capture_output=True)
    settings = Settings(data_dir=str(data), auth_failure_budget=auth_failure_budget, auth_lockout=0)
    api = create_app(settings)
    admin = {"Authorization": "Bearer " + (data / "admin-token").read_text().strip()}
    client = api.test_client()
    assert client.post("/api/v1/domains", json={"name": domain}, headers=admin).status_code == 201
    passwords = {}
    for name in names:
        body = {"name": name, "domain": domain, "onboarding_method": "est_password"}
        passwords[name] = client.post("/api/v1/devices", json=body, headers=admin).get_json()["password"]
    return settings, api, passwords


@pytest.fixture(scope="module", params=[False, True], ids=["https-app", "plain-http-app"])
def app(request, tmp_path_factory):
    settings, api, passwords = with_devices(tmp_path_factory.mktemp("est-ahead"), "ahead", ("dev-ahead", "dev-flask"))
    api.extensions["trustpoint"].engine.dispose()
    app = create_app(settings, plain_http=request.param)
    app.plain_http = request.param
    app.passwords = passwords
    app.flask_requests = []
    app.before_request_funcs.setdefault(None, []).insert(0, lambda: app.flask_requests.append(1))
    yield app
    app.extensions["trustpoint"].engine.dispose()


def send(app, wsgi, method, path, data=None, content_type=None, headers=None):
    """(response, whether Flask's request machinery ran) of one request over "HTTPS" to wsgi."""
    del app.flask_requests[:]
    response = Client(wsgi).open(
        path, method=method, data=data, content_type=content_type, headers=headers, base_url=HTTPS
    )
    response.get_data()
    return response, bool(app.flask_requests)


def comparable(response):
    return response.status, sorted((n, v) for n, v in response.headers if n != "Vary"), response.data


@pytest.mark.parametrize(("method", "path", "data", "content_type", "status"), REQUESTS)
def test_est_is_answered_ahead_of_flask_as_flask_answers_it(app, method, path, data, content_type, status):
    ahead, flask_ran = send(app, app.wsgi_app, method, path, data, content_type)
    flask, _ran = send(app, app.wsgi_app.flask, method, path, data, content_type)
    assert comparable(ahead) == comparable(flask)
    if app.plain_http:  # Flask's _https_only refuses it
        assert flask_ran and ahead.status_code == 403
        return
    assert flask_ran == (method not in ("GET", "POST"))
    assert ahead.status_code == status
    if status >= 400:
        assert ahead.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert ahead.data.endswith(b"\n") or method == "HEAD"  # a HEAD answer has no body
    if status == 401:
        assert ahead.headers["WWW-Authenticate"] == 'Basic realm="est"'
    if status == 405:
        assert ahead.headers["Allow"] in ("GET", "POST")
    if method == "HEAD" and status == 200:
        get, _ran = send(app, app.wsgi_app, "GET", path)
        assert ahead.data == b"" and ahead.headers["Content-Length"] == get.headers["Content-Length"] != "0"


def enroll(app, wsgi, name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    basic = base64.b64encode(("%s:%s" % (name, app.passwords[name])).encode()).decode()
    return send(
        app,
        wsgi,
        "POST",
        "/.well-known/est/ahead/simpleenroll",
        base64.b64encode(csr.public_bytes(Encoding.DER)),
        PKCS10,
        {"Authorization": "Basic " + basic},
    )


def test_an_enrollment_answers_alike(app):
    """Each path enrolls a device of its own (a password is used once); the answers differ in the certificate only."""
    ahead, flask_ran = enroll(app, app.wsgi_app, "dev-ahead")
    flask, _ran = enroll(app, app.wsgi_app.flask, "dev-flask")
    if app.plain_http:
        assert flask_ran and ahead.status_code == flask.status_code == 403
        return
    assert not flask_ran
    assert ahead.status_code == flask.status_code == 200
    assert sorted(n for n, _v in ahead.headers) == sorted(n for n, _v in flask.headers if n != "Vary")
    for answer, name in ((ahead, "dev-ahead"), (flask, "dev-flask")):
        (certificate,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer.data))
        assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name


def test_an_unexpected_error_is_a_text_500(app, monkeypatch):
    from trustpoint_server.protocols import est

    def broken(*_args):
        raise RuntimeError("bug")

    monkeypatch.setattr(est, "_domain", broken)
    ahead, _ran = send(app, app.wsgi_app, "GET", "/.well-known/est/ahead/cacerts")
    flask, _ran = send(app, app.wsgi_app.flask, "GET", "/.well-known/est/ahead/cacerts")
    assert comparable(ahead) == comparable(flask)
    if not app.plain_http:
        assert ahead.status_code == 500 and ahead.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_a_refused_certificate_beside_a_legacy_password_counts_once_though_the_request_leaves_the_loop(
    tmp_path, monkeypatch
):
    """An EST request with a TLS client certificate the server does not accept and the Basic password of a device
    whose hash is a legacy scrypt one: checking that password leaves the event loop and the request runs again
    from its start in a thread. The certificate's failure was counted before that, then again: it is now counted
    once the password was checked."""
    import hashlib
    import sqlite3
    import types

    from trustpoint_server.runtime import on_loop
    from trustpoint_server.runtime.tls import TLS_ENVIRON_KEY
    from trustpoint_server.services import devices
    from werkzeug.test import EnvironBuilder

    data = tmp_path / "data"
    _settings, app, _passwords = with_devices(data, "legacy", ("dev-legacy",), auth_failure_budget=1)
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"old password", salt=salt, dklen=32, **devices.LEGACY_SCRYPT)
    with sqlite3.connect(data / "trustpoint.db") as database:  # as a release before the keyed hashes stored it
        database.execute(
            "UPDATE device SET password_hash = ? WHERE name = 'dev-legacy'",
            ("scrypt$%s$%s" % (base64.b64encode(salt).decode(), base64.b64encode(digest).decode()),),
        )
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-legacy")])
    stranger = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
        .not_valid_before(datetime.datetime(2026, 1, 1)).not_valid_after(datetime.datetime(2036, 1, 1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())

    def environ():
        built = EnvironBuilder(
            path="/.well-known/est/legacy/simpleenroll", method="POST", base_url=HTTPS, content_type=PKCS10,
            data=base64.b64encode(csr.public_bytes(Encoding.DER)),
            headers={"Authorization": "Basic " + base64.b64encode(b"dev-legacy:old password").decode()},
            environ_base={"REMOTE_ADDR": "192.0.2.7"},
        ).get_environ()  # fmt: skip
        der = stranger.public_bytes(Encoding.DER)
        built[TLS_ENVIRON_KEY] = types.SimpleNamespace(peer_certificate=der, verified_chain=(der,))
        return built

    statuses = []
    with on_loop.running(), pytest.raises(on_loop.LeaveLoop):
        app.wsgi_app(environ(), lambda status, headers: statuses.append(status))
    limits = app.extensions["trustpoint"].auth_limits
    assert limits.sources.wait("192.0.2.7") == 0, "counted before the request left the loop"
    answer = b"".join(app.wsgi_app(environ(), lambda status, headers: statuses.append(status)))
    assert statuses == ["200 OK"], answer  # the password onboards; the certificate beside it failed
    assert limits.sources.wait("192.0.2.7") > 0  # that failure, counted once
    app.extensions["trustpoint"].engine.dispose()
