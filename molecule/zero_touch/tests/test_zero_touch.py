# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""After power-on: the trusted devices onboarded by themselves, found the server over mDNS and pinned its
TLS trust; the untrusted IDevID got nothing; the device of another owner refused; the guided device holds
its credential. Runs through Molecule's testinfra verifier (real SSH, host keys checked)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

testinfra_hosts = ["ansible://devices"]

# The namespace hosts share the machine's filesystem: they run the controller's virtualenv, as converge does.
BIN = Path(sys.executable).parent
AGENT = "/var/lib/trustpoint-agent"
FACTORY = "/etc/trustpoint-agent"


def status(host):
    return host.run("%s/trustpoint-agent status --json" % BIN)


def log(host):
    return host.file(AGENT + "/agent.log").content_string


def groups(host):
    return host.ansible.get_variables()["group_names"]


def test_the_right_host(host):
    assert host.check_output("hostname") == host.backend.host


def test_onboarded_devices_hold_their_own_credential(host):
    if "refusing" in groups(host):
        pytest.skip("this device must not onboard")
    result = status(host)
    assert result.rc == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["onboarded"] and not report["renewal_due"]
    assert report["server"] == "https://169.254.83.10:8500"
    assert host.file(AGENT + "/key.pem").mode == 0o600
    assert host.file(AGENT).mode == 0o700
    subject = report["certificate"]["subject"]
    if "zero_touch" in groups(host):
        assert report["method"] == "aoki"
        # Found by mDNS (started without --url) and checked the owner before trusting it.
        assert "mDNS: 1 owner service(s): https://169.254.83.10:8500" in log(host)
        assert host.file(AGENT + "/owner.pem").exists
        assert subject.startswith("CN=AOKI-device-")
    else:
        assert report["method"] == "agent" and subject == "CN=guided"


def test_the_untrusted_idevid_gets_nothing(host):
    if host.backend.host != "untrusted":
        pytest.skip("only the device with the untrusted IDevID")
    assert status(host).rc == 1
    assert not host.file(AGENT + "/cert.pem").exists
    assert not host.file(AGENT + "/key.pem").exists
    # The server refuses its IDevID in the TLS handshake: no answer at all.
    assert "cannot reach https://169.254.83.10:8500/aoki/init/" in log(host)


def test_the_device_of_another_owner_refuses_the_server(host):
    if host.backend.host != "foreign":
        pytest.skip("only the device with another owner's anchor")
    assert status(host).rc == 1
    assert not host.file(AGENT + "/cert.pem").exists
    assert "refused the owner service at https://169.254.83.10:8500" in log(host)
    assert "does not chain to the device's owner trust anchor" in log(host)


def test_factory_provisioning_is_all_the_devices_got(host):
    if host.backend.host == "guided":
        pytest.skip("the guided device has no IDevID")
    assert host.file(FACTORY + "/idevid.key").mode == 0o600
    assert sorted(host.file(FACTORY).listdir()) == ["idevid.key", "idevid.pem", "owner-truststore.pem"]
