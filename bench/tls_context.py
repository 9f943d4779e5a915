#!/usr/bin/env python
# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""CPU per new TLS connection for the client CA bundle check: ServerContexts.current() (the generation's row and
two stat() calls) against reading the whole bundle, as every handshake did before (issue 16), side by side at
each number of domains.

    .venv/bin/python bench/tls_context.py                          # 1, 21 and 101 domains, 2,000 calls each
    .venv/bin/python bench/tls_context.py --domains 1,101 --calls 5000

A fresh data directory (`trustpoint-server init`, SQLite) per domain count, in a temporary directory removed at
the end; domains are created through the REST API before anything is timed. In-process, no handshake: the
figures are what the check adds to each one (a whole TLS handshake costs the server ~250 us).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import inprocess


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--domains", default="1,21,101", help="domain counts, list (default 1,21,101)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement (default 2000)")
    return parser.parse_args(argv)


def cpu_us(function, calls):
    function()
    start = time.process_time()
    for _call in range(calls):
        function()
    return (time.process_time() - start) / calls * 1e6


def measure(domains, calls):
    """{what: CPU us per call} with this many domains."""
    from trustpoint_server.runtime import tls

    scratch = tempfile.mkdtemp(prefix="tls-context-")
    try:
        data_dir = os.path.join(scratch, "data")
        app = inprocess.App(data_dir)  # one domain
        for number in range(domains - 1):
            app.api("/api/v1/domains", {"name": "d%04d" % number})
        engine = app.client.application.extensions["trustpoint"].engine
        cert_file, key_file = tls.server_files(data_dir)
        contexts = tls.ServerContexts(cert_file, key_file)
        contexts.use_database(engine)
        context = contexts.current()
        with engine.connect() as connection:
            bundle = tls.client_ca_bundle(connection)
        assert len(bundle[0]) == 2 * domains, "expected %d domain CAs, read %d" % (2 * domains, len(bundle[0]))

        def whole_bundle():
            # What current() did per call before: both files' stat(), the bundle, compared with the last one.
            files = (tls._file_stamp(cert_file), tls._file_stamp(key_file))
            with engine.connect() as connection:
                read = tls.client_ca_bundle(connection)
            return files, read == bundle

        def current():
            assert contexts.current() is context

        figures = {
            "current()": cpu_us(current, calls),
            "whole bundle": cpu_us(whole_bundle, calls),
            "generation only": cpu_us(lambda: tls.bundle_generation(engine), calls),
            "2 stat()": cpu_us(lambda: (tls._file_stamp(cert_file), tls._file_stamp(key_file)), calls),
        }
        engine.dispose()
        return figures
    finally:
        shutil.rmtree(scratch)


def main(argv=None):
    args = parse_args(argv)
    counts = [int(count) for count in args.domains.split(",")]
    print("CPU us per call, %d calls, SQLite, in-process" % args.calls)
    print(
        "%8s  %10s  %13s  %10s  %16s  %9s"
        % ("domains", "current()", "whole bundle", "x current", "generation only", "2 stat()")
    )
    for count in counts:
        figures = measure(count, args.calls)
        print(
            "%8d  %10.1f  %13.1f  %10.1f  %16.1f  %9.1f"
            % (
                count,
                figures["current()"],
                figures["whole bundle"],
                figures["whole bundle"] / figures["current()"],
                figures["generation only"],
                figures["2 stat()"],
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
