# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The README's quickstart and fleet sections, run as written: a newcomer's first contact must work."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import doc_blocks
import pytest
import yaml
from collection_build import build, checkout_copy
from conftest import BIN, REPO, free_port, http, openssl, tls_context

# The fleet test's device hosts (tools/testbed.py): this suite's names, apart from Molecule's and the demo's.
PREFIX, BRIDGE, SUBNET, SERVER_PORT = "tpf", "tpbr80", "169.254.80", 8482
HOSTS = {"press-01": 201, "press-02": 202}


def section_blocks(title, language):
    return doc_blocks.section_blocks(REPO / "README.md", title, language)


def test_readme_quickstart_onboards_a_device(tmp_path):
    """The quickstart's commands start a server, onboard device1 with openssl cmp and verify it."""
    (script,) = section_blocks("Quickstart", "sh")
    assert script.startswith("mkdir -p quickstart && cd quickstart\n")
    assert "openssl cmp -cmd ir" in script and "-ref $ID -secret pass:$SECRET" in script
    assert "https://127.0.0.1:8443" in script and "--listen-plain 127.0.0.1:8080" in script
    for port in ("8443", "8080"):  # HTTPS, plain HTTP (CMP)
        script = script.replace("127.0.0.1:" + port, "127.0.0.1:%d" % free_port())
    script = script.replace("../.venv/bin/", str(BIN) + "/")
    # Afterwards, ask the server what it recorded; the spent secret's refusal must be readable.
    script += 'curl -sf -H "Authorization: Bearer $TOKEN" $URL/api/v1/devices > devices.json\n'
    # Until the device uses its credential the secret onboards it again (the answer may have been lost); the
    # device uses it (a genm signed with it), and then the secret is spent.
    script += (
        "openssl cmp -cmd genm -server $CMP/.well-known/cmp/p/plant1/getcacerts -cert cert.pem -key key.pem "
        "-extracerts chain.pem -trusted root.pem -infotype caCerts > used.txt 2>&1\n"
    )
    script += (
        "! openssl cmp -cmd ir -server $CMP/.well-known/cmp/initialization/plant1/ -ref $ID -secret pass:$SECRET "
        '-subject "/CN=x" -newkey key.pem -certout again.pem -unprotected_errors > again.txt 2>&1\n'
    )
    result = doc_blocks.run_strict(script, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cert.pem: OK" in result.stdout
    work = tmp_path / "quickstart"
    (device,) = json.loads((work / "devices.json").read_text())
    assert device["name"] == "device1" and device["status"] == "onboarded"
    serial = openssl("x509", "-in", str(work / "cert.pem"), "-noout", "-serial").stdout.split("=")[1]
    assert device["credential"]["serial_number"] == serial.strip().lower().lstrip("0")
    # The user reads the server's reason, not only "missing protection".
    assert "a secret is used up once its device is onboarded" in (work / "again.txt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quickstart"], "the quickstart writes only quickstart/"


@pytest.fixture
def fleet_hosts(tmp_path_factory):
    """Two SSH device hosts named as in the README, and a server they reach (tools/testbed.py)."""
    if os.geteuid() != 0:
        pytest.skip("the device hosts are network namespaces: run as root")
    directory = tmp_path_factory.mktemp("testbed", numbered=True)
    # sshd refuses authorized keys below a world-writable directory such as the system's temporary one.
    state = REPO / "build" / "testbed-readme"
    subprocess.run([sys.executable, str(REPO / "tools/testbed.py"), "down", "--dir", str(state)], check=False)
    shutil.rmtree(state, ignore_errors=True)  # a fresh server: the quickstart's has only plant1
    command = [sys.executable, str(REPO / "tools/testbed.py"), "up", "--dir", str(state), "--prefix", PREFIX,
               "--bridge", BRIDGE, "--subnet", SUBNET, "--server-port", str(SERVER_PORT),
               "--python-interpreter", sys.executable]  # fmt: skip
    for name, octet in HOSTS.items():
        command += ["--host", "%s:%d" % (name, octet)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
        yield state, directory
    finally:
        subprocess.run([sys.executable, str(REPO / "tools/testbed.py"), "down", "--dir", str(state)], check=False)
        shutil.rmtree(state, ignore_errors=True)


def fleet_inventory(state):
    """The README's inventory, its hosts and server URL replaced by the testbed's (and its SSH settings)."""
    (text,) = section_blocks("A fleet with Ansible", "yaml")
    inventory = yaml.safe_load(text)
    group = inventory["devices"]
    assert sorted(group["hosts"]) == sorted(HOSTS)
    assert group["vars"]["trustpoint_ca_path"] == "tp-data/tls-ca.pem"
    testbed = yaml.safe_load((state / "inventory.yml").read_text())["all"]["children"]["devices"]["hosts"]
    server = json.loads((state / "server.json").read_text())
    for name in HOSTS:
        group["hosts"][name] = testbed[name]
    group["vars"]["trustpoint_server_url"] = server["device_url"]
    return inventory, server


def run_fleet_section(workdir, environment, from_checkout):
    """The section's shell block in workdir; from_checkout=False drops its checkout line (installed collection)."""
    (script,) = section_blocks("A fleet with Ansible", "sh")
    checkout_line = 'export PATH="$PWD/../.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$PWD/../build/collections"\n'
    assert checkout_line in script
    if from_checkout:
        script = script.replace("$PWD/../.venv/bin", str(BIN)).replace(
            "$PWD/../build/collections", str(REPO / "build/collections")
        )
    else:
        script = script.replace(checkout_line, "")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, env=environment,
                            capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    recap = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^(\S+)\s+: (ok=.*)$", line)
        if match:
            recap[match.group(1)] = {k: int(v) for k, v in (i.split("=") for i in match.group(2).split())}
    return recap


def test_readme_fleet_section_from_an_installed_collection_and_the_checkout(fleet_hosts):
    """The section as written: with the collection installed from a build (nothing but ansible-playbook on PATH),
    the devices onboard; run again from the checkout, nothing changes."""
    state, directory = fleet_hosts
    inventory, server = fleet_inventory(state)
    work = directory / "quickstart"
    work.mkdir()
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory))
    # The quickstart's server: its data directory (tp-data) and domain plant1.
    (work / "tp-data").symlink_to(server["data_dir"])
    token = (work / "tp-data" / "admin-token").read_text().strip()
    auth, context = {"Authorization": "Bearer " + token}, tls_context(server["ca_file"])
    created = http("POST", server["api_url"] + "/api/v1/domains", b'{"name": "plant1"}',
                   dict(auth, **{"Content-Type": "application/json"}), context=context)  # fmt: skip
    assert created[0] == 201, created

    home = directory / "home"
    home.mkdir()
    tarball = build(checkout_copy(directory / "checkout"), directory / "dist")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    environment.update(HOME=str(home), PATH="%s:/usr/bin:/bin" % BIN, NO_PROXY="%s.1" % SUBNET)
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", str(tarball)], env=environment,
                   cwd=directory, check=True, capture_output=True)  # fmt: skip
    assert (home / ".ansible/collections/ansible_collections/trustpoint/pki/roles/device_onboarding").is_dir()

    recap = run_fleet_section(work, environment, from_checkout=False)
    assert sorted(recap) == sorted(HOSTS) and all(r["failed"] == 0 and r["changed"] > 0 for r in recap.values())
    status, _headers, body = http("GET", server["api_url"] + "/api/v1/devices?domain=plant1", headers=auth,
                                  context=context)  # fmt: skip
    devices = {d["name"]: d for d in json.loads(body)}
    assert status == 200 and sorted(devices) == sorted(HOSTS)
    assert all(d["status"] == "onboarded" and d["credential"]["status"] == "active" for d in devices.values())

    recap = run_fleet_section(work, environment, from_checkout=True)
    assert all(r["failed"] == 0 and r["changed"] == 0 for r in recap.values()), recap
