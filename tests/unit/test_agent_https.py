# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The agent against a server that misbehaves: every request ends in bounded time, and what one candidate owner
service breaks does not keep the agent from the next one."""

from __future__ import annotations

import datetime
import socket
import ssl
import sys
import threading
import time
import types

import pytest
from conftest import REPO
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(REPO / "agent"))
from trustpoint_agent import files
from trustpoint_agent.https import Https
from trustpoint_agent.onboarding import Agent
from trustpoint_core import aoki
from trustpoint_core.errors import TransportError


@pytest.fixture
def dripping_server(tmp_path):
    """An HTTPS server that answers its headers, then one body byte a second: (port, stop)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drip")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        connection, _address = listener.accept()
        try:
            with context.wrap_socket(connection, server_side=True) as tls:
                if not tls.recv(65536):
                    return
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not stop.wait(1.0):
                    tls.sendall(b"x")
        except OSError:  # the client gave up (or never sent its request)
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], stop
    stop.set()
    listener.close()


def test_a_server_that_answers_a_byte_at_a_time_is_given_up_on(dripping_server):
    """Each byte came within the socket timeout, so the agent waited for the whole answer (1 MiB at a byte per
    2 s: 24 days), holding the state directory's lock. The whole request now ends after twice the timeout."""
    port, _stop = dripping_server
    outcome = []

    def fetch():
        try:
            Https(timeout=2).request("GET", "https://127.0.0.1:%d/aoki/init/" % port)
        except TransportError as exc:
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "still reading after 60 s"
    assert outcome and "no complete answer within 4 s" in str(outcome[0]), outcome
    assert time.monotonic() - started < 60


def test_a_url_http_client_cannot_send_is_a_transport_error(dripping_server):
    """A non-ASCII path (an mDNS TXT record's path=) raised UnicodeEncodeError through the agent's round."""
    port, _stop = dripping_server
    with pytest.raises(TransportError) as info:
        Https(timeout=2).request("GET", "https://127.0.0.1:%d/\u00e9" % port)
    assert not info.value.transient


def test_an_answer_nested_past_the_json_parser_is_refused():
    with pytest.raises(aoki.OwnerRefused, match="not an aoki-init document"):
        aoki.InitAnswer.parse(b"[" * 200000)


def test_what_one_candidate_breaks_does_not_stop_the_next(tmp_path, monkeypatch):
    """An owner service whose answer raises something nobody foresaw ended the whole round: every round, so a
    rogue mDNS advertisement kept the device from its real owner for good."""
    agent = Agent(files.StateDir(tmp_path / "state").ensure(), factory=types.SimpleNamespace(load=lambda: None))

    class Candidate:
        def __init__(self, url):
            self.url = url

    def with_candidate(candidate, protocol):
        if candidate.url == "https://rogue":
            raise MemoryError("something unforeseen")
        return "onboarded with aoki at %s" % candidate.url

    monkeypatch.setattr(agent, "_aoki_with", with_candidate)
    assert (
        agent.aoki([Candidate("https://rogue"), Candidate("https://owner")]) == "onboarded with aoki at https://owner"
    )
