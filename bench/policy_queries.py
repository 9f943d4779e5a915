# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""What issue 11's policy adds to each enrollment and CRL fetch, on a filled database: the per-device daily
limit, the unconfirmed-certificate lookup, the names check's look for other devices' names, and the sweep's
checks for overdue certificates and secrets. The peer, measured in the same run on the same database: the
lookups every request already made (the device by id, the signer's record by fingerprint).

    .venv/bin/python bench/policy_queries.py                      # 100,000 devices, 1,000,000 certificates
    .venv/bin/python bench/policy_queries.py --devices 10000 --certificates 100000 --rounds 2000

It prints, per query, the wall time and CPU time per call and the ratio to the peer. The database is SQLite in
a temporary directory (removed at the end), migrated like the server's (so the indexes are the real ones); filling it
is not timed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

from cryptography import x509 as cx509
from sqlalchemy import insert, select
from trustpoint_core import x509
from trustpoint_core.profiles import get_profile
from trustpoint_server.services import certificates, names
from trustpoint_server.settings import Settings
from trustpoint_server.storage import migrate
from trustpoint_server.storage.db import make_engine, session_factory
from trustpoint_server.storage.models import CertificateAuthority, CmpTransaction, Device, Domain, IssuedCertificate


def fill(engine, devices, certificates_count):
    """devices devices in one domain, certificates_count certificates spread over them (a tenth still unconfirmed
    or superseded, as a busy server has), created over the last 30 days."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    with engine.begin() as connection:
        domain = {"name": "bench", "key_type": "ecdsa-p256", "validity_days": 365, "created_at": now}
        connection.execute(insert(Domain), [domain])
        connection.execute(
            insert(CertificateAuthority),
            [
                {
                    "domain_id": 1,
                    "role": "issuing",
                    "certificate_der": b"x",
                    "private_key_encrypted": b"x",
                    "crl_number": 0,
                }
            ],
        )
        batch = 20000
        for start in range(0, devices, batch):
            connection.execute(
                insert(Device),
                [
                    {
                        "name": "dev-%07d" % i,
                        "domain_id": 1,
                        "onboarding_method": "cmp_shared_secret",
                        "status": "onboarded",
                        "created_at": now,
                    }
                    for i in range(start, min(start + batch, devices))
                ],
            )
        rng = random.Random(11)  # noqa: S311 (test data)
        for start in range(0, certificates_count, batch):
            rows = []
            for i in range(start, min(start + batch, certificates_count)):
                created = now - datetime.timedelta(seconds=rng.randrange(30 * 86400))
                kind = rng.random()
                rows.append(
                    {
                        "ca_id": 1,
                        "device_id": rng.randrange(1, devices + 1),
                        "device_name": "x",
                        "profile": "domain_credential" if kind < 0.5 else "tls_client",
                        "serial_number": "%x" % (i + 1),
                        "subject": "CN=x",
                        "not_before": created,
                        "not_after": created + datetime.timedelta(days=365),
                        "fingerprint_sha256": "%064x" % (i + 1),
                        "certificate_der": b"x",
                        "status": "awaiting_confirmation" if kind < 0.02 else ("revoked" if kind < 0.3 else "active"),
                        "superseded_at": created if 0.3 <= kind < 0.35 else None,
                        "created_at": created,
                    }
                )
            connection.execute(insert(IssuedCertificate), rows)
            # Every CMP certificate has its transaction (certConf and the unconfirmed lookup join them).
            connection.execute(
                insert(CmpTransaction),
                [
                    {
                        "transaction_id": (i + 1).to_bytes(16, "big"),
                        "device_id": row["device_id"],
                        "certificate_id": i + 1,
                        "response_nonce": b"n" * 16,
                        "requester": "secret:%d" % row["device_id"],
                        "cert_req_id": 0,
                        "created_at": row["created_at"],
                        "state": "waiting" if row["status"] == "awaiting_confirmation" else "confirmed",
                    }
                    for i, row in enumerate(rows, start)
                ],
            )


def measure(function, rounds):
    """(median wall seconds, CPU seconds per call) of function() over rounds calls."""
    walls = []
    cpu_start = time.process_time()
    for _round in range(rounds):
        start = time.perf_counter()
        function()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), (time.process_time() - cpu_start) / rounds


def run_queries(args, directory):
    """[(label, median wall seconds, CPU seconds per call)] of every case, on a database filled in directory."""
    engine = make_engine("sqlite:///%s" % os.path.join(directory, "trustpoint.db"))
    migrate.upgrade(engine)
    started = time.perf_counter()
    fill(engine, args.devices, args.certificates)
    print("filled %d devices, %d certificates in %.0f s (not timed below)" % (args.devices, args.certificates,
          time.perf_counter() - started))  # fmt: skip
    settings = Settings(data_dir=directory)
    rng = random.Random(7)  # noqa: S311 (test data)
    with session_factory(engine)() as db:
        domain = db.get(Domain, 1)
        devices = [db.get(Device, rng.randrange(1, args.devices + 1)) for _device in range(200)]
        profile = get_profile("tls_client")

        def unconfirmed(device):
            # After the first sweep nothing is unconfirmed any more: this is the lookup alone.
            certificates.supersede_unconfirmed(db, device, "tls_client", "secret:%d" % device.id)

        def own_names(device):
            request = [cx509.DNSName(device.name)]
            return names.decide(db, device, domain, profile, x509.common_name(device.name), request)

        # The first sweep revokes what the filled history left overdue; later ones, measured, find nothing.
        certificates.sweep(db, settings)

        def pick():
            return devices[rng.randrange(len(devices))]

        cases = [
            ("peer: device by id", lambda: db.get(Device, rng.randrange(1, args.devices + 1), populate_existing=True)),
            ("peer: record by fingerprint", lambda: db.scalar(select(IssuedCertificate).where(
                IssuedCertificate.fingerprint_sha256 == "%064x" % rng.randrange(1, args.certificates + 1)))),
            ("daily limit (count, 24 h)", lambda: certificates.check_daily_limit(db, pick(), settings)),
            ("names: own name and DNS name", lambda: own_names(pick())),
            ("unconfirmed of the requester", lambda: unconfirmed(pick())),
            ("sweep: anything overdue?", lambda: any(certificates._overdue(db, settings, certificates.utcnow()))),
        ]  # fmt: skip
        results = []
        for label, function in cases:
            function()  # warm the page cache and the statement cache
            results.append((label, *measure(function, args.rounds)))
            db.rollback()
    engine.dispose()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100000)
    parser.add_argument("--certificates", type=int, default=1000000)
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args(argv)

    directory = tempfile.mkdtemp(prefix="bench-policy-")
    try:
        results = run_queries(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # the database: over a gigabyte at the default size
    peer = results[0][1]
    print("%-32s %12s %12s %10s" % ("query", "median ms", "CPU ms/call", "x peer"))
    for label, wall, cpu in results:
        print("%-32s %12.3f %12.3f %10.1f" % (label, wall * 1000, cpu * 1000, wall / peer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
