#!/usr/bin/env python
# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Legitimate enrollments while stalled and slow clients hold connections: the delay with and without them.

    .venv/bin/python bench/stalled_clients.py [--stalled 1000] [--requests 20] [--attack-seconds 40]
        [--workers W] [--threads T] [--json FILE]

One server (`trustpoint-server run`, HTTPS for EST and the API, plain HTTP for CMP) in a fresh data
directory. First --requests legitimate operations of each kind run one after the other on a quiet
server: a CMP `ir` (PBM, implicit confirmation) over plain HTTP, an EST `simpleenroll` with a password
over HTTPS (a new TLS handshake each), and `GET /api/v1/domains` over HTTPS. Then an attacker thread
opens --stalled connections, spread over six kinds, and keeps that many open for --attack-seconds
(reopening each one the server closes), while the same operations run again:

    tls-byte     HTTPS: a ClientHello sent one byte per second
    tls-head     HTTPS: a finished handshake, then request headers one byte per second, never ended
    tls-body     HTTPS: headers announcing a 4096-byte body, then one body byte per second
    plain-idle   plain HTTP: connected, nothing sent
    plain-head   plain HTTP: headers one byte per second
    plain-body   plain HTTP: headers, then one body byte per second

Printed per operation: latency p50/max without and with the attack and the delay (with-attack max minus
the quiet p50), against the issue 11 target (at most 1 s); then per kind how long the server kept such a
connection (its deadlines) and how often the attacker had to reopen one. A request that gets no answer
within --request-timeout counts as delayed by at least that. Server CPU is measured per phase.

Loopback only, bounded in count (--stalled) and time (--attack-seconds). The machine's other load
skews the latencies; the quiet run in the same invocation is the peer to compare with. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import selectors
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time

from cmp_enroll import (
    MAC_OIDS,
    OurServer,
    http_request,
    log,
    make_templates,
    percentile,
    protect,
    server_defaults,
    tree_cpu_seconds,
)
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

try:
    from trustpoint_core import keys
except ImportError:  # pragma: no cover - a message instead of a traceback
    sys.exit("cannot import trustpoint_core: run with the repository's venv, e.g. .venv/bin/python")

TARGET_DELAY_S = 1.0
KINDS = ("tls-byte", "tls-head", "tls-body", "plain-idle", "plain-head", "plain-body")
DOMAIN = "bench"
# A real ClientHello (Python's, for the server's name) is what tls-byte trickles.
SLOW_HEAD = b"POST /.well-known/est/bench/simpleenroll HTTP/1.1\r\nHost: bench\r\nX-Slow: " + b"a" * 4000
BODY_HEAD = (
    b"POST /.well-known/cmp/p/bench/initialization HTTP/1.1\r\nHost: bench\r\n"
    b"Content-Type: application/pkixcmp\r\nContent-Length: 4096\r\n\r\n"
)


def raise_file_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def client_hello(port):
    """The bytes of the ClientHello Python's ssl sends to 127.0.0.1:port (captured with a memory BIO)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


# --- legitimate operations -----------------------------------------------------------------------------


def read_answer(sock):
    """(status, body) of an HTTP answer on a socket the server closes after it."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _sep, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def plain_exchange(port, payload, timeout):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(payload)
        return read_answer(sock)


def tls_exchange(port, payload, context, timeout):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, context.wrap_socket(
        raw, server_hostname="127.0.0.1"
    ) as sock:
        sock.sendall(payload)
        return read_answer(sock)


class Operations:
    """Pre-built legitimate requests, one per device: each is used once."""

    def __init__(self, server, count, args):
        self.server = server
        self.context = server.tls
        self.api_port = int(server.api_url.rsplit(":", 1)[1])
        self.timeout = args.request_timeout
        key_pool = [keys.generate_private_key("ecdsa-p256") for _number in range(8)]
        cmp_devices = server.create_devices(DOMAIN, "cmp", count)
        self.cmp = []
        for number, (device_id, secret) in enumerate(cmp_devices):
            template = make_templates(key_pool, 1, number)[0]
            self.cmp.append(template)
            template.kid, template.secret = str(device_id), secret
        self.args = args
        self.est = []
        for number in range(count):
            body = server.api(
                "POST",
                "/devices",
                {"name": "est-%05d" % number, "domain": DOMAIN, "onboarding_method": "est_password"},
            )
            self.est.append((body["device"]["name"], body["password"]))
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            cx509.CertificateSigningRequestBuilder()
            .subject_name(cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "bench")]))
            .sign(key, hashes.SHA256())
        )
        self.csr_b64 = base64.b64encode(csr.public_bytes(serialization.Encoding.DER))

    def cmp_ir(self, index):
        template = self.cmp[index]
        der = protect(template, template.secret, template.kid, self.args)
        payload = http_request("POST", "127.0.0.1", self.server.port, "/.well-known/cmp/p/bench/initialization", der)
        status, body = plain_exchange(self.server.port, payload, self.timeout)
        # An ip body (tag 0xa1 after the header): cmp_enroll.body_tag would need the whole decoder.
        return status == 200 and len(body) > 100

    def est_enroll(self, index):
        name, password = self.est[index]
        credentials = base64.b64encode(("%s:%s" % (name, password)).encode())
        payload = (
            b"POST /.well-known/est/bench/simpleenroll HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: application/pkcs10\r\nAuthorization: Basic " + credentials + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(self.csr_b64) + self.csr_b64
        )
        status, _body = tls_exchange(self.api_port, payload, self.context, self.timeout)
        return status == 200

    def api_get(self, _index):
        payload = (
            b"GET /api/v1/domains HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Authorization: Bearer " + self.server.token.encode() + b"\r\n\r\n"
        )
        status, _body = tls_exchange(self.api_port, payload, self.context, self.timeout)
        return status == 200


OPERATIONS = (
    ("CMP ir (plain HTTP)", "cmp_ir"),
    ("EST simpleenroll (HTTPS)", "est_enroll"),
    ("API GET /domains (HTTPS)", "api_get"),
)


def run_operations(operations, first, count, pause):
    """{operation: [latency seconds or None for a failure/timeout]}, the operations interleaved."""
    results = {name: [] for name, _method in OPERATIONS}
    for index in range(first, first + count):
        for name, method in OPERATIONS:
            start = time.perf_counter()
            try:
                ok = getattr(operations, method)(index)
            except OSError as exc:
                log("  %s #%d failed: %s" % (name, index, exc))
                ok = False
            elapsed = time.perf_counter() - start
            results[name].append(elapsed if ok else None)
            if not ok:
                log("  %s #%d: no good answer after %.1f s" % (name, index, elapsed))
        time.sleep(pause)
    return results


# --- the attacker ------------------------------------------------------------------------------------------


class StalledConnection:
    def __init__(self, kind, sock, pending):
        self.kind = kind
        self.sock = sock
        self.pending = pending  # the bytes still to trickle, one per tick
        self.opened = time.monotonic()


class Attacker(threading.Thread):
    """Keeps `count` stalled connections open (spread over KINDS) until stop(); reopens closed ones."""

    def __init__(self, tls_port, plain_port, count, hello):
        super().__init__(daemon=True)
        self.ports = {"tls": tls_port, "plain": plain_port}
        self.wanted = {kind: count // len(KINDS) + (1 if i < count % len(KINDS) else 0) for i, kind in enumerate(KINDS)}
        self.hello = hello
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.selector = selectors.DefaultSelector()
        self.open = {kind: [] for kind in KINDS}
        self.lifetimes = {kind: [] for kind in KINDS}
        self.open_failures = {kind: 0 for kind in KINDS}
        self.samples = []  # (time, connections open)
        self._finish = threading.Event()
        self.ready = threading.Event()

    def stop(self):
        self._finish.set()
        self.join(30)

    def _connect(self, kind):
        transport, what = kind.split("-")
        sock = socket.create_connection(("127.0.0.1", self.ports[transport]), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if kind == "tls-byte":
            pending = self.hello
        elif transport == "tls":
            sock = self.context.wrap_socket(sock, server_hostname="127.0.0.1")
            pending = SLOW_HEAD if what == "head" else BODY_HEAD + b"x" * 4095
        else:
            pending = {"idle": b"", "head": SLOW_HEAD, "body": BODY_HEAD + b"x" * 4095}[what]
        if what == "body":
            sock.sendall(BODY_HEAD)  # the headers at once, the body byte by byte
            pending = pending[len(BODY_HEAD) :]
        sock.setblocking(False)
        connection = StalledConnection(kind, sock, pending)
        self.selector.register(sock, selectors.EVENT_READ, connection)
        self.open[kind].append(connection)

    def _closed(self, connection):
        with_contextlib_suppress(lambda: self.selector.unregister(connection.sock))
        with_contextlib_suppress(connection.sock.close)
        self.open[connection.kind].remove(connection)
        self.lifetimes[connection.kind].append(time.monotonic() - connection.opened)

    def _readable(self, connection):
        """A stalled client gets no answer: end of file, a reset, an alert or a 408 mean the server
        closed it. TLS 1.3 session tickets arriving after the handshake are not an answer."""
        try:
            data = connection.sock.recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return
        except OSError:
            data = b""
        if not data or data.startswith(b"HTTP/"):
            self._closed(connection)

    def run(self):
        next_tick = time.monotonic()
        while not self._finish.is_set():
            started = time.monotonic()
            for kind in KINDS:
                # Open what is missing, a bounded number per round so that closures are seen meanwhile.
                for _number in range(min(50, self.wanted[kind] - len(self.open[kind]))):
                    try:
                        self._connect(kind)
                    except OSError:
                        self.open_failures[kind] += 1
                        break
                    if self._finish.is_set() or time.monotonic() - started > 0.5:
                        break
            if all(len(self.open[kind]) >= self.wanted[kind] for kind in KINDS):
                self.ready.set()
            for key, _events in self.selector.select(timeout=0.05):
                self._readable(key.data)
            if time.monotonic() >= next_tick:
                next_tick += 1.0
                for kind in KINDS:
                    for connection in list(self.open[kind]):
                        if not connection.pending:
                            continue
                        try:
                            sent = connection.sock.send(connection.pending[:1])
                        except (ssl.SSLWantWriteError, BlockingIOError):
                            continue
                        except OSError:
                            self._closed(connection)
                            continue
                        connection.pending = connection.pending[sent:]
                self.samples.append((time.monotonic(), sum(len(v) for v in self.open.values())))
        for kind in KINDS:
            for connection in list(self.open[kind]):
                with_contextlib_suppress(connection.sock.close)
        self.selector.close()


def with_contextlib_suppress(function):
    try:
        function()
    except (OSError, KeyError, ValueError):
        pass


# --- report ------------------------------------------------------------------------------------------------


def stats(latencies, timeout):
    """(p50 s, max s, failures) where a failure counts as `timeout`."""
    values = sorted(timeout if value is None else value for value in latencies)
    return percentile(values, 0.5), values[-1], sum(1 for value in latencies if value is None)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", maxsplit=1)[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    workers, threads = server_defaults()
    parser.add_argument("--stalled", type=int, default=1000, help="stalled connections the attacker keeps (1000)")
    parser.add_argument("--requests", type=int, default=20, help="operations of each kind per phase (20)")
    parser.add_argument("--attack-seconds", type=float, default=40.0, help="how long the attack lasts at most (40)")
    parser.add_argument("--request-timeout", type=float, default=20.0, help="a legitimate request's timeout (20 s)")
    parser.add_argument("--workers", type=int, default=workers, help="server workers (its default: %d)" % workers)
    parser.add_argument("--threads", type=int, default=threads, help="threads per worker (its default: %d)" % threads)
    parser.add_argument("--pbm-iterations", type=int, default=500, help="PBM iterationCount (OpenSSL: 500)")
    parser.add_argument("--pbm-mac", choices=sorted(MAC_OIDS), default="hmac-sha1", help="PBM MAC (OpenSSL's)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `run` argument (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.stalled < len(KINDS) or args.requests < 1:
        parser.error("--stalled must be at least %d and --requests at least 1" % len(KINDS))
    return args


def main(argv=None):
    args = parse_args(argv)
    limit = raise_file_limit(args.stalled + 256)
    if limit < args.stalled + 64:
        sys.exit("the file descriptor limit (%d) is too low for %d connections" % (limit, args.stalled))
    workdir = tempfile.mkdtemp(prefix="stalled-bench-")
    log("work directory %s; %d CPUs; python %s" % (workdir, os.cpu_count(), platform.python_version()))
    server = OurServer(workdir, args.workers, args.threads, "warning", extra_args=args.server_arg)
    report = {"settings": vars(args), "operations": {}, "attack": {}}
    attacker = None
    try:
        server.api("POST", "/domains", {"name": DOMAIN})
        log("registering %d devices of each kind ..." % (2 * args.requests))
        operations = Operations(server, 2 * args.requests, args)
        api_port = int(server.api_url.rsplit(":", 1)[1])

        log("quiet: %d operations of each kind ..." % args.requests)
        cpu0 = tree_cpu_seconds(server.process.pid)
        quiet = run_operations(operations, 0, args.requests, 0.05)
        quiet_cpu = tree_cpu_seconds(server.process.pid) - cpu0

        log("attack: %d stalled connections ..." % args.stalled)
        attacker = Attacker(api_port, server.port, args.stalled, client_hello(api_port))
        attack_started = time.monotonic()
        cpu0 = tree_cpu_seconds(server.process.pid)
        attacker.start()
        attacker.ready.wait(min(30.0, args.attack_seconds / 2))
        log(
            "  %d connections open after %.1f s"
            % (sum(len(v) for v in attacker.open.values()), time.monotonic() - attack_started)
        )
        pause = max(0.05, (args.attack_seconds - (time.monotonic() - attack_started)) / (2.0 * args.requests))
        attacked = run_operations(operations, args.requests, args.requests, pause)
        remaining = args.attack_seconds - (time.monotonic() - attack_started)
        if remaining > 0:
            time.sleep(remaining)
        attacker.stop()
        attack_cpu = tree_cpu_seconds(server.process.pid) - cpu0
        attack_wall = time.monotonic() - attack_started
    finally:
        if attacker is not None and attacker.is_alive():
            attacker.stop()
        server.stop()

    print("Legitimate operations, one after the other (%d per phase), without and with %d stalled connections" % (
        args.requests, args.stalled))  # fmt: skip
    print("%-26s %22s %22s %14s %s" % ("operation", "quiet p50/max ms", "attacked p50/max ms", "delay ms", "target"))
    met_all = True
    for name, _method in OPERATIONS:
        q50, qmax, qfail = stats(quiet[name], args.request_timeout)
        a50, amax, afail = stats(attacked[name], args.request_timeout)
        delay = amax - q50
        met = afail == 0 and delay <= TARGET_DELAY_S
        met_all = met_all and met
        print(
            "%-26s %22s %22s %14.0f %s"
            % (
                name,
                "%.1f / %.1f%s" % (q50 * 1000, qmax * 1000, " (%d failed)" % qfail if qfail else ""),
                "%.1f / %.1f%s" % (a50 * 1000, amax * 1000, " (%d failed)" % afail if afail else ""),
                delay * 1000,
                "MET" if met else "NOT MET",
            )
        )
        report["operations"][name] = {
            "quiet_s": quiet[name],
            "attacked_s": attacked[name],
            "quiet_p50_ms": q50 * 1000,
            "attacked_max_ms": amax * 1000,
            "delay_ms": delay * 1000,
            "met": met,
        }
    held = [count for _when, count in attacker.samples]
    print(
        "\nStalled connections held: mean %.0f, min %d (of %d wanted) over %.0f s"
        % (sum(held) / max(1, len(held)), min(held) if held else 0, args.stalled, attack_wall)
    )
    print("%-12s %10s %22s %14s" % ("kind", "closed", "kept by server p50/max s", "open failures"))
    for kind in KINDS:
        lifetimes = sorted(attacker.lifetimes[kind])
        print(
            "%-12s %10d %22s %14d"
            % (
                kind,
                len(lifetimes),
                "%.1f / %.1f" % (percentile(lifetimes, 0.5), lifetimes[-1]) if lifetimes else "-",
                attacker.open_failures[kind],
            )
        )
        report["attack"][kind] = {"closed": len(lifetimes), "lifetimes_s": lifetimes}
    operations_count = len(OPERATIONS) * args.requests
    print(
        "\nServer CPU: quiet %.1f ms per operation; during the attack %.2f cores (%.0f s)"
        % (quiet_cpu / operations_count * 1000, attack_cpu / attack_wall, attack_wall)
    )
    print("Target (issue 11: no legitimate request delayed by more than 1 s): %s" % ("MET" if met_all else "NOT MET"))
    report.update(
        quiet_cpu_ms_per_op=quiet_cpu / operations_count * 1000,
        attack_cpu_cores=attack_cpu / attack_wall,
        met=met_all,
        machine={"cpus": os.cpu_count(), "python": platform.python_version()},
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
