# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""AOKI over real multicast: a server in one network namespace advertises `_aoki._tcp` with python-zeroconf
on its interface; in another namespace on the same bridge, python-zeroconf browses it and trustpoint-agent
finds the server by itself and onboards; stopping the server withdraws the advertisement.

Needs root (network namespaces). Names: prefix tpz, bridge tpbr83, subnet 169.254.83.0/24 (.200 and up),
server port 8500; the bridge is taken under /tmp/tpz-tpbr83.lock, so no other user of it runs meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from aoki_helpers import Aoki
from conftest import BIN, REPO, http, tls_context
from cryptography import x509
from cryptography.hazmat.primitives import hashes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

BRIDGE = "tpbr83"
SUBNET = "169.254.83"
SERVER_ADDRESS = SUBNET + ".200"
DEVICE_ADDRESS = SUBNET + ".201"
PORT = 8500
LOCK = "/tmp/tpz-tpbr83.lock"


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def bridge():
    """The bridge with two namespace hosts (server, device); torn down afterwards."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tag = uuid.uuid4().hex[:4]
        hosts = {"server": ("tpz%ss" % tag, SERVER_ADDRESS), "device": ("tpz%sd" % tag, DEVICE_ADDRESS)}
        created_bridge = ip("link", "show", BRIDGE, check=False).returncode != 0
        try:
            if created_bridge:
                ip("link", "add", BRIDGE, "type", "bridge")
                ip("addr", "add", SUBNET + ".1/24", "dev", BRIDGE)
            ip("link", "set", BRIDGE, "up")
            for ns, address in hosts.values():
                ip("netns", "add", ns)
                ip("-n", ns, "link", "set", "lo", "up")
                ip("link", "add", ns + "-h", "type", "veth", "peer", "name", "eth0", "netns", ns)
                ip("link", "set", ns + "-h", "master", BRIDGE, "up")
                ip("-n", ns, "addr", "add", address + "/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
            yield {role: ns for role, (ns, _address) in hosts.items()}
        finally:
            for ns, _address in hosts.values():
                pids = ip("netns", "pids", ns, check=False).stdout.split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                ip("netns", "del", ns, check=False)
                ip("link", "del", ns + "-h", check=False)
            if created_bridge:
                ip("link", "del", BRIDGE, check=False)


def in_namespace(ns, *command, env=None, timeout=120):
    """(CompletedProcess) of command in the network namespace ns; the caller checks the return code."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, *command], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


BROWSE = textwrap.dedent(
    """
    import json, socket, sys, time
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf
    events = []
    def changed(zeroconf, service_type, name, state_change):
        events.append((round(time.monotonic() - start, 2), state_change.name, name))
    zc = Zeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)
    start = time.monotonic()
    ServiceBrowser(zc, "_aoki._tcp.local.", handlers=[changed])
    while not any(e[1] == "Added" for e in events) and time.monotonic() - start < 15:
        time.sleep(0.05)
    services = []
    for _t, state, name in list(events):
        info = zc.get_service_info("_aoki._tcp.local.", name, timeout=3000)
        if info is not None:
            services.append({"name": name, "port": info.port,
                             "addresses": [socket.inet_ntoa(a) for a in info.addresses if len(a) == 4],
                             "txt": {k.decode(): (v or b"").decode() for k, v in info.properties.items()}})
    print(json.dumps({"services": services}), flush=True)
    # Then wait for the goodbye (the server is stopped by the test meanwhile).
    deadline = time.monotonic() + 30
    while not any(e[1] == "Removed" for e in events) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps({"events": events}), flush=True)
    zc.close()
    """
)


def start_server(ns, data_dir, instance, ca_dir):
    subprocess.run(
        [str(BIN / "trustpoint-server"), "init", "--data-dir", str(data_dir), "--tls-san", SERVER_ADDRESS],
        check=True,
        capture_output=True,
    )
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 (the process's lifetime)
    process = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            str(BIN / "trustpoint-server"),
            "run",
            "--data-dir",
            str(data_dir),
            "--listen",
            "%s:%d" % (SERVER_ADDRESS, PORT),
            "--mdns-interface",
            SERVER_ADDRESS,
            "--mdns-instance",
            instance,
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    context = tls_context(str(data_dir / "tls-ca.pem"))
    deadline = time.monotonic() + 60
    while True:
        try:
            if http("GET", "https://%s:%d/healthz" % (SERVER_ADDRESS, PORT), timeout=2, context=context)[0] == 200:
                return process, context
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("server did not start:\n" + (data_dir / "server.log").read_text())
        time.sleep(0.2)


class ServerApi:
    """Enough of conftest.Server for aoki_helpers.Aoki: api() on the namespace server."""

    def __init__(self, data_dir, context):
        self.data_dir = data_dir
        self.url = "https://%s:%d" % (SERVER_ADDRESS, PORT)
        self.token = (data_dir / "admin-token").read_text().strip()
        self.context = context

    def api(self, method, path, payload=None):
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"}
        status, _headers, data = http(method, self.url + "/api/v1" + path, body, headers, context=self.context)
        return status, (json.loads(data) if data else None)

    def create_domain(self):
        status, body = self.api("POST", "/domains", {"name": "mdns-" + uuid.uuid4().hex[:8]})
        assert status == 201, body
        return body


def test_a_device_finds_the_server_over_mdns_onboards_and_sees_it_withdrawn(bridge, tmp_path):
    data_dir = tmp_path / "server"
    instance = "tpz AOKI %s" % uuid.uuid4().hex[:8]
    process, context = start_server(bridge["server"], data_dir, instance, tmp_path)
    try:
        server = ServerApi(data_dir, context)
        aoki = Aoki(server, tmp_path / "pki", devices=1)
        # The API says the advertisement is on.
        deadline = time.monotonic() + 20
        while (status := server.api("GET", "/aoki")[1]["mdns"]).get("state") != "advertising":
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status["enabled"] and status["instance"] == instance and status["port"] == PORT
        assert status["addresses"] == [SERVER_ADDRESS]

        browser = subprocess.Popen(
            ["ip", "netns", "exec", bridge["device"], sys.executable, "-c", BROWSE, DEVICE_ADDRESS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        found = json.loads(browser.stdout.readline() or "{}")
        (service,) = [s for s in found.get("services", []) if s["name"].startswith(instance)]
        assert service["port"] == PORT and service["addresses"] == [SERVER_ADDRESS]
        leaf = x509.load_pem_x509_certificates((data_dir / "tls-cert.pem").read_bytes())[0]
        assert service["txt"] == {
            "ver": "1.0",
            "path": "/aoki/init/",
            "cmppath": "/.well-known/cmp/p/.aoki/initialization",
            "tlsfp": "sha256:" + leaf.fingerprint(hashes.SHA256()).hex(),
        }

        # The agent in the device namespace: no URL, it finds the server by itself.
        factory = tmp_path / "factory"
        factory.mkdir()
        cert, key, _serial = aoki.device(1)
        shutil.copy(cert, factory / "idevid.pem")
        shutil.copy(key, factory / "idevid.key")
        shutil.copy(aoki.dir / "ownerid_ca.pem", factory / "owner-truststore.pem")
        run = in_namespace(
            bridge["device"],
            sys.executable,
            "-m",
            "trustpoint_agent.cli",
            "--state-dir",
            str(tmp_path / "state"),
            "aoki",
            "--factory-dir",
            str(factory),
            "--interface",
            DEVICE_ADDRESS,
            "--attempts",
            "1",
            env=dict(os.environ, PYTHONPATH=str(REPO / "agent")),
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "https://%s:%d" % (SERVER_ADDRESS, PORT) in run.stderr  # the discovered candidate
        (device,) = aoki.devices_on_server()
        assert device["status"] == "onboarded" and device["onboarding_method"] == "aoki"

        # Stopping the server withdraws the service: the browser sees it removed (goodbye packets).
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        out, err = browser.communicate(timeout=40)
        events = json.loads(out.strip().splitlines()[-1])["events"]
        assert any(state == "Removed" and name.startswith(instance) for _t, state, name in events), (events, err)
        assert json.loads((data_dir / "mdns-status.json").read_text())["state"] == "withdrawn"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_run_refuses_mdns_on_an_address_it_does_not_serve(tmp_path):
    data_dir = tmp_path / "data"
    init = [str(BIN / "trustpoint-server"), "init", "--data-dir", str(data_dir)]
    subprocess.run(init, check=True, capture_output=True)
    for args, message in (
        (["--listen", "127.0.0.1:8501", "--mdns-interface", "192.0.2.77"], "not an address of this host"),
        (["--listen", "127.0.0.1:8501", "--mdns-interface", "no-such-if0"], "neither an IPv4 address nor"),
        (["--listen-plain", "127.0.0.1:8502", "--mdns-interface", "127.0.0.1"], "add --listen"),
        (["--listen", "127.0.0.2:8501", "--mdns-interface", "127.0.0.1"], "no --listen address serves HTTPS there"),
        (["--listen", "127.0.0.1:8501", "--mdns-instance", "x"], "add --mdns-interface"),
    ):
        result = subprocess.run(
            [str(BIN / "trustpoint-server"), "run", "--data-dir", str(data_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
