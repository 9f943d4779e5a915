# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection's playbooks end to end against a real server: onboard, renew, revoke.

One device with a local connection (the Molecule scenario covers SSH hosts); its files live in a temporary
credential directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import yaml
from conftest import REPO, openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes

PLAYBOOK = sys.executable.replace("/python", "/ansible-playbook")


def run_playbook(workdir, name, inventory, *extra, expect_failure=False, env=None):
    playbook = name if name.endswith(".yml") else "trustpoint.pki.%s" % name
    command = [PLAYBOOK, "-i", str(inventory), playbook, *extra]
    environment = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
    )
    environment.update(env or {})
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=workdir, check=False)
    if expect_failure:
        assert result.returncode != 0, result.stdout[-4000:]
        return result.stdout + result.stderr
    else:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def recap(output):
    """{'ok': n, 'changed': n, ...} of the one host's PLAY RECAP line."""
    line = [text for text in output.splitlines() if "ok=" in text and "changed=" in text][-1]
    return {key: int(value) for key, value in (item.split("=") for item in line.split(":", 1)[1].split())}


def write_inventory(workdir, server, domain, device, credentials, **overrides):
    """An inventory of one local device; overrides set (or, with None, remove) its variables."""
    inventory = workdir / "inventory.yml"
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "trustpoint_domain": domain,
        "trustpoint_server_url": server.url,
        "trustpoint_ca_path": str(server.ca_file),
        "trustpoint_api_token": server.token,
        "trustpoint_credential_dir": str(credentials),
        "trustpoint_create_domain": True,
    }
    for key, value in overrides.items():
        if value is None:
            host.pop(key, None)
        else:
            host[key] = value
    inventory.write_text(yaml.safe_dump({"devices": {"hosts": {device: host}}}))
    return inventory


def test_onboard_renew_revoke(server, workdir):
    """onboard_devices enrolls and is idempotent; renew_devices renews (forced) with a new key; revoke_devices
    revokes, deletes the files and the device."""
    domain = "pb-" + uuid.uuid4().hex[:8]
    device = "pbdev-" + uuid.uuid4().hex[:8]
    credentials = workdir / "credentials"
    inventory = write_inventory(workdir, server, domain, device, credentials)

    run_playbook(workdir, "onboard_devices", inventory)
    openssl("verify", "-CAfile", str(credentials / "domain_chain.pem"), str(credentials / "domain_credential.pem"))
    assert (credentials / "tls-ca.pem").read_bytes() == server.ca_file.read_bytes()
    found = server.api("GET", "/devices?name=" + device)[1]
    assert found[0]["status"] == "onboarded"
    first = found[0]["credential"]["serial_number"]
    assert recap(run_playbook(workdir, "onboard_devices", inventory))["changed"] == 0

    key = (credentials / "domain_credential.key").read_bytes()
    renewed = run_playbook(workdir, "renew_devices", inventory, "-e", "trustpoint_renew_before_days=3650")
    assert recap(renewed)["changed"] == 1, "the check-mode probe does not count as a change"
    found = server.api("GET", "/devices?name=" + device)[1]
    assert found[0]["credential"]["serial_number"] != first
    renewed_serial = found[0]["credential"]["serial_number"]
    # The report names the new certificate (it read an agent's step, skipped here, and said "none, -").
    assert re.search(r"%s: renew, certificate %s valid until 20" % (device, renewed_serial), renewed), renewed[-3000:]
    assert (credentials / "domain_credential.key").read_bytes() != key
    assert recap(run_playbook(workdir, "renew_devices", inventory))["changed"] == 0

    run_playbook(workdir, "revoke_devices", inventory, "-e", json.dumps({"trustpoint_delete_devices": True}))
    assert not (credentials / "domain_credential.key").exists()
    assert server.api("GET", "/devices?name=" + device)[1] == []


def test_onboard_again_when_the_server_does_not_know_the_credential(server, workdir):
    """A device deleted on the server (its certificates revoked) and registered again is pending while its
    files still look valid: onboard_devices compares the server's view and onboards it again, once."""
    domain = "pb-" + uuid.uuid4().hex[:8]
    device = "pbdev-" + uuid.uuid4().hex[:8]
    credentials = workdir / "credentials"
    inventory = write_inventory(workdir, server, domain, device, credentials)
    run_playbook(workdir, "onboard_devices", inventory)
    (found,) = server.api("GET", "/devices?name=" + device)[1]
    first = found["credential"]["serial_number"]
    assert server.api("DELETE", "/devices/%d" % found["id"])[0] == 204

    run_playbook(workdir, "onboard_devices", inventory)
    (found,) = server.api("GET", "/devices?name=" + device)[1]
    assert found["status"] == "onboarded" and found["credential"]["serial_number"] != first
    local = x509.load_pem_x509_certificate((credentials / "domain_credential.pem").read_bytes())
    assert found["credential"]["fingerprint_sha256"] == local.fingerprint(hashes.SHA256()).hex()
    assert found["credential"]["status"] == "active"
    assert recap(run_playbook(workdir, "onboard_devices", inventory))["changed"] == 0


def _registered(server, device):
    return server.api("GET", "/devices?name=" + device)[1]


def test_a_typo_in_the_domain_fails_before_any_device_is_registered(server, workdir):
    """Without trustpoint_create_domain an unknown domain fails, naming it and the domains that exist."""
    existing = server.create_domain()["name"]
    device = "pbdev-" + uuid.uuid4().hex[:8]
    inventory = write_inventory(workdir, server, existing + "x", device, workdir / "c", trustpoint_create_domain=None)
    output = run_playbook(workdir, "onboard_devices", inventory, expect_failure=True)
    assert "domain %sx does not exist" % existing in output, output[-3000:]
    assert re.search(r"existing domains: [^\"]*\b%s\b" % existing, output)
    assert "trustpoint_domain" in output and "trustpoint_create_domain" in output
    assert _registered(server, device) == []
    assert server.api("GET", "/domains/%sx" % existing)[0] == 404
    assert not (workdir / "c").exists()


def test_inputs_are_checked_before_anything_changes(server, workdir):
    """Each mistake fails with a message naming the playbook variable; no device is registered, nothing written."""
    domain = server.create_domain()["name"]
    device = "pbdev-" + uuid.uuid4().hex[:8]
    credentials = workdir / "c"
    cases = [
        # The openssl backend verifies the server only against trustpoint_ca_path.
        ({"trustpoint_ca_path": None, "trustpoint_enroll_backend": "openssl"}, {}, "trustpoint_ca_path is not set"),
        # A relative path that exists nowhere it is looked for.
        ({"trustpoint_ca_path": "tp-data/tls-ca.pem"}, {}, "trustpoint_ca_path: cannot read a PEM certificate from"),
        ({"trustpoint_api_token": None}, {"TRUSTPOINT_API_TOKEN": ""},
         "trustpoint_api_token (or the environment variable TRUSTPOINT_API_TOKEN)"),
        ({"trustpoint_onboarding_method": "cmp_idevid"}, {}, "needs trustpoint_idevid_certificate_path"),
        ({"trustpoint_onboarding_method": "cmp_sharedsecret"}, {}, "trustpoint_onboarding_method"),
    ]  # fmt: skip
    for overrides, env, message in cases:
        inventory = write_inventory(workdir, server, domain, device, credentials, **overrides)
        output = run_playbook(workdir, "onboard_devices", inventory, expect_failure=True, env=env)
        assert message in output, output[-3000:]
        assert _registered(server, device) == [], overrides
        assert not credentials.exists(), overrides


def test_a_relative_ca_path_is_found_next_to_the_inventory(server, workdir):
    """trustpoint_ca_path: tp-data/tls-ca.pem works from another directory: it is looked up beside the inventory."""
    domain = server.create_domain()["name"]
    device = "pbdev-" + uuid.uuid4().hex[:8]
    site = workdir / "site"
    (site / "tp-data").mkdir(parents=True)
    (site / "tp-data" / "tls-ca.pem").write_bytes(server.ca_file.read_bytes())
    inventory = write_inventory(site, server, domain, device, workdir / "c", trustpoint_ca_path="tp-data/tls-ca.pem")
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    run_playbook(elsewhere, "onboard_devices", inventory)
    assert (workdir / "c" / "tls-ca.pem").read_bytes() == server.ca_file.read_bytes()
    assert _registered(server, device)[0]["status"] == "onboarded"


def test_check_mode_registers_and_writes_nothing(server, workdir):
    """--check on a new device: it says the device would onboard; the server and the device stay untouched."""
    domain = server.create_domain()["name"]
    device = "pbdev-" + uuid.uuid4().hex[:8]
    credentials = workdir / "c"
    inventory = write_inventory(workdir, server, domain, device, credentials)
    output = run_playbook(workdir, "onboard_devices", inventory, "--check")
    assert recap(output)["changed"] >= 1
    assert "%s: enroll (check mode)" % device in output, output[-2500:]
    assert _registered(server, device) == []
    assert not credentials.exists()
    # After a real run, check mode predicts no change.
    run_playbook(workdir, "onboard_devices", inventory)
    assert recap(run_playbook(workdir, "onboard_devices", inventory, "--check"))["changed"] == 0


def test_handlers_listen_to_credential_changes(server, workdir):
    """A playbook's handler listening to trustpoint_credential_changed runs when the credential was issued, and
    not on a run that changes nothing."""
    domain = server.create_domain()["name"]
    device = "pbdev-" + uuid.uuid4().hex[:8]
    marker = workdir / "restarted"
    inventory = write_inventory(workdir, server, domain, device, workdir / "c")
    playbook = workdir / "site.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Onboard and restart what uses the credential",
                    "hosts": "devices",
                    "gather_facts": False,
                    "roles": [{"role": "trustpoint.pki.device_onboarding"}],
                    "handlers": [
                        {
                            "name": "Note the restart",
                            "ansible.builtin.command": "touch %s" % marker,
                            "listen": "trustpoint_credential_changed",
                            "changed_when": True,
                        }
                    ],
                }
            ]
        )
    )
    run_playbook(workdir, str(playbook), inventory)
    assert marker.exists()
    marker.unlink()
    run_playbook(workdir, str(playbook), inventory)
    assert not marker.exists()


def test_install_packages_for_the_backend(server, workdir):
    """trustpoint_install_packages: the openssl backend needs the openssl (and for EST curl) package, which this
    machine has, so nothing changes; for the python backend check mode shows what it would install with pip
    (a real run would change the machine's Python, which the device hosts share)."""
    domain = server.create_domain()["name"]
    device = "pbdev-" + uuid.uuid4().hex[:8]
    inventory = write_inventory(workdir, server, domain, device, workdir / "c", trustpoint_install_packages=True,
                                trustpoint_enroll_backend="openssl", trustpoint_onboarding_method="est_password",
                                ansible_python_interpreter="/usr/bin/python3")  # fmt: skip
    output = run_playbook(workdir, "onboard_devices", inventory)
    assert re.search(r"TASK \[[^]]*Install the OpenSSL 3 command line\][^\n]*\nok: ", output), output[-3000:]
    assert _registered(server, device)[0]["status"] == "onboarded"

    # The system Python has no pyasn1-alt-modules: check mode says pip would install it (and the enroll module
    # then cannot run in check mode, as it needs the libraries pip would have installed).
    python = write_inventory(workdir, server, domain, device + "p", workdir / "p", trustpoint_install_packages=True,
                             trustpoint_enroll_backend="python",
                             ansible_python_interpreter="/usr/bin/python3")  # fmt: skip
    output = run_playbook(workdir, "onboard_devices", python, "--check", expect_failure=True)
    assert re.search(r"TASK \[[^]]*\(pip\)\][^\n]*\nchanged: ", output), output[-3000:]
    assert _registered(server, device + "p") == []
