# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The agent's renewal timer under a real systemd (PID 1 of a Podman container, tools/podman_hosts.py: names tpv-*,
bridge tpbr86, 169.254.86.0/24): install-timer enables and starts it, uninstall-timer (what `revoke` runs) stops,
disables and removes it, and systemd lists nothing of it afterwards, not even a failed run.

The image has no cryptography, so the container runs the agent's timer module itself (standard library only); the
commands around it are tested in test_agent.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO
from role_hosts import require_podman

TOOLS = REPO / "tools"
PREFIX, BRIDGE, SUBNET = "tpv", "tpbr86", "169.254.86"
UNIT = "trustpoint-agent-renew"
# A renewal that fails: systemd keeps the service listed as failed until uninstall resets it.
RUN = """
import json, sys
sys.path.insert(0, "/opt/tpa")
from trustpoint_agent import timer
action = sys.argv[1]
done = timer.install(["/usr/bin/false", "renew"]) if action == "install" else timer.uninstall()
print(json.dumps(done))
"""


def _tool(*args):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    require_podman()
    directory = tmp_path_factory.mktemp("tpv")
    _tool(TOOLS / "podman_hosts.py", "image")
    try:
        _tool(
            TOOLS / "podman_hosts.py", "up", "--dir", directory, "--prefix", PREFIX, "--bridge", BRIDGE,
            "--subnet", SUBNET, "--host=sd1:31:systemd",
        )  # fmt: skip
        (host,) = json.loads((directory / "containers.json").read_text())
        name = host["container"]
        subprocess.run(["podman", "--runtime", "runc", "exec", name, "mkdir", "-p", "/opt/tpa"], check=True)
        subprocess.run(
            ["podman", "--runtime", "runc", "cp", str(REPO / "agent" / "trustpoint_agent"), name + ":/opt/tpa/"],
            check=True,
        )
        running = podman_exec(name, "systemctl", "is-system-running", "--wait")
        assert running.stdout.strip() in ("running", "degraded"), running
        yield name
    finally:
        _tool(TOOLS / "podman_hosts.py", "down", "--dir", directory)


def podman_exec(name, *command):
    return subprocess.run(
        ["podman", "--runtime", "runc", "exec", name, *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def timer(name, action):
    result = podman_exec(name, "python3", "-c", RUN, action)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_uninstall_stops_disables_and_removes_the_timer_under_systemd(container):
    assert timer(container, "install") == [
        "wrote /etc/systemd/system/%s.service and /etc/systemd/system/%s.timer" % (UNIT, UNIT),
        "enabled and started %s.timer" % UNIT,
    ]
    assert podman_exec(container, "systemctl", "is-active", UNIT + ".timer").stdout.strip() == "active"
    assert podman_exec(container, "systemctl", "is-enabled", UNIT + ".timer").stdout.strip() == "enabled"
    podman_exec(container, "systemctl", "start", UNIT + ".service")  # the renewal fails (/usr/bin/false)
    assert podman_exec(container, "systemctl", "is-failed", UNIT + ".service").stdout.strip() == "failed"

    assert timer(container, "uninstall") == [
        "stopped and disabled %s.timer" % UNIT,
        "removed /etc/systemd/system/%s.timer, /etc/systemd/system/%s.service" % (UNIT, UNIT),
    ]
    listed = podman_exec(container, "systemctl", "list-units", "--all", "--plain", "--no-legend", UNIT + ".*")
    assert listed.returncode == 0 and listed.stdout.strip() == "", listed.stdout
    assert podman_exec(container, "systemctl", "list-unit-files", UNIT + ".*").stdout.count(UNIT) == 0
    gone = podman_exec(container, "ls", "-A", "/etc/systemd/system/timers.target.wants")
    assert UNIT not in gone.stdout
    assert timer(container, "uninstall") == [
        "no renewal timer to remove (/etc/systemd/system/%s.timer, /etc/cron.d/trustpoint-agent)" % UNIT
    ]
