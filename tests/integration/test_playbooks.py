# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection's playbooks end to end against a real server: onboard, renew, revoke.

One device with a local connection (the Molecule scenario covers SSH hosts); its files live in a temporary
credential directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import yaml
from conftest import REPO, openssl
from cryptography import x509
from cryptography.hazmat.primitives import hashes

PLAYBOOK = sys.executable.replace("/python", "/ansible-playbook")


def run_playbook(workdir, name, inventory, *extra):
    command = [PLAYBOOK, "-i", str(inventory), "trustpoint.pki.%s" % name, *extra]
    environment = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
    )
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=workdir, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def recap(output):
    """{'ok': n, 'changed': n, ...} of the one host's PLAY RECAP line."""
    line = [text for text in output.splitlines() if "ok=" in text and "changed=" in text][-1]
    return {key: int(value) for key, value in (item.split("=") for item in line.split(":", 1)[1].split())}


def write_inventory(workdir, server, domain, device, credentials):
    inventory = workdir / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "devices": {
                    "hosts": {
                        device: {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                            "trustpoint_domain": domain,
                            "trustpoint_server_url": server.url,
                            "trustpoint_ca_path": str(server.ca_file),
                            "trustpoint_api_token": server.token,
                            "trustpoint_credential_dir": str(credentials),
                            "trustpoint_create_domain": True,
                        }
                    }
                }
            }
        )
    )
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
