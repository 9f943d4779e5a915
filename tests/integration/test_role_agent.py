# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The device_onboarding role with trustpoint-agent on real SSH hosts (tools/testbed.py network namespaces).

One server (HTTPS on 127.0.0.1:8584 for the controller and 169.254.84.1:8584 for the devices) with AOKI set up as
the Molecule scenario zero_touch does; three device hosts on the bridge tpbr84:
  agent1  method agent: registered, onboarded with its one-time token by `trustpoint-agent onboard`
  aoki1   method aoki: the agent installed by pip from the server's /agent/, factory provisioning, the agent
          started by an init script (no systemd here), onboards itself
  none1   method none: registered, never onboarded
The hosts share this machine's filesystem: agent1 runs the agent of this virtualenv (trustpoint_agent_executable),
and what the role writes (the agent's directories and virtualenv, the init script and its rc links, the cron
entry) is private per host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from aoki_helpers import Aoki
from conftest import BIN, REPO, ServerClient, http, openssl
from test_playbooks import run_playbook

PREFIX, BRIDGE, SUBNET, PORT = "tpr", "tpbr84", "169.254.84", 8584
GATEWAY = SUBNET + ".1"
HOSTS = {"agent1": 11, "aoki1": 12, "none1": 13}
STATE, FACTORY, VENV = "/var/lib/trustpoint-agent", "/etc/trustpoint-agent", "/opt/trustpoint-agent"
CRON = "/etc/cron.d/trustpoint-agent"
# /etc/systemd/system: revoke removes the agent's units wherever they are; never this machine's.
PRIVATE_DIRS = [
    "/etc/trustpoint", "/var/lib/trustpoint", FACTORY, STATE, VENV, "/etc/cron.d", "/etc/init.d",
    *("/etc/rc%s.d" % level for level in "0123456S"), "/etc/systemd/system",
]  # fmt: skip


def _testbed(*args):
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "testbed.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class Site:
    """The testbed hosts, the server and the AOKI set-up."""

    def __init__(self, directory):
        self.dir = directory
        self.server_process = None

    def up(self):
        hosts = ["--host=%s:%d" % item for item in HOSTS.items()]
        private = ["--private-dir=" + path for path in PRIVATE_DIRS]
        _testbed("up", "--dir", self.dir, "--prefix", PREFIX, "--bridge", BRIDGE, "--subnet", SUBNET, *hosts, *private)
        data = self.dir / "server"
        subprocess.run(
            [str(BIN / "trustpoint-server"), "init", "--data-dir", str(data), "--tls-san", GATEWAY],
            check=True,
            capture_output=True,
        )
        # The wheels the server serves at /agent/: the agent's and its dependencies' (this machine's Python).
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--wheel-dir",
                str(data / "agent-wheels"),
                str(REPO / "agent"),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        self.log = open(data / "server.log", "wb")  # noqa: SIM115 (open for the process's lifetime)
        self.server_process = subprocess.Popen(
            [
                str(BIN / "trustpoint-server"), "run", "--data-dir", str(data), "--workers", "1",
                "--listen", "127.0.0.1:%d" % PORT, "--listen", "%s:%d" % (GATEWAY, PORT),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.server = ServerClient(
            "https://127.0.0.1:%d" % PORT, None, data / "tls-ca.pem", (data / "admin-token").read_text().strip()
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if http("GET", self.server.url + "/healthz", timeout=2, context=self.server.tls)[0] == 200:
                    break
            except OSError:
                pass
            assert self.server_process.poll() is None and time.monotonic() < deadline, (data / "server.log").read_text()
            time.sleep(0.2)
        self.aoki = Aoki(self.server, self.dir / "pki", devices=2)

    def down(self):
        if self.server_process is not None:
            self.server_process.terminate()
            self.server_process.wait(20)
            self.log.close()
        _testbed("down", "--dir", self.dir)

    def path(self, host, path):
        """A host's private file, as the machine sees it."""
        return Path(str(self.dir / host) + path)

    def inventory(self, name="inventory.yml", **host_overrides):
        """The testbed's inventory with the role's variables; host_overrides: {host: {variable: value or None}}."""
        inventory = yaml.safe_load((self.dir / "inventory.yml").read_text())
        hosts = inventory["all"]["children"]["devices"]["hosts"]
        certificate, key, _serial = self.aoki.device(1)
        variables = {
            "agent1": {
                "trustpoint_onboarding_method": "agent",
                "trustpoint_agent_executable": str(BIN / "trustpoint-agent"),
            },
            "aoki1": {
                "trustpoint_onboarding_method": "aoki",
                "trustpoint_idevid_certificate_src": str(certificate),
                "trustpoint_idevid_key_src": str(key),
                "trustpoint_owner_truststore_src": str(self.dir / "pki" / "ownerid_ca.pem"),
                # No mDNS here (test_mdns and the Molecule scenario zero_touch cover discovery).
                "trustpoint_aoki_url": "https://%s:%d" % (GATEWAY, PORT),
                "trustpoint_aoki_wait_timeout": 120,
            },
            "none1": {"trustpoint_onboarding_method": "none"},
        }
        for host, values in variables.items():
            hosts[host].update(values)
            for key_name, value in host_overrides.get(host, {}).items():
                if value is None:
                    hosts[host].pop(key_name, None)
                else:
                    hosts[host][key_name] = value
        inventory["all"]["children"]["devices"]["vars"] = {
            "trustpoint_domain": self.aoki.domain,
            "trustpoint_server_url": self.server.url,
            "trustpoint_enrollment_url": "https://%s:%d" % (GATEWAY, PORT),
            "trustpoint_api_token": self.server.token,
            "trustpoint_ca_path": str(self.server.ca_file),
        }
        path = self.dir / name
        path.write_text(yaml.safe_dump(inventory))
        return path

    def device(self, name):
        status, body = self.server.api("GET", "/devices?name=" + name)
        assert status == 200, body
        return body[0] if body else None


@pytest.fixture(scope="module")
def site():
    if os.geteuid() != 0:
        pytest.skip("the testbed's hosts need network namespaces: run as root")
    # sshd's StrictModes refuses authorized keys below the world-writable /tmp: a directory in the repository.
    directory = REPO / "tests" / "output" / "role-agent"
    if (directory / "testbed-state.json").exists():
        _testbed("down", "--dir", directory)  # an interrupted run's hosts
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    instance = Site(directory)
    try:
        instance.up()
        yield instance
    finally:
        instance.down()


def recaps(output):
    """{host: {'ok': n, 'changed': n, ...}} of the PLAY RECAP."""
    found = {}
    for line in output.split("PLAY RECAP", 1)[1].splitlines():
        match = re.match(r"^(\S+)\s*:\s*(ok=.*)$", line)
        if match:
            found[match.group(1)] = {k: int(v) for k, v in (item.split("=") for item in match.group(2).split())}
    return found


def play(site, workdir, name, inventory, *extra):
    """run_playbook, its output kept in the site's directory (tests/output/role-agent/plays.log)."""
    output = run_playbook(workdir, name, inventory, *extra)
    with open(site.dir / "plays.log", "a") as log:
        log.write("=== %s %s\n%s\n" % (name, " ".join(extra), output))
    return output


def agent_status(site, host):
    result = subprocess.run(
        [str(BIN / "trustpoint-agent"), "--state-dir", str(site.path(host, STATE)), "status", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, json.loads(result.stdout)


def test_inputs_are_checked_before_anything_changes(site, workdir):
    """Each mistake fails with a message that names the playbook variable; nothing is written or registered."""
    cases = [
        ("aoki1", {"trustpoint_owner_truststore_src": None}, "trustpoint_owner_truststore_src: is not set"),
        ("aoki1", {"trustpoint_idevid_key_src": str(site.dir / "pki" / "idevid_ca.pem")},
         "trustpoint_idevid_key_src: cannot read a PEM PRIVATE KEY from"),
        ("aoki1", {"trustpoint_aoki_url": "http://%s:%d" % (GATEWAY, PORT)}, "trustpoint_aoki_url must be"),
        ("agent1", {"trustpoint_enrollment_url": "http://%s:1" % GATEWAY},
         "trustpoint_onboarding_method agent onboards over HTTPS"),
        ("aoki1", {"trustpoint_enrollment_url": "", "trustpoint_server_url": ""},
         "set trustpoint_enrollment_url (or trustpoint_server_url) to the server's https:// URL as the device reaches "
         "it, or trustpoint_agent_executable"),
        ("agent1", {"trustpoint_agent_executable": "/nonexistent/trustpoint-agent"},
         "trustpoint_agent_executable: /nonexistent/trustpoint-agent is not an executable file"),
    ]  # fmt: skip
    for host, overrides, message in cases:
        inventory = site.inventory("bad.yml", **{host: overrides})
        output = run_playbook(workdir, "onboard_devices", inventory, "--limit", host, expect_failure=True)
        assert message in output, output[-3000:]
        assert not list(site.path(host, FACTORY).iterdir()) and not list(site.path(host, STATE).iterdir()), overrides
        assert site.device(host) is None, overrides


def test_agent_aoki_and_none_devices(site, workdir):
    """One run onboards the agent device with its token and the aoki device by itself (started at boot by an init
    script), registers the none device without onboarding it; a second run and check mode change nothing; a wiped
    agent device is onboarded again with a fresh token."""
    inventory = site.inventory()
    output = play(site, workdir, "onboard_devices", inventory)

    # agent1: the credential the server counts, renewed daily by cron.
    code, report = agent_status(site, "agent1")
    assert code == 0 and report["method"] == "agent", report
    device = site.device("agent1")
    assert device["status"] == "onboarded"
    assert device["credential"]["fingerprint_sha256"] == report["certificate"]["fingerprint_sha256"]
    state = site.path("agent1", STATE)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "key.pem").stat().st_mode) == 0o600
    openssl("verify", "-CAfile", str(state / "chain.pem"), str(state / "cert.pem"))
    cron = site.path("agent1", CRON).read_text()
    assert "--state-dir %s --key-type ecdsa-p256 renew --renew-before-days 30" % STATE in cron

    # aoki1: factory provisioning, an init script, the device created by the DevID registration and onboarded.
    factory = site.path("aoki1", FACTORY)
    certificate, _key, serial = site.aoki.device(1)
    assert (factory / "idevid.pem").read_bytes() == certificate.read_bytes()
    assert stat.S_IMODE((factory / "idevid.key").stat().st_mode) == 0o600
    assert (factory / "owner-truststore.pem").exists() and not (factory / "idevid-chain.pem").exists()
    assert site.path("aoki1", VENV + "/bin/trustpoint-agent").exists(), "installed from the server's /agent/"
    script = site.path("aoki1", "/etc/init.d/trustpoint-agent").read_text()
    assert "start-stop-daemon" in script and "--startas %s/bin/trustpoint-agent" % VENV in script
    assert list(site.path("aoki1", "/etc/rc2.d").glob("S*trustpoint-agent")), "enabled at boot"
    code, report = agent_status(site, "aoki1")
    assert code == 0 and report["method"] == "aoki", report
    (created,) = [d for d in site.aoki.devices_on_server() if d["serial_number"] == serial]
    assert created["onboarding_method"] == "aoki" and created["status"] == "onboarded"
    assert created["credential"]["fingerprint_sha256"] == report["certificate"]["fingerprint_sha256"]
    assert "--state-dir %s" % STATE in site.path("aoki1", CRON).read_text()
    assert site.device("aoki1") is None, "an aoki device is not registered by name"

    # none1: registered, no credential anywhere.
    device = site.device("none1")
    assert device["onboarding_method"] == "none" and device["status"] == "no_onboarding"
    for path in ("/etc/trustpoint", STATE, FACTORY, "/etc/cron.d"):
        assert not list(site.path("none1", path).iterdir()), path
    assert re.search(r"none1: registered, no domain credential", output), output[-3000:]

    # A second run, and check mode, change nothing.
    again = play(site, workdir, "onboard_devices", inventory)
    assert all(counts["changed"] == 0 for counts in recaps(again).values()), again[-4000:]
    assert "agent1: none, certificate %s" % site.device("agent1")["credential"]["serial_number"] in again
    checked = play(site, workdir, "onboard_devices", inventory, "--check")
    assert all(counts["changed"] == 0 for counts in recaps(checked).values()), checked[-4000:]

    # A wiped agent device (or one whose run was interrupted): the next run issues a new token and onboards it.
    first = site.device("agent1")["credential"]["serial_number"]
    for name in ("key.pem", "cert.pem", "chain.pem"):
        (state / name).unlink()
    checked = play(site, workdir, "onboard_devices", inventory, "--check")
    assert recaps(checked)["agent1"]["changed"] >= 1 and not (state / "cert.pem").exists()
    recovered = play(site, workdir, "onboard_devices", inventory)
    assert recaps(recovered)["agent1"]["changed"] >= 1
    assert recaps(recovered)["aoki1"]["changed"] == 0 and recaps(recovered)["none1"]["changed"] == 0
    assert agent_status(site, "agent1")[0] == 0
    device = site.device("agent1")
    assert device["status"] == "onboarded" and device["credential"]["serial_number"] != first


def test_renew_devices_renews_with_the_agent(site, workdir):
    """renew_devices: trustpoint-agent renew, with a new key, for agent and aoki devices; none devices are left."""
    inventory = site.inventory()
    before = {host: agent_status(site, host)[1]["certificate"]["serial_number"] for host in ("agent1", "aoki1")}
    keys = {host: (site.path(host, STATE) / "key.pem").read_bytes() for host in before}
    output = play(site, workdir, "renew_devices", inventory, "-e", "trustpoint_renew_before_days=3650")
    counts = recaps(output)
    assert counts["agent1"]["changed"] == 1 and counts["aoki1"]["changed"] == 1, output[-3000:]
    for host in before:
        code, report = agent_status(site, host)
        assert code == 0 and report["certificate"]["serial_number"] != before[host]
        # The report names the new certificate, not "-".
        serial = report["certificate"]["serial_number"]
        assert re.search(r"%s: renew, certificate %s valid until 20" % (host, serial), output), output[-3000:]
        assert (site.path(host, STATE) / "key.pem").read_bytes() != keys[host]
    assert (
        site.device("agent1")["credential"]["serial_number"]
        == agent_status(site, "agent1")[1]["certificate"]["serial_number"]
    )
    assert all(c["changed"] == 0 for c in recaps(play(site, workdir, "renew_devices", inventory)).values())


def test_revoke_devices_revokes_with_the_agent(site, workdir):
    """revoke_devices: trustpoint-agent revoke for agent and aoki devices (a CMP rr signed with the credential, also
    for the aoki device that onboarded over EST): the server lists them revoked, the keys and the renewal timers are
    gone, check mode and a second run change nothing, a timer left behind is removed by the next run, and the aoki
    device's boot script does not onboard it again."""
    inventory = site.inventory()
    held = {host: agent_status(site, host)[1]["certificate"]["serial_number"] for host in ("agent1", "aoki1")}
    checked = play(site, workdir, "revoke_devices", inventory, "--check")
    assert all(c["changed"] == 0 for c in recaps(checked).values()), checked[-3000:]
    for host in held:
        assert site.path(host, CRON).exists() and agent_status(site, host)[0] == 0, host
    output = play(site, workdir, "revoke_devices", inventory, "-e", "trustpoint_revocation_reason=keyCompromise")
    counts = recaps(output)
    assert counts["agent1"]["changed"] == 1 and counts["aoki1"]["changed"] == 1, output[-3000:]
    assert counts["none1"]["changed"] == 0
    for host in held:  # nothing of Trustpoint scheduled any more
        assert not site.path(host, CRON).exists() and not list(site.path(host, "/etc/systemd/system").iterdir())
    devices = {"agent1": site.device("agent1")["id"]}
    (devices["aoki1"],) = [d["id"] for d in site.aoki.devices_on_server() if d["onboarding_method"] == "aoki"]
    for host, serial in held.items():
        state = site.path(host, STATE)
        assert not any((state / name).exists() for name in ("key.pem", "cert.pem", "chain.pem")), host
        assert agent_status(site, host)[0] == 1
        status, record = site.server.api("GET", "/devices/%d/certificates/%s" % (devices[host], serial))
        assert status == 200 and (record["status"], record["revocation_reason"]) == ("revoked", "keyCompromise")
    # The boot script's command, as the service runs it: a revoked device is not onboarded again.
    rerun = subprocess.run(
        [str(BIN / "trustpoint-agent"), "--state-dir", str(site.path("aoki1", STATE)), "aoki", "--attempts", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rerun.returncode == 3 and "decommissioned" in rerun.stderr, rerun.stderr
    assert all(c["changed"] == 0 for c in recaps(play(site, workdir, "revoke_devices", inventory)).values())

    # A timer left behind (a device revoked by an older agent): the next run removes it, and says so.
    site.path("agent1", CRON).write_text("0 3 * * * root /bin/true\n")
    counts = recaps(play(site, workdir, "revoke_devices", inventory))
    assert (counts["agent1"]["changed"], counts["aoki1"]["changed"]) == (1, 0), counts
    assert not site.path("agent1", CRON).exists()


def render_agent_units(directory, variables):
    """The role's aoki unit and init script, rendered into directory with the role's variables and these."""
    role = REPO / "roles" / "device_onboarding"
    tasks = [
        {"ansible.builtin.template": {"src": str(role / "templates" / name), "dest": str(directory / name[:-3])}}
        for name in ("trustpoint-agent.service.j2", "trustpoint-agent.init.j2")
    ]
    play = directory / "play.yml"
    play.write_text(
        yaml.safe_dump(
            [{"hosts": "localhost", "connection": "local", "gather_facts": False,
              "vars_files": [str(role / "vars" / "main.yml")], "tasks": tasks,
              "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}}]
        )
    )  # fmt: skip
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(play), "-e", json.dumps(variables)],
        capture_output=True,
        text=True,
        env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections")),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_aoki_unit_verifies_and_the_init_script_is_valid_shell(tmp_path):
    """What the role writes where systemd is PID 1 (this machine's tests run none): systemd-analyze verify accepts
    the unit; the init script is valid shell. Both run the agent with the role's variables, quoted."""
    variables = {
        "trustpoint_agent_executable": str(BIN / "trustpoint-agent"),
        "trustpoint_aoki_url": "https://tp.example.com:8443",
        "trustpoint_aoki_interfaces": ["10.0.0.5"],
        "trustpoint_agent_state_dir": str(tmp_path / "state dir"),
    }
    render_agent_units(tmp_path, variables)
    unit = (tmp_path / "trustpoint-agent.service").read_text()
    assert "--url https://tp.example.com:8443" in unit and "--interface=10.0.0.5" in unit
    assert 'ReadWritePaths="%s"' % (tmp_path / "state dir") in unit and "ProtectSystem=strict" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze:
        verify = subprocess.run([analyze, "verify", str(tmp_path / "trustpoint-agent.service")], capture_output=True,
                                text=True, check=False)  # fmt: skip
        assert verify.returncode == 0, verify.stderr
    script = tmp_path / "trustpoint-agent.init"
    assert "STATE='%s'" % (tmp_path / "state dir") in script.read_text()
    subprocess.run(["sh", "-n", str(script)], check=True)
    # The script's own parsing: `status` of an agent that never ran.
    status = subprocess.run(["sh", str(script), "status"], capture_output=True, text=True, check=False)
    assert status.returncode == 3 and "not running" in status.stdout
