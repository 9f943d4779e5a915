# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the trustpoint_server role left on each server host, and what the devices got from it.

Runs through Molecule's testinfra verifier after converge, idempotence and the upgrade (side_effect.yml),
over SSH with host keys checked.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from pathlib import Path

import pytest

testinfra_hosts = ["ansible://trustpoint_servers"]

DATA = "/var/lib/trustpoint-server"
CONFIG = "/etc/trustpoint-server/server.toml"
PORT = 8490
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
RELEASE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "release-0.1.0"
UPGRADE_REVISION = "9999_molecule_upgrade"


def fetched(host, name):
    return EPHEMERAL / "fetched" / host.backend.host / name


def get(host, path, token=True, port=PORT, scheme="https"):
    """(status, JSON) of a GET from the controller, verified with the trust anchor the role fetched."""
    address = host.ansible.get_variables()["ansible_host"]
    headers = {"Authorization": "Bearer " + fetched(host, "admin-token").read_text().strip()} if token else {}
    request = urllib.request.Request("%s://%s:%d%s" % (scheme, address, port, path), headers=headers)  # noqa: S310
    context = ssl.create_default_context(cafile=str(fetched(host, "tls-ca.pem"))) if scheme == "https" else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with opener.open(request, timeout=30) as response:
        return response.status, json.load(response)


def run(host, command):
    result = host.run(command)
    assert result.rc == 0, "%s: rc=%d %s" % (command, result.rc, result.stderr or result.stdout)
    return result.stdout


def test_the_service_user(host):
    user = host.user("trustpoint")
    assert user.exists
    assert user.uid < 1000, "not a system user"
    assert user.shell == "/usr/sbin/nologin"
    assert user.group == "trustpoint"


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        (DATA, "trustpoint", "trustpoint", 0o700),
        (DATA + "/vault.key", "trustpoint", "trustpoint", 0o600),
        (DATA + "/admin-token", "trustpoint", "trustpoint", 0o600),
        (DATA + "/tls-key.pem", "trustpoint", "trustpoint", 0o600),
        (DATA + "/trustpoint.db", "trustpoint", "trustpoint", 0o600),
        ("/etc/trustpoint-server", "root", "trustpoint", 0o750),
        (CONFIG, "root", "trustpoint", 0o640),
        ("/opt/trustpoint-server/venv/bin/trustpoint-server", "root", "root", 0o755),
    ],
)
def test_owners_and_modes(host, path, owner, group, mode):
    item = host.file(path)
    assert item.exists, path
    assert (item.user, item.group, item.mode) == (owner, group, mode)


def test_the_service_runs_as_its_user_and_survived_the_role(host):
    """Every process of the service is the service user's; it outlived the SSH sessions of the role."""
    processes = [p for p in host.process.filter(user="trustpoint") if "trustpoint-server" in p.args]
    assert processes, run(host, "ps -ef")
    assert not [p for p in host.process.filter(user="root") if "trustpoint-server run" in p.args]


def test_the_service_manager_knows_it(host):
    if host.backend.host == "sd":
        assert run(host, "systemctl is-active trustpoint-server").strip() == "active"
        assert run(host, "systemctl is-enabled trustpoint-server").strip() == "enabled"
        shown = run(
            host,
            "systemctl show -p ProtectSystem -p NoNewPrivileges -p PrivateTmp -p ReadWritePaths -p User"
            " trustpoint-server",
        )
        for line in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "User=trustpoint",
                     "ReadWritePaths=" + DATA):  # fmt: skip
            assert line in shown.splitlines(), shown
    else:
        assert run(host, "cat /proc/1/comm").strip() == "tini"
        assert run(host, "/etc/init.d/trustpoint-server status").strip() == "trustpoint-server is running"
        assert host.run("ls /etc/rc2.d/S*trustpoint-server").rc == 0, "not enabled for runlevel 2"


def test_listening_ports(host):
    assert host.socket("tcp://0.0.0.0:%d" % PORT).is_listening
    assert host.socket("tcp://0.0.0.0:%d" % (PORT + 1)).is_listening


def test_healthz_over_https_and_plain_http(host):
    assert get(host, "/healthz", token=False) == (200, {"status": "ok"})
    assert get(host, "/healthz", token=False, port=PORT + 1, scheme="http") == (200, {"status": "ok"})


def test_the_configuration_file_is_the_services(host):
    settings = run(host, "/opt/trustpoint-server/venv/bin/trustpoint-server settings --config " + CONFIG)
    assert 'data_dir = "%s"' % DATA in settings
    assert 'listen = ["0.0.0.0:%d"]' % PORT in settings
    assert "workers = 1" in settings


def test_the_upgrade_ran_its_migration_once(host):
    """side_effect.yml installed version 99.0.0 with a migration that adds one row: it is there, once."""
    command = "runuser -u trustpoint -- /opt/trustpoint-server/venv/bin/trustpoint-server migrate --config " + CONFIG
    assert "up to date (revision %s)" % UPGRADE_REVISION in run(host, command)
    version = run(host, "/opt/trustpoint-server/venv/bin/python -m pip show trustpoint-server")
    assert "Version: 99.0.0" in version
    count = "import sqlite3; print(sqlite3.connect('%s/trustpoint.db').execute('%s').fetchone()[0])" % (
        DATA,
        "SELECT count(*) FROM molecule_upgrade",
    )
    rows = run(host, '/opt/trustpoint-server/venv/bin/python -c "%s"' % count)
    assert rows.strip() == "1"


def test_devices_and_credentials_survived_the_upgrade(host):
    """Every device the server listed before the upgrade is listed unchanged after it."""
    before = json.loads((EPHEMERAL / "upgrade" / ("devices-before-%s.json" % host.backend.host)).read_text())
    status, after = get(host, "/api/v1/devices")
    assert status == 200
    assert after == before


def test_the_0_1_0_data_directory_was_taken_over(host):
    """The plain host started from a data directory of release 0.1.0: every record reads back as before."""
    if host.backend.host != "plain":
        pytest.skip("only the plain host started from 0.1.0 data")
    status, devices = get(host, "/api/v1/devices")
    assert status == 200
    now = {device["name"]: device for device in devices}
    for old in json.loads((RELEASE / "devices" / "devices-before.json").read_text()):
        new = now[old["name"]]
        for field in ("id", "domain", "onboarding_method", "status", "created_at", "onboarded_at"):
            assert new[field] == old[field], (old["name"], field)
        if old["credential"]:
            assert new["credential"]["fingerprint_sha256"] == old["credential"]["fingerprint_sha256"]
    # The key of a domain CA made by 0.1.0 still decrypts and signs: the vault key was kept.
    status, domain = get(host, "/api/v1/domains/plant1")
    assert status == 200 and domain["ca_chain"]


def test_the_devices_hold_the_credentials_the_server_counts(host):
    """Each device onboarded against this server holds the credential the server records as active,
    the same before and after the upgrade (onboard_devices.yml ran again and changed nothing)."""
    before = json.loads((EPHEMERAL / "upgrade" / ("devices-before-%s.json" % host.backend.host)).read_text())
    inventory = host.backend.ansible_inventory
    import testinfra

    devices = [
        d for d in testinfra.get_hosts(["ansible://devices"], ansible_inventory=inventory)
        if d.ansible.get_variables().get("tps_server") == host.backend.host
    ]  # fmt: skip
    assert devices, "no device onboards against %s" % host.backend.host
    for device in devices:
        fingerprint = (
            device.check_output("openssl x509 -noout -fingerprint -sha256 -in /etc/trustpoint/domain_credential.pem")
            .split("=", 1)[1]
            .replace(":", "")
            .lower()
        )
        status, (record,) = get(host, "/api/v1/devices?name=" + device.backend.host)
        assert status == 200
        assert record["status"] == "onboarded"
        assert record["credential"]["status"] == "active"
        assert record["credential"]["fingerprint_sha256"] == fingerprint
        (old,) = [d for d in before if d["name"] == device.backend.host]
        assert old["credential"]["fingerprint_sha256"] == fingerprint
