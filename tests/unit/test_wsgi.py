# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gunicorn settings the server runs with."""

from gunicorn.config import Config
from trustpoint_server.runtime import wsgi


def test_the_installed_gunicorn_knows_every_setting():
    """load_config leaves out settings an older gunicorn lacks; the one installed here (the one pip
    installs) must know them all, so a misspelt setting cannot be left out unnoticed."""
    options = wsgi._options(["127.0.0.1:0"], 1, 2, "info", "test")
    assert options["control_socket_disable"] is True
    assert sorted(set(options) - set(Config().settings)) == []
