# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gunicorn settings the server runs with, and what its workers ask the app."""

import subprocess

from conftest import BIN
from gunicorn.config import Config
from trustpoint_server.runtime import wsgi
from trustpoint_server.settings import Settings


def test_the_installed_gunicorn_knows_every_setting():
    """load_config leaves out settings an older gunicorn lacks; the one installed here (the one pip
    installs) must know them all, so a misspelt setting cannot be left out unnoticed."""
    options = wsgi._options(["127.0.0.1:0"], 1, 2, "info", "test")
    assert options["control_socket_disable"] is True
    assert sorted(set(options) - set(Config().settings)) == []


def test_the_protocols_requests_run_on_the_loop_with_a_local_database(tmp_path, monkeypatch):
    """DeadlineWorker asks its app (_Server.on_loop) which requests run on its loop: the protocols' with SQLite, and
    no other; with PostgreSQL none (they wait on the network: a thread lets the loop go on)."""
    subprocess.run(
        [str(BIN / "trustpoint-server"), "init", "--data-dir", str(tmp_path)], check=True, capture_output=True
    )
    server = wsgi._Server(Settings(data_dir=str(tmp_path)), wsgi._options(["127.0.0.1:0"], 1, 2, "info", "test"))
    assert not server.local_database  # known once a worker has loaded the app
    monkeypatch.setattr(wsgi.gc, "freeze", lambda: None)  # a worker's, not the test process's
    app = server.load()
    try:
        assert server.local_database
        for method, path, expected in [
            ("POST", "/.well-known/cmp/p/d1/initialization", True),
            ("POST", "/.well-known/est/simpleenroll", True),
            ("GET", "/.well-known/est/cacerts", True),
            ("POST", "/d1/.well-known/est/simpleenroll", True),
            ("OPTIONS", "/.well-known/cmp", False),
            ("POST", "/api/v1/devices", False),
            ("GET", "/devices", False),
        ]:
            assert server.on_loop({"REQUEST_METHOD": method, "PATH_INFO": path}) is expected, (method, path)
        server.local_database = False  # as load() leaves it with PostgreSQL
        assert not server.on_loop({"REQUEST_METHOD": "POST", "PATH_INFO": "/.well-known/cmp/p/d1/initialization"})
    finally:
        app.extensions["trustpoint"].engine.dispose()
