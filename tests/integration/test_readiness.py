# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""/healthz says the process lives; /readyz whether it can do its work (issue 11): a full disk is
"not ready" while /healthz stays 200.

The data directory sits on its own small tmpfs (the test mounts one; that needs root, as CI has), which
the test fills to the last byte, as a disk fills in a plant.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
import uuid

import pytest
from conftest import Server, free_port, http


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs-%s" % uuid.uuid4().hex[:8], str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): %s" % result.stderr.strip())
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path):
    """Write zeros to path until the file system is full, to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def ready(url, context=None):
    status, _headers, body = http("GET", url + "/readyz", context=context)
    return status, json.loads(body)


def ready_until(url, status, timeout=20.0):
    """(status, body) of /readyz once it answers status (each worker checks at most every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = ready(url)
        if answer[0] == status:
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.3)


def test_a_full_disk_is_not_ready_but_alive(small_disk, workdir):
    server = Server(small_disk / "data", free_port(), ["--min-free-space", "4"])
    try:
        status, body = ready(server.cmp_url)
        assert (status, body["status"]) == (200, "ready"), body
        assert body["checks"] == {"database_write": "ok", "free_space": "ok"}
        assert ready(server.url, server.tls)[0] == 200

        filler = small_disk / "filler"
        fill(filler)
        # Liveness stays: the process answers and reads its database.
        assert http("GET", server.cmp_url + "/healthz")[0] == 200
        _status, body = ready_until(server.cmp_url, 503)
        assert body["status"] == "not ready", body
        assert "MiB free in the data directory's file system; at least 4 MiB needed" in body["checks"]["free_space"]
        assert "WARNING trustpoint_server.services.health: not ready: " in server.log()

        os.unlink(filler)
        _status, body = ready_until(server.cmp_url, 200)
        assert body["checks"] == {"database_write": "ok", "free_space": "ok"}, body
    finally:
        server.stop()
