# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stalled and slow clients (issue 11): they hold no thread, miss their deadlines and are disconnected.

Attacks go to loopback only and are bounded: at most 150 connections per test, held for seconds.
bench/stalled_clients.py measures the delay 1,000 of them cause; these tests check the behaviour.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing

import pytest
from cmp_helpers import assert_cmp_ok, new_key_file, run_cmp
from conftest import Server, free_port, http
from trustpoint_server.storage.db import WRITE_LOCK_SUFFIX

PARTIAL_HEAD = b"POST /.well-known/cmp/p/x/initialization HTTP/1.1\r\nHost: x\r\nX-Slow: a"
BODY_HEAD = b"POST /.well-known/cmp/p/x/initialization HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"


@pytest.fixture
def lone_server(tmp_path, request):
    """A server with one worker of one thread per listener: the smallest one there is."""
    extra = getattr(request, "param", ())
    instance = Server(tmp_path / "data", free_port(), ["--workers", "1", "--threads", "1", *extra])
    yield instance
    instance.stop()


def stalled(server, kind):
    """A connection that starts a request of `kind` and stops: tls-byte (one byte of a ClientHello),
    tls-head (handshake, then part of the head), plain-idle (nothing), plain-head, plain-body (the head
    and one byte of a 1000-byte body)."""
    transport, what = kind.split("-")
    port = server.port if transport == "tls" else server.plain_port
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if kind == "tls-byte":
        sock.sendall(b"\x16")
    elif transport == "tls":
        context = ssl.create_default_context(cafile=str(server.ca_file))
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    if what == "head":
        sock.sendall(PARTIAL_HEAD)
    elif what == "body":
        sock.sendall(BODY_HEAD + b"x")
    return sock


def closed_by_server(sock, timeout):
    """(seconds until the server closed sock, the bytes it sent first) or (None, b"") after timeout."""
    sock.settimeout(timeout)
    started = time.monotonic()
    answer = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    except socket.timeout:
        return None, answer
    return time.monotonic() - started, answer


KINDS = ("tls-byte", "tls-head", "plain-idle", "plain-head", "plain-body")


def test_stalled_clients_do_not_hold_up_others(lone_server, workdir):
    """150 connections that stopped in the TLS handshake, the headers or the body, on both listeners of
    a server with one thread per listener: an openssl cmp enrollment and HTTPS requests still get their
    answers at once (with a thread per connection, the first stalled client blocked everything)."""
    server = lone_server
    domain = server.create_domain()["name"]
    device, secret = server.create_device(domain)
    with ExitStack() as stack:
        for kind in KINDS:
            for _number in range(30):
                stack.enter_context(closing(stalled(server, kind)))
        started = time.monotonic()
        assert http("GET", server.url + "/healthz", timeout=20, context=server.tls)[0] == 200
        assert http("GET", server.cmp_url + "/healthz", timeout=20)[0] == 200
        status, body = server.api("GET", "/domains/" + domain)
        assert status == 200, body
        returncode, output = run_cmp(
            "-cmd", "ir", "-server", "%s/.well-known/cmp/p/%s/initialization" % (server.cmp_url, domain),
            "-ref", str(device["id"]), "-secret", "pass:" + secret, "-subject", "/CN=x",
            "-newkey", new_key_file(workdir / "key.pem"), "-certout", workdir / "cert.pem", "-msg_timeout", "20",
        )  # fmt: skip
        assert_cmp_ok(returncode, output)
        # Generous for a loaded machine; a blocked server answers never.
        assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "lone_server", [("--handshake-timeout", "1", "--header-timeout", "2", "--body-timeout", "3")], indirect=True
)
def test_each_phase_has_a_deadline(lone_server):
    """A client that stops in the handshake, the head or the body is disconnected when that phase's
    deadline passes; one that had sent part of a request gets 408 first."""
    server = lone_server
    expected = {"tls-byte": 1, "tls-head": 2, "plain-idle": 2, "plain-head": 2, "plain-body": 3}
    sockets = {kind: stalled(server, kind) for kind in expected}
    opened = time.monotonic()
    for kind, deadline in expected.items():
        with closing(sockets[kind]) as sock:
            elapsed, answer = closed_by_server(sock, 15)
            assert elapsed is not None, "%s: still open after 15 s" % kind
            total = time.monotonic() - opened
            assert deadline - 0.3 <= total <= deadline + 5, (kind, total)
            if kind in ("tls-head", "plain-head", "plain-body"):
                assert answer.startswith(b"HTTP/1.1 408 "), (kind, answer[:100])
            else:
                assert answer == b"", (kind, answer[:100])
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("lone_server", [("--max-connections", "20")], indirect=True)
def test_at_the_connection_bound_the_oldest_reader_goes(lone_server):
    """More idle connections than a worker may hold: the oldest are dropped for newer ones, and a
    request sent at once is answered."""
    server = lone_server
    with ExitStack() as stack:
        idle = [stack.enter_context(closing(stalled(server, "plain-idle"))) for _number in range(40)]
        assert http("GET", server.cmp_url + "/healthz", timeout=20)[0] == 200
        dropped = [sock for sock in idle[:10] if closed_by_server(sock, 5)[0] is not None]
        assert len(dropped) == 10
        # The newest are still open.
        assert closed_by_server(idle[-1], 0.5)[0] is None


def test_sigterm_does_not_wait_for_stalled_clients(lone_server):
    """A stopping server does not wait for clients that never finish their requests."""
    server = lone_server
    with ExitStack() as stack:
        for kind in KINDS:
            for _number in range(5):
                stack.enter_context(closing(stalled(server, kind)))
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not stop within 20 s:\n" + server.log()[-3000:])
        # Clients that sent part of a request get STOP_LINGER (2 s); the graceful timeout is 10 s.
        assert time.monotonic() - started < 8
    assert server.process.returncode == 0, server.log()[-3000:]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_spare_thread_answers_beside_a_long_request(tmp_path, threads):
    """One worker: a write that waits for the database's write lock (held here, as a long transaction
    would) runs for longer than SPARE_AFTER, so the worker's second thread answers a read meanwhile; with
    --threads 1 the read waits for the write."""
    server = Server(tmp_path / "data", free_port(), ["--workers", "1", "--threads", str(threads)])
    try:
        domain = server.create_domain()["name"]
        cacerts = server.url + "/.well-known/est/%s/cacerts" % domain
        lock_path = str(server.data_dir / "trustpoint.db") + WRITE_LOCK_SUFFIX
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        with ThreadPoolExecutor(1) as pool:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                write = pool.submit(server.create_device, domain)
                time.sleep(0.5)  # the write runs, waiting for the lock
                assert not write.done()
                if threads == 2:
                    assert http("GET", cacerts, timeout=5, context=server.tls)[0] == 200
                else:
                    with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
                        http("GET", cacerts, timeout=2, context=server.tls)
                assert not write.done()
            finally:
                os.close(lock_fd)  # releases the flock
            assert write.result(timeout=20)[0]["name"]
        assert http("GET", cacerts, timeout=5, context=server.tls)[0] == 200
    finally:
        server.stop()
