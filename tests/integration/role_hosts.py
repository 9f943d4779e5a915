# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Servers deployed by the trustpoint_server role onto Podman hosts, for tests that talk to them.

tools/podman_hosts.py runs the hosts (containers with a filesystem of their own, each in a network
namespace on the bridge tpbr85, 169.254.85.0/24, names tpq-*: apart from Molecule's `server` scenario, so both
run at the same time); playbooks/deploy_server.yml deploys onto them over SSH
with host keys checked. DeployedServer speaks to a deployed instance as conftest.Server does to a local
process: HTTPS (verified with the TLS trust anchor the role fetched), plain HTTP, the REST API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, REPO, ServerClient

TOOLS = REPO / "tools"
BRIDGE, SUBNET = "tpbr85", "169.254.85"
GATEWAY = SUBNET + ".1"
PORT = 8494  # HTTPS; PORT + 1 plain HTTP (the Molecule scenario `server` uses 8490-8491)
SETUP_HINT = "run `make setup` (tools/setup-system.sh installs podman, runc and debootstrap)"


def require_podman():
    if os.geteuid() != 0:
        pytest.skip("Podman hosts need network namespaces: run as root")
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            pytest.fail("%s is not installed; %s" % (tool, SETUP_HINT))


def _tool(*args, timeout=900):
    result = subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail("%s failed:\n%s%s" % (" ".join(map(str, args)), result.stdout, result.stderr), pytrace=False)
    return result.stdout


class PodmanHosts:
    """Containers NAME:OCTET:KIND (systemd or plain) under directory; down() removes them and the bridge."""

    def __init__(self, directory, *specs):
        self.directory = Path(directory)
        self.specs = specs
        _tool(TOOLS / "podman_hosts.py", "image")
        _tool(TOOLS / "wheelhouse.py", self.directory / "wheelhouse")
        self.up = False
        try:
            args = ["--dir", self.directory, "--prefix", "tpq", "--bridge", BRIDGE, "--subnet", SUBNET]
            self.up = True
            _tool(TOOLS / "podman_hosts.py", "up", *args, *("--host=" + spec for spec in specs))
        except BaseException:
            self.down()
            raise
        self.hosts = {h["name"]: h for h in json.loads((self.directory / "containers.json").read_text())}

    def inventory(self, host_vars, group_vars):
        """Write an inventory of the hosts in group trustpoint_servers; returns its path."""
        hosts = {
            name: dict(
                ansible_host=host["address"],
                ansible_user="root",
                ansible_ssh_private_key_file=str(self.directory / "id_ed25519"),
                ansible_ssh_common_args="-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                % (self.directory / "known_hosts"),
                ansible_python_interpreter="/usr/bin/python3",
                ansible_become=False,  # root already; the image has no sudo
                **host_vars.get(name, {}),
            )
            for name, host in self.hosts.items()
        }
        path = self.directory / "inventory.json"
        path.write_text(json.dumps({"trustpoint_servers": {"hosts": hosts, "vars": group_vars}}, indent=2))
        return path

    def deploy(self, host_vars=None, **group_vars):
        """Run playbooks/deploy_server.yml onto every host; returns {name: DeployedServer}."""
        fetched = self.directory / "fetched"
        group_vars = dict(
            trustpoint_server_wheelhouse=str(self.directory / "wheelhouse"),
            trustpoint_server_fetch_dir=str(fetched),
            trustpoint_server_listen=["0.0.0.0:%d" % PORT],
            trustpoint_server_listen_plain=["0.0.0.0:%d" % (PORT + 1)],
            trustpoint_server_settings={"workers": 1},
            **group_vars,
        )
        inventory = self.inventory(host_vars or {}, group_vars)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"), ANSIBLE_FORCE_COLOR="0")
        env["ANSIBLE_PIPELINING"] = "true"
        result = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / "deploy_server.yml")],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
        (self.directory / "deploy.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            pytest.fail("deploy_server.yml failed:\n" + "\n".join(result.stdout.splitlines()[-60:]), pytrace=False)
        return {name: DeployedServer(host, fetched / name) for name, host in self.hosts.items()}

    def down(self):
        if self.up:
            _tool(TOOLS / "podman_hosts.py", "down", "--dir", self.directory)
            self.up = False


class DeployedServer(ServerClient):
    """An instance the role deployed: the API at https://ADDRESS:PORT with the token and trust anchor it fetched."""

    def __init__(self, host, fetched):
        self.container = host["container"]
        self.kind = host["kind"]
        super().__init__(
            "https://%s:%d" % (host["address"], PORT),
            "http://%s:%d" % (host["address"], PORT + 1),
            fetched / "tls-ca.pem",
            (fetched / "admin-token").read_text().strip(),
        )

    def _exec(self, *command):
        return subprocess.run(
            ["podman", "--runtime", "runc", "exec", self.container, *command],
            capture_output=True,
            timeout=60,
            check=False,
        )

    def data_file(self, name):
        result = self._exec("cat", "/var/lib/trustpoint-server/" + name)
        return result.stdout if result.returncode == 0 else None

    def log(self):
        if self.kind == "systemd":
            result = self._exec("journalctl", "--no-pager", "-n", "200", "-u", "trustpoint-server")
        else:
            result = self._exec("tail", "-n", "200", "/var/log/trustpoint-server/server.log")
        return (result.stdout + result.stderr).decode(errors="replace")
