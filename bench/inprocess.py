#!/usr/bin/env python
# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CPU per enrollment inside one process: the Flask app called through its test client (WSGI, no HTTP server,
no TLS), so that a profiler sees the request's own work only. bench/cmp_enroll.py measures the real server.

    .venv/bin/python bench/inprocess.py --requests 300 --rounds 3                # PBM ir, CPU ms per request
    .venv/bin/python bench/inprocess.py --flow est-enroll                        # EST simpleenroll (password)
    .venv/bin/python bench/inprocess.py --flow malformed-ir                      # an ir whose body has a wrong tag
    .venv/bin/python bench/inprocess.py --profile out.prof                       # cProfile of the last round
    .venv/bin/python bench/inprocess.py --phases                                 # CPU per phase of the request
    .venv/bin/python bench/inprocess.py --through-flask                          # CMP and EST through Flask
    py-spy record -r 500 -f raw -o out.raw -- .venv/bin/python bench/inprocess.py --requests 600

A fresh data directory (`trustpoint-server init`) in a temporary directory, removed at the end; one device per
request, created through the REST API before anything is timed. Each round's requests are built before the round
(fresh messageTime). Run two checkouts alternately on a shared machine: the figures move with its load.
"""

from __future__ import annotations

import argparse
import base64
import collections
import cProfile
import functools
import importlib
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cmp_enroll
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from trustpoint_core.asn1 import der_children, der_sequence, der_tlv

FLOWS = ("pbm-ir", "est-enroll", "malformed-ir")
IP, ERROR = 1, 23  # PKIBody choices
# malformed-ir: the ir's body holds an OCTET STRING where CertReqMessages belong. The fast reader leaves it to
# pyasn1, which answers badDataFormat before anything is authenticated (once 0.2-0.3 s of CPU: bench/README.md).
WRONG_TAG = b"\x04\x00"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per round (default 300)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; each is reported (default 1)")
    parser.add_argument("--flow", choices=FLOWS, default="pbm-ir")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the last round into FILE and print its top")
    parser.add_argument("--phases", action="store_true", help="CPU per phase of a request (PHASES), last round")
    parser.add_argument(
        "--through-flask",
        action="store_true",
        help="CMP and EST through Flask's request machinery, without protocols/ahead.py (issue 16's before)",
    )
    return parser.parse_args(argv)


# --phases: what one request's CPU is spent on, without a profiler's per-call cost (cProfile triples a request's
# CPU and weighs many small calls most). Each function is timed with process_time; a phase's figure leaves out the
# phases it calls (the PBM key derivation inside verify_mac is "PBM key derivation", not "verify_mac"). The rest is
# the WSGI layer (CMP's dispatcher, or Flask), the test client and the code between phases.
# (module, attribute path, phase); a function a flow does not call shows no line.
PHASES = (
    ("trustpoint_core.cmp_message", "CmpMessage.decode", "CMP: decode the request"),
    ("trustpoint_core.cmp_protection", "verify_mac", "CMP: verify the request's MAC"),
    ("trustpoint_core.cmp_protection", "PasswordBasedMac.derive_key", "PBM key derivation"),
    ("trustpoint_server.protocols.cmp_responder", "CmpResponder._single_request", "CMP: read the request, POP"),
    ("trustpoint_server.protocols.cmp_responder", "CmpResponder._encode", "CMP: encode and protect the answer"),
    ("trustpoint_server.protocols.est", "EstEnrollment._authenticate", "EST: authenticate"),
    ("trustpoint_server.services.devices", "check_password", "EST: password check"),
    ("trustpoint_core.est", "load_csr", "EST: read the CSR"),
    ("trustpoint_server.protocols.est", "_pkcs7", "EST: PKCS#7 answer"),
    ("trustpoint_server.services.pki", "issue_for_device", "issue: names, build and sign"),
    ("trustpoint_server.services.enrolling", "device", "DB: device, domain, CAs"),
    ("trustpoint_server.services.enrolling", "device_named", "DB: device, domain, CAs"),
    ("trustpoint_server.services.enrolling", "domain_named", "DB: the URL's domain, CAs"),
    ("trustpoint_server.services.certificates", "transaction_used", "DB: transactionID used?"),
    ("trustpoint_server.storage.db", "begin_write", "DB: end the read, begin the write"),
    ("trustpoint_server.services.devices", "refresh_secret", "DB: re-read the secret"),
    ("trustpoint_server.services.certificates", "check_daily_limit", "DB: daily limit"),
    ("trustpoint_server.services.pki", "record_certificate", "DB: record the certificate"),
    ("trustpoint_server.services.certificates", "record_transaction", "DB: record the transaction"),
    ("trustpoint_server.services.devices", "activate", "DB: activate, revoke the others"),
    ("sqlalchemy.orm", "Session.commit", "DB: commit"),
    ("sqlalchemy.orm", "Session.close", "DB: close the session"),
    # The driver's own calls (sqlite3), so that the DB phases above show SQLAlchemy's share without them: through
    # SQLAlchemy, and storage/sql.py's statements (with their parameters and rows converted).
    ("trustpoint_server.storage.sql", "_execute", "driver: execute (storage/sql.py)"),
    ("sqlalchemy.engine.default", "DefaultDialect.do_execute", "driver: execute"),
    ("sqlalchemy.engine.default", "DefaultDialect.do_commit", "driver: commit"),
    ("sqlalchemy.engine.default", "DefaultDialect.do_rollback", "driver: rollback"),
)


class Phases:
    """CPU per phase (PHASES), each without the phases it calls."""

    def __init__(self):
        self.cpu = collections.Counter()
        self._stack = []  # [CPU time of the phases called so far] per open phase
        self.enabled = False  # set for the requests to time
        for module_name, path, label in PHASES:
            owner = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            function = getattr(owner, name)
            timed = self._timed(function, label)
            setattr(owner, name, timed)
            # `from module import function` bound it elsewhere too.
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith(("trustpoint_", "ansible_collections")):
                    for key, value in list(vars(module).items()):
                        if value is function:
                            setattr(module, key, timed)

    def _timed(self, function, label):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            if not self.enabled:
                return function(*args, **kwargs)
            self._stack.append(0.0)
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.process_time() - start
                inner = self._stack.pop()
                self.cpu[label] += spent - inner
                if self._stack:
                    self._stack[-1] += spent

        return timed

    def report(self, requests, cpu):
        total_ms = cpu * 1000 / requests
        print("CPU per phase, %d requests, %.2f ms each:" % (requests, total_ms))
        for label, seconds in sorted(self.cpu.items(), key=lambda item: -item[1]):
            ms = seconds * 1000 / requests
            print("  %-40s %6.3f ms  %5.1f %%" % (label, ms, 100 * ms / total_ms))
        rest = total_ms - sum(self.cpu.values()) * 1000 / requests
        print("  %-40s %6.3f ms  %5.1f %%" % ("rest (WSGI, test client, between phases)", rest, 100 * rest / total_ms))


class App:
    """The server's app on a new data directory, and its REST API through the test client."""

    def __init__(self, data_dir, through_flask=False):
        from trustpoint_server.app import create_app
        from trustpoint_server.settings import Settings

        command = os.path.join(os.path.dirname(sys.executable), "trustpoint-server")
        subprocess.run([command, "init", "--data-dir", data_dir], check=True, capture_output=True)
        flask_app = create_app(Settings.load({"data_dir": data_dir}, environ={}))
        if through_flask:
            flask_app.wsgi_app = flask_app.wsgi_app.flask
        self.client = flask_app.test_client()
        with open(os.path.join(data_dir, "admin-token")) as handle:
            self.headers = {"Authorization": "Bearer " + handle.read().strip()}
        self.api("/api/v1/domains", {"name": "bench"})

    def api(self, path, payload):
        answer = self.client.post(path, json=payload, headers=self.headers)
        if answer.status_code not in (200, 201):
            raise SystemExit("%s: %d %s" % (path, answer.status_code, answer.get_data(as_text=True)))
        return answer.get_json()

    def device(self, number, method):
        body = self.api("/api/v1/devices", {"name": "d%06d" % number, "domain": "bench", "onboarding_method": method})
        if method == "est_password":
            return body["device"]["name"], body["password"]
        return body["device"]["id"], body["shared_secret"]


def cmp_request(app, template, device, pbm, malformed=False):
    """A PBM ir of the template for the device (malformed: its body replaced by WRONG_TAG), and the function that
    sends it."""
    der = cmp_enroll.protect(template, device[1], str(device[0]), pbm)
    expected = IP
    if malformed:
        header, body, *rest = der_children(der)
        der, expected = der_sequence(header, der_tlv(body[0], WRONG_TAG), *rest), ERROR

    def send():
        answer = app.client.post("/.well-known/cmp/p/bench/initialization", data=der,
                                 headers={"Content-Type": "application/pkixcmp"})  # fmt: skip
        if answer.status_code != 200 or cmp_enroll.body_tag(answer.data) != expected:
            raise SystemExit("CMP answer %d is not body %d: %r" % (answer.status_code, expected, answer.data[:200]))

    return send


def est_request(app, template, device):
    """An EST simpleenroll with the device's password for the template's key, and the function that sends it."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device[0])])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(template.key, hashes.SHA256())
    body = base64.b64encode(csr.public_bytes(Encoding.DER))
    basic = base64.b64encode(("%s:%s" % device).encode()).decode()
    headers = {"Authorization": "Basic " + basic, "Content-Type": "application/pkcs10"}

    def send():
        # Over "https": EST refuses credentials on plain HTTP; the test client does no TLS.
        answer = app.client.post("/.well-known/est/bench/simpleenroll", data=body, headers=headers,
                                 base_url="https://localhost")  # fmt: skip
        if answer.status_code != 200:
            raise SystemExit("EST answer %d: %s" % (answer.status_code, answer.get_data(as_text=True)[:300]))

    return send


def main(argv=None):
    args = parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="tp-inprocess-")
    try:
        phases = Phases() if args.phases else None
        app = App(os.path.join(workdir, "data"), args.through_flask)
        method = "est_password" if args.flow == "est-enroll" else "cmp_shared_secret"
        total = args.requests * args.rounds
        templates = cmp_enroll.make_templates(cmp_enroll.make_keys(argparse.Namespace(key_type="ecdsa-p256"), 50),
                                              total, 0)  # fmt: skip
        devices = [app.device(number, method) for number in range(total)]
        pbm = argparse.Namespace(pbm_iterations=500, pbm_mac="hmac-sha1")  # OpenSSL's client defaults
        for number in range(args.rounds):
            first = number * args.requests
            pairs = zip(templates[first : first + args.requests], devices[first : first + args.requests])
            if args.flow == "est-enroll":
                sends = [est_request(app, template, device) for template, device in pairs]
            else:
                malformed = args.flow == "malformed-ir"
                sends = [cmp_request(app, template, device, pbm, malformed) for template, device in pairs]
            last = number == args.rounds - 1
            profiler = cProfile.Profile() if args.profile and last else None
            if phases is not None:
                phases.enabled = last
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            for send in sends:
                send()
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            per_request = (cpu * 1000 / len(sends), wall * 1000 / len(sends))
            print("round %d: %s, %d requests, %.2f ms CPU and %.2f ms wall per request"
                  % (number + 1, args.flow, len(sends), *per_request), flush=True)  # fmt: skip
            if phases is not None and last:
                phases.report(len(sends), cpu)
        if args.profile:
            profiler.dump_stats(args.profile)
            pstats.Stats(args.profile).sort_stats("cumulative").print_stats(40)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
