# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The core's CmpClient against OpenSSL's built-in CMP mock server (`openssl cmp -port ...`).

The mock always answers with the -rsp_cert it was started with, so each test issues that certificate
for the key the client enrolls with. The mock's log shows how many CMP requests it received.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import free_port, http, require_binary, urllib_transport
from trustpoint_core import keys, profiles
from trustpoint_core import x509 as tp_x509
from trustpoint_core.cmp_client import CmpClient, MacCredential
from trustpoint_core.errors import CmpFailure, TransportError

SECRET = "mock-secret"
REFERENCE = "11"
SUBJECT = tp_x509.parse_name("/CN=Trustpoint Domain Credential/O=Mock Test")


class Mock:
    """One `openssl cmp` mock server process on a free loopback port."""

    def __init__(self, directory, rsp_cert, ca, extra_args=()):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d/pkix/" % self.port
        paths = {name: directory / ("%s.pem" % name) for name in ("rsp_cert", "chain", "root")}
        paths["rsp_cert"].write_text(tp_x509.certificates_to_pem(rsp_cert))
        paths["chain"].write_text(tp_x509.certificates_to_pem(ca.chain))
        paths["root"].write_text(tp_x509.certificates_to_pem(ca.root_cert))
        self.log_path = directory / ("mock-%d.log" % self.port)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (open for the process's lifetime)
        self.process = subprocess.Popen(
            [
                require_binary("openssl"),
                "cmp",
                "-port",
                str(self.port),
                "-srv_ref",
                REFERENCE,
                "-srv_secret",
                "pass:" + SECRET,
                "-rsp_cert",
                str(paths["rsp_cert"]),
                "-rsp_extracerts",
                str(paths["chain"]),
                "-rsp_capubs",
                str(paths["root"]),
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            # A GET gets a quick 400; a bare TCP connect would stall the mock's next request.
            try:
                http("GET", self.url, timeout=2)
                break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("openssl cmp mock did not start:\n" + self.log())
            time.sleep(0.05)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def requests(self):
        """How many CMP requests (POSTs) the mock received."""
        return self.log().count("1st line: POST ")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def ca():
    return tp_x509.CaChain.create("mock", "ecdsa-p256")


@pytest.fixture
def device_key():
    return keys.generate_private_key("ecdsa-p256")


@pytest.fixture
def start_mock(tmp_path, ca, device_key):
    """start_mock(*extra mock args, rsp_key=device_key) -> a running Mock returning a certificate for rsp_key."""
    mocks = []

    def start(*extra_args, rsp_key=None):
        rsp_cert = tp_x509.issue_certificate(
            ca.issuing_cert,
            ca.issuing_key,
            (rsp_key or device_key).public_key(),
            SUBJECT,
            profiles.DOMAIN_CREDENTIAL,
        )
        mock = Mock(tmp_path, rsp_cert, ca, extra_args)
        mock.rsp_cert = rsp_cert
        mocks.append(mock)
        return mock

    yield start
    for mock in mocks:
        mock.stop()


def enroll(mock, key, secret=SECRET, implicit_confirm=False):
    client = CmpClient(mock.url, urllib_transport)
    return client.initialize(key, SUBJECT, MacCredential(REFERENCE, secret), implicit_confirm=implicit_confirm)


def test_enroll_with_explicit_confirmation(start_mock, device_key, ca):
    """ir + certConf: the client returns the mock's certificate, its extraCerts chain and caPubs, and confirms."""
    mock = start_mock()
    enrollment = enroll(mock, device_key)
    assert enrollment.certificate == mock.rsp_cert
    assert enrollment.chain == [ca.issuing_cert, ca.root_cert]
    assert enrollment.ca_certificates == [ca.root_cert]
    assert not enrollment.implicit_confirm
    assert mock.requests() == 2  # ir, certConf
    assert "rejected by client" not in mock.log()


def test_enroll_with_implicit_confirmation(start_mock, device_key, ca):
    """ir with implicitConfirm against -grant_implicitconf: one exchange, no certConf."""
    mock = start_mock("-grant_implicitconf")
    enrollment = enroll(mock, device_key, implicit_confirm=True)
    assert enrollment.certificate == mock.rsp_cert
    assert enrollment.chain == [ca.issuing_cert, ca.root_cert]
    assert enrollment.implicit_confirm
    assert mock.requests() == 1


def test_implicit_confirmation_not_granted(start_mock, device_key):
    """If the mock does not grant implicit confirmation, the client still sends certConf."""
    mock = start_mock()
    enrollment = enroll(mock, device_key, implicit_confirm=True)
    assert enrollment.certificate == mock.rsp_cert
    assert not enrollment.implicit_confirm
    assert mock.requests() == 2


def test_wrong_secret(start_mock, device_key):
    """A wrong secret: the mock rejects the ir's PBM with badRequest "wrong pbm value", which the client
    reports as an unauthenticated error (it cannot verify the mock's MAC either)."""
    mock = start_mock()
    with pytest.raises(CmpFailure) as info:
        enroll(mock, device_key, secret="not-the-secret")
    assert info.value.fail_info == ("badRequest",)
    assert info.value.text == "the server rejected the request (unauthenticated error): wrong pbm value"
    assert "wrong pbm value" in mock.log()
    assert mock.requests() == 1


def test_send_error(start_mock, device_key):
    """-send_error: the client reports the mock's authenticated error body, failInfo badRequest."""
    mock = start_mock("-send_error")
    with pytest.raises(CmpFailure) as info:
        enroll(mock, device_key)
    assert info.value.fail_info == ("badRequest",)
    assert info.value.text == "the server rejected the request: error processing message"


def test_rejection_in_ip(start_mock, device_key):
    """-pkistatus 2 -failure 9: an ip that rejects the request is reported with its failInfo and text."""
    mock = start_mock("-pkistatus", "2", "-failure", "9", "-statusstring", "no proof of possession")
    with pytest.raises(CmpFailure) as info:
        enroll(mock, device_key)
    assert info.value.fail_info == ("badPOP",)
    assert "no proof of possession" in info.value.text


def test_certificate_for_another_key(start_mock, device_key):
    """A returned certificate for another key is refused (badCertTemplate) instead of being kept."""
    mock = start_mock(rsp_key=keys.generate_private_key("ecdsa-p256"))
    with pytest.raises(CmpFailure) as info:
        enroll(mock, device_key)
    assert info.value.fail_info == ("badCertTemplate",)


def test_wrong_path_is_transport_error(start_mock, device_key):
    """The mock serves only /pkix/: another path is an HTTP 404, reported as TransportError."""
    mock = start_mock()
    client = CmpClient(mock.url.replace("/pkix/", "/other/"), urllib_transport)
    with pytest.raises(TransportError) as info:
        client.initialize(device_key, SUBJECT, MacCredential(REFERENCE, SECRET))
    assert "404" in str(info.value)


@pytest.mark.parametrize("key_type", ["ecdsa-p384", "rsa-2048"])
def test_enroll_other_key_types(start_mock, key_type, ca):
    """The ir's POP and the certificate match work for P-384 and RSA device keys too."""
    key = keys.generate_private_key(key_type)
    mock = start_mock(rsp_key=key)
    enrollment = enroll(mock, key)
    assert keys.same_public_key(enrollment.certificate.public_key(), key)
    assert enrollment.chain == [ca.issuing_cert, ca.root_cert]
