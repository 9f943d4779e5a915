#!/usr/bin/env python
# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Legitimate enrollments while attackers send wrong secrets: their delay and the server CPU a failure costs.

    .venv/bin/python bench/failed_auth.py [--attackers 8] [--attack-rate 4] [--attack-seconds 15]
        [--requests 10] [--baseline-server PATH] [--json FILE]

The issue 11 observation: a wrong MAC at the 100,000-iteration cap costs ~75 ms of server CPU, a wrong EST
password ~76 ms (scrypt), and 8 attacker threads raise a legitimate onboarding from 69 ms to 570-760 ms.

Each configuration is one server (`trustpoint-server run`, default workers and threads) in a fresh data
directory, measured in the same run one after the other:

    baseline     --baseline-server PATH: another version's trustpoint-server (e.g. a venv of main before
                 the budgets), to compare with; left out without it
    no budgets   this version with --auth-failure-budget 0 --auth-lockout 0: every wrong secret is checked
    defaults     this version as shipped (budgets per source and device, lockout)

In each, --requests legitimate operations of each kind (stalled_clients.py's: a CMP ir with PBM over plain
HTTP, an EST simpleenroll with a password over HTTPS, GET /api/v1/domains over HTTPS; from 127.0.0.1) run
on the quiet server, then again during each of two attacks of --attack-seconds: --attackers threads (in a
process of their own, so that they do not slow the legitimate client down) that each send, from their own
loopback address (127.0.0.10, .11, ...: per-source budgets get no help from a shared address), up to
--attack-rate requests per second (0: as fast as the server answers; the same rate for every server
compares like with like),

    cmp   an ir for a registered, pending device, PBM-protected with a wrong secret at 100,000 iterations
    est   a simpleenroll with a wrong password for a registered, pending EST device (a new TLS connection each)

Printed per configuration and attack: the legitimate operations' p50/max latency quiet and in each half
of the attack (in the first the budgets are still full: the burst they allow; the second shows what
remains), how the server answered the attackers (wrong secret, refused over budget; a locked or
throttled device answers like a wrong secret), the server's cores in each half and its CPU per attacker
request (the attack's CPU less what the legitimate operations cost on the quiet server). Loopback
only, bounded by --attackers and --attack-seconds. Other load on the machine skews the latencies; the
configurations in one run are the peers to compare. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import platform
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time

from cmp_enroll import OurServer, http_request, log, server_defaults, tree_cpu_seconds
from stalled_clients import DOMAIN, OPERATIONS, Operations, read_answer, run_operations, stats

try:
    from trustpoint_core import keys, x509
    from trustpoint_core.cmp_message import Header, cert_req_body, encode_message
    from trustpoint_core.cmp_protection import PasswordBasedMac
except ImportError:  # pragma: no cover - a message instead of a traceback
    sys.exit("cannot import trustpoint_core: run with the repository's venv, e.g. .venv/bin/python")

ATTACK_ITERATIONS = 100000  # the server's cap: the most a wrong MAC can cost it
OVER_BUDGET = b"too many failed authentications"
ATTACKS = ("cmp", "est")
FORK = multiprocessing.get_context("fork")


class Attacker(threading.Thread):
    """Sends one kind of wrong authentication from its own source address until stop()."""

    def __init__(self, kind, source, server, victim, timeout, rate):
        super().__init__(daemon=True)
        self.kind = kind
        self.source = source
        self.server = server
        self.timeout = timeout
        self.interval = 1.0 / rate if rate else 0.0
        self.answers = {}  # outcome -> count
        self._finish = threading.Event()
        api_port = int(server.api_url.rsplit(":", 1)[1])
        if kind == "cmp":
            self.port, self.context = server.port, None
            key = keys.generate_private_key("ecdsa-p256")
            subject = x509.parse_name("/CN=attacker")
            mac = PasswordBasedMac(b"a wrong secret", iterations=ATTACK_ITERATIONS, kid=str(victim).encode())
            # One message, sent again and again: the MAC is checked before anything else is.
            der = encode_message(
                Header(sender=subject, transaction_id=os.urandom(16)), cert_req_body("ir", key, subject), mac
            )
            self.payload = http_request(
                "POST", "127.0.0.1", self.port, "/.well-known/cmp/p/%s/initialization" % DOMAIN, der
            )
        else:
            self.port, self.context = api_port, server.tls
            credentials = base64.b64encode(("%s:a-wrong-password" % victim).encode())
            body = b"MIIB"  # never read: the password is wrong
            self.payload = (
                b"POST /.well-known/est/%s/simpleenroll HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                b"Content-Type: application/pkcs10\r\nAuthorization: Basic %s\r\nContent-Length: %d\r\n\r\n%s"
                % (DOMAIN.encode(), credentials, len(body), body)
            )

    def stop(self):
        self._finish.set()

    def _exchange(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout, source_address=(self.source, 0))
        with raw:
            sock = raw if self.context is None else self.context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(self.payload)
            return read_answer(sock)

    def _outcome(self, status, body):
        if self.kind == "cmp":
            if status != 200:
                return "HTTP %d" % status
            return "refused over budget" if OVER_BUDGET in body else "wrong secret (MAC checked or device refused)"
        if status == 429:
            return "refused over budget"
        return "wrong secret" if status == 401 else "HTTP %d" % status

    def run(self):
        next_send = time.monotonic()
        while not self._finish.is_set():
            try:
                outcome = self._outcome(*self._exchange())
            except (OSError, ssl.SSLError) as exc:
                outcome = "error: %s" % type(exc).__name__
            self.answers[outcome] = self.answers.get(outcome, 0) + 1
            next_send = max(next_send + self.interval, time.monotonic() - 1.0)  # no catching up after a slow answer
            self._finish.wait(max(0.0, next_send - time.monotonic()))


def attack(kind, server, victims, args, started, results):
    """The attackers of one kind, one thread each in this (forked) process, so that they take no turns
    with the legitimate client's interpreter lock; {outcome: count} into results when done."""
    attackers = [
        Attacker(kind, "127.0.0.%d" % (10 + n), server, victims[n], args.request_timeout, args.attack_rate)
        for n in range(args.attackers)
    ]
    for attacker in attackers:
        attacker.start()
    time.sleep(max(0.0, args.attack_seconds - (time.monotonic() - started)))
    for attacker in attackers:
        attacker.stop()
    answers = {}
    for attacker in attackers:
        attacker.join(args.request_timeout + 5)
        for outcome, count in attacker.answers.items():
            answers[outcome] = answers.get(outcome, 0) + count
    results.put(answers)


def measure(name, server_command, extra_args, args, workdir):
    """The results of one configuration: quiet operations, then each attack with operations."""
    server = OurServer(
        os.path.join(workdir, name.replace(" ", "-")),
        args.workers,
        args.threads,
        "warning",
        extra_args=extra_args,
        command=server_command,
    )
    result = {"server_args": extra_args, "attacks": {}}
    attacker = None
    try:
        server.api("POST", "/domains", {"name": DOMAIN})
        rounds = 1 + len(ATTACKS)
        operations = Operations(server, rounds * args.requests, args)
        victims = {
            "cmp": [device_id for device_id, _secret in server.create_devices(DOMAIN, "victim-cmp", args.attackers)],
            "est": [
                server.api(
                    "POST",
                    "/devices",
                    {"name": "victim-est-%d" % n, "domain": DOMAIN, "onboarding_method": "est_password"},
                )["device"]["name"]
                for n in range(args.attackers)
            ],
        }
        log("%s: quiet, %d operations of each kind ..." % (name, args.requests))
        cpu0 = tree_cpu_seconds(server.process.pid)
        quiet = run_operations(operations, 0, args.requests, 0.05)
        quiet_cpu_per_round = (tree_cpu_seconds(server.process.pid) - cpu0) / args.requests
        result["quiet"] = quiet
        result["quiet_cpu_ms_per_op"] = quiet_cpu_per_round / len(OPERATIONS) * 1000
        for number, kind in enumerate(ATTACKS, 1):
            log("%s: %d %s attackers for %.0f s ..." % (name, args.attackers, kind, args.attack_seconds))
            results = FORK.Queue()
            started = time.monotonic()
            half = args.attack_seconds / 2
            cpu0 = tree_cpu_seconds(server.process.pid)
            cpu_half = []
            sampler = threading.Timer(
                half, lambda samples: samples.append(tree_cpu_seconds(server.process.pid)), [cpu_half]
            )
            sampler.start()
            attacker = FORK.Process(target=attack, args=(kind, server, victims[kind], args, started, results))
            attacker.start()
            time.sleep(min(2.0, args.attack_seconds / 4))  # the attack under way first
            pause = max(0.05, (args.attack_seconds - (time.monotonic() - started)) / (1.5 * args.requests))
            # The first half of an attack has the budgets still full; the second half shows what remains.
            attacked = {"first half": {name: [] for name, _method in OPERATIONS}, "second half": {}}
            attacked["second half"] = {name: [] for name, _method in OPERATIONS}
            for index in range(number * args.requests, (number + 1) * args.requests):
                window = "first half" if time.monotonic() - started < half else "second half"
                for operation, latencies in run_operations(operations, index, 1, pause).items():
                    attacked[window][operation].extend(latencies)
            answers = results.get(timeout=args.attack_seconds + args.request_timeout + 30)
            attacker.join(10)
            sampler.join()
            wall = time.monotonic() - started
            cpu = tree_cpu_seconds(server.process.pid) - cpu0
            sent = sum(answers.values())
            attack_cpu = max(0.0, cpu - quiet_cpu_per_round * args.requests)
            result["attacks"][kind] = {
                "attacked": attacked,
                "answers": answers,
                "requests": sent,
                "seconds": wall,
                "server_cores": cpu / wall,
                "server_cores_halves": [(cpu_half[0] - cpu0) / half, (cpu0 + cpu - cpu_half[0]) / (wall - half)],
                "cpu_ms_per_attacker_request": attack_cpu / sent * 1000 if sent else None,
            }
    finally:
        if attacker is not None and attacker.is_alive():
            attacker.terminate()
        server.stop()
    return result


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", maxsplit=1)[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    workers, threads = server_defaults()
    parser.add_argument("--attackers", type=int, default=8, help="attacker threads, one source address each (8)")
    parser.add_argument(
        "--attack-rate",
        type=float,
        default=4.0,
        help="requests per second each attacker sends at most (4; 0: as fast as the server answers)",
    )
    parser.add_argument("--attack-seconds", type=float, default=15.0, help="how long each attack lasts (15)")
    parser.add_argument("--requests", type=int, default=10, help="legitimate operations of each kind per phase (10)")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="a request's timeout (30 s)")
    parser.add_argument("--workers", type=int, default=workers, help="server workers (its default: %d)" % workers)
    parser.add_argument("--threads", type=int, default=threads, help="threads per worker (its default: %d)" % threads)
    parser.add_argument("--pbm-iterations", type=int, default=500, help="the legitimate ir's PBM iterationCount (500)")
    parser.add_argument("--pbm-mac", default="hmac-sha1", help="the legitimate ir's PBM MAC (OpenSSL's: hmac-sha1)")
    parser.add_argument("--baseline-server", metavar="PATH", help="another version's trustpoint-server to compare with")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if not 1 <= args.attackers <= 100 or args.requests < 1 or not 0 < args.attack_seconds <= 300:
        parser.error("--attackers 1-100, --requests at least 1, --attack-seconds up to 300")
    return args


def print_report(results, args):
    print(
        "Legitimate operations (%d of each kind per phase) quiet and while %d attackers send wrong secrets"
        % (args.requests, args.attackers)
    )
    print(
        "%-12s %-6s %-26s %16s %20s %20s"
        % ("server", "attack", "operation", "quiet p50/max", "attack 1st half", "attack 2nd half")
    )

    def cell(latencies):
        if not latencies:
            return "-"
        p50, most, failed = stats(latencies, args.request_timeout)
        return "%.0f / %.0f%s" % (p50 * 1000, most * 1000, " (%d failed)" % failed if failed else "")

    for name, result in results.items():
        for kind in ATTACKS:
            attacked = result["attacks"][kind]["attacked"]
            for operation, _method in OPERATIONS:
                print(
                    "%-12s %-6s %-26s %16s %20s %20s"
                    % (
                        name,
                        kind,
                        operation,
                        cell(result["quiet"][operation]),
                        cell(attacked["first half"][operation]),
                        cell(attacked["second half"][operation]),
                    )
                )
    print("(milliseconds)")
    print("\nThe attackers' requests")
    print(
        "%-12s %-6s %9s %18s %14s  %s"
        % ("server", "attack", "requests", "server cores 1st/2nd", "CPU ms/request", "answers")
    )
    for name, result in results.items():
        for kind in ATTACKS:
            attack = result["attacks"][kind]
            per_request = attack["cpu_ms_per_attacker_request"]
            print(
                "%-12s %-6s %9d %18s %14s  %s"
                % (
                    name,
                    kind,
                    attack["requests"],
                    "%.2f / %.2f" % tuple(attack["server_cores_halves"]),
                    "%.1f" % per_request if per_request is not None else "-",
                    ", ".join("%s: %d" % item for item in sorted(attack["answers"].items())),
                )
            )


def main(argv=None):
    args = parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="failed-auth-bench-")
    log("work directory %s; %d CPUs; python %s" % (workdir, os.cpu_count(), platform.python_version()))
    configurations = []
    if args.baseline_server:
        configurations.append(("baseline", [os.path.abspath(args.baseline_server)], []))
    configurations += [
        ("no budgets", None, ["--auth-failure-budget", "0", "--auth-lockout", "0"]),
        ("defaults", None, []),
    ]
    results = {}
    for name, command, extra in configurations:
        results[name] = measure(name, command, extra, args, workdir)
    print_report(results, args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "settings": vars(args),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "results": results,
                },
                handle,
                indent=1,
            )
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
