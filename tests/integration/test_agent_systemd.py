# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The agent's units under a real systemd (PID 1 of a Podman container, tools/podman_hosts.py: names tpv-*,
bridge tpbr86, 169.254.86.0/24). The renewal timer: install-timer enables and starts it, uninstall-timer (what
`revoke` runs) stops, disables and removes it, and systemd lists nothing of it afterwards, not even a failed run.
The role's aoki unit ends as done for a revoked device (exit 3) and restarts after other failures.

The image has no cryptography, so the container runs the agent's timer module itself (standard library only); the
commands around it are tested in test_agent.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import REPO
from role_hosts import require_podman
from test_role_agent import render_agent_units

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


def _settled(name, unit):
    """The unit's state once its process ended (the start of Type=simple returns at once)."""
    for _poll in range(100):
        shown = podman_exec(name, "systemctl", "show", "-p", "ActiveState,SubState,Result,NRestarts", unit).stdout
        state = dict(line.split("=", 1) for line in shown.split())
        if state["ActiveState"] not in ("active", "activating") or state["SubState"] == "auto-restart":
            return state
        time.sleep(0.1)
    raise AssertionError("%s still running: %s" % (unit, state))


def test_the_aoki_unit_ends_as_done_for_a_revoked_device_and_restarts_after_a_failure(container, tmp_path):
    """The role's aoki unit under systemd: exit 3 (`trustpoint-agent aoki` on a revoked device) is not a failure and
    not restarted; any other failure is restarted."""
    render_agent_units(
        tmp_path,
        {
            "trustpoint_agent_executable": "/opt/tpa/exits",
            "trustpoint_aoki_url": "https://tp.example.com:8443",
            "trustpoint_agent_state_dir": "/var/lib/trustpoint-agent",
        },
    )
    unit = "trustpoint-agent.service"
    script = tmp_path / "exits"
    script.write_text('#!/bin/sh\nexit "$(cat /var/lib/trustpoint-agent/code)"\n')
    script.chmod(0o755)
    for source, target in ((tmp_path / unit, "/etc/systemd/system/" + unit), (script, "/opt/tpa/exits")):
        subprocess.run(["podman", "--runtime", "runc", "cp", str(source), container + ":" + target], check=True)
    try:
        assert podman_exec(container, "mkdir", "-p", "/var/lib/trustpoint-agent").returncode == 0
        assert podman_exec(container, "systemctl", "daemon-reload").returncode == 0
        for code, expected in (
            ("3", {"ActiveState": "inactive", "SubState": "dead", "Result": "success", "NRestarts": "0"}),
            ("1", {"ActiveState": "activating", "SubState": "auto-restart", "Result": "exit-code", "NRestarts": "0"}),
        ):
            podman_exec(container, "sh", "-c", "echo %s > /var/lib/trustpoint-agent/code" % code)
            assert podman_exec(container, "systemctl", "start", unit).returncode == 0
            assert _settled(container, unit) == expected, code
            podman_exec(container, "systemctl", "stop", unit)
            podman_exec(container, "systemctl", "reset-failed", unit)
    finally:
        podman_exec(container, "systemctl", "stop", unit)
        podman_exec(container, "rm", "-f", "/etc/systemd/system/" + unit)
        podman_exec(container, "systemctl", "daemon-reload")
