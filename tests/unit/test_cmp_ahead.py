# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CMP answered ahead of Flask (issue 16): protocols/ahead.py AheadOfFlask with protocols/cmp.py's handler.

POSTs that the cmp blueprint's routes match are answered without Flask's request machinery; every request is
also sent to the Flask app alone (the dispatcher's .flask), and both must answer alike: same status, headers
(but Flask's "Vary: Cookie"), body, and the same domain, profile and operation reach the responder. A
before_request hook tells which of the two answered. The app runs in-process on a `trustpoint-server init`
data directory.
"""

from __future__ import annotations

import io
import os
import subprocess

import pytest
from conftest import BIN
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyasn1.type import univ
from sqlalchemy import text
from trustpoint_core.cmp_message import (
    CmpMessage,
    Header,
    cert_req_body,
    cert_responses,
    encode_message,
    error_content,
)
from trustpoint_core.cmp_protection import PasswordBasedMac
from trustpoint_server.app import MAX_REQUEST_BYTES, create_app
from trustpoint_server.protocols import ahead
from trustpoint_server.protocols.cmp_responder import LOOP_MAC_ITERATIONS, CmpResponder
from trustpoint_server.runtime import on_loop
from trustpoint_server.services.auth_limits import Budget
from trustpoint_server.settings import Settings
from werkzeug.test import Client, EnvironBuilder

CMP = "application/pkixcmp"
ANSWER = b"\x30\x03\x02\x01\x02"  # what the recording responder answers
SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])

# (path, what reaches the responder: domain, profile, operation), or None where Flask answers alone.
ANSWERED_AHEAD = [
    ("/.well-known/cmp", (None, None, None)),
    ("/.well-known/cmp/", (None, None, None)),
    ("/.well-known/cmp/initialization/d1/", ("d1", None, None)),
    ("/.well-known/cmp/initialization/d1", ("d1", None, None)),
    ("/.well-known/cmp/initialization/d1~p/", ("d1~p", None, None)),  # the legacy path has no profiles
    ("/.well-known/cmp/p/d1", ("d1", None, None)),
    ("/.well-known/cmp/p/d1/", ("d1", None, None)),
    ("/.well-known/cmp/p/d1~prof", ("d1", "prof", None)),
    ("/.well-known/cmp/p/~prof/", (None, "prof", None)),
    ("/.well-known/cmp/p/d1~", ("d1", None, None)),
    ("/.well-known/cmp/certification", (None, None, "certification")),
    ("/.well-known/cmp/certification/", (None, None, "certification")),
    ("/.well-known/cmp/p/d1/initialization", ("d1", None, "initialization")),
    ("/.well-known/cmp/p/d1~prof/keyupdate/", ("d1", "prof", "keyupdate")),
    ("/.well-known/cmp/p/d%C3%A4/revocation", ("d\u00e4", None, "revocation")),  # percent-encoded UTF-8
    ("/.well-known/cmp/p/.aoki", (".aoki", None, None)),
    ("/.well-known/cmp/p/.aoki/certification", (".aoki", None, "certification")),
]
FLASK_ALONE = [
    "/.well-known/cmp/p/.aoki/initialization",  # AOKI's route: its own responder, through Flask
    "/.well-known/cmp/p/.aoki/initialization/",
    "/.well-known/cmp/nosuchoperation",  # 404 naming the known operations
    "/.well-known/cmp/p/d1/nosuchoperation/",
    "/.well-known/cmp/p//initialization",  # 308 to the path without the double slash
    "/.well-known/cmp/p/d1/initialization/extra",  # 404
    "/.well-known/cmpx",
    "/.well-known/crl/1",
    "/api/v1/domains",
]


@pytest.fixture(scope="module", params=[False, True], ids=["https-app", "plain-http-app"])
def app(request, tmp_path_factory):
    data = tmp_path_factory.mktemp("ahead")
    subprocess.run([str(BIN / "trustpoint-server"), "init", "--data-dir", str(data)], check=True, capture_output=True)
    settings = Settings(data_dir=str(data), auth_failure_budget=0, auth_lockout=0)
    api = create_app(settings)  # the plain-HTTP app serves no API
    admin = {"Authorization": "Bearer " + (data / "admin-token").read_text().strip()}
    assert api.test_client().post("/api/v1/domains", json={"name": "ahead"}, headers=admin).status_code == 201
    device = (
        api.test_client()
        .post(
            "/api/v1/devices",
            json={"name": "d", "domain": "ahead", "onboarding_method": "cmp_shared_secret"},
            headers=admin,
        )
        .get_json()
    )
    api.extensions["trustpoint"].engine.dispose()
    app = create_app(settings, plain_http=request.param)
    app.device = device["shared_secret"].encode(), str(device["device"]["id"]).encode()
    app.flask_requests = []
    # First of the app's hooks: the plain-HTTP app's _https_only may answer before later ones run.
    app.before_request_funcs.setdefault(None, []).insert(0, lambda: app.flask_requests.append(1))
    yield app
    app.extensions["trustpoint"].engine.dispose()


@pytest.fixture
def recorded(monkeypatch):
    """CmpResponder.respond (AOKI's too) records what reaches it and answers ANSWER."""
    calls = []

    def respond(self, domain_name, profile_name, operation, der, media_type):
        calls.append((type(self).__name__, domain_name, profile_name, operation, der, media_type))
        return ANSWER

    monkeypatch.setattr(CmpResponder, "respond", respond)
    return calls


def post(app, wsgi, path, data=b"\x30\x00", content_type=CMP, method="POST", **kwargs):
    """(response, whether Flask's request machinery ran) of one request to wsgi (the app, or Flask alone)."""
    del app.flask_requests[:]
    response = Client(wsgi).open(path, method=method, data=data, content_type=content_type, **kwargs)
    response.get_data()
    return response, bool(app.flask_requests)


def headers(response):
    return sorted((name, value) for name, value in response.headers if name != "Vary")


def assert_alike(ahead, flask):
    assert (ahead.status, headers(ahead), ahead.data) == (flask.status, headers(flask), flask.data)


def test_the_app_is_wrapped(app):
    assert isinstance(app.wsgi_app, ahead.AheadOfFlask)
    assert app.wsgi_app.flask.__func__ is type(app).wsgi_app


@pytest.mark.parametrize(("path", "where"), ANSWERED_AHEAD)
def test_cmp_paths_are_answered_ahead_of_flask_as_flask_answers_them(app, recorded, path, where):
    ahead, flask_ran = post(app, app.wsgi_app, path)
    assert not flask_ran
    flask, flask_ran = post(app, app.wsgi_app.flask, path)
    assert flask_ran
    assert ahead.status_code == 200 and ahead.data == ANSWER
    assert ahead.headers["Content-Type"] == CMP
    assert_alike(ahead, flask)
    assert recorded == [("CmpResponder", *where, b"\x30\x00", CMP)] * 2


def test_matched_routes_are_remembered_per_method_path_and_host_and_boundedly(app, recorded, monkeypatch):
    """The dispatcher remembers what the URL map answered (issue 16): a second request of the same path reaches the
    responder alike, another method or path is matched anew, and the memory is bounded."""
    monkeypatch.setattr(ahead, "MAX_ROUTES", 3)
    app.wsgi_app._routes.clear()
    paths = [path for path, _where in ANSWERED_AHEAD[:5]]
    for path in paths + paths:
        answer, flask_ran = post(app, app.wsgi_app, path)
        assert answer.status_code == 200 and not flask_ran
        assert len(app.wsgi_app._routes) <= 3
    assert recorded == [("CmpResponder", *where, b"\x30\x00", CMP) for _path, where in ANSWERED_AHEAD[:5]] * 2
    answer, flask_ran = post(app, app.wsgi_app, paths[-1], method="GET")  # remembered for POST only
    assert flask_ran and answer.status_code == 405
    answer, flask_ran = post(app, app.wsgi_app, paths[-1], headers={"Host": "other.example"})
    assert answer.status_code == 200 and not flask_ran
    assert len(recorded) == 11
    # A WebSocket upgrade, which no route takes, answers as Flask does though the path is remembered.
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    ahead_answer, _ran = post(app, app.wsgi_app, paths[-1], headers=upgrade)
    flask_answer, _ran = post(app, app.wsgi_app.flask, paths[-1], headers=upgrade)
    assert_alike(ahead_answer, flask_answer)
    # A long path (the client's choice) is matched anew each time, not remembered.
    app.wsgi_app._routes.clear()
    long_path = "/.well-known/cmp/p/" + "d" * ahead.MAX_ROUTE_KEY + "/initialization"
    answer, flask_ran = post(app, app.wsgi_app, long_path)
    assert answer.status_code == 200 and not flask_ran and not app.wsgi_app._routes


@pytest.mark.parametrize("path", FLASK_ALONE)
def test_other_paths_go_to_flask_unchanged(app, recorded, path):
    ahead, flask_ran = post(app, app.wsgi_app, path)
    assert flask_ran or ahead.status_code == 308  # a redirect is answered while matching, before any hook
    flask, _seen = post(app, app.wsgi_app.flask, path)
    assert_alike(ahead, flask)
    assert headers(ahead) == headers(flask) and ahead.headers.get("Vary") == flask.headers.get("Vary")


def test_aoki_cmp_path_keeps_its_responder(app, recorded):
    ahead, flask_ran = post(app, app.wsgi_app, "/.well-known/cmp/p/.aoki/initialization")
    assert flask_ran and ahead.status_code == 200 and ahead.data == ANSWER
    assert recorded == [("AokiCmpResponder", None, None, "initialization", b"\x30\x00", CMP)]


def test_unknown_operation_is_still_404(app, recorded):
    ahead, _seen = post(app, app.wsgi_app, "/.well-known/cmp/p/d1/nosuch")
    assert ahead.status_code == 404
    assert "unknown CMP operation 'nosuch'" in ahead.get_json()["error"]
    assert recorded == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"])
@pytest.mark.parametrize("path", ["/.well-known/cmp", "/.well-known/cmp/p/d1/initialization/", "/.well-known/cmp/x"])
def test_other_methods_answer_as_before(app, recorded, method, path):
    ahead, flask_ran = post(app, app.wsgi_app, path, method=method)
    assert flask_ran
    flask, _seen = post(app, app.wsgi_app.flask, path, method=method)
    assert_alike(ahead, flask)
    assert ahead.status_code in (200, 404, 405)  # OPTIONS: Flask's automatic answer
    if method == "GET" and path == "/.well-known/cmp":
        assert ahead.status_code == 405 and "POST" in ahead.headers["Allow"]
    assert recorded == []


@pytest.mark.parametrize(
    "content_type",
    [CMP, "Application/PKIXCMP", "application/pkixcmp; charset=binary", " application/pkixcmp ;x=1", "text/plain", ""],
)
def test_the_media_type_is_read_as_flask_reads_it(app, recorded, content_type):
    post(app, app.wsgi_app, "/.well-known/cmp", content_type=content_type)
    post(app, app.wsgi_app.flask, "/.well-known/cmp", content_type=content_type)
    assert len(recorded) == 2 and recorded[0] == recorded[1]
    assert recorded[0][-1] == (CMP if "pkixcmp" in content_type.lower() else content_type.strip().lower())


def test_the_real_answer_carries_the_same_headers(app):
    """No recording responder: an ir whose MAC does not verify, answered by both (error answers)."""
    der = ir(b"wrong secret", b"1")
    ahead, flask_ran = post(app, app.wsgi_app, "/.well-known/cmp/p/nosuchdomain/initialization", data=der)
    assert not flask_ran
    flask, _seen = post(app, app.wsgi_app.flask, "/.well-known/cmp/p/nosuchdomain/initialization", data=der)
    assert flask.headers.get("Vary") == "Cookie"  # the one header only Flask adds (see AheadOfFlask)
    assert headers(ahead) == headers(flask)
    assert [name for name, _value in ahead.headers] == ["Content-Type", "Content-Length"]
    for answer in (ahead, flask):
        assert CmpMessage.decode(answer.data).body_type == "error"


def test_an_enrollment_through_the_dispatcher(app):
    der = ir(*app.device)
    answer, flask_ran = post(app, app.wsgi_app, "/.well-known/cmp/p/ahead/initialization", data=der)
    assert not flask_ran and answer.status_code == 200
    message = CmpMessage.decode(answer.data)
    assert message.body_type == "ip", error_content(message) if message.body_type == "error" else message.body_type
    assert app.extensions["trustpoint"].engine.pool.checkedout() == 0  # the session was closed


def call(app, wsgi, environ):
    """([status], body, whether Flask's request machinery ran) of wsgi's answer to environ."""
    del app.flask_requests[:]
    status = []
    data = b"".join(wsgi(environ, lambda line, _headers, _exc=None: status.append(line)))
    return status, data, bool(app.flask_requests)


def environ_of(body, headers):
    environ = EnvironBuilder("/.well-known/cmp/p/d1/initialization", method="POST").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update(headers)
    environ["wsgi.input"] = io.BytesIO(body)
    return environ


@pytest.mark.parametrize(
    ("body", "environ_headers"),
    [
        # Content-Length over the limit: refused before reading
        (b"\x30\x00", {"CONTENT_LENGTH": str(MAX_REQUEST_BYTES + 1)}),
        # chunked (no Content-Length; the server decoded the chunks): refused after limit + 1 bytes
        (b"\x30" * (MAX_REQUEST_BYTES + 1), {"HTTP_TRANSFER_ENCODING": "chunked"}),
        (b"\x30" * (MAX_REQUEST_BYTES + 1), {}),
    ],
    ids=["content-length", "chunked", "no-length"],
)
def test_a_body_over_the_limit_is_refused_with_a_cmp_error(app, recorded, body, environ_headers):
    answers = [call(app, wsgi, environ_of(body, environ_headers)) for wsgi in (app.wsgi_app, app.wsgi_app.flask)]
    (status, data, flask_ran), flask = answers
    assert not flask_ran and flask[2]
    assert status == ["200 OK"] == flask[0]
    message = CmpMessage.decode(data)
    assert message.body_type == "error"
    _status, fail_info, text_ = error_content(message)
    assert tuple(fail_info) == ("badRequest",) and "exceeds %d bytes" % MAX_REQUEST_BYTES in text_
    assert error_content(CmpMessage.decode(flask[1]))[1:] == (fail_info, text_)
    assert recorded == []


def test_a_body_at_the_limit_is_read_whole(app, recorded):
    body = b"\x30" * MAX_REQUEST_BYTES
    assert call(app, app.wsgi_app, environ_of(body, {"HTTP_TRANSFER_ENCODING": "chunked"}))[0] == ["200 OK"]
    assert [call[4] for call in recorded] == [body]


def test_an_unexpected_error_is_a_500_without_traceback_and_the_session_closes(app, monkeypatch, caplog):
    def broken(self, *args):
        self.db.execute(text("SELECT 1"))  # the session holds a connection when it fails
        raise RuntimeError("a bug")

    monkeypatch.setattr(CmpResponder, "respond", broken)
    ahead, flask_ran = post(app, app.wsgi_app, "/.well-known/cmp/p/d1/initialization")
    assert not flask_ran
    flask, _seen = post(app, app.wsgi_app.flask, "/.well-known/cmp/p/d1/initialization")
    assert_alike(ahead, flask)
    assert ahead.status_code == 500
    assert ahead.get_json() == {"error": "internal server error; the server log has the details", "status": 500}
    # (The failure log's thread may still be writing an earlier test's failed authentication with a connection.)
    assert app.extensions["trustpoint"].auth_limits.failures.wait_idle()
    assert app.extensions["trustpoint"].engine.pool.checkedout() == 0
    logged = [r for r in caplog.records if r.getMessage().startswith("unhandled error on POST")]
    assert len(logged) == 2 and all(r.exc_info for r in logged)


def test_the_auth_gate_sees_the_client_address(app, monkeypatch, recorded):
    seen = []
    limits = app.extensions["trustpoint"].auth_limits
    original = limits.gate
    monkeypatch.setattr(limits, "gate", lambda address: seen.append(address) or original(address))
    post(app, app.wsgi_app, "/.well-known/cmp", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    post(app, app.wsgi_app.flask, "/.well-known/cmp", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert seen == ["192.0.2.7", "192.0.2.7"]


def ir(secret, kid):
    body = cert_req_body("ir", ec.generate_private_key(ec.SECP256R1()), SUBJECT)
    header = Header(sender=SUBJECT, transaction_id=os.urandom(16), implicit_confirm=True)
    return encode_message(header, body, PasswordBasedMac(secret, kid=kid))


# --- long work on a worker's loop, the MAC budget ---------------------------------------------------------------


def enroll(app, der):
    answer, _flask_ran = post(app, app.wsgi_app, "/.well-known/cmp/p/ahead/initialization", data=der)
    assert answer.status_code == 200
    return CmpMessage.decode(answer.data)


def test_a_mac_of_many_iterations_leaves_the_loop_before_anything_changed(app):
    """The client chooses its MAC's iteration count: above LOOP_MAC_ITERATIONS the derivation (and the request)
    moves to a thread. Sent again as a thread runs it, the very same message (its transactionID) enrolls: the first
    run left nothing behind."""
    secret, kid = app.device
    body = cert_req_body("ir", ec.generate_private_key(ec.SECP256R1()), SUBJECT)
    header = Header(sender=SUBJECT, transaction_id=os.urandom(16), implicit_confirm=True)
    der = encode_message(header, body, PasswordBasedMac(secret, kid=kid, iterations=LOOP_MAC_ITERATIONS + 1))
    with on_loop.running(), pytest.raises(on_loop.LeaveLoop):
        enroll(app, der)
    assert enroll(app, der).body_type == "ip"
    with on_loop.running():  # OpenSSL's 500 iterations stay on the loop
        assert enroll(app, ir(secret, kid)).body_type == "ip"


def test_an_rsa_key_generated_by_the_server_leaves_the_loop(app):
    secret, kid = app.device
    body_type, content = cert_req_body("ir", None, SUBJECT)
    public_key = content[0]["certReq"]["certTemplate"]["publicKey"]
    public_key["algorithm"]["algorithm"] = univ.ObjectIdentifier("1.2.840.113549.1.1.1")  # rsaEncryption
    public_key["algorithm"]["parameters"] = univ.Any(b"\x05\x00")
    public_key["subjectPublicKey"] = univ.BitString(binValue="")
    header = Header(sender=SUBJECT, transaction_id=os.urandom(16), implicit_confirm=True)
    der = encode_message(header, (body_type, content), PasswordBasedMac(secret, kid=kid))
    with on_loop.running(), pytest.raises(on_loop.LeaveLoop):
        enroll(app, der)
    answer = enroll(app, der)
    assert answer.body_type == "ip", error_content(answer) if answer.body_type == "error" else answer.body_type
    [response], _ca_pubs = cert_responses(answer)
    assert response.certificate.public_key().key_size == 2048 and response.enveloped_key is not None


def test_macs_beyond_the_workers_budget_are_refused_without_counting_as_failures(app, monkeypatch):
    secret, kid = app.device
    limits = app.extensions["trustpoint"].auth_limits
    # A second's worth of one request of PasswordBasedMac's default 1000 iterations, and time standing still.
    monkeypatch.setattr(limits, "mac_iterations", Budget(1000, clock=lambda: 0.0, period=1.0))
    assert enroll(app, ir(secret, kid)).body_type == "ip"
    refused = enroll(app, ir(secret, kid))
    assert refused.body_type == "error"
    _status, fail_info, text_ = error_content(refused)
    assert tuple(fail_info) == ("systemUnavail",) and "--cmp-mac-budget" in text_ and "retry in 1 s" in text_
    assert limits.failures.wait_idle()
    assert limits.devices.wait(int(kid)) == 0 and limits.sources.wait("127.0.0.1") == 0  # not the client's failure
