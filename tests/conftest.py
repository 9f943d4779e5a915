# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures shared by the unit and integration tests: a real server process and its API; the services on a real
database."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
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

# `make test` runs pytest on several processes (pytest-xdist). Tests are handed out in groups, each group to one
# process: a test file is a group, so its module- and session-scoped servers start once; each Molecule scenario is
# its own group, so the scenarios run beside each other; tests that use the same test hosts (bridge, namespace
# names, fixed ports) share a group, so they never run at the same time.
TESTBED_GROUPS = {
    "test_mdns.py": "testbed-tpz",  # bridge tpbr83, port 8500
    "test_molecule.py[zero_touch]": "testbed-tpz",
}
# The longest groups start first, so that none of them is left to run alone at the end: the order of their
# durations in a full run (December 2026; test_role_agent.py about 4 minutes, test_server_role.py one).
LONGEST_FIRST = [
    "test_role_agent.py",
    "test_modules.py",
    "test_modules_trust.py",
    "test_lost_answers.py",
    "test_molecule.py[server]",
    "test_enroll_lifecycle.py",
    "test_postgresql.py",
    "testbed-tpz",
    "test_playbooks.py",
    "test_agent.py",
    "test_certificate_module.py",
    "test_bench_cmp_enroll.py",
    "test_modules_aoki.py",
    "test_tls.py",
    "test_enroll_files.py",
    "test_server_role.py",
    "test_molecule.py[default]",
    "test_readme.py",
]


def group_of(nodeid: str) -> str:
    """The group of a test, from its node id (tests/integration/test_x.py::test_y[param])."""
    path, test = nodeid.split("::", 1) if "::" in nodeid else (nodeid, "")
    name = path.rsplit("/", 1)[-1]
    if name == "test_molecule.py" and test.endswith("]"):
        name += test[test.index("[") :]
    return TESTBED_GROUPS.get(name, name)


def pytest_collection_modifyitems(items):
    rank = {group: index for index, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))  # stable: file order otherwise


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: plain pytest (or -p no:xdist) runs without it
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling  # imported here: plain pytest runs need no xdist

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return group_of(nodeid)

    return GroupScheduling(config, log)


FIXTURES = REPO / "tests" / "fixtures"

# The fuzz tests' examples per run, times $TRUSTPOINT_FUZZ_SCALE (default 1): a long differential campaign with the same
# oracles is `TRUSTPOINT_FUZZ_SCALE=1000 .venv/bin/pytest tests/unit/test_cmp_der.py tests/unit/test_cmp_fuzz.py`
# (Hypothesis keeps what fails in .hypothesis/ and tries it first the next time).
FUZZ_SCALE = max(1, int(os.environ.get("TRUSTPOINT_FUZZ_SCALE") or 1))


def fuzz_examples(count):
    return count * FUZZ_SCALE


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The session server's TLS trust anchor (DATA/tls-ca.pem): http() verifies https URLs with it.
_TLS_CA_FILE = []


def tls_context(ca_file=None):
    """A client SSLContext that trusts ca_file (default: the session server's TLS CA)."""
    return ssl.create_default_context(cafile=ca_file or (_TLS_CA_FILE[0] if _TLS_CA_FILE else None))


def http(method, url, body=None, headers=None, timeout=30, context=None):
    """(status, headers, body bytes) of one request; HTTP errors are answers, not exceptions.

    https URLs are verified against context (default: tls_context(), the session server's TLS CA).
    """
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    if context is None and url.startswith("https:"):
        context = tls_context()
    try:
        # the tests own these URLs
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def urllib_transport(url, body, content_type):
    """A transport for the core's protocol clients (https URLs: the session server's TLS CA)."""
    status, headers, data = http("POST", url, body, {"Content-Type": content_type})
    return status, headers.get("Content-Type"), data


class ServerClient:
    """What a test talks to: a server's HTTPS URL (verified with ca_file), its plain-HTTP URL for CMP, CRLs
    and /healthz (cmp_url), and the REST API with its admin token."""

    def __init__(self, url, cmp_url, ca_file, token):
        self.url = url
        # Where CMP clients post: the plain-HTTP listener (CMP messages protect themselves).
        self.cmp_url = cmp_url
        self.ca_file = Path(ca_file)
        self.token = token
        self.tls = tls_context(str(self.ca_file))

    def api(self, method, path, payload=None, token=None):
        """(status, decoded JSON or None) of a management API call."""
        headers = {"Authorization": "Bearer " + (self.token if token is None else token)}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        status, _headers, data = http(method, self.url + "/api/v1" + path, body, headers, context=self.tls)
        return status, (json.loads(data) if data else None)

    def create_domain(self, name=None, **fields):
        name = name or "d-" + uuid.uuid4().hex[:10]
        status, body = self.api("POST", "/domains", dict(name=name, **fields))
        assert status == 201, body
        return body

    def create_device(self, domain, name=None, method="cmp_shared_secret"):
        """(device, shared secret) of a new device (None for a method without one)."""
        name = name or "dev-" + uuid.uuid4().hex[:10]
        status, body = self.api("POST", "/devices", {"name": name, "domain": domain, "onboarding_method": method})
        assert status == 201, body
        return body["device"], body.get("shared_secret")

    def device(self, device_id):
        status, body = self.api("GET", "/devices/%d" % device_id)
        assert status == 200, body
        return body


class Server(ServerClient):
    """A `trustpoint-server run` process with its data directory and admin token.

    HTTPS on url (127.0.0.1:port), verified with ca_file (DATA/tls-ca.pem); plain HTTP for CMP, CRLs
    and /healthz on cmp_url (127.0.0.1:plain_port).
    """

    def __init__(self, data_dir, port, extra_args=(), plain_port=None, ca_file=None, init_args=()):
        self.data_dir = Path(data_dir)
        self.port = port
        self.plain_port = plain_port or free_port()
        subprocess.run(
            [str(BIN / "trustpoint-server"), "init", "--data-dir", str(self.data_dir), *init_args],
            check=True,
            capture_output=True,
        )
        super().__init__(
            "https://127.0.0.1:%d" % port,
            "http://127.0.0.1:%d" % self.plain_port,
            # The trust anchor: init's TLS CA, or the operator's for a server given --tls-cert.
            ca_file or self.data_dir / "tls-ca.pem",
            (self.data_dir / "admin-token").read_text().strip(),
        )
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
                "--listen-plain",
                "127.0.0.1:%d" % self.plain_port,
                # Many tests fail authentications on purpose, all from 127.0.0.1: no per-source budget
                # unless a test sets one (test_auth_limits.py); a later option overrides this one.
                "--auth-failure-budget",
                "0",
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if (
                    http("GET", self.url + "/healthz", timeout=2, context=self.tls)[0] == 200
                    and http("GET", self.cmp_url + "/healthz", timeout=2)[0] == 200
                ):
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not start:\n" + self.log())
            time.sleep(0.1)

    def data_file(self, name):
        """The content of a file in the data directory, None when there is none."""
        path = self.data_dir / name
        return path.read_bytes() if path.exists() else None

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


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One server for the session; tests isolate themselves with their own domains and devices."""
    instance = Server(tmp_path_factory.mktemp("server"), free_port())
    _TLS_CA_FILE[:] = [str(instance.ca_file)]
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


# --- the server's services called directly, on a real (SQLite) database (unit tests) -------------------------


@pytest.fixture
def sessions(tmp_path):
    """The session factory of a migrated SQLite database, tmp_path/trustpoint.db (the server's)."""
    from trustpoint_server.storage import migrate
    from trustpoint_server.storage.db import make_engine, session_factory

    engine = make_engine("sqlite:///%s" % (tmp_path / "trustpoint.db"))
    migrate.upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def db(sessions):
    """A session on a migrated SQLite database (its engine: db.get_bind())."""
    with sessions() as session:
        yield session


@pytest.fixture
def vault():
    from trustpoint_server.runtime.vault import Vault

    return Vault(os.urandom(32))


@pytest.fixture
def settings(tmp_path):
    from trustpoint_server.settings import Settings

    return Settings(data_dir=str(tmp_path))


@pytest.fixture
def device(db, vault):
    """Device plc-1 of a new domain d1, onboarding with a CMP shared secret."""
    from trustpoint_server.services import devices, pki

    domain = pki.create_domain(db, vault, "d1")
    db.commit()
    item, _secret = devices.create_device(db, vault, "plc-1", domain, "cmp_shared_secret")
    db.commit()
    return item
