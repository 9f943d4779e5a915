# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Attacker-controlled texts are capped in errors and logs (issue 11, "Unbounded echoes").

A salt, an OID, a senderKID, an integer or a path of any size gets an answer and log lines of bounded size
with the right failInfo (never systemFailure). The app runs in-process (Flask's test client) on a data
directory from `trustpoint-server init`; log records pass the server's BoundedRecords filter as they do in
`run`. Property tests draw the sizes; the examples are the issue's observations.
"""

from __future__ import annotations

import logging
import subprocess

import pytest
from conftest import BIN
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from trustpoint_core.asn1 import der_integer, der_oid, der_sequence, der_tlv
from trustpoint_core.cmp_message import CmpMessage, Header, cert_req_body, encode_message, error_content
from trustpoint_core.cmp_protection import PasswordBasedMac
from trustpoint_core.errors import MAX_TEXT, CmpFailure, InvalidInput, bounded, excerpt
from trustpoint_server.app import create_app
from trustpoint_server.runtime.cli import MAX_LOG_MESSAGE, BoundedRecords
from trustpoint_server.settings import Settings

CMP = "application/pkixcmp"
# An error PKIMessage: header (names, nonces), PKIStatusInfo with one capped text; extraCerts when signed.
MAX_CMP_ERROR = 6000
SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
HYPOTHESIS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("caps")
    subprocess.run([str(BIN / "trustpoint-server"), "init", "--data-dir", str(data)], check=True, capture_output=True)
    app = create_app(Settings(data_dir=str(data), auth_failure_budget=0, auth_lockout=0))
    token = (data / "admin-token").read_text().strip()
    client = app.test_client()
    headers = {"Authorization": "Bearer " + token}
    assert client.post("/api/v1/domains", json={"name": "caps"}, headers=headers).status_code == 201
    answer = client.post(
        "/api/v1/devices",
        json={"name": "caps-device", "domain": "caps", "onboarding_method": "cmp_shared_secret"},
        headers=headers,
    )
    app.device = answer.get_json()["device"]["id"], answer.get_json()["shared_secret"].encode()
    yield app
    app.extensions["trustpoint"].engine.dispose()


@pytest.fixture
def bounded_log(caplog):
    caplog.handler.addFilter(BoundedRecords())
    caplog.set_level(logging.INFO)
    return caplog


def post_cmp(app, der):
    response = app.test_client().post("/.well-known/cmp/p/caps/initialization", data=der, content_type=CMP)
    assert response.status_code == 200 and response.content_type == CMP
    return response.data


def assert_bounded(answer, log, fail_info):
    assert len(answer) < MAX_CMP_ERROR, len(answer)
    message = CmpMessage.decode(answer)
    assert message.body_type == "error"
    _status, found, text = error_content(message)
    assert tuple(found) == fail_info, (found, text)
    assert len(text) <= MAX_TEXT + 40
    for record in log.records:
        assert len(record.getMessage()) <= MAX_LOG_MESSAGE + 40, record.getMessage()[:200]
        assert "Traceback" not in record.getMessage()
        assert record.exc_info is None, record.getMessage()[:200]
    return text


class RawPbm(PasswordBasedMac):
    """PBM that writes whatever salt, one-way function OID and iteration count it is given."""

    def __init__(self, secret, kid, salt=b"s" * 16, owf="2.16.840.1.101.3.4.2.1", iterations=500):
        super().__init__(secret, salt=salt, iterations=1, kid=kid)
        self.raw_owf, self.raw_iterations = owf, iterations

    def algorithm(self):
        return "1.2.840.113533.7.66.13", der_sequence(
            der_tlv(0x04, self.salt),
            der_sequence(der_oid(self.raw_owf)),
            der_integer(self.raw_iterations),
            der_sequence(der_oid(self.mac)),
        )


def ir(app, protector=None, **header):
    device_id, secret = app.device
    header.setdefault("transaction_id", b"t" * 16)
    body = cert_req_body("ir", ec.generate_private_key(ec.SECP256R1()), SUBJECT)
    protector = protector or PasswordBasedMac(secret, kid=str(device_id).encode())
    return encode_message(Header(sender=SUBJECT, **header), body, protector)


def long_oid(arcs):
    return "1.3." + ".".join(str(n % 1000) for n in range(arcs))


# --- the observations --------------------------------------------------------------------------------


def test_a_huge_pvno_is_unsupported_version(app, bounded_log):
    """pvno as a 100 KB INTEGER, in an otherwise authentic request: unsupportedVersion, no traceback."""
    answer = post_cmp(app, ir(app, pvno=1 << (8 * 100_000)))
    text = assert_bounded(answer, bounded_log, ("unsupportedVersion",))
    assert "pvno an integer of 800001 bits is not supported" in text


def test_a_huge_salt_is_not_echoed(app, bounded_log):
    """A 120 KiB PBM salt (PBMParameter allows 128 bytes): badDataFormat with a small answer and log lines
    (the issue saw 432 KB)."""
    device_id, secret = app.device
    answer = post_cmp(app, ir(app, RawPbm(secret, str(device_id).encode(), salt=b"\x5a" * 120 * 1024)))
    text = assert_bounded(answer, bounded_log, ("badDataFormat",))
    assert text.startswith("unreadable PBM parameters: ") and len(text) < 300


def test_an_oid_of_60000_arcs_is_not_echoed(app, bounded_log):
    """A PBM one-way function with 60,000 arcs (the issue saw a 120 KB signed error text)."""
    device_id, secret = app.device
    answer = post_cmp(app, ir(app, RawPbm(secret, str(device_id).encode(), owf=long_oid(60_000))))
    text = assert_bounded(answer, bounded_log, ("badAlg",))
    assert "unsupported PBM one-way function 1.3.0.1.2" in text and "characters)" in text


def test_a_huge_sender_kid_is_not_logged_in_full(app, bounded_log):
    answer = post_cmp(app, ir(app, PasswordBasedMac(b"x", kid=b"7" * 100_000)))
    assert_bounded(answer, bounded_log, ("badMessageCheck",))


# --- properties ------------------------------------------------------------------------------------------------


@HYPOTHESIS
@given(size=st.integers(0, 200_000), field=st.sampled_from(["salt", "owf", "iterations", "kid", "pvno"]))
@example(size=100_000, field="pvno")
@example(size=120 * 1024, field="salt")
def test_any_size_gets_a_bounded_answer(app, bounded_log, size, field):
    """Whatever the size of the field, the answer is a small error PKIMessage and the log stays small."""
    bounded_log.clear()
    device_id, secret = app.device
    kid = str(device_id).encode()
    if field == "salt":
        expected = "badMessageCheck" if size <= 128 else "badDataFormat"
        der = ir(app, RawPbm(secret, kid, salt=b"\x01" * size))
    elif field == "owf":
        der, expected = ir(app, RawPbm(secret, kid, owf=long_oid(1 + size // 4))), "badAlg"
    elif field == "iterations":
        der, expected = ir(app, RawPbm(secret, kid, iterations=1 << (size + 17))), "badAlg"
    elif field == "kid":
        der, expected = ir(app, PasswordBasedMac(b"x", kid=b"1" * (size + 19))), "badMessageCheck"
    else:
        der, expected = ir(app, pvno=1 << (size + 2)), "unsupportedVersion"
    if len(der) > 128 * 1024:
        expected = "badRequest"  # the body limit comes first
    assert_bounded(post_cmp(app, der), bounded_log, (expected,))


@given(st.one_of(st.integers(), st.text(max_size=5000), st.binary(max_size=5000), st.floats()))
def test_excerpt_is_short_and_never_fails(value):
    text = excerpt(value)
    assert isinstance(text, str) and len(text) <= 80 + 30


@given(st.text(max_size=20_000))
def test_errors_carry_bounded_texts(text):
    for error in (CmpFailure(text, "badRequest"), InvalidInput(text)):
        assert len(str(error)) <= MAX_TEXT + 60
    assert len(bounded(text)) <= MAX_TEXT + 40 and (len(text) > MAX_TEXT or bounded(text) == text)


def test_est_and_api_errors_quoting_the_path_are_bounded(app, bounded_log):
    """A domain name of 8,000 characters in an EST path, and an unknown API device: bounded answers."""
    client = app.test_client()
    response = client.get("/.well-known/est/%s/cacerts" % ("d" * 8000), base_url="https://localhost")
    assert response.status_code == 404 and len(response.data) <= MAX_TEXT + 60
    for record in bounded_log.records:
        assert len(record.getMessage()) <= MAX_LOG_MESSAGE + 40
