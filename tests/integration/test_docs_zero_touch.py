# Copyright: Trustpoint contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/zero-touch.md's walkthrough, run as written: AOKI and the guided flow on one machine."""

from __future__ import annotations

import os

from conftest import BIN, REPO, free_port
from doc_blocks import run_strict, section_blocks


def walkthrough():
    return section_blocks(REPO / "docs" / "zero-touch.md", "Try it on one machine", "sh")[0]


def test_the_zero_touch_walkthrough_onboards_two_devices(tmp_path):
    script = walkthrough()
    assert "trustpoint-agent --state-dir state aoki" in script and "agent_command" in script
    for port in ("8443", "8080"):
        script = script.replace("127.0.0.1:" + port, "127.0.0.1:%d" % free_port())
    script = script.replace("T=$(mktemp -d) && cd $T", "cd %s" % tmp_path)
    # From the checkout, with the virtualenv off PATH: the block's own first line must find the commands.
    venv = os.path.realpath(BIN)
    path = [entry for entry in os.environ["PATH"].split(os.pathsep) if entry and os.path.realpath(entry) != venv]
    env = dict(os.environ, PATH=os.pathsep.join(path))
    result = run_strict(script, REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr + (tmp_path / "server.log").read_text()
    assert result.stdout.count("onboarded with aoki") == 1, result.stdout
    assert result.stdout.count("onboarded with agent") == 1, result.stdout
    assert "trustpoint-agent onboard --url https://127.0.0.1:" in result.stdout
    assert "Traceback" not in result.stderr
