# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""An AOKI set-up on a test server: `trustpoint-server aoki gen-test-certs`, a domain, the manufacturer's
truststore and DevID registration, and the DevOwnerID as an owner credential."""

from __future__ import annotations

import json
import subprocess
import uuid

from conftest import BIN
from cryptography import x509
from trustpoint_server.runtime import testcerts


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def gen_test_certs(directory, devices=3, *options):
    """The test set of `trustpoint-server aoki gen-test-certs` (the command itself: options given)."""
    if not options:
        return testcerts.generate(str(directory), devices)
    subprocess.run(
        [str(BIN / "trustpoint-server"), "aoki", "gen-test-certs", str(directory), "--devices", str(devices), *options],
        check=True,
        capture_output=True,
    )
    return json.loads((directory / "devices.json").read_text())


class Aoki:
    """The test set of gen-test-certs in directory, admitted on server into a new domain.

    serials: the pattern admits these IDevIDs (default all); owner: create the owner credential."""

    def __init__(self, server, directory, devices=3, pattern=None, owner=True, key_options=()):
        self.server = server
        self.dir = directory
        self.manifest = gen_test_certs(directory, devices, *key_options)
        self.domain = server.create_domain()["name"]
        status, body = server.api(
            "POST",
            "/truststores",
            {"name": unique("aoki-vendor"), "usage": "idevid", "certificates": self.read("idevid_ca.pem")},
        )
        assert status == 201, body
        self.truststore = body["name"]
        serials = "|".join(d["serial_number"] for d in self.manifest["devices"])
        self.registration = unique("aoki-reg")
        status, body = server.api(
            "POST",
            "/devid-registrations",
            {
                "name": self.registration,
                "domain": self.domain,
                "truststore": self.truststore,
                "pattern": pattern or "(%s)" % serials,
                "auto_create_devices": True,
            },
        )
        assert status == 201, body
        self.owner_name = None
        if owner:
            self.owner_name = self.add_owner("owner_id.pem", "owner_id_pk.pem")

    def read(self, name):
        return (self.dir / name).read_text()

    def add_owner(self, certificate, key, chain=None):
        name = unique("owner")
        payload = {"name": name, "certificate": self.read(certificate), "private_key": self.read(key)}
        if chain:
            payload["chain"] = self.read(chain)
        status, body = self.server.api("POST", "/owner-credentials", payload)
        assert status == 201, body
        return name

    def device(self, n):
        """(certificate path, key path, serial number) of IDevID n (1-based)."""
        record = self.manifest["devices"][n - 1]
        return self.dir / record["certificate"], self.dir / record["private_key"], record["serial_number"]

    def idevid(self, n):
        return x509.load_pem_x509_certificate(self.device(n)[0].read_bytes())

    def devices_on_server(self):
        status, body = self.server.api("GET", "/devices?domain=" + self.domain)
        assert status == 200, body
        return body
