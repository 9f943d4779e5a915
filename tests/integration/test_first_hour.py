# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""Small things a newcomer meets in the first hour (issue 10): each says what is wrong, in words."""

from __future__ import annotations

import os
import socket
import stat
import subprocess

from cmp_helpers import new_private_key, run_cmp, write_key
from conftest import BIN, REPO


def test_run_on_a_busy_port_says_the_address_is_in_use(tmp_path):
    data = tmp_path / "data"
    subprocess.run([str(BIN / "trustpoint-server"), "init", "--data-dir", str(data)], check=True, capture_output=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = "127.0.0.1:%d" % busy.getsockname()[1]
        result = subprocess.run(
            [str(BIN / "trustpoint-server"), "run", "--data-dir", str(data), "--listen", address],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    assert "address %s is in use" % address in result.stderr
    assert "Can't connect" not in result.stderr and "Traceback" not in result.stderr


def test_rejected_sender_kid_is_logged_as_text(server, tmp_path):
    """A wrong secret is logged with the device reference as the device sent it (12), not as a bytes repr."""
    domain = server.create_domain()["name"]
    device, _secret = server.create_device(domain)
    key = tmp_path / "key.pem"
    write_key(key, new_private_key())
    returncode, _output = run_cmp(
        "-cmd", "ir", "-server", "%s/.well-known/cmp/p/%s/initialization" % (server.cmp_url, domain),
        "-ref", device["id"], "-secret", "pass:wrong-secret", "-subject", "/CN=x", "-newkey", key,
        "-certout", tmp_path / "cert.pem", "-unprotected_errors",
    )  # fmt: skip
    assert returncode != 0
    lines = [line for line in server.log().splitlines() if "rejected" in line and "senderKID" in line]
    assert any("senderKID %d)" % device["id"] in line for line in lines), lines[-3:]
    assert not any("senderKID b'" in line for line in lines)


def test_setup_system_waits_for_the_dpkg_lock(tmp_path):
    """tools/setup-system.sh asks apt-get to wait for another apt's lock instead of failing at once."""
    fake = tmp_path / "bin"
    fake.mkdir()
    record = tmp_path / "apt-get.args"
    scripts = {
        "dpkg-query": "exit 1\n",  # nothing is installed
        "apt-get": 'echo "$@" >> %s\n' % record,
        "id": "echo 0\n",
    }
    for name, body in scripts.items():
        (fake / name).write_text("#!/bin/sh\n" + body)
        (fake / name).chmod(stat.S_IRWXU)
    env = dict(os.environ, PATH="%s:/usr/bin:/bin" % fake)
    subprocess.run(["bash", str(REPO / "tools" / "setup-system.sh")], env=env, capture_output=True, check=True)
    calls = record.read_text().splitlines()
    assert calls and all("DPkg::Lock::Timeout=" in call for call in calls), calls
