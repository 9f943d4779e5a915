# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures shared by the unit and integration tests: a real server process and its API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FIXTURES = REPO / "tests" / "fixtures"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=30):
    """(status, headers, body bytes) of one request; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the tests own these URLs)
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def urllib_transport(url, body, content_type):
    """A transport for the core's protocol clients."""
    status, headers, data = http("POST", url, body, {"Content-Type": content_type})
    return status, headers.get("Content-Type"), data


class Server:
    """A `trustpoint-server run` process with its data directory and admin token."""

    def __init__(self, data_dir, port, extra_args=()):
        self.data_dir = Path(data_dir)
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        # Where CMP clients post (the plain-HTTP CMP listener once the server speaks TLS).
        self.cmp_url = self.url
        subprocess.run(
            [str(BIN / "trustpoint-server"), "init", "--data-dir", str(self.data_dir)], check=True, capture_output=True
        )
        self.token = (self.data_dir / "admin-token").read_text().strip()
        self.log_path = self.data_dir / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (open for the process's lifetime)
        self.process = subprocess.Popen(
            [
                str(BIN / "trustpoint-server"),
                "run",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                "127.0.0.1:%d" % port,
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", self.url + "/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not start:\n" + self.log())
            time.sleep(0.1)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def api(self, method, path, payload=None, token=None):
        """(status, decoded JSON or None) of a management API call."""
        headers = {"Authorization": "Bearer " + (self.token if token is None else token)}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        status, _headers, data = http(method, self.url + "/api/v1" + path, body, headers)
        return status, (json.loads(data) if data else None)

    def create_domain(self, name=None, **fields):
        name = name or "d-" + uuid.uuid4().hex[:10]
        status, body = self.api("POST", "/domains", dict(name=name, **fields))
        assert status == 201, body
        return body

    def create_device(self, domain, name=None, method="cmp_shared_secret"):
        """(device, shared secret) of a new device."""
        name = name or "dev-" + uuid.uuid4().hex[:10]
        status, body = self.api("POST", "/devices", {"name": name, "domain": domain, "onboarding_method": method})
        assert status == 201, body
        return body["device"], body["shared_secret"]

    def device(self, device_id):
        status, body = self.api("GET", "/devices/%d" % device_id)
        assert status == 200, body
        return body


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One server for the session; tests isolate themselves with their own domains and devices."""
    instance = Server(tmp_path_factory.mktemp("server"), free_port())
    yield instance
    instance.stop()


@pytest.fixture
def workdir(tmp_path):
    """A scratch directory for files a test's peers write."""
    return tmp_path


def require_binary(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail("%s is not installed; run `make setup` (tools/setup-system.sh installs it)" % name)
    return path


def openssl(*args, check=True, env=None, cwd=None):
    """Run the real openssl command line; returns the CompletedProcess (text)."""
    result = subprocess.run(
        [require_binary("openssl"), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            "openssl %s failed (%d):\n%s%s" % (" ".join(args), result.returncode, result.stdout, result.stderr)
        )
    return result
